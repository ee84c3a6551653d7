"""Build tiny random models for offline runs and tests (their outputs mean nothing).

    python scripts/make_tiny_models.py --output_dir demo_run/models

Writes `tiny-cappy` (RoBERTa regression scorer, num_labels=1), `tiny-t5`
(seq2seq generator) and `tiny-gpt2` (decoder-only generator), each a Hugging
Face folder with a tokenizer trained on local text (the shipped BIG-Bench
sample), loadable with `from_pretrained` like a real checkpoint. Existing
folders are kept unless --overwrite.
"""

import argparse
import sys

from cappy.engine.errors import exit_on_error
from cappy.engine.flags import comma_list

MODELS = ("tiny-cappy", "tiny-t5", "tiny-gpt2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output_dir", default="demo_run/models",
                        help="where the models are written")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated models to write")
    parser.add_argument("--overwrite", action="store_true", help="replace models already there")
    parser.add_argument("--quiet", action="store_true", help="do not list the folders written")
    return parser.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    from cappy.engine.tiny_models import build_tiny_models

    for name, path in build_tiny_models(args.output_dir, comma_list(args.models, "--models"),
                                        overwrite=args.overwrite).items():
        if not args.quiet:
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
