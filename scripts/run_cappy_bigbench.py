"""Run cappy_bigbench.py for every BIG-Bench task and generator, resumably.

    python scripts/run_cappy_bigbench.py [--gen_models flan-t5-xl,flan-t5-xxl] \
        [--tasks codenames,gem] [--devices 0,1,2,3 | --cuda_idx 0] [--dry_run] \
        [any cappy_bigbench.py flag, e.g. --train_size 1024 --lr_schedule corrected]

Tasks come from `{bigbench_data_dir}/subset_names.json`; generators default to
every FLAN-T5 folder found in `--bigbench_gen_dir`. Each (generator, task) runs
as its own process; its output goes to `{results_dir}/{model}/{task}.log`. A task
whose `{task}.json` holds a numeric `rougeL` is skipped; an unfinished or
invalid one is run again with `--overwrite`. A failure never stops the batch:
the summary lists each failure with its log, and the exit code is 1 if any
task failed. `--devices 0,1,...` runs one task per GPU at a time, each child
with `CUDA_VISIBLE_DEVICES` set to its device; without it tasks run one after
another; `--cuda_idx 0` (the original's flag) runs them one after another with
`CUDA_VISIBLE_DEVICES=0`. Unknown flags are passed to every child unchanged.
"""

import argparse
import sys

from cappy.engine.errors import exit_on_error


def parse_args(argv=None):
    # allow_abbrev=False: a child's flag must never be taken for a prefix of ours.
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Unknown flags are passed through to each cappy_bigbench.py run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bigbench_data_dir", default="bigbench_data",
                        help="folder holding subset_names.json")
    parser.add_argument("--bigbench_gen_dir", default="bigbench_flan_gens",
                        help="folder of candidate folders, one per generator")
    parser.add_argument("--gen_models", default=None,
                        help="comma-separated generator folders (default: every FLAN-T5 "
                             "folder in --bigbench_gen_dir)")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated tasks (default: all of subset_names.json)")
    parser.add_argument("--results_dir", default="bigbench_cappy_results",
                        help="where each cappy_bigbench.py run writes its result")
    parser.add_argument("--devices", default=None,
                        help="comma-separated GPU ids: one task per device in parallel")
    parser.add_argument("--cuda_idx", default=None,
                        help="the original's flag: every task, one at a time, with "
                             "CUDA_VISIBLE_DEVICES set to this value (such as 0, or 0,1 to "
                             "give each task two GPUs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="run finished tasks again too (passes --overwrite)")
    parser.add_argument("--quiet", action="store_true",
                        help="print only failures and the summary (and pass --quiet to each "
                             "task: no progress bars in its log)")
    parser.add_argument("--dry_run", action="store_true",
                        help="print the commands without running them")
    parser.add_argument("--script", default=None,
                        help="a per-task script to run instead of cappy_bigbench.py's command "
                             "(python -m cappy.bigbench.task)")
    return parser.parse_known_args(argv)


@exit_on_error
def main(argv=None):
    args, extra = parse_args(argv)
    from cappy.bigbench.runner import run_batch

    if args.quiet and "--quiet" not in extra:
        extra = [*extra, "--quiet"]

    return run_batch(args, extra)


if __name__ == "__main__":
    sys.exit(main())
