"""`cappy promptsource-data` (= scripts/build_promptsource_test_data.py): build the zero-shot
test file of the paper's Table 1 from PromptSource templates.

    cappy promptsource-data --story_cloze_dir ~/data/story_cloze
    cappy promptsource-data --datasets anli,cb,rte --output_file small.jsonl

Writes `promptsource_test.jsonl` (the default --data_file of cappy_promptsource.py): one
row per answer choice, `{dataset_name, template_name, example_idx, instruction,
response, label}`, and `promptsource_test.jsonl.templates.json` beside it (the templates
used per dataset, example counts, what was skipped). Downloads the data from the Hugging
Face Hub (dataset ids in `cappy.promptsource.data`). StoryCloze must be downloaded by
hand; without --story_cloze_dir it is skipped, with a note.
"""

import dataclasses

from cappy.engine.config import setting
from cappy.engine.runtime.process import job_command
from cappy.promptsource.data import HF_IDS, STORY_CLOZE_FILE

COMMAND_DOC = __doc__


@dataclasses.dataclass(kw_only=True)
class PromptSourceDataConfig:
    """The test file builder's flags."""
    output_file: str = setting("promptsource_test.jsonl", "the test set written")
    datasets: str | None = setting(None, "comma-separated subset of anli_r1, anli_r2, anli_r3 "
                                   "(or anli), cb, rte, story_cloze, wsc, wic, winogrande, "
                                   "winogender, crows_pairs (default: all)", type=str)
    story_cloze_dir: str | None = setting(None, f"folder holding '{STORY_CLOZE_FILE}' "
                                          "(downloaded by hand)", type=str)
    hf_id: tuple = setting((), "read a source from another Hub repository with the same "
                           "fields (repeat the flag for several); sources and defaults: "
                           + ", ".join(f"{k}={v}" for k, v in HF_IDS.items()),
                           repeat="SOURCE=REPO")
    templates_dir: str | None = setting(None, "PromptSource templates folder or the "
                                        "promptsource-0.2.3 sdist .tar.gz (default: the "
                                        "templates shipped in cappy/data/promptsource_templates)",
                                        type=str)
    verbose: bool = setting(True, "no progress bars", flag="--quiet")


def run(config, load_examples=None):
    """Build the file; `load_examples(spec) -> list of dicts` replaces the Hub (tests)."""
    from cappy.promptsource.data import build_test_file, parse_dataset_names, parse_hf_ids

    build_test_file(config.output_file,
                    dataset_names=(parse_dataset_names(config.datasets) if config.datasets
                                   else None),
                    load_examples=load_examples, story_cloze_dir=config.story_cloze_dir,
                    templates_dir=config.templates_dir, hf_ids=parse_hf_ids(list(config.hf_id)),
                    progress=config.verbose)
    return 0


parse_args, main = job_command(PromptSourceDataConfig, COMMAND_DOC, run, computes=False)
