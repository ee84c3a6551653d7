"""`cappy baselines` (= scripts/present_bigbench_baselines.py): the seven baseline rows of
the BIG-Bench table, with the paper's figures beside ours.

    cappy baselines [--gen_models flan-t5-xl,...] [--output_file baselines.json]

For each generator folder of `--bigbench_gen_dir` (or `--gen_models`) and each task of
`{bigbench_data_dir}/subset_names.json` whose validation candidates exist: ROUGE-L of each
decoding's first sample and of the self-scored choice (log-likelihood sum or mean),
averaged per task, then over tasks. Missing tasks are listed and left out of the mean.
`--output_file` writes {model: {row: value}} as JSON with values as fractions.
"""

import dataclasses

from cappy.bigbench.candidates import CandidateFolders
from cappy.engine.config import setting
from cappy.engine.runtime.process import job_command

COMMAND_DOC = __doc__


@dataclasses.dataclass(kw_only=True)
class BaselinesConfig(CandidateFolders):
    """The baseline table's flags."""
    gen_models: str | None = setting(None, "comma-separated generator folders (default: every "
                                     "folder found)", type=str)
    tgt_key: str = setting("response", "the response's field in the candidates")
    refs_key: str = setting("references", "the references' field")
    output_file: str | None = setting(None, "also write the table as JSON", type=str)


def run(config):
    from cappy.bigbench.tables import baseline_report, format_baseline_table
    from cappy.engine.flags import comma_list
    from cappy.engine.io import check_output_file, write_json

    if config.output_file:  # before the minutes of ROUGE-L over every candidate file
        check_output_file(config.output_file, "--output_file")
    models = comma_list(config.gen_models, "--gen_models")
    report = baseline_report(config.bigbench_data_dir, config.bigbench_gen_dir, models,
                             tgt_key=config.tgt_key, refs_key=config.refs_key)
    print(format_baseline_table(report))
    if config.output_file:
        write_json(config.output_file, {model: entry["mean"] for model, entry in report.items()})
        print(f"wrote {config.output_file}")


parse_args, main = job_command(BaselinesConfig, COMMAND_DOC, run, computes=False)
