"""Offline demo of the BIG-Bench pipeline on tiny random models (about 45 s on 2 CPU cores).

    .venv/bin/python scripts/demo_offline.py [--output_dir demo_run]

Builds a tiny Cappy and a tiny T5 generator, generates 17 candidates per
instruction for 3 real BIG-Bench tasks shipped in cappy/data/bigbench_sample,
finetunes Cappy per task, reranks, and prints the baseline and Cappy tables and
a plot. No network. The models are random: the numbers mean nothing. Safe to
run twice (finished steps are skipped); delete the output folder to start over.
"""

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cappy.engine.errors import exit_on_error


@exit_on_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output_dir", default="demo_run",
                        help="where the demo's models, data and results go")
    parser.add_argument("--quiet", action="store_true",
                        help="print only the two tables, not each step")
    args = parser.parse_args(argv)
    from cappy.bigbench.demo import run_demo

    run_demo(args.output_dir, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
