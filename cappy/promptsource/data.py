"""The zero-shot test set of the paper's Table 1, built from PromptSource templates.

Eleven held-out classification tasks (OPT-IML, Section 5.2). Each example of each task
is rendered with every template T0 evaluates it with; each answer choice becomes one
row `{dataset_name, template_name, example_idx, instruction, response, label}`, with
`label` 1 for the choice that equals the template's rendered target (T0's
`rank_classification` rule) and 0 for the others.

Data (Hugging Face ids that load without a loading script, as datasets 4 and 5 require):

| dataset_name        | id / config / split                                    | templates (PromptSource)   |
|---------------------|--------------------------------------------------------|----------------------------|
| anli_r1/_r2/_r3     | facebook/anli, plain_text, test_r1/test_r2/test_r3     | anli                       |
| cb, rte, wic        | aps/super_glue, cb/rte/wic, validation                 | super_glue/cb, /rte, /wic  |
| wsc                 | aps/super_glue, wsc.fixed, validation                  | super_glue/wsc.fixed       |
| winogender          | aps/super_glue, axg, test (the only split; labelled)   | super_glue/axg             |
| winogrande          | allenai/winogrande, winogrande_xl, validation          | winogrande/winogrande_xl   |
| crows_pairs         | nyu-mll/crows_pairs, (no config), test (the only one)  | crows_pairs                |
| story_cloze         | hand-downloaded CSV of the 2016 validation set         | story_cloze/2016           |

SuperGLUE's test labels are hidden, hence its validation splits. When an id still
carries a loading script (datasets 4 and 5 refuse those), the rows are read instead from
the Hub's automatic parquet export of the same repository (`refs/convert/parquet`), which
keeps the same fields and label ids. `--hf_id SOURCE=REPO` points a source (`anli`,
`super_glue`, `winogrande`, `crows_pairs`) at another repository with the same fields,
e.g. `super_glue=super_glue` or a local copy.

StoryCloze cannot be downloaded automatically: ask for it at
https://cs.rochester.edu/nlp/rocstories/ and pass the folder holding
`cloze_test_val__spring2016 - cloze_test_ALL_val.csv` (1,871 stories) as
`--story_cloze_dir`. Without it StoryCloze is skipped, with a note.

Templates: those that ask the dataset's original task and have answer choices, as in
T0's evaluation (`is_original_task_with_choices`). CrowS-Pairs has no original-task
template; T0 scored its bias sets with every template that has choices. Here its five
stereotype-judgement templates are used (answer = `stereo_antistereo`), leaving out
`which_bias` (which asks for the bias category, another task): with them, always
choosing "stereotype" scores 1,290/1,508 = 85.5%, exactly OPT's figure in Table 1.

Examples without a label (-1, or an empty Winogrande answer) are skipped and counted,
as are prompts whose target matches no answer choice or several identical ones.
"""

import csv
import dataclasses
import json
import os

from cappy.engine.errors import CappyError
from cappy.engine.flags import comma_list
from cappy.engine.io import atomic_open, write_json
from cappy.engine.runtime.leader import progress_bar
from cappy.promptsource import templates as promptsource

STORY_CLOZE_FILE = "cloze_test_val__spring2016 - cloze_test_ALL_val.csv"
STORY_CLOZE_COLUMNS = {  # CSV column -> field name of the templates (HF's story_cloze)
    "InputStoryid": "story_id", "InputSentence1": "input_sentence_1",
    "InputSentence2": "input_sentence_2", "InputSentence3": "input_sentence_3",
    "InputSentence4": "input_sentence_4", "RandomFifthSentenceQuiz1": "sentence_quiz1",
    "RandomFifthSentenceQuiz2": "sentence_quiz2", "AnswerRightEnding": "answer_right_ending",
}
HF_IDS = {"anli": "facebook/anli", "super_glue": "aps/super_glue",
          "winogrande": "allenai/winogrande", "crows_pairs": "nyu-mll/crows_pairs"}
CROWS_PAIRS_DIRECTIONS = ["stereo", "antistereo"]  # the ClassLabel names of stereo_antistereo


def _has_label(field, allowed):
    return lambda example: example.get(field) in allowed


def _crows_pairs_templates(template):
    # the stereotype/anti-stereotype judgements; see the module docstring
    return bool(template.answer_choices) and "stereo_antistereo" in template.jinja


@dataclasses.dataclass(frozen=True)
class EvalDataset:
    name: str                    # dataset_name in the test file
    paper_row: str               # its row in the paper's Table 1
    source: str                  # "anli", "super_glue", ... (what --hf_id overrides), or "story_cloze"
    hf_config: str | None
    split: str
    templates_dataset: str       # PromptSource dataset/subset whose templates apply
    templates_subset: str | None
    is_labelled: object          # example -> bool
    template_filter: object = promptsource.is_original_task_with_choices

    @property
    def promptsource_name(self):
        if self.templates_subset is None:
            return self.templates_dataset
        return f"{self.templates_dataset}/{self.templates_subset}"


_NLI_LABELS = _has_label("label", (0, 1, 2))
_BINARY_LABELS = _has_label("label", (0, 1))

EVAL_DATASETS = {spec.name: spec for spec in [
    EvalDataset("anli_r1", "ANLI R1", "anli", "plain_text", "test_r1", "anli", None, _NLI_LABELS),
    EvalDataset("anli_r2", "ANLI R2", "anli", "plain_text", "test_r2", "anli", None, _NLI_LABELS),
    EvalDataset("anli_r3", "ANLI R3", "anli", "plain_text", "test_r3", "anli", None, _NLI_LABELS),
    EvalDataset("cb", "CB", "super_glue", "cb", "validation", "super_glue", "cb", _NLI_LABELS),
    EvalDataset("rte", "RTE", "super_glue", "rte", "validation", "super_glue", "rte",
                _BINARY_LABELS),
    EvalDataset("story_cloze", "StoryCloze", "story_cloze", None, "validation", "story_cloze",
                "2016", _has_label("answer_right_ending", (1, 2))),
    EvalDataset("wsc", "WSC", "super_glue", "wsc.fixed", "validation", "super_glue",
                "wsc.fixed", _BINARY_LABELS),
    EvalDataset("wic", "WiC", "super_glue", "wic", "validation", "super_glue", "wic",
                _BINARY_LABELS),
    EvalDataset("winogrande", "Winogrande", "winogrande", "winogrande_xl", "validation",
                "winogrande", "winogrande_xl", _has_label("answer", ("1", "2"))),
    EvalDataset("winogender", "WinoGender", "super_glue", "axg", "test", "super_glue", "axg",
                _BINARY_LABELS),
    EvalDataset("crows_pairs", "Crows-Pairs", "crows_pairs", None, "test", "crows_pairs", None,
                _has_label("stereo_antistereo", (0, 1)), _crows_pairs_templates),
]}


def parse_dataset_names(text):
    """`--datasets` value (comma-separated; `anli` means its three rounds) -> names in order."""
    if not text:
        return list(EVAL_DATASETS)
    wanted = []
    for name in comma_list(text):
        names = [f"anli_r{i}" for i in (1, 2, 3)] if name == "anli" else [name]
        for one in names:
            if one not in EVAL_DATASETS:
                raise CappyError(f"--datasets: unknown dataset {one!r}; choose from "
                                 f"{', '.join(EVAL_DATASETS)} (or anli)")
            if one not in wanted:
                wanted.append(one)
    if not wanted:
        raise CappyError("--datasets: no dataset named")
    return wanted


def parse_hf_ids(overrides):
    """`--hf_id SOURCE=REPO` values -> {source: repo}, on top of the defaults."""
    ids = dict(HF_IDS)
    for item in overrides or ():
        source, sep, repo = item.partition("=")
        if not sep or source not in HF_IDS or not repo:
            raise CappyError(f"--hf_id {item!r}: expected SOURCE=REPO with SOURCE one of "
                             f"{', '.join(HF_IDS)}")
        ids[source] = repo
    return ids


def select_templates(spec, templates_dir=None):
    """(used, excluded) templates of a dataset, each sorted by name."""
    templates = promptsource.load_templates(spec.templates_dataset, spec.templates_subset,
                                            templates_dir)
    used = [t for t in templates if spec.template_filter(t)]
    excluded = [t for t in templates if not spec.template_filter(t)]
    if not used:
        raise CappyError(f"{spec.promptsource_name}: no template passes the filter")
    return used, excluded


# ---------------------------------------------------------------------------- loading

def read_story_cloze_csv(story_cloze_dir):
    """The 2016 validation stories from the hand-downloaded CSV, as the templates' fields."""
    path = story_cloze_dir
    if os.path.isdir(story_cloze_dir):
        path = os.path.join(story_cloze_dir, STORY_CLOZE_FILE)
    if not os.path.isfile(path):
        raise CappyError(f"StoryCloze: {path!s} not found; --story_cloze_dir must hold "
                         f"'{STORY_CLOZE_FILE}' (the 2016 validation set, downloaded by hand "
                         f"from https://cs.rochester.edu/nlp/rocstories/)")
    with open(path, encoding="utf-8-sig", newline="") as file:
        reader = csv.DictReader(file)
        missing = [c for c in STORY_CLOZE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CappyError(f"{path}: not the StoryCloze CSV (missing columns: "
                             f"{', '.join(missing)})")
        examples = []
        for line, record in enumerate(reader, start=2):
            example = {field: record[column] for column, field in STORY_CLOZE_COLUMNS.items()}
            try:
                example["answer_right_ending"] = int(example["answer_right_ending"])
            except (TypeError, ValueError):
                raise CappyError(f"{path}:{line}: AnswerRightEnding must be 1 or 2, got "
                                 f"{record['AnswerRightEnding']!r}") from None
            examples.append(example)
    return examples


def load_hub_split(repo, config, split):
    """One split of a Hub dataset as a list of dicts (see cappy.engine.dataset_hub)."""
    from cappy.engine.dataset_hub import hub_error, load_hub_dataset

    where = f"{repo}" + (f" ({config})" if config else "") + f" split {split}"
    try:
        return list(load_hub_dataset(repo, config, split))
    except Exception as error:  # network, hub or schema trouble: one clear line
        raise hub_error(where, error, "another repository with the same fields: --hf_id") \
            from None


def hub_loader(hf_ids=None, story_cloze_dir=None):
    """The default loader: `spec -> list of examples` from the Hub (StoryCloze from its CSV)."""
    hf_ids = hf_ids or HF_IDS

    def load(spec):
        if spec.source == "story_cloze":
            return read_story_cloze_csv(story_cloze_dir)
        return load_hub_split(hf_ids[spec.source], spec.hf_config, spec.split)

    return load


def _normalise(spec, example):
    if spec.name == "crows_pairs" and isinstance(example.get("stereo_antistereo"), str):
        # a copy read from the original CSV names the direction instead of numbering it
        example = dict(example)
        direction = example["stereo_antistereo"]
        if direction in CROWS_PAIRS_DIRECTIONS:
            example["stereo_antistereo"] = CROWS_PAIRS_DIRECTIONS.index(direction)
    return example


# ---------------------------------------------------------------------------- building

def prompt_rows(spec, template, example, example_idx):
    """The rows of one (template, example), and why there are none when there are none."""
    rendered = promptsource.render(template, example)
    if rendered.target is None:
        return [], "no target"
    if not rendered.instruction:
        return [], "empty instruction"
    matches = [i for i, choice in enumerate(rendered.answer_choices) if choice == rendered.target]
    if not matches:
        return [], "target not among the choices"
    if len(matches) > 1:
        return [], "target matches several identical choices"
    return [{"dataset_name": spec.name, "template_name": template.name,
             "example_idx": example_idx, "instruction": rendered.instruction,
             "response": choice, "label": int(i == matches[0])}
            for i, choice in enumerate(rendered.answer_choices)], None


def dataset_rows(spec, examples, templates, stats, progress=True):
    """Yield the rows of one dataset; fill `stats` with counts as it goes."""
    for example_idx, example in enumerate(progress_bar(examples, desc=spec.name,
                                                       shown=progress)):
        example = _normalise(spec, example)
        stats["examples"] += 1
        if not spec.is_labelled(example):
            stats["examples_unlabelled"] += 1
            continue
        for template in templates:
            try:
                rows, problem = prompt_rows(spec, template, example, example_idx)
            except CappyError as error:
                raise CappyError(f"{spec.name} example {example_idx}: {error}") from None
            if problem:
                stats["prompts_skipped"][problem] = stats["prompts_skipped"].get(problem, 0) + 1
                continue
            stats["prompts"] += 1
            stats["rows"] += len(rows)
            yield from rows


def build_test_file(output_file, dataset_names=None, load_examples=None, story_cloze_dir=None,
                    templates_dir=None, hf_ids=None, progress=True, log=print):
    """Write the test file and `<output_file>.templates.json`; return the summary.

    `load_examples(spec) -> list of dicts` supplies each dataset's examples (default: the
    Hub, and the StoryCloze CSV); tests pass hand-written ones.
    """
    names = list(dataset_names or EVAL_DATASETS)
    specs = [EVAL_DATASETS[name] for name in names]
    summary = {"output_file": output_file,
               "templates_source": "PromptSource 0.2.3 templates.yaml "
                                   + ("(shipped in cappy/data/promptsource_templates)"
                                      if templates_dir is None else f"from {templates_dir}"),
               "datasets": {}, "skipped_datasets": {}}
    custom_loader = load_examples is not None
    if load_examples is None:
        if "story_cloze" in names and story_cloze_dir is None:
            if dataset_names is not None:
                raise CappyError("story_cloze needs --story_cloze_dir: a folder holding "
                                 f"'{STORY_CLOZE_FILE}' (downloaded by hand from "
                                 "https://cs.rochester.edu/nlp/rocstories/)")
            note = (f"needs --story_cloze_dir (a folder holding '{STORY_CLOZE_FILE}', "
                    "downloaded by hand from https://cs.rochester.edu/nlp/rocstories/)")
            summary["skipped_datasets"]["story_cloze"] = note
            log(f"note: StoryCloze skipped: it {note}")
            specs = [spec for spec in specs if spec.name != "story_cloze"]
        load_examples = hub_loader(hf_ids, story_cloze_dir)
    selected = {spec.name: select_templates(spec, templates_dir) for spec in specs}

    with atomic_open(output_file) as file:
        for spec in specs:
            used, excluded = selected[spec.name]
            stats = {"examples": 0, "examples_unlabelled": 0, "prompts": 0, "rows": 0,
                     "prompts_skipped": {}}
            examples = load_examples(spec)
            for row in dataset_rows(spec, examples, used, stats, progress):
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
            summary["datasets"][spec.name] = {
                "paper_row": spec.paper_row,
                "data": ({"loader": getattr(load_examples, "__name__", "custom")}
                         if custom_loader else _data_source(spec, hf_ids, story_cloze_dir)),
                "promptsource": spec.promptsource_name,
                "templates": [t.name for t in used],
                "templates_excluded": [t.name for t in excluded],
                **stats,
            }
    write_json(templates_summary_path(output_file), summary)
    log(format_summary(summary))
    return summary


def templates_summary_path(output_file):
    return f"{output_file}.templates.json"


def _data_source(spec, hf_ids, story_cloze_dir):
    if spec.source == "story_cloze":
        return {"csv": STORY_CLOZE_FILE, "dir": story_cloze_dir, "split": spec.split}
    return {"id": (hf_ids or HF_IDS)[spec.source], "config": spec.hf_config, "split": spec.split}


def format_summary(summary):
    """One line per dataset: templates, examples, rows, and what was skipped."""
    lines = [f"{'dataset':<12} {'templates':>9} {'examples':>8} {'unlabelled':>10} "
             f"{'prompts':>7} {'rows':>7}  skipped prompts"]
    for name, info in summary["datasets"].items():
        skipped = ", ".join(f"{k}: {v}" for k, v in info["prompts_skipped"].items()) or "-"
        lines.append(f"{name:<12} {len(info['templates']):>9} {info['examples']:>8} "
                     f"{info['examples_unlabelled']:>10} {info['prompts']:>7} "
                     f"{info['rows']:>7}  {skipped}")
    for name, why in summary["skipped_datasets"].items():
        lines.append(f"{name:<12} skipped: {why}")
    lines.append(f"templates per dataset: {templates_summary_path(summary['output_file'])}")
    return "\n".join(lines)
