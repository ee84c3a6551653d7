"""The result files of one BIG-Bench run, `{results_dir}/{generator}/{task}.json` (with
`{task}.predictions.jsonl` and the batch runner's `{task}.log` beside it): where they
are, and whether one holds a finished result. The task writes them; the batch runner
and the tables read them."""

import json
import math
import os


def result_paths(results_dir, gen_model, task):
    folder = os.path.join(results_dir, gen_model)
    return os.path.join(folder, f"{task}.json"), os.path.join(folder, f"{task}.predictions.jsonl")


def result_file(results_dir, model, task):
    """The result file cappy_bigbench.py writes for one generator and task."""
    return result_paths(results_dir, model, task)[0]


def log_file(results_dir, model, task):
    return os.path.join(results_dir, model, f"{task}.log")


def read_result(path):
    """("done", rougeL fraction), ("missing", None) or ("unfinished", reason).

    Never raises for a bad file: a result is done only if it is a JSON object
    with a finite numeric `rougeL`.
    """
    if not os.path.exists(path):
        return "missing", None
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        return "unfinished", f"unreadable ({error.__class__.__name__})"
    if not text.strip():
        return "unfinished", "empty file"
    try:
        result = json.loads(text)
    except ValueError:
        first = text.strip().splitlines()[0][:40]
        return "unfinished", f"not JSON ({first!r})"
    if not isinstance(result, dict) or "rougeL" not in result:
        return "unfinished", "no 'rougeL' field"
    value = result["rougeL"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "unfinished", f"'rougeL' is not a number ({value!r})"
    if not 0 <= value <= 1:  # a fraction; a file in percent would inflate every mean
        return "unfinished", f"'rougeL' {value!r} is outside [0, 1] (in percent?)"
    return "done", float(value)
