"""Zero-shot classification with Cappy on the PromptSource test file (the paper's Table 1).

The test file has one row per answer choice: `dataset_name, template_name, example_idx,
instruction, response, label` (label 1 for the correct choice, 0 otherwise). Rows
sharing `(dataset_name, template_name, example_idx)` form one prompt; Cappy scores
every row and the highest score is the prediction (ties: the first row in file order).
A prompt counts as correct when the predicted response is the correct row's response,
as in the original release. Accuracy is pooled over all prompts (every template) of a
dataset; "Average" is the mean over datasets.

Checks on the file (all before the model is loaded):
- a missing or mistyped field, a label other than 0/1, or an empty file: an error;
- a prompt with two or more correct rows: an error (the answer would be ambiguous);
- a prompt with no correct row: reported and left out of the accuracy (the original
  release silently skipped it too), counted under `problems`;
- a prompt whose rows are not contiguous in the file (split into pieces): still grouped
  by its key, and reported, since it usually means two files were concatenated.

Each distinct (instruction, response) pair is scored once, with the checkpoint's
truncation policy: the original release's "longest_first" for every published Cappy.
"""

import contextlib
import dataclasses
import json
import sys
import time

from cappy.engine.weights.cappy_checkpoint import DTYPES
from cappy.engine.config import MIN_MAX_LENGTH, check_config, setting, settings_of
from cappy.engine.runtime.process import job_command
from cappy.engine.errors import CappyError, located
from cappy.engine.runtime.process import exit_on_error
from cappy.engine.runtime.hosts import HostSettings, join
from cappy.engine.runtime.leader import writes_outputs
from cappy.engine.io import (atomic_files, check_output_file, dump_json, dump_jsonl, iter_jsonl,
                             run_lock)
from cappy.engine.ranking import best_index
from cappy.paper import promptsource_row, promptsource_table

KEY_FIELDS = ("dataset_name", "template_name", "example_idx")
MAX_LISTED = 5  # problem prompts named in messages; all are counted


@dataclasses.dataclass
class Prompt:
    """The rows of one (dataset_name, template_name, example_idx)."""
    key: tuple
    rows: list = dataclasses.field(default_factory=list)         # indices into the row list
    lines: list = dataclasses.field(default_factory=list)        # their line numbers
    correct: int | None = None                                   # index of the label-1 row


def _check_row(path, line, row, sent0_key, sent1_key):
    for field, kinds, what in (("dataset_name", (str,), "a string"),
                               ("template_name", (str,), "a string"),
                               ("example_idx", (int, str), "an integer or a string"),
                               (sent0_key, (str,), "a string"), (sent1_key, (str,), "a string")):
        if field not in row:
            raise located(path, line, field, "missing")
        if not isinstance(row[field], kinds) or isinstance(row[field], bool):
            raise located(path, line, field, f"must be {what}, got {type(row[field]).__name__}")
    if "label" not in row:
        raise located(path, line, "label", "missing")
    label = row["label"]
    if isinstance(label, bool) or not isinstance(label, (int, float)) or label not in (0, 1):
        raise located(path, line, "label", f"must be 0 or 1, got {label!r}")


def read_test_file(path, sent0_key="instruction", sent1_key="response"):
    """(rows, line numbers) of a test file, every row checked; an empty file is an error."""
    rows, lines = [], []
    for line, row in iter_jsonl(path):
        _check_row(path, line, row, sent0_key, sent1_key)
        rows.append(row)
        lines.append(line)
    if not rows:
        raise CappyError(f"{path}: file is empty")
    return rows, lines


def prompt_key(row):
    # example_idx as text, as the original release keyed it: 3 and "3" are one prompt
    return (row["dataset_name"], row["template_name"], str(row["example_idx"]))


def group_prompts(rows, lines, path="<rows>"):
    """({key: Prompt} in first-seen order, problems); two correct rows in a prompt raise."""
    prompts, last_key = {}, None
    split = []
    for index, (row, line) in enumerate(zip(rows, lines)):
        key = prompt_key(row)
        prompt = prompts.get(key)
        if prompt is None:
            prompt = prompts[key] = Prompt(key)
        elif key != last_key:  # seen before, then other prompts came in between
            split.append(key)
        last_key = key
        if row["label"] == 1:
            if prompt.correct is not None:
                first = prompt.lines[prompt.rows.index(prompt.correct)]
                raise located(path, line, "label",
                              f"a second correct answer for {_describe(key)} "
                              f"(the first is on line {first})")
            prompt.correct = index
        prompt.rows.append(index)
        prompt.lines.append(line)
    no_correct = [key for key, prompt in prompts.items() if prompt.correct is None]
    split = list(dict.fromkeys(split))
    problems = {
        "prompts_without_correct_answer": len(no_correct),
        "prompts_split_in_the_file": len(split),
        "examples": {"without_correct_answer": [_describe(k) for k in no_correct[:MAX_LISTED]],
                     "split_in_the_file": [_describe(k) for k in split[:MAX_LISTED]]},
    }
    return prompts, problems


def _describe(key):
    return f"{key[0]} / {key[1]} / example {key[2]}"


def predict(prompts, rows, scores, sent1_key="response"):
    """{key: (predicted row index, correct or None)}; None for prompts with no correct row."""
    outcome = {}
    for key, prompt in prompts.items():
        best = prompt.rows[best_index([scores[i] for i in prompt.rows])]
        if prompt.correct is None:
            outcome[key] = (best, None)
        else:
            outcome[key] = (best, rows[best][sent1_key] == rows[prompt.correct][sent1_key])
    return outcome


def accuracy_report(prompts, outcome):
    """Accuracy (fractions) per dataset with "Average", per template, and prompt counts."""
    correct, total = {}, {}
    template_correct, template_total = {}, {}
    for key, (_, is_correct) in outcome.items():
        if is_correct is None:
            continue
        dataset, template = key[0], key[1]
        total[dataset] = total.get(dataset, 0) + 1
        correct[dataset] = correct.get(dataset, 0) + int(is_correct)
        per = (dataset, template)
        template_total[per] = template_total.get(per, 0) + 1
        template_correct[per] = template_correct.get(per, 0) + int(is_correct)
    accuracy = {dataset: correct[dataset] / total[dataset] for dataset in total}
    if not accuracy:
        raise CappyError("no prompt has a correct answer: nothing to score")
    accuracy["Average"] = sum(accuracy.values()) / len(accuracy)
    per_template = {}
    for (dataset, template), n in template_total.items():
        per_template.setdefault(dataset, {})[template] = template_correct[(dataset, template)] / n
    counts = {dataset: {"prompts": total[dataset], "correct": correct[dataset],
                        "templates": len(per_template[dataset])} for dataset in total}
    return accuracy, per_template, counts


def format_paper_table(accuracy):
    """Markdown: our accuracy (%) beside the paper's Table 1 columns, in the paper's row order."""
    table = promptsource_table()
    columns = table["columns"]
    ours = {name: value for name, value in accuracy.items() if name != "Average"}
    by_row = {promptsource_row(name): name for name in ours if promptsource_row(name)}
    paper_rows = [row for row in table["rows"] if row != "Average"]
    lines = ["| Dataset | Ours | " + " | ".join(columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]

    def line(label, value, paper):
        cells = [f"{v:.1f}" for v in paper] if paper else ["-"] * len(columns)
        ours_cell = "-" if value is None else f"{100 * value:.1f}"
        return f"| {label} | {ours_cell} | " + " | ".join(cells) + " |"

    for row in paper_rows:
        name = by_row.get(row)
        lines.append(line(row, ours.get(name), table["rows"][row]))
    for name in ours:
        if promptsource_row(name) is None:  # not a dataset of the paper
            lines.append(line(name, ours[name], None))
    n = len(ours)
    label = "Average" if set(by_row) == set(paper_rows) and n == len(paper_rows) \
        else f"Average (ours over {n} datasets)"
    lines.append(line(label, accuracy["Average"], table["rows"]["Average"]))
    return "\n".join(lines)


def format_per_template(per_template):
    lines = ["| Dataset | Template | Accuracy |", "|---|---|---:|"]
    for dataset, templates in per_template.items():
        for template, value in sorted(templates.items()):
            lines.append(f"| {dataset} | {template} | {100 * value:.1f} |")
    return "\n".join(lines)


def problem_lines(problems):
    """Warnings for stderr, one per kind of problem found."""
    out = []
    n = problems["prompts_without_correct_answer"]
    if n:
        listed = "; ".join(problems["examples"]["without_correct_answer"])
        out.append(f"warning: {n} prompt(s) have no correct answer (label 1) and are left out "
                   f"of the accuracy: {listed}{' ...' if n > MAX_LISTED else ''}")
    n = problems["prompts_split_in_the_file"]
    if n:
        listed = "; ".join(problems["examples"]["split_in_the_file"])
        out.append(f"warning: the rows of {n} prompt(s) are not contiguous in the file "
                   f"(grouped by key anyway): {listed}{' ...' if n > MAX_LISTED else ''}")
    return out


def run(config, log=print, warn=None):
    """Evaluate as configured by `config` (an EvalConfig); return the results."""
    check_config(config)
    if config.output_file:  # before any work, and never over the test file
        check_output_file(config.output_file, "--output_file", inputs=[config.data_file])
        check_output_file(predictions_path(config.output_file), "--output_file",
                          inputs=[config.data_file])
    # One run at a time writes an output file: process 0 writes, so it holds the lock, and
    # which process is 0 is known once the processes have joined (--detect_cluster).
    join(config)
    lock = (run_lock(config.output_file, f"--output_file {config.output_file}")
            if config.output_file and writes_outputs() else contextlib.nullcontext())
    with lock:
        return _evaluate(config, log, warn)


def _evaluate(config, log, warn):
    warn = warn or (lambda text: print(text, file=sys.stderr))
    start = time.time()
    rows, lines = read_test_file(config.data_file, config.sent0_key, config.sent1_key)
    prompts, problems = group_prompts(rows, lines, config.data_file)
    for text in problem_lines(problems):
        warn(text)
    if all(prompt.correct is None for prompt in prompts.values()):
        raise CappyError(f"{config.data_file}: no prompt has a correct answer (label 1)")

    import jax

    from cappy.engine.jobs.session import Cappy

    from cappy.engine.errors import device_memory_guard

    with device_memory_guard(f"lower --per_device_batch_size ({config.per_device_batch_size}) "
                             f"or --max_length ({config.max_length}), or split the model over "
                             f"more devices with --n_model_shards"):
        cappy = Cappy.from_pretrained(config.model_name_or_path, dtype=config.dtype,
                                      max_length=config.max_length,
                                      batch_size=config.per_device_batch_size,
                                      n_model_shards=config.n_model_shards, hosts=config,
                                      seed=config.jax_seed, progress=config.verbose)
        loaded = time.time()
        pairs = [(row[config.sent0_key], row[config.sent1_key]) for row in rows]
        # The scorer scores each distinct pair once (a prompt's choices repeat across prompts).
        scores = cappy.score([p[0] for p in pairs], [p[1] for p in pairs]).tolist()
        scored = time.time()

    outcome = predict(prompts, rows, scores, config.sent1_key)
    accuracy, per_template, counts = accuracy_report(prompts, outcome)
    log(json.dumps(accuracy, indent=4))
    log("")
    log(format_paper_table(accuracy))
    if config.per_template:
        log("")
        log(format_per_template(per_template))

    result = {
        "accuracy": accuracy,
        "per_template": per_template,
        "counts": {**counts, "rows": len(rows), "prompts": len(prompts),
                   "distinct_pairs_scored": len(set(pairs))},
        "problems": problems,
        "paper_rows": {name: promptsource_row(name) for name in accuracy if name != "Average"},
        "timings_s": {"load": round(loaded - start, 2), "score": round(scored - loaded, 2),
                      "total": round(time.time() - start, 2)},
        "settings": settings_of(config),
        "environment": {"devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
                        "jax": jax.__version__},
    }
    if config.output_file and writes_outputs():
        with atomic_files() as files:  # both or neither, whatever the disk holds
            dump_jsonl(files.open(predictions_path(config.output_file)), [
                {"dataset_name": key[0], "template_name": key[1],
                 "example_idx": rows[best]["example_idx"],
                 "prediction": rows[best][config.sent1_key], "score": scores[best],
                 "correct": is_correct}
                for key, (best, is_correct) in outcome.items()])
            dump_json(files.open(config.output_file), result)  # last: presence means finished
    return result


def predictions_path(output_file):
    stem = output_file[:-len(".json")] if output_file.endswith(".json") else output_file
    return f"{stem}.predictions.jsonl"


def saved_table(results_file):
    """The Table 1 comparison of a finished run, from its results file (--output_file)."""
    from cappy.engine.io import read_json

    result = read_json(results_file)
    accuracy = result.get("accuracy") if isinstance(result, dict) else None
    if not isinstance(accuracy, dict) or "Average" not in accuracy:
        raise CappyError(f"{results_file}: not a results file of cappy_promptsource.py "
                         f"(no 'accuracy' with an 'Average')")
    return format_paper_table(accuracy)


# --- the command: cappy_promptsource.py ---

@dataclasses.dataclass
class EvalConfig(HostSettings):
    """A zero-shot evaluation: its flags (cappy_promptsource.py), saved with its results."""
    data_file: str = setting("./promptsource_test.jsonl",
                             "the test set (scripts/build_promptsource_test_data.py writes it)")
    sent0_key: str = setting("instruction", "the instruction's field")
    sent1_key: str = setting("response", "the answer choices' field")
    model_name_or_path: str = setting("btan2/cappy-large", "the Cappy: a hub id or a folder")
    n_model_shards: int = setting(1, "devices each model copy is split over", at_least=1)
    per_device_batch_size: int = setting(
        128, "pairs per device per batch, counted at max_length tokens each (pairs are "
             "packed into rows up to that many tokens)", at_least=1)
    max_length: int = setting(512, "tokens per pair; longer pairs are cut by the checkpoint's "
                                   "truncation policy", at_least=MIN_MAX_LENGTH)
    dtype: str = setting("float32", "compute dtype (parameters and scores stay float32)",
                         choices=DTYPES)
    jax_seed: int = setting(42, "the deployer's seed (scoring draws nothing random)")
    per_template: bool = setting(False, "also print the accuracy of each template")
    output_file: str | None = setting(None, "write the results as JSON (and "
                                            "<name>.predictions.jsonl beside it)", type=str)
    verbose: bool = setting(True, "no Redco logs or progress bars", flag="--quiet")


COMMAND_DOC = """Zero-shot classification with Cappy on 11 held-out PromptSource tasks (the paper's Table 1).

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

parse_args, main = job_command(EvalConfig, COMMAND_DOC, run)


if __name__ == "__main__":  # python -m cappy.promptsource.evaluate RESULTS_FILE
    @exit_on_error
    def _print_saved_table():
        if len(sys.argv) != 2:
            raise CappyError("usage: python -m cappy.promptsource.evaluate RESULTS_FILE")
        print(saved_table(sys.argv[1]))
        return 0

    sys.exit(_print_saved_table())
