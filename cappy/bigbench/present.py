"""`cappy tables` (= scripts/present_cappy_bigbench_results.py): Cappy's BIG-Bench ROUGE-L
per task and generator, beside the paper's figures.

    cappy tables [--results_dir bigbench_cappy_results] [--gen_models flan-t5-xl,...] \\
        [--output_file cappy.json] [--plot cappy.png] [--baselines_file baselines.json]

Reads `{results_dir}/{model}/{task}.json` (ours, or the authors' released files: only
`{"rougeL": value}` is needed) for each task of `{bigbench_data_dir}/subset_names.json`
(the paper's 45 when that file is absent). Prints a markdown table, ROUGE-L x100: ours,
the paper's per-task figure and the difference, then the mean over finished tasks beside
the paper's published mean. Missing and unfinished tasks (a file that is not JSON with a
numeric `rougeL`, such as the original code's `running...`) are listed and not averaged.
`--output_file` writes the report as JSON (ours as fractions, the paper's mean in
percent). `--plot` draws the paper's comparison figure (mean per generator, ours against
the paper), with our baseline rows from `--baselines_file` (the JSON of `cappy baselines
--output_file`).
"""

import dataclasses
import os

from cappy.engine.config import setting
from cappy.engine.runtime.process import job_command
from cappy.engine.errors import CappyError

COMMAND_DOC = __doc__
PLOT_FORMATS = ("png", "pdf", "svg")


@dataclasses.dataclass(kw_only=True)
class TablesConfig:
    """The results table's flags (the original's spellings as aliases)."""
    results_dir: str = setting("bigbench_cappy_results", "where cappy_bigbench.py wrote its "
                               "results (--result_dir: the original's spelling)",
                               flag=("--results_dir", "--result_dir"))
    bigbench_data_dir: str = setting("bigbench_data", "folder of subset_names.json (default "
                                     "list: the paper's 45 tasks)")
    gen_models: str | None = setting(None, "comma-separated generator folders (default: every "
                                     "folder found; --gen_model_name: the original's spelling, "
                                     "one generator)", type=str,
                                     flag=("--gen_models", "--gen_model_name"))
    output_file: str | None = setting(None, "write the report as JSON", type=str)
    plot: str | None = setting(None, "write the comparison figure (.png, .pdf or .svg)",
                               type=str)
    baselines_file: str | None = setting(None, "baseline means from cappy baselines "
                                         "--output_file", type=str)


def run(config):
    from cappy.bigbench.results import result_file
    from cappy.bigbench.tables import (cappy_report, cappy_report_json, cappy_task_list,
                                       format_cappy_table, plot_cappy_comparison,
                                       read_baselines_file)
    from cappy.engine.flags import comma_list
    from cappy.engine.io import check_output_file, write_json

    if config.plot:
        fmt = os.path.splitext(config.plot)[1].lstrip(".").lower()
        if fmt not in PLOT_FORMATS:
            raise CappyError(f"--plot {config.plot}: file name must end in "
                             f"{', '.join('.' + f for f in PLOT_FORMATS)}")
    baselines = read_baselines_file(config.baselines_file) if config.baselines_file else None
    models = comma_list(config.gen_models, "--gen_models")
    tasks = cappy_task_list(config.bigbench_data_dir)
    report = cappy_report(config.results_dir, tasks, models)
    # Never over what was read: a result file or the baselines.
    inputs = [result_file(config.results_dir, model, task) for model in report for task in tasks]
    inputs.append(config.baselines_file)
    for flag in ("output_file", "plot"):
        if getattr(config, flag):
            check_output_file(getattr(config, flag), f"--{flag}", inputs)
    print(format_cappy_table(report, tasks))
    if config.output_file:
        write_json(config.output_file, cappy_report_json(report))
        print(f"wrote {config.output_file}")
    if config.plot:
        plot_cappy_comparison(report, config.plot, baselines)
        print(f"wrote {config.plot}")


parse_args, main = job_command(TablesConfig, COMMAND_DOC, run, computes=False)
