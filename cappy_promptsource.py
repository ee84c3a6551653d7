"""Zero-shot classification with Cappy on 11 held-out PromptSource tasks (the paper's Table 1).

    python scripts/build_promptsource_test_data.py --story_cloze_dir DIR   # or download_promptsource_test_data.sh
    python cappy_promptsource.py --model_name_or_path btan2/cappy-large

Scores every answer choice of every prompt in --data_file, takes the best per prompt,
and prints the accuracy per dataset and their mean ("Average") as JSON, as the original
release did, then a markdown table beside the paper's Table 1 (Cappy 0.36B: 56.6 on
average). `--per_template` adds each template's accuracy; `--output_file` writes the
JSON (with counts, problems and timings) and `<name>.predictions.jsonl` beside it.
See cappy/promptsource/evaluate.py for the rules, cappy/promptsource/data.py for the data.

Size: the built file for all 11 datasets should hold about 220,000 rows (85,820
prompts; from the published split sizes and the template counts, ANLI alone 144,000).
Its run time with cappy-large has not been measured in this repository.
"""

import argparse
import sys

from cappy.engine.errors import exit_on_error
from cappy.engine.checkpoints import DTYPES, keep_torch_out_of_transformers


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_file", default="./promptsource_test.jsonl",
                   help="the test set (scripts/build_promptsource_test_data.py writes it)")
    p.add_argument("--sent0_key", default="instruction", help="the instruction's field")
    p.add_argument("--sent1_key", default="response", help="the answer choices' field")
    p.add_argument("--model_name_or_path", default="btan2/cappy-large",
                   help="the Cappy: a hub id or a folder")
    p.add_argument("--n_model_shards", type=int, default=1,
                   help="devices each model copy is split over")
    p.add_argument("--per_device_batch_size", type=int, default=128,
                   help="pairs per device per batch, counted at max_length tokens each "
                        "(pairs are packed into rows up to that many tokens)")
    p.add_argument("--max_length", type=int, default=512,
                   help="tokens per pair; longer pairs are cut by the checkpoint's truncation "
                        "policy")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="compute dtype (parameters and scores stay float32)")
    p.add_argument("--jax_seed", type=int, default=42,
                   help="the deployer's seed (scoring draws nothing random)")
    p.add_argument("--per_template", action="store_true",
                   help="also print the accuracy of each template")
    p.add_argument("--output_file", default=None,
                   help="write the results as JSON (and <name>.predictions.jsonl beside it)")
    p.add_argument("--quiet", dest="verbose", action="store_false",
                   help="no Redco logs or progress bars")
    return p.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    if argv is None:  # a process of its own, computing with JAX only: seconds less start-up
        keep_torch_out_of_transformers()
    from cappy.promptsource.evaluate import run

    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
