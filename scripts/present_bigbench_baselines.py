"""The seven baseline rows of the BIG-Bench table, with the paper's figures beside ours.

    python scripts/present_bigbench_baselines.py [--gen_models flan-t5-xl,...] \
        [--output_file baselines.json]

For each generator folder of `--bigbench_gen_dir` (or `--gen_models`) and each
task of `{bigbench_data_dir}/subset_names.json` whose validation candidates
exist: ROUGE-L of each decoding's first sample and of the self-scored choice
(log-likelihood sum or mean), averaged per task, then over tasks. Missing tasks
are listed and left out of the mean. `--output_file` writes
{model: {row: value}} as JSON with values as fractions.
"""

import argparse
import sys

from cappy.engine.errors import exit_on_error
from cappy.engine.flags import comma_list


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bigbench_data_dir", default="bigbench_data",
                        help="the BIG-Bench task files")
    parser.add_argument("--bigbench_gen_dir", default="bigbench_flan_gens",
                        help="folder of candidate folders, one per generator")
    parser.add_argument("--gen_models", default=None,
                        help="comma-separated generator folders (default: every folder found)")
    parser.add_argument("--tgt_key", default="response",
                        help="the response's field in the candidates")
    parser.add_argument("--refs_key", default="references", help="the references' field")
    parser.add_argument("--output_file", default=None, help="also write the table as JSON")
    return parser.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    from cappy.bigbench.tables import baseline_report, format_baseline_table
    from cappy.engine.io import check_output_file, write_json

    if args.output_file:  # before the minutes of ROUGE-L over every candidate file
        check_output_file(args.output_file, "--output_file")
    models = comma_list(args.gen_models, "--gen_models")
    report = baseline_report(args.bigbench_data_dir, args.bigbench_gen_dir, models,
                             tgt_key=args.tgt_key, refs_key=args.refs_key)
    print(format_baseline_table(report))
    if args.output_file:
        write_json(args.output_file, {model: entry["mean"] for model, entry in report.items()})
        print(f"wrote {args.output_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
