"""Build Cappy's pretraining data from T0's training mixture (38 PromptSource datasets).

Full scale, as the paper (every template, 500k examples per dataset, responses of
BART0 and T0-3B labelled by ROUGE-L; needs the Hugging Face hub and accelerators):

    python scripts/build_pretraining_data.py --output_dir pretraining_data \\
        --augment_models yuchenlin/BART0,bigscience/T0_3B

Small, to look at the rows (no generator, 1000 examples of two datasets):

    python scripts/build_pretraining_data.py --output_dir pretraining_sample \\
        --datasets glue/mrpc,samsum --max_examples_per_dataset 1000 --shard_size 5000

Writes `{output_dir}/shards/{train,validation}-NNNNN.jsonl` (rows `instruction`,
`response`, `label`, `source`) and `{output_dir}/manifest.json`. An interrupted run
resumes when the same command is run again. See cappy/pretraining/data.py for the
datasets, the held-out evaluation data, the row kinds and the sharding rule.
"""

import argparse
import json

from cappy.pretraining import data as pd
from cappy.engine.errors import CappyError, device_memory_guard, exit_on_error
from cappy.engine.flags import comma_list
from cappy.engine.io import read_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output_dir", default="pretraining_data",
                        help="where manifest.json and the shards are written")
    parser.add_argument("--datasets", default=None,
                        help="comma-separated names from --list_datasets (a dataset name "
                             "selects all its subsets; default: all 38)")
    parser.add_argument("--list_datasets", action="store_true",
                        help="print the datasets, their hub ids and template counts, then exit")
    parser.add_argument("--dataset_overrides", default=None,
                        help="JSON file {name: {hf_path, hf_config, hf_split, revision, "
                             "category, renames}} changing or adding datasets")
    parser.add_argument("--templates_dir", default=None,
                        help="templates folder laid out like promptsource/templates/, or the "
                             "promptsource-0.2.3 sdist (default: the shipped templates)")
    parser.add_argument("--shard_size", type=int, default=pd.DEFAULT_SHARD_SIZE,
                        help="rows per shard (a shard ends at the first example boundary "
                             "at or after this many rows)")
    parser.add_argument("--validation_fraction", type=float,
                        default=pd.DEFAULT_VALIDATION_FRACTION,
                        help="fraction of examples (by a stable hash) whose rows go to "
                             "validation shards")
    parser.add_argument("--n_mismatched", type=int, default=1,
                        help="responses of other examples (same dataset and template) per "
                             "instruction, label 0")
    parser.add_argument("--mismatch_pool", type=int, default=pd.DEFAULT_MISMATCH_POOL,
                        help="recent targets per template that mismatches are drawn from")
    parser.add_argument("--max_examples_per_dataset", type=int,
                        default=pd.T0_MAX_EXAMPLES_PER_DATASET,
                        help="first N training examples of each dataset (T0: 500000; 0 = all)")
    parser.add_argument("--batch_examples", type=int, default=pd.DEFAULT_BATCH_EXAMPLES,
                        help="examples rendered (and sent to the generators) at once")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the mismatched targets and the sampled responses")
    parser.add_argument("--augment_models", default=None,
                        help="comma-separated generators (hub ids or folders; T5, BART, "
                             "GPT-2 or Llama-family) whose sampled responses are added, "
                             "labelled by ROUGE-L; the paper used yuchenlin/BART0 and "
                             "bigscience/T0_3B")
    parser.add_argument("--augment_decodings", default=",".join(pd.DEFAULT_AUGMENT_DECODINGS),
                        help="decodings to sample with: beam4, sampling, temp0.9, topk40, "
                             "topp0.95")
    parser.add_argument("--augment_samples", type=int, default=1,
                        help="samples per sampling decoding (beam search runs once)")
    parser.add_argument("--augment_batch_size", type=int, default=8,
                        help="generator batch size per device")
    parser.add_argument("--augment_max_src_len", type=int, default=512,
                        help="instruction tokens the augmenting generators keep")
    parser.add_argument("--augment_max_tgt_len", type=int, default=64,
                        help="most tokens of a sampled response")
    parser.add_argument("--augment_dtype", default="bfloat16",
                        choices=["float32", "float16", "bfloat16"],
                        help="the augmenting generators' weights and compute dtype")
    parser.add_argument("--n_model_shards", type=int, default=1,
                        help="devices each generator is split over")
    parser.add_argument("--no_progress", "--quiet", dest="no_progress", action="store_true",
                        help="no progress bars")
    return parser.parse_args(argv)


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


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    specs = list(pd.T0_TRAINING_DATASETS)
    if args.dataset_overrides:
        specs = pd.apply_overrides(specs, read_json(args.dataset_overrides),
                                   source=args.dataset_overrides)
    if args.list_datasets:
        list_datasets(pd.resolve_specs(args.datasets, specs), args.templates_dir)
        return
    if args.max_examples_per_dataset is not None and args.max_examples_per_dataset < 0:
        raise CappyError("--max_examples_per_dataset must be 0 (all) or more")
    settings = pd.BuildSettings(
        seed=args.seed, shard_size=args.shard_size,
        validation_fraction=args.validation_fraction, n_mismatched=args.n_mismatched,
        mismatch_pool=args.mismatch_pool,
        max_examples_per_dataset=args.max_examples_per_dataset or None,
        batch_examples=args.batch_examples, augment_models=tuple(comma_list(args.augment_models) or ()),
        augment_decodings=tuple(comma_list(args.augment_decodings) or ()),
        augment_samples=args.augment_samples, augment_batch_size=args.augment_batch_size,
        augment_max_src_len=args.augment_max_src_len,
        augment_max_tgt_len=args.augment_max_tgt_len, augment_dtype=args.augment_dtype,
        n_model_shards=args.n_model_shards)
    with device_memory_guard(
            f"lower --augment_batch_size ({args.augment_batch_size}), --augment_max_src_len "
            f"({args.augment_max_src_len}) or --augment_max_tgt_len "
            f"({args.augment_max_tgt_len}), or split each generator over more devices with "
            f"--n_model_shards ({args.n_model_shards})",
            lambda: "the finished shards are kept (a re-run with the same flags resumes from "
                    "them)"):
        manifest = pd.build_pretraining_data(
            args.output_dir, settings, datasets=args.datasets, specs=specs,
            templates_dir=args.templates_dir, progress=not args.no_progress)
    counts = manifest["counts"]
    width = max([len(name) for name in counts] + [7])
    print(f"{'dataset':<{width}}  {'rows':>10}  {'pairs':>9}  kinds")
    for name, part in counts.items():
        print(f"{name:<{width}}  {part['rows']:>10}  {part['pairs']:>9}  "
              f"{json.dumps(part['kinds'])}")
    totals = manifest["totals"]
    print(f"wrote {totals['train']} train and {totals['validation']} validation rows in "
          f"{len(manifest['shards']['train'])} + {len(manifest['shards']['validation'])} "
          f"shards to {args.output_dir}")


if __name__ == "__main__":
    main()
