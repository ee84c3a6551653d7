"""`cappy pretraining-data` (= scripts/build_pretraining_data.py): build Cappy's pretraining
data from T0's training mixture (38 PromptSource datasets).

Full scale, as the paper (every template, 500k examples per dataset, responses of
BART0 and T0-3B labelled by ROUGE-L; needs the Hugging Face hub and accelerators):

    cappy pretraining-data --output_dir pretraining_data \\
        --augment_models yuchenlin/BART0,bigscience/T0_3B

Small, to look at the rows (no generator, 1000 examples of two datasets):

    cappy pretraining-data --output_dir pretraining_sample \\
        --datasets glue/mrpc,samsum --max_examples_per_dataset 1000 --shard_size 5000

Writes `{output_dir}/shards/{train,validation}-NNNNN.jsonl` (rows `instruction`,
`response`, `label`, `source`) and `{output_dir}/manifest.json`. An interrupted run
resumes when the same command is run again. See `cappy.pretraining.data` for the
datasets, the held-out evaluation data, the row kinds and the sharding rule.
"""

import dataclasses
import json

from cappy.engine.config import setting
from cappy.engine.runtime.process import job_command
from cappy.pretraining import data as pd

COMMAND_DOC = __doc__


@dataclasses.dataclass(kw_only=True)
class BuildDataConfig:
    """The builder's flags: where, which datasets, and the content of the shards
    (`cappy.pretraining.data.BuildSettings`, recorded in the manifest)."""
    output_dir: str = setting("pretraining_data", "where manifest.json and the shards are "
                              "written")
    datasets: str | None = setting(None, "comma-separated names from --list_datasets (a "
                                   "dataset name selects all its subsets; default: all 38)",
                                   type=str)
    list_datasets: bool = setting(False, "print the datasets, their hub ids and template "
                                  "counts, then exit")
    dataset_overrides: str | None = setting(None, "JSON file {name: {hf_path, hf_config, "
                                            "hf_split, revision, category, renames}} changing "
                                            "or adding datasets", type=str)
    templates_dir: str | None = setting(None, "templates folder laid out like "
                                        "promptsource/templates/, or the promptsource-0.2.3 "
                                        "sdist (default: the shipped templates)", type=str)
    shard_size: int = setting(pd.DEFAULT_SHARD_SIZE, "rows per shard (a shard ends at the first "
                              "example boundary at or after this many rows)", at_least=1)
    validation_fraction: float = setting(pd.DEFAULT_VALIDATION_FRACTION, "fraction of examples "
                                         "(by a stable hash) whose rows go to validation "
                                         "shards, in [0, 1)", at_least=0)
    n_mismatched: int = setting(1, "responses of other examples (same dataset and template) "
                                "per instruction, label 0", at_least=0)
    mismatch_pool: int = setting(pd.DEFAULT_MISMATCH_POOL, "recent targets per template that "
                                 "mismatches are drawn from", at_least=1)
    max_examples_per_dataset: int = setting(pd.T0_MAX_EXAMPLES_PER_DATASET, "first N training "
                                            "examples of each dataset (T0: 500000; 0 = all)",
                                            at_least=0)
    batch_examples: int = setting(pd.DEFAULT_BATCH_EXAMPLES, "examples rendered (and sent to "
                                  "the generators) at once", at_least=1)
    seed: int = setting(42, "seed of the mismatched targets and the sampled responses")
    augment_models: str | None = setting(None, "comma-separated generators (hub ids or "
                                         "folders; T5, BART, GPT-2 or Llama-family) whose "
                                         "sampled responses are added, labelled by ROUGE-L; "
                                         "the paper used yuchenlin/BART0 and bigscience/T0_3B",
                                         type=str)
    augment_decodings: str = setting(",".join(pd.DEFAULT_AUGMENT_DECODINGS), "decodings to "
                                     "sample with: beam4, sampling, temp0.9, topk40, topp0.95")
    augment_samples: int = setting(1, "samples per sampling decoding (beam search runs once)",
                                   at_least=1)
    augment_batch_size: int = setting(8, "generator batch size per device", at_least=1)
    augment_max_src_len: int = setting(512, "instruction tokens the augmenting generators keep",
                                       at_least=1)
    augment_max_tgt_len: int = setting(64, "most tokens of a sampled response", at_least=1)
    augment_dtype: str = setting("bfloat16", "the augmenting generators' weights and compute "
                                 "dtype", choices=["float32", "float16", "bfloat16"])
    n_model_shards: int = setting(1, "devices each generator is split over", at_least=1)
    verbose: bool = setting(True, "no progress bars", flag=("--quiet", "--no_progress"))

    def build_settings(self):
        """What decides the shards' content, as the manifest records it."""
        from cappy.engine.flags import comma_list

        return pd.BuildSettings(
            seed=self.seed, shard_size=self.shard_size,
            validation_fraction=self.validation_fraction, n_mismatched=self.n_mismatched,
            mismatch_pool=self.mismatch_pool,
            max_examples_per_dataset=self.max_examples_per_dataset or None,
            batch_examples=self.batch_examples,
            augment_models=tuple(comma_list(self.augment_models) or ()),
            augment_decodings=tuple(comma_list(self.augment_decodings) or ()),
            augment_samples=self.augment_samples, augment_batch_size=self.augment_batch_size,
            augment_max_src_len=self.augment_max_src_len,
            augment_max_tgt_len=self.augment_max_tgt_len, augment_dtype=self.augment_dtype,
            n_model_shards=self.n_model_shards)


def list_datasets(specs, templates_dir):
    from cappy.promptsource.templates import load_templates

    width = max(len(spec.name) for spec in specs)
    total = 0
    for spec in specs:
        n_templates = len(load_templates(spec.templates_dataset, spec.templates_subset,
                                         templates_dir))
        total += n_templates
        print(f"{spec.name:<{width}}  {n_templates:>3}  {spec.category:<26}  "
              f"{spec.describe_source()}")
    print(f"{len(specs)} datasets, {total} templates")


def run(config):
    from cappy.engine.errors import device_memory_guard
    from cappy.engine.io import read_json

    specs = list(pd.T0_TRAINING_DATASETS)
    if config.dataset_overrides:
        specs = pd.apply_overrides(specs, read_json(config.dataset_overrides),
                                   source=config.dataset_overrides)
    if config.list_datasets:
        list_datasets(pd.resolve_specs(config.datasets, specs), config.templates_dir)
        return
    settings = config.build_settings()
    with device_memory_guard(
            f"lower --augment_batch_size ({config.augment_batch_size}), --augment_max_src_len "
            f"({config.augment_max_src_len}) or --augment_max_tgt_len "
            f"({config.augment_max_tgt_len}), or split each generator over more devices with "
            f"--n_model_shards ({config.n_model_shards})",
            lambda: "the finished shards are kept (a re-run with the same flags resumes from "
                    "them)"):
        manifest = pd.build_pretraining_data(
            config.output_dir, settings, datasets=config.datasets, specs=specs,
            templates_dir=config.templates_dir, progress=config.verbose)
    counts = manifest["counts"]
    width = max([len(name) for name in counts] + [7])
    print(f"{'dataset':<{width}}  {'rows':>10}  {'pairs':>9}  kinds")
    for name, part in counts.items():
        print(f"{name:<{width}}  {part['rows']:>10}  {part['pairs']:>9}  "
              f"{json.dumps(part['kinds'])}")
    totals = manifest["totals"]
    print(f"wrote {totals['train']} train and {totals['validation']} validation rows in "
          f"{len(manifest['shards']['train'])} + {len(manifest['shards']['validation'])} "
          f"shards to {config.output_dir}")


parse_args, main = job_command(BuildDataConfig, COMMAND_DOC, run)
