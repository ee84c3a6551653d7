"""Cappy's BIG-Bench ROUGE-L per task and generator, beside the paper's figures.

    python scripts/present_cappy_bigbench_results.py [--results_dir bigbench_cappy_results] \
        [--gen_models flan-t5-xl,...] [--output_file cappy.json] [--plot cappy.png] \
        [--baselines_file baselines.json]

Reads `{results_dir}/{model}/{task}.json` (ours, or the authors' released files:
only `{"rougeL": value}` is needed) for each task of
`{bigbench_data_dir}/subset_names.json` (the paper's 45 when that file is
absent). Prints a markdown table, ROUGE-L x100: ours, the paper's per-task
figure and the difference, then the mean over finished tasks beside the paper's
published mean. Missing and unfinished tasks (a file that is not JSON with a
numeric `rougeL`, such as the original code's `running...`) are listed and not
averaged. `--output_file` writes the report as JSON (ours as fractions, the
paper's mean in percent). `--plot` draws the paper's comparison figure (mean per
generator, ours against the paper), with our baseline rows from
`--baselines_file` (the JSON of present_bigbench_baselines.py --output_file).
"""

import argparse
import os
import sys

from cappy.engine.errors import CappyError, exit_on_error
from cappy.engine.flags import comma_list

PLOT_FORMATS = ("png", "pdf", "svg")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--results_dir", "--result_dir", dest="results_dir",
                        default="bigbench_cappy_results",
                        help="where cappy_bigbench.py wrote its results (--result_dir: the "
                             "original's spelling)")
    parser.add_argument("--bigbench_data_dir", default="bigbench_data",
                        help="folder of subset_names.json (default list: the paper's 45 tasks)")
    parser.add_argument("--gen_models", "--gen_model_name", dest="gen_models", default=None,
                        help="comma-separated generator folders (default: every folder found; "
                             "--gen_model_name: the original's spelling, one generator)")
    parser.add_argument("--output_file", default=None, help="write the report as JSON")
    parser.add_argument("--plot", default=None, help="write the comparison figure (.png)")
    parser.add_argument("--baselines_file", default=None,
                        help="baseline means from present_bigbench_baselines.py --output_file")
    return parser.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    from cappy.bigbench.results import result_file
    from cappy.bigbench.tables import (cappy_report, cappy_report_json, cappy_task_list,
                                       format_cappy_table, plot_cappy_comparison,
                                       read_baselines_file)
    from cappy.engine.io import check_output_file, write_json

    if args.plot:
        fmt = os.path.splitext(args.plot)[1].lstrip(".").lower()
        if fmt not in PLOT_FORMATS:
            raise CappyError(f"--plot {args.plot}: file name must end in "
                             f"{', '.join('.' + f for f in PLOT_FORMATS)}")
    baselines = read_baselines_file(args.baselines_file) if args.baselines_file else None
    models = comma_list(args.gen_models, "--gen_models")
    tasks = cappy_task_list(args.bigbench_data_dir)
    report = cappy_report(args.results_dir, tasks, models)
    # Never over what was read: a result file or the baselines.
    inputs = [result_file(args.results_dir, model, task) for model in report for task in tasks]
    inputs.append(args.baselines_file)
    for flag in ("output_file", "plot"):
        if getattr(args, flag):
            check_output_file(getattr(args, flag), f"--{flag}", inputs)
    print(format_cappy_table(report, tasks))
    if args.output_file:
        write_json(args.output_file, cappy_report_json(report))
        print(f"wrote {args.output_file}")
    if args.plot:
        plot_cappy_comparison(report, args.plot, baselines)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
