"""Build the 45 BIG-Bench generative tasks as jsonl (docs/DESIGN.md section 3).

    python scripts/get_bigbench_data.py                  # from the Hugging Face hub
    python scripts/get_bigbench_data.py --source pypi    # offline, from the bigbench sdist

See cappy/bigbench/data.py for the split rule and the output format.
"""

import argparse

from cappy.bigbench.data import build
from cappy.engine.errors import exit_on_error


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--source", choices=["hub", "pypi"], default="hub",
                        help="tasksource/bigbench on the hub, or the bigbench==1.0.0 sdist "
                             "from PyPI (no tellmewhy)")
    parser.add_argument("--output_dir", default="bigbench_data",
                        help="where the task files are written")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated subset of the 45 task names (default: all)")
    parser.add_argument("--bigbench_sdist", default=None,
                        help="a local bigbench-1.0.0.tar.gz (pypi source; default: "
                             "download it into --cache_dir once)")
    parser.add_argument("--cache_dir", default="~/.cache/cappy",
                        help="where the downloaded BIG-Bench source is kept")
    parser.add_argument("--max_train_rows", type=int, default=None,
                        help="keep only the first N train rows per task (for small samples)")
    parser.add_argument("--max_validation_rows", type=int, default=None,
                        help="keep only the first N validation rows per task")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (pip's download bar included) and no size table")
    return parser.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    sizes = build(args.source, args.output_dir, tasks_arg=args.tasks,
                  bigbench_sdist=args.bigbench_sdist, cache_dir=args.cache_dir,
                  max_train_rows=args.max_train_rows,
                  max_validation_rows=args.max_validation_rows, progress=not args.quiet)
    if args.quiet:
        print(f"wrote {len(sizes)} tasks to {args.output_dir}")
        return 0
    width = max(len(task) for task, _, _ in sizes)
    print(f"{'task':<{width}}  {'train':>6}  {'validation':>10}")
    for task, n_train, n_validation in sizes:
        print(f"{task:<{width}}  {n_train:>6}  {n_validation:>10}")
    print(f"wrote {len(sizes)} tasks to {args.output_dir}")


if __name__ == "__main__":
    main()
