"""Build the zero-shot test file of the paper's Table 1 from PromptSource templates.

    python scripts/build_promptsource_test_data.py --story_cloze_dir ~/data/story_cloze
    python scripts/build_promptsource_test_data.py --datasets anli,cb,rte --output_file small.jsonl

Writes `promptsource_test.jsonl` (the default --data_file of cappy_promptsource.py): one
row per answer choice, `{dataset_name, template_name, example_idx, instruction,
response, label}`, and `promptsource_test.jsonl.templates.json` beside it (the templates
used per dataset, example counts, what was skipped). Downloads the data from the Hugging
Face Hub (dataset ids in cappy/promptsource/data.py). StoryCloze must be downloaded by
hand; without --story_cloze_dir it is skipped, with a note.
"""

import argparse
import sys

from cappy.engine.errors import exit_on_error
from cappy.promptsource.data import (HF_IDS, STORY_CLOZE_FILE, build_test_file,
                                     parse_dataset_names, parse_hf_ids)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output_file", default="promptsource_test.jsonl", help="the test set written")
    p.add_argument("--datasets", default=None,
                   help="comma-separated subset of anli_r1, anli_r2, anli_r3 (or anli), cb, rte, "
                        "story_cloze, wsc, wic, winogrande, winogender, crows_pairs (default: all)")
    p.add_argument("--story_cloze_dir", default=None,
                   help=f"folder holding '{STORY_CLOZE_FILE}' (downloaded by hand)")
    p.add_argument("--hf_id", action="append", default=[], metavar="SOURCE=REPO",
                   help="read a source from another Hub repository with the same fields; "
                        f"sources and defaults: {', '.join(f'{k}={v}' for k, v in HF_IDS.items())}")
    p.add_argument("--templates_dir", default=None,
                   help="PromptSource templates folder or the promptsource-0.2.3 sdist .tar.gz "
                        "(default: the templates shipped in cappy/data/promptsource_templates)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


@exit_on_error
def main(argv=None, load_examples=None):
    """`load_examples(spec) -> list of dicts` replaces the Hub (tests use it)."""
    args = parse_args(argv)
    build_test_file(args.output_file,
                    dataset_names=parse_dataset_names(args.datasets) if args.datasets else None,
                    load_examples=load_examples, story_cloze_dir=args.story_cloze_dir,
                    templates_dir=args.templates_dir, hf_ids=parse_hf_ids(args.hf_id),
                    progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
