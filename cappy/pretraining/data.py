"""Cappy's pretraining data, rebuilt from T0's training mixture (docs/DESIGN.md section 1).

The paper pretrains RoBERTa-large into Cappy on about 160 million labelled
(instruction, response) pairs from "39 PromptSource datasets used to train T0"; the
authors released neither the data nor the script. This module builds such data.

Datasets. T0's training mixture is every row of PromptSource's
`seqio_tasks/experiment_D4.csv` with `do_train` set: 39 (dataset, subset) rows, which is
where the paper's "39" comes from. One of them, `tydiqa` (no subset), has no templates
at that name in PromptSource (its templates sit under `tydiqa/primary_task` and
`tydiqa/secondary_task`), so T0 trained on nothing from it and neither does this
module: `T0_TRAINING_DATASETS` holds the other 38, which are the 35 datasets of the T0
paper's figure with Adversarial QA counted as its 3 subsets and DuoRC as its 2, in T0's
eight task clusters:

- multiple-choice QA: cos_e/v1.11, cosmos_qa, dream, qasc, quail, quarel, quartz, sciq,
  social_i_qa, wiki_hop/original, wiqa
- extractive QA: adversarial_qa/{dbidaf,dbert,droberta}, duorc/{SelfRC,ParaphraseRC},
  quoref, ropes
- closed-book QA: kilt_tasks/hotpotqa, wiki_qa
- structure-to-text: common_gen, wiki_bio
- sentiment: amazon_polarity, app_reviews, imdb, rotten_tomatoes, yelp_review_full
- summarization: cnn_dailymail/3.0.0, gigaword, multi_news, samsum, xsum
- topic classification: ag_news, dbpedia_14, trec
- paraphrase identification: glue/mrpc, glue/qqp, paws/labeled_final

Templates: as T0, every PromptSource 0.2.3 template of each dataset (313 in all),
whether or not it asks the dataset's original task; an (example, template) pair whose
instruction or target renders empty is skipped, as T0 drops it. (T0's task blacklist
names one template of these datasets, gigaword's `summarize_`, left out for a broken
cache; no 0.2.3 template has that name.) The `templates.yaml` files are shipped in
`cappy/data/promptsource_templates/`; `templates_dir` may point at another folder or
at the promptsource-0.2.3 sdist instead. Examples: the Hugging Face train split,
capped at T0's 500,000 examples per dataset (`max_examples_per_dataset`).

Held out: the evaluation datasets of docs/DESIGN.md section 2 (ANLI, CB, RTE, WiC, WSC,
WinoGender = super_glue/axg, Winogrande, StoryCloze, Crows-Pairs), plus the same data
under other names (glue/rte, winograd_wsc, winogender), can never be selected:
`check_not_held_out` raises for them, for the table and for user overrides alike.

Hub ids. Each `DatasetSpec` names the Hugging Face repository, config and split that
should load with datasets==4.4.1, which no longer runs loading scripts. They could not
be checked from where this was written (no hub access): they are the organisation
repositories the canonical datasets moved to. When a repository still has only a
loading script, `load_hub_examples` retries its parquet export (`refs/convert/parquet`,
folder = config or `default`). Two datasets renamed fields since PromptSource wrote its
templates, and are renamed back (`DatasetSpec.renames`): trec (`coarse_label`,
`fine_label`) and wiki_hop, read from `community-datasets/qangaroo` (`query`). TREC's
class ids were also reordered (and its fine classes renamed `LOC:city` and so on), so
they are converted by class name to the order the templates index
(`DatasetSpec.label_names`); without that its gold answers would be wrong. Every field
is overridable (`apply_overrides`, the script's `--dataset_overrides`), and new
datasets can be added the same way.

Rows. For each (example, template) with a target, in this order, each distinct response
once per instruction:
- the rendered target, label 1.0 (kind `gold`);
- each other answer choice of the template, label 0.0 (kind `choice`);
- `n_mismatched` targets of other examples of the same dataset and template, label 0.0
  (kind `mismatch`), drawn with a seeded generator from the targets of the shard's
  current batch and of its last `mismatch_pool` earlier examples;
- with `augment_models`: responses sampled from each generator (T5, BART, GPT-2 or a
  Llama-family model, through `cappy.engine.jobs.candidate_generation.CandidateGenerator`; the paper used
  BART0 and T0-3B, both supported) with `augment_decodings` (`augment_samples` samples
  of each sampling decoding, beam search once), labelled with the ROUGE-L F-measure
  against the gold response (`cappy.engine.rouge.rouge_l`); empty responses and repeats
  are skipped (kind `augment/<model folder name>`).

A row is `{"instruction", "response", "label", "source"}` with source
`"<dataset>:<template name>:<kind>"`, e.g. `"glue/mrpc:want to know:gold"` or
`"xsum:summarize_DOC:augment/T0_3B"`. Template names may contain `:`, dataset names and
kinds never do: `parse_source` splits at the first and the last `:`.

Validation: an example goes to the validation split when a stable hash of its dataset
name and content falls under `validation_fraction`, so all rows of an example (every
template, every kind) land in the same split.

Output (`output_dir`): `shards/{split}-{index:05d}.jsonl` and `manifest.json`. Shards
are numbered per split in the order they are finished; each holds rows of one dataset
only. A dataset's examples of one split are cut into consecutive slices: a shard takes
whole examples until it has at least `shard_size` rows (the last one of a slice may have
fewer). Everything random in a shard (mismatch draws, generator sampling) is seeded by
(seed, dataset, split, the shard's first example), and the mismatch pool starts empty
in each shard, so a shard is a function of its slice of examples and the settings. The
manifest lists a shard only once its file is complete (written atomically), with its
example slice and counts; a run that stops for any reason is resumed by running the
same command again: listed shards whose file exists are kept untouched, listed shards
whose file is missing are rebuilt from their slice (byte for byte, on the same software
and devices), and each dataset continues after its last listed shard. Changed settings
are refused (use a new output folder). Memory holds one shard's rows and one batch of
examples, however large the data.

Rows of one example sit together and shards follow the dataset order, so a trainer
should read shards in a shuffled order through a shuffle buffer (cappy/pretraining/train.py
does).

Manifest: `{"format", "complete", "settings", "shards": {split: [{"file", "rows",
"dataset", "first_example", "end_example", "counts"}]}, "counts": {dataset: counts},
"totals": {split: rows}, "datasets": {dataset: {"hf", "templates", split: {"complete",
"examples", "trailing_counts"}}}}`. Examples are numbered per (dataset, split) from 0;
`trailing_counts` counts examples after a dataset's last shard that gave no row.
counts = `{"rows", "examples", "pairs", "skipped_pairs", "kinds": {kind: rows},
"labels": {bucket: rows}, "templates": {template: pairs}}`: pairs are (example,
template) pairs with rows, skipped pairs those that rendered empty or failed to render;
the label buckets are `0`, `(0,0.25)`, `[0.25,0.5)`, `[0.5,0.75)`, `[0.75,1)`, `1`.
"""

import collections
import dataclasses
import hashlib
import json
import os
import random

from cappy.engine.errors import CappyError
from cappy.engine.flags import comma_list
from cappy.engine.io import atomic_open, read_json, remove_stale_temporaries, write_json
from cappy.engine.runtime.leader import progress_bar
from cappy.pretraining.shards import (
    MANIFEST_NAME,
    SHARDS_DIR,
    SPLITS,
    manifest_path,
    shard_checksum,
    shard_file,
)

FORMAT = "cappy-pretraining-data/1"
GOLD, CHOICE, MISMATCH = "gold", "choice", "mismatch"
AUGMENT_PREFIX = "augment/"
T0_MAX_EXAMPLES_PER_DATASET = 500_000
DEFAULT_SHARD_SIZE = 100_000
DEFAULT_VALIDATION_FRACTION = 0.01
DEFAULT_MISMATCH_POOL = 1000
DEFAULT_BATCH_EXAMPLES = 256
DEFAULT_AUGMENT_DECODINGS = ("beam4", "topp0.95")
LABEL_BUCKETS = ("0", "(0,0.25)", "[0.25,0.5)", "[0.5,0.75)", "[0.75,1)", "1")


# ---------------------------------------------------------------------------
# The training mixture


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the mixture: its PromptSource name and where its examples come from."""

    name: str                   # PromptSource "dataset" or "dataset/subset" (the templates)
    category: str               # T0's task cluster
    hf_path: str                # Hugging Face dataset repository
    hf_config: str | None = None
    hf_split: str = "train"
    revision: str | None = None
    renames: tuple = ()         # ((field on the hub, field the templates use), ...)
    # ((hub field, class names in the order the templates index them), ...): the hub's
    # class ids are converted by name (see relabel_maps)
    label_names: tuple = ()

    @property
    def templates_dataset(self):
        return self.name.split("/", 1)[0]

    @property
    def templates_subset(self):
        parts = self.name.split("/", 1)
        return parts[1] if len(parts) == 2 else None

    def describe_source(self):
        config = f" ({self.hf_config})" if self.hf_config else ""
        revision = f" @ {self.revision}" if self.revision else ""
        return f"{self.hf_path}{config} {self.hf_split}{revision}"


_MCQA = "multiple-choice QA"
_EXQA = "extractive QA"
_CBQA = "closed-book QA"
_S2T = "structure-to-text"
_SENT = "sentiment"
_SUMM = "summarization"
_TOPIC = "topic classification"
_PARA = "paraphrase identification"

T0_CATEGORIES = (_MCQA, _EXQA, _CBQA, _S2T, _SENT, _SUMM, _TOPIC, _PARA)

# TREC's classes in the order PromptSource's trec templates index them (the order of the
# `trec` dataset in 2021; its answer choices spell them out). The hub's CogComp/trec
# since orders and names them differently ("ABBR", ..., fine "LOC:city", ...).
TREC_COARSE_NAMES = ("DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC")
TREC_FINE_NAMES = (
    "manner", "cremat", "animal", "exp", "ind", "gr", "title", "def", "date", "reason",
    "event", "state", "desc", "count", "other", "letter", "religion", "food", "country",
    "color", "termeq", "city", "body", "dismed", "mount", "money", "product", "period",
    "substance", "sport", "plant", "techmeth", "volsize", "instru", "abb", "speed", "word",
    "lang", "perc", "code", "dist", "temp", "symbol", "ord", "veh", "weight", "currency")

T0_TRAINING_DATASETS = (
    DatasetSpec("cos_e/v1.11", _MCQA, "Salesforce/cos_e", "v1.11"),
    DatasetSpec("cosmos_qa", _MCQA, "allenai/cosmos_qa"),
    DatasetSpec("dream", _MCQA, "dataset-org/dream"),
    DatasetSpec("qasc", _MCQA, "allenai/qasc"),
    DatasetSpec("quail", _MCQA, "textmachinelab/quail"),
    DatasetSpec("quarel", _MCQA, "allenai/quarel"),
    DatasetSpec("quartz", _MCQA, "allenai/quartz"),
    DatasetSpec("sciq", _MCQA, "allenai/sciq"),
    DatasetSpec("social_i_qa", _MCQA, "allenai/social_i_qa"),
    DatasetSpec("wiki_hop/original", _MCQA, "community-datasets/qangaroo", "wikihop",
                renames=(("query", "question"),)),
    DatasetSpec("wiqa", _MCQA, "allenai/wiqa"),
    DatasetSpec("adversarial_qa/dbidaf", _EXQA, "UCLNLP/adversarial_qa", "dbidaf"),
    DatasetSpec("adversarial_qa/dbert", _EXQA, "UCLNLP/adversarial_qa", "dbert"),
    DatasetSpec("adversarial_qa/droberta", _EXQA, "UCLNLP/adversarial_qa", "droberta"),
    DatasetSpec("duorc/SelfRC", _EXQA, "ibm-research/duorc", "SelfRC"),
    DatasetSpec("duorc/ParaphraseRC", _EXQA, "ibm-research/duorc", "ParaphraseRC"),
    DatasetSpec("quoref", _EXQA, "allenai/quoref"),
    DatasetSpec("ropes", _EXQA, "allenai/ropes"),
    DatasetSpec("kilt_tasks/hotpotqa", _CBQA, "facebook/kilt_tasks", "hotpotqa"),
    DatasetSpec("wiki_qa", _CBQA, "microsoft/wiki_qa"),
    DatasetSpec("common_gen", _S2T, "allenai/common_gen"),
    DatasetSpec("wiki_bio", _S2T, "michaelauli/wiki_bio"),
    DatasetSpec("amazon_polarity", _SENT, "fancyzhx/amazon_polarity"),
    DatasetSpec("app_reviews", _SENT, "sealuzh/app_reviews"),
    DatasetSpec("imdb", _SENT, "stanfordnlp/imdb"),
    DatasetSpec("rotten_tomatoes", _SENT, "cornell-movie-review-data/rotten_tomatoes"),
    DatasetSpec("yelp_review_full", _SENT, "Yelp/yelp_review_full"),
    DatasetSpec("cnn_dailymail/3.0.0", _SUMM, "abisee/cnn_dailymail", "3.0.0"),
    DatasetSpec("gigaword", _SUMM, "Harvard/gigaword"),
    DatasetSpec("multi_news", _SUMM, "alexfabbri/multi_news"),
    DatasetSpec("samsum", _SUMM, "Samsung/samsum"),
    DatasetSpec("xsum", _SUMM, "EdinburghNLP/xsum"),
    DatasetSpec("ag_news", _TOPIC, "fancyzhx/ag_news"),
    DatasetSpec("dbpedia_14", _TOPIC, "fancyzhx/dbpedia_14"),
    DatasetSpec("trec", _TOPIC, "CogComp/trec",
                renames=(("coarse_label", "label_coarse"), ("fine_label", "label_fine")),
                label_names=(("coarse_label", TREC_COARSE_NAMES),
                             ("fine_label", TREC_FINE_NAMES))),
    DatasetSpec("glue/mrpc", _PARA, "nyu-mll/glue", "mrpc"),
    DatasetSpec("glue/qqp", _PARA, "nyu-mll/glue", "qqp"),
    DatasetSpec("paws/labeled_final", _PARA, "google-research-datasets/paws", "labeled_final"),
)

# The evaluation data (docs/DESIGN.md section 2) under every name it goes by:
# (dataset, subset or None for all subsets) -> the evaluation task it is.
HELD_OUT = {
    ("anli", None): "ANLI",
    ("super_glue", "cb"): "CB",
    ("super_glue", "rte"): "RTE",
    ("glue", "rte"): "RTE (the same data as SuperGLUE RTE)",
    ("super_glue", "wic"): "WiC",
    ("super_glue", "wsc.fixed"): "WSC",
    ("super_glue", "wsc"): "WSC",
    ("winograd_wsc", None): "WSC (the Winograd schemas)",
    ("super_glue", "axg"): "WinoGender",
    ("winogender", None): "WinoGender",
    ("winogrande", None): "Winogrande",
    ("story_cloze", None): "StoryCloze",
    ("crows_pairs", None): "Crows-Pairs",
}


def _normalized_dataset(name):
    # "aps/super_glue" -> "super_glue"; hub ids use "-" where PromptSource uses "_"
    return name.rstrip("/").rsplit("/", 1)[-1].lower().replace("-", "_")


def held_out_reason(dataset, subset=None):
    """The evaluation task a (dataset, subset) belongs to, or None when it may be used."""
    dataset = _normalized_dataset(dataset)
    subset = subset.lower() if isinstance(subset, str) else subset
    return HELD_OUT.get((dataset, None)) or HELD_OUT.get((dataset, subset))


def check_not_held_out(spec):
    """Raise a CappyError when `spec` names evaluation data, by template or hub name."""
    for dataset, subset in ((spec.templates_dataset, spec.templates_subset),
                            (spec.hf_path, spec.hf_config)):
        reason = held_out_reason(dataset, subset)
        if reason:
            raise CappyError(f"{spec.name} ({spec.hf_path}) is held out: the zero-shot "
                             f"evaluation uses it ({reason}), so Cappy must never be "
                             f"pretrained on it")


_SPEC_FIELDS = {"category": str, "hf_path": str, "hf_config": (str, type(None)),
                "hf_split": str, "revision": (str, type(None)), "renames": dict,
                "label_names": dict}


def apply_overrides(specs, overrides, source="--dataset_overrides"):
    """Replace fields of table entries, or add datasets, from {name: {field: value}}.

    Fields: hf_path, hf_config, hf_split, revision, category, renames ({hub field:
    template field}), label_names ({hub field: [class names the templates index]}).
    A new name needs at least hf_path; its templates must exist.
    """
    if not isinstance(overrides, dict):
        raise CappyError(f"{source}: must be a JSON object {{dataset: {{field: value}}}}")
    by_name = {spec.name: spec for spec in specs}
    for name, fields in overrides.items():
        if not isinstance(fields, dict):
            raise CappyError(f"{source}: {name}: must be an object of fields")
        for field, value in fields.items():
            if field not in _SPEC_FIELDS:
                raise CappyError(f"{source}: {name}: unknown field {field!r} (expected one "
                                 f"of {', '.join(_SPEC_FIELDS)})")
            if not isinstance(value, _SPEC_FIELDS[field]):
                raise CappyError(f"{source}: {name}: field {field!r} has the wrong type")
        values = dict(fields)
        if "renames" in values:
            if not all(isinstance(k, str) and isinstance(v, str)
                       for k, v in values["renames"].items()):
                raise CappyError(f"{source}: {name}: renames must map strings to strings")
            values["renames"] = tuple(values["renames"].items())
        if "label_names" in values:
            if not all(isinstance(names, list) and all(isinstance(n, str) for n in names)
                       for names in values["label_names"].values()):
                raise CappyError(f"{source}: {name}: label_names must map fields to lists "
                                 f"of class names")
            values["label_names"] = tuple((field, tuple(names))
                                          for field, names in values["label_names"].items())
        if name in by_name:
            by_name[name] = dataclasses.replace(by_name[name], **values)
        else:
            if "hf_path" not in values:
                raise CappyError(f"{source}: {name}: a new dataset needs 'hf_path'")
            values.setdefault("category", "added")
            by_name[name] = DatasetSpec(name=name, **values)
    for spec in by_name.values():
        check_not_held_out(spec)
    return list(by_name.values())


def resolve_specs(datasets_arg=None, specs=None):
    """The datasets to build, in table order: all of `specs` (default: T0's mixture),
    or those named in the comma-separated `datasets_arg` ("glue/mrpc", or "glue" for
    every subset of it)."""
    specs = list(T0_TRAINING_DATASETS if specs is None else specs)
    for spec in specs:
        check_not_held_out(spec)
    if datasets_arg is None:
        chosen = specs
    else:
        wanted = comma_list(datasets_arg, "--datasets")
        chosen = []
        for name in wanted:
            matches = [spec for spec in specs
                       if name in (spec.name, spec.templates_dataset)]
            if not matches:
                subset = name.split("/", 1)[1] if "/" in name else None
                reason = held_out_reason(name.split("/", 1)[0], subset)
                if reason:
                    raise CappyError(f"--datasets: {name} is held out: the zero-shot "
                                     f"evaluation uses it ({reason})")
                raise CappyError(f"--datasets: unknown dataset {name!r} (known: "
                                 f"{', '.join(spec.name for spec in specs)})")
            chosen.extend(matches)
        chosen = [spec for spec in specs if spec in chosen]
    if not chosen:
        raise CappyError("no datasets to build")
    return chosen


# ---------------------------------------------------------------------------
# Examples


def relabel_maps(spec, features):
    """{hub field: {hub class id: class id the templates expect}} for `spec.label_names`.

    `features` are the hub dataset's (`datasets.Features`). A hub class name matches a
    template class name as it is or by its part after ":" ("LOC:city" -> "city").
    """
    maps = {}
    for field, names in spec.label_names:
        hub_names = getattr((features or {}).get(field), "names", None)
        if not hub_names:
            raise CappyError(f"{spec.name}: {spec.hf_path} gives no class names for field "
                             f"{field!r}, so its ids cannot be matched to the templates'")
        mapping = {}
        for hub_id, hub_name in enumerate(hub_names):
            key = hub_name if hub_name in names else hub_name.split(":")[-1]
            if key not in names:
                raise CappyError(f"{spec.name}: class {hub_name!r} of field {field!r} is "
                                 f"not one the templates know ({', '.join(names)})")
            mapping[hub_id] = names.index(key)
        maps[field] = mapping
    return maps


def relabel_example(example, maps):
    """`example` with its class ids converted by `maps` (from relabel_maps)."""
    if not maps:
        return example
    example = dict(example)
    for field, mapping in maps.items():
        if field in example:
            example[field] = mapping.get(example[field], example[field])
    return example


def load_hub_examples(spec):
    """Stream the examples of `spec` from the Hugging Face hub (datasets streaming;
    a repository with only a loading script through its parquet export, cappy.engine.dataset_hub)."""
    from cappy.engine.dataset_hub import hub_error, load_hub_dataset

    try:
        stream = load_hub_dataset(spec.hf_path, spec.hf_config, spec.hf_split, streaming=True,
                                  revision=spec.revision)
        maps = {}
        if spec.label_names:
            features = stream.features
            if features is None:  # not in the repository's metadata: read from the data
                features = stream._resolve_features().features
            maps = relabel_maps(spec, features)
        for example in stream:
            yield relabel_example(example, maps)
    except CappyError:
        raise
    except Exception as error:  # network, hub or schema trouble: one clear line
        raise hub_error(f"{spec.name} ({spec.describe_source()})", error,
                        "fix the id with --dataset_overrides; a rerun resumes") from None


def adapt_example(spec, example):
    """Rename fields for the templates: `spec.renames`, then `-` to `_` as T0 does."""
    from cappy.promptsource.templates import hyphens_to_underscores

    example = dict(example)
    for hub_field, template_field in spec.renames:
        if hub_field in example and template_field not in example:
            example[template_field] = example.pop(hub_field)
    return hyphens_to_underscores(example)


def example_split(dataset_name, example, validation_fraction):
    """"train" or "validation" for one example, from a stable hash of its content."""
    if validation_fraction <= 0:
        return "train"
    text = json.dumps(example, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.blake2b(f"{dataset_name}\n{text}".encode("utf-8"), digest_size=8).digest()
    return "validation" if int.from_bytes(digest, "big") / 2.0 ** 64 < validation_fraction \
        else "train"


# ---------------------------------------------------------------------------
# Rows


def parse_source(source):
    """(dataset, template name, kind) of a row's `source`."""
    dataset, rest = source.split(":", 1)
    template, kind = rest.rsplit(":", 1)
    return dataset, template, kind


def label_bucket(label):
    if label <= 0:
        return LABEL_BUCKETS[0]
    if label >= 1:
        return LABEL_BUCKETS[-1]
    return LABEL_BUCKETS[1 + min(int(label * 4), 3)]


def augment_kind(model_name_or_path):
    from cappy.engine.jobs.candidate_generation import generator_name

    return AUGMENT_PREFIX + generator_name(model_name_or_path)


def sample_responses(generator, instructions, decodings, n_samples):
    """For each instruction, the generator's responses: each decoding of `decodings`
    (`cappy.engine.recipes.DECODINGS`) `n_samples` times, beam search once, in that order.

    CandidateGenerator's sampling without its log-likelihood pass (not needed for labels).
    """
    return generator.sample(instructions, decodings, n_samples)


def _empty_counts():
    return {"rows": 0, "examples": 0, "pairs": 0, "skipped_pairs": 0, "kinds": {},
            "labels": {}, "templates": {}}


def add_counts(total, part):
    """Add the counts `part` into `total` (both shaped like _empty_counts)."""
    for key, value in part.items():
        if isinstance(value, dict):
            bucket = total.setdefault(key, {})
            for name, n in value.items():
                bucket[name] = bucket.get(name, 0) + n
        else:
            total[key] = total.get(key, 0) + value
    return total


class _ExampleRows:
    """The rows of one example and what they add to the counts."""

    def __init__(self):
        self.lines = []
        self.counts = _empty_counts()
        self.counts["examples"] = 1

    def add(self, instruction, response, label, source_prefix, kind):
        row = {"instruction": instruction, "response": response, "label": label,
               "source": f"{source_prefix}:{kind}"}
        self.lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        counts = self.counts
        counts["rows"] += 1
        counts["kinds"][kind] = counts["kinds"].get(kind, 0) + 1
        bucket = label_bucket(label)
        counts["labels"][bucket] = counts["labels"].get(bucket, 0) + 1


@dataclasses.dataclass
class BuildSettings:
    """Everything that decides the content of the shards (checked again on resume)."""

    seed: int = 42
    shard_size: int = DEFAULT_SHARD_SIZE
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    n_mismatched: int = 1
    mismatch_pool: int = DEFAULT_MISMATCH_POOL
    max_examples_per_dataset: int | None = T0_MAX_EXAMPLES_PER_DATASET
    batch_examples: int = DEFAULT_BATCH_EXAMPLES
    augment_models: tuple = ()
    augment_decodings: tuple = DEFAULT_AUGMENT_DECODINGS
    augment_samples: int = 1
    augment_batch_size: int = 8
    augment_max_src_len: int = 512
    augment_max_tgt_len: int = 64
    augment_dtype: str = "bfloat16"
    n_model_shards: int = 1

    def check(self):
        from cappy.engine.recipes import DECODINGS

        for name in ("shard_size", "batch_examples", "mismatch_pool", "augment_samples",
                     "augment_batch_size", "n_model_shards"):
            if getattr(self, name) < 1:
                raise CappyError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.n_mismatched < 0:
            raise CappyError(f"--n_mismatched must be at least 0, got {self.n_mismatched}")
        if not 0 <= self.validation_fraction < 1:
            raise CappyError(f"--validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction}")
        if self.max_examples_per_dataset is not None and self.max_examples_per_dataset < 1:
            raise CappyError(f"--max_examples_per_dataset must be at least 1, got "
                             f"{self.max_examples_per_dataset}")
        if self.augment_models:
            unknown = [name for name in self.augment_decodings if name not in DECODINGS]
            if unknown or not self.augment_decodings:
                raise CappyError(f"--augment_decodings: unknown or none given "
                                 f"({', '.join(unknown) or 'empty'}); choose from "
                                 f"{', '.join(DECODINGS)}")
            kinds = [augment_kind(model) for model in self.augment_models]
            if len(set(kinds)) != len(kinds):
                raise CappyError("--augment_models: two models have the same folder name, "
                                 "so their rows could not be told apart")

    def as_dict(self):
        values = dataclasses.asdict(self)
        values["augment_models"] = list(self.augment_models)
        values["augment_decodings"] = list(self.augment_decodings)
        if not self.augment_models:  # generator options do not matter then
            for key in [k for k in values if k.startswith("augment_") and k != "augment_models"]:
                del values[key]
            del values["n_model_shards"]
        return values


class _Shard:
    """A shard being filled: its slice start, random state and rows so far."""

    def __init__(self, dataset, split, start, settings):
        self.start = start
        self.end = start
        self.rng = random.Random(f"{settings.seed}|{dataset}|{split}|{start}")
        self.reseed_name = f"{dataset}|{split}|{start}"
        self.pool = collections.defaultdict(
            lambda: collections.deque(maxlen=settings.mismatch_pool))
        self.batch_count = 0
        self.lines = []
        self.counts = _empty_counts()

    def accept(self, index, example_rows):
        self.lines.extend(example_rows.lines)
        add_counts(self.counts, example_rows.counts)
        self.end = index + 1


class _DatasetBuilder:
    """Turns one dataset's examples into rows, batch by batch."""

    def __init__(self, spec, templates, settings, generators):
        self.spec = spec
        self.templates = templates
        self.settings = settings
        self.generators = generators  # [(kind, generator)], loaded on first use

    def _render(self, example, example_rows):
        from cappy.promptsource.templates import render

        prompts = []
        for template in self.templates:
            try:
                prompt = render(template, example)
            except CappyError:
                prompt = None  # one bad example must not stop a day-long build: counted
            if prompt is None or not prompt.instruction or not prompt.target:
                example_rows.counts["skipped_pairs"] += 1
                continue
            example_rows.counts["pairs"] += 1
            example_rows.counts["templates"][template.name] = \
                example_rows.counts["templates"].get(template.name, 0) + 1
            prompts.append((template, prompt))
        return prompts

    def _draw_mismatches(self, shard, pool, used):
        """Up to n_mismatched distinct texts of `pool` not in `used` (a few tries each)."""
        drawn = []
        if not pool:
            return drawn
        for _ in range(self.settings.n_mismatched):
            for _ in range(8):
                text = pool[shard.rng.randrange(len(pool))]
                if text not in used:
                    used.add(text)
                    drawn.append(text)
                    break
        return drawn

    def batch_rows(self, shard, batch):
        """The rows of each example of `batch` ([(index, example)]), in order."""
        per_example = []
        pairs = []  # (position in batch, template, prompt)
        for position, (_, example) in enumerate(batch):
            example_rows = _ExampleRows()
            per_example.append(example_rows)
            for template, prompt in self._render(example, example_rows):
                pairs.append((position, template, prompt))

        batch_targets = collections.defaultdict(list)
        for _, template, prompt in pairs:
            batch_targets[template.name].append(prompt.target)
        pools = {name: list(shard.pool[name]) + targets
                 for name, targets in batch_targets.items()}

        augmented = []
        if self.settings.augment_models and pairs:
            instructions = [prompt.instruction for _, _, prompt in pairs]
            for kind, generator in self.generators():
                generator.reseed(self.settings.seed,
                                 f"{shard.reseed_name}|{shard.batch_count}|{kind}")
                augmented.append((kind, sample_responses(
                    generator, instructions, self.settings.augment_decodings,
                    self.settings.augment_samples)))
        shard.batch_count += 1

        from cappy.engine.rouge import rouge_l

        for pair_index, (position, template, prompt) in enumerate(pairs):
            rows = per_example[position]
            prefix = f"{self.spec.name}:{template.name}"
            gold = prompt.target
            used = {gold}
            rows.add(prompt.instruction, gold, 1.0, prefix, GOLD)
            for choice in prompt.answer_choices or ():
                if choice and choice not in used:
                    used.add(choice)
                    rows.add(prompt.instruction, choice, 0.0, prefix, CHOICE)
            for text in self._draw_mismatches(shard, pools[template.name], used):
                rows.add(prompt.instruction, text, 0.0, prefix, MISMATCH)
            for kind, responses in augmented:
                for text in responses[pair_index]:
                    text = text.strip()
                    if text and text not in used:
                        used.add(text)
                        rows.add(prompt.instruction, text, rouge_l(text, gold), prefix, kind)
        for name, targets in batch_targets.items():
            shard.pool[name].extend(targets)
        return per_example


# ---------------------------------------------------------------------------
# Manifest and resume


def _templates_digest(templates):
    material = json.dumps([[t.name, t.id, t.jinja, t.answer_choices] for t in templates],
                          ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def read_manifest(output_dir):
    """The manifest of `output_dir`, or None when there is none yet."""
    path = manifest_path(output_dir)
    if not os.path.exists(path):
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CappyError(f"{path}: not a pretraining data manifest ({FORMAT})")
    return manifest


def _summarize(manifest):
    """Recompute the manifest's per-dataset counts and totals from its shard entries."""
    counts = {}
    totals = {}
    for split in SPLITS:
        manifest["shards"][split].sort(key=lambda entry: entry["file"])
        totals[split] = sum(entry["rows"] for entry in manifest["shards"][split])
        for entry in manifest["shards"][split]:
            add_counts(counts.setdefault(entry["dataset"], _empty_counts()), entry["counts"])
        for dataset, state in manifest["datasets"].items():
            if state[split].get("trailing_counts"):
                add_counts(counts.setdefault(dataset, _empty_counts()),
                           state[split]["trailing_counts"])
    manifest["counts"] = counts
    manifest["totals"] = totals
    return manifest


def _check_resumable(manifest, settings_dict, output_dir):
    from cappy.engine.config import changed_settings

    changed = changed_settings(manifest["settings"], settings_dict)
    if changed:
        raise CappyError(f"{manifest_path(output_dir)}: this folder was built with other "
                         f"settings ({'; '.join(changed)}); resume with the same command, or "
                         f"write to a new --output_dir")


class _SplitStream:
    """The shards of one (dataset, split): rebuilds missing ones, then continues."""

    def __init__(self, builder, manifest, output_dir, split, write_manifest):
        self.builder = builder
        self.manifest = manifest
        self.output_dir = output_dir
        self.split = split
        self.write_manifest = write_manifest
        name = builder.spec.name
        entries = [entry for entry in manifest["shards"][split] if entry["dataset"] == name]
        state = manifest["datasets"][name][split]
        # Jobs: (first example, recorded entry or None for a new shard), in example order.
        self.jobs = [(entry["first_example"], entry) for entry in entries
                     if not os.path.exists(os.path.join(output_dir, entry["file"]))]
        self.continue_from = None
        if not state["complete"]:
            self.continue_from = max((entry["end_example"] for entry in entries), default=0)
        self.pending = []
        self.shard = None
        self.next_index = 0  # examples of this split seen so far

    @property
    def has_work(self):
        return bool(self.jobs) or self.continue_from is not None

    def _current_start(self):
        if self.jobs:
            return self.jobs[0][0]
        return self.continue_from

    def feed(self, example):
        index = self.next_index
        self.next_index += 1
        start = self._current_start()
        if start is None or index < start:
            return
        self.pending.append((index, example))
        if len(self.pending) >= self.builder.settings.batch_examples:
            self._process_batch()

    def finish(self):
        while self.pending:
            self._process_batch()
        if self.jobs:
            first, entry = self.jobs[0]
            raise CappyError(f"{self.builder.spec.name}: the data ended before the "
                             f"examples of {entry['file']} (from example {first}): the "
                             f"source changed since it was written")
        state = self.manifest["datasets"][self.builder.spec.name][self.split]
        if self.shard is not None and self.shard.lines:
            self._close_shard()
        elif self.shard is not None:
            # Last examples without a single row: no shard, but they are counted.
            state["trailing_counts"] = self.shard.counts
            self.shard = None
        if self.continue_from is not None:
            state["complete"] = True
            state["examples"] = self.next_index
            self.continue_from = None
            self.write_manifest()

    def _process_batch(self):
        settings = self.builder.settings
        if self.shard is None:
            self.shard = _Shard(self.builder.spec.name, self.split,
                                self.pending[0][0], settings)
        batch = self.pending[:settings.batch_examples]
        rows = self.builder.batch_rows(self.shard, batch)
        for taken, ((index, _), example_rows) in enumerate(zip(batch, rows), start=1):
            self.shard.accept(index, example_rows)
            expected_end = self.jobs[0][1]["end_example"] if self.jobs else None
            full = len(self.shard.lines) >= settings.shard_size
            if full or (expected_end is not None and self.shard.end >= expected_end):
                self._close_shard()
                # Later examples of the batch start the next shard, from fresh state.
                self.pending = self.pending[taken:]
                self._drop_skipped()
                return
        self.pending = self.pending[len(batch):]

    def _drop_skipped(self):
        start = self._current_start()
        self.pending = [] if start is None else [
            item for item in self.pending if item[0] >= start]

    def _close_shard(self):
        shard, self.shard = self.shard, None
        shards = self.manifest["shards"][self.split]
        checksum = shard_checksum(shard.lines)
        if self.jobs:
            first, entry = self.jobs.pop(0)
            if (shard.start, shard.end, len(shard.lines), entry.get("sha256", checksum)) != \
                    (first, entry["end_example"], entry["rows"], checksum):
                raise CappyError(f"{self.builder.spec.name}: rebuilding {entry['file']} gave "
                                 f"examples {shard.start}-{shard.end} and {len(shard.lines)} "
                                 f"rows (or other bytes), not {first}-{entry['end_example']} "
                                 f"and {entry['rows']}: the source data or software changed")
            path = os.path.join(self.output_dir, entry["file"])
        else:
            # The trainer checks each shard against its rows and sha256 before using it.
            entry = {"file": shard_file(self.split, len(shards)), "rows": len(shard.lines),
                     "sha256": checksum, "dataset": self.builder.spec.name,
                     "first_example": shard.start, "end_example": shard.end,
                     "counts": shard.counts}
            path = os.path.join(self.output_dir, entry["file"])
        with atomic_open(path) as file:
            file.writelines(shard.lines)
        if entry not in shards:
            shards.append(entry)
            self.continue_from = shard.end
        self.write_manifest()


# ---------------------------------------------------------------------------
# The build


def _default_generator_loader(model, settings):
    from cappy.engine.jobs.candidate_generation import CandidateGenerator

    return CandidateGenerator(
        model, n_model_shards=settings.n_model_shards, n_sample_gens=settings.augment_samples,
        per_device_batch_size=settings.augment_batch_size,
        max_src_len=settings.augment_max_src_len, max_tgt_len=settings.augment_max_tgt_len,
        dtype=settings.augment_dtype, jax_seed=settings.seed, verbose=False)


def check_output_outside_sources(output_dir, specs):
    """The output folder is not inside a local dataset folder: the next build would read
    its own shards as source data."""
    from cappy.engine.io import check_output_folder

    out = os.path.realpath(output_dir)
    for spec in specs:
        if os.path.isdir(spec.hf_path):
            source = os.path.realpath(spec.hf_path)
            if out == source or out.startswith(source + os.sep):
                raise CappyError(f"--output_dir {output_dir}: inside {spec.name}'s local "
                                 f"source folder {spec.hf_path}, which the next build would "
                                 f"read back; write it elsewhere")
    check_output_folder(output_dir, "--output_dir")


def build_pretraining_data(output_dir, settings=None, datasets=None, specs=None,
                           loader=None, templates_dir=None, generator_loader=None,
                           progress=True, log=print):
    """Build (or resume) the pretraining data in `output_dir`; return the manifest.

    `datasets`: comma-separated names (default: every dataset of `specs`, itself
    defaulting to T0's mixture). `loader(spec)` yields a dataset's examples (default:
    the hub, streamed); `generator_loader(model, settings)` makes a generator
    (default: cappy.engine.jobs.candidate_generation.CandidateGenerator). Tests pass their own.
    """
    from cappy.promptsource.templates import load_templates

    settings = settings or BuildSettings()
    settings.check()
    chosen = resolve_specs(datasets, specs)
    check_output_outside_sources(output_dir, chosen)
    loader = loader or load_hub_examples
    generator_loader = generator_loader or _default_generator_loader

    templates = {}
    for spec in chosen:
        found = load_templates(spec.templates_dataset, spec.templates_subset, templates_dir)
        if not found:
            raise CappyError(f"{spec.name}: no PromptSource templates")
        templates[spec.name] = found
    settings_dict = settings.as_dict()
    settings_dict["datasets"] = [
        {**dataclasses.asdict(spec), "renames": [list(pair) for pair in spec.renames],
         "label_names": [[field, list(names)] for field, names in spec.label_names],
         "templates_digest": _templates_digest(templates[spec.name])} for spec in chosen]

    os.makedirs(os.path.join(output_dir, SHARDS_DIR), exist_ok=True)
    # what a killed run left (this run holds the output folder's lock)
    remove_stale_temporaries(os.path.join(output_dir, SHARDS_DIR), locked=True)
    remove_stale_temporaries(output_dir, MANIFEST_NAME, locked=True)
    manifest = read_manifest(output_dir)
    if manifest is None:
        manifest = {"format": FORMAT, "complete": False, "settings": settings_dict,
                    "shards": {split: [] for split in SPLITS}, "counts": {}, "totals": {},
                    "datasets": {spec.name: {"hf": spec.describe_source(),
                                             "templates": len(templates[spec.name]),
                                             **{split: {"complete": False, "examples": None}
                                                for split in SPLITS}}
                                 for spec in chosen}}
    else:
        _check_resumable(manifest, settings_dict, output_dir)

    def write_manifest():
        write_json(manifest_path(output_dir), _summarize(manifest))

    loaded = []

    def generators():
        if not loaded:
            for model in settings.augment_models:
                loaded.append((augment_kind(model), generator_loader(model, settings)))
        return loaded

    for spec in chosen:
        builder = _DatasetBuilder(spec, templates[spec.name], settings, generators)
        streams = {split: _SplitStream(builder, manifest, output_dir, split, write_manifest)
                   for split in SPLITS}
        if not any(stream.has_work for stream in streams.values()):
            continue
        cap = settings.max_examples_per_dataset
        bar = progress_bar(desc=spec.name, unit="ex", shown=progress, dynamic_ncols=True)
        seen = 0
        with bar:
            for example in loader(spec):
                if cap is not None and seen >= cap:
                    break
                seen += 1
                example = adapt_example(spec, example)
                split = example_split(spec.name, example, settings.validation_fraction)
                streams[split].feed(example)
                bar.update(1)
                if not any(stream.has_work for stream in streams.values()):
                    break  # only missing shards were to be rebuilt, and they are
            if seen == 0:
                raise CappyError(f"{spec.name}: no examples in {spec.describe_source()}")
            for stream in streams.values():
                stream.finish()
        counts = manifest["counts"].get(spec.name)
        if not counts or not counts["rows"]:
            raise CappyError(f"{spec.name}: no template rendered a target for any of its "
                             f"{seen} examples: do the field names match the templates? "
                             f"(see DatasetSpec.renames, --dataset_overrides)")
        silent = [t.name for t in templates[spec.name] if not counts["templates"].get(t.name)]
        if silent:
            log(f"note: {spec.name}: no example rendered a target with template(s) "
                f"{', '.join(silent)}")
    manifest["complete"] = True
    write_manifest()
    return manifest
