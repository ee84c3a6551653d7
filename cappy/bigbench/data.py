"""Build the BIG-Bench generative task data (docs/DESIGN.md section 3).

Output, per task: ``{output_dir}/{task}_{train|validation}.jsonl`` with rows
``{"dataset", "example_idx", "instruction", "references"}`` (``example_idx`` counts
0.. within each file), plus ``{output_dir}/subset_names.json``, the list of tasks
written. Every file is written atomically (cappy.engine.io), so a failure never leaves a
half-written file.

Two sources give the same rows:

* ``hub``: the ``tasksource/bigbench`` dataset on the Hugging Face hub (needs the
  network). Its ``inputs`` / ``targets`` columns are copied as they are.
* ``pypi``: the ``bigbench==1.0.0`` sdist from PyPI, read straight out of the
  tarball (nothing is extracted to disk and the ``bigbench`` package, which needs
  TensorFlow, is never imported). The Hugging Face ``bigbench`` loader, which
  ``tasksource/bigbench`` derives from, is reproduced here:

  1. each (sub)task's examples are de-duplicated (by their JSON text, first
     occurrence kept) and formatted as ``bigbench/api/json_task.py`` does
     (``default_format_fn``: input prefix + input [+ choices] + output prefix);
  2. the formatted list is shuffled with ``random.seed(42); random.shuffle``; the
     last ``max(int(0.2 * N), min_val)`` examples are the validation split, the
     rest the train split (``bigbench/bbseqio/bigbench_bridge.py``);
     ``min_val`` is 16, or ``16 // n_subtasks`` for each subtask of a task with
     subtasks, whose splits are concatenated in the order of ``subtask_names`` in
     ``task_metadata.json``;
  3. instruction = ``(task_prefix + formatted input).strip()``, references = each
     target stripped.

  ``tellmewhy`` is not in the sdist: the pypi source says so in one line and
  writes the other 44 tasks, and its ``subset_names.json`` lists the tasks it
  actually wrote (so 44 names for a full run).

Tasks are converted one at a time and written before the next is read, so memory
holds one task's examples, never all 45.
"""

import collections
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib

from cappy.engine.errors import CappyError
from cappy.engine.flags import comma_list
from cappy.engine.io import atomic_open, read_json, write_jsonl
from cappy.engine.runtime.leader import progress_bar
from cappy.paper import bigbench_tasks

HUB_DATASET = "tasksource/bigbench"
SDIST_NAME = "bigbench-1.0.0.tar.gz"
SDIST_REQUIREMENT = "bigbench==1.0.0"
SPLITS = ("train", "validation")
# Not shipped in the bigbench 1.0.0 sdist (it was added to BIG-bench later).
MISSING_FROM_SDIST = ("tellmewhy",)
# A generative tasksource config that the paper leaves out (like
# simple_arithmetic_json, a template task for BIG-bench authors, in subtasks).
HUB_EXCLUDED = ("simple_arithmetic_json_subtasks",)

# bigbench_bridge.py: SPLIT_SHUFFLE_SEED and the default min_validation_examples.
SPLIT_SEED = 42
MIN_VALIDATION_EXAMPLES = 16
# json_task.py: JsonTask's default random_seed, used for the choice permutation.
FORMAT_SEED = 42

# Members of the sdist: <root>/bigbench/benchmark_tasks/<task>/[<subtask>/]task.json
_TASK_JSON_RE = re.compile(r"^[^/]+/bigbench/benchmark_tasks/([^/]+)/(?:([^/]+)/)?task\.json$")
_METADATA_RE = re.compile(r"^[^/]+/bigbench/benchmark_tasks/task_metadata\.json$")


def resolve_tasks(tasks_arg):
    """The tasks to build: all 45, or the comma-separated subset `tasks_arg`.

    Names keep the order of the 45-task list; an unknown name is a CappyError.
    """
    known = bigbench_tasks()
    if tasks_arg is None:
        return known
    wanted = comma_list(tasks_arg, "--tasks")
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise CappyError(f"--tasks: unknown task name(s): {', '.join(unknown)} "
                         f"(expected names from the 45 BIG-Bench tasks, e.g. {known[0]})")
    return [name for name in known if name in wanted]


# ---------------------------------------------------------------------------
# Writing


def write_task(output_dir, task, train_pairs, validation_pairs,
               max_train_rows=None, max_validation_rows=None):
    """Write one task's two split files; return the number of rows in each.

    `*_pairs` are lists of (instruction, references). `max_*_rows` keep only the
    first rows of a split (used to cut the small offline sample).
    """
    counts = []
    for split, pairs, limit in (("train", train_pairs, max_train_rows),
                                ("validation", validation_pairs, max_validation_rows)):
        if limit is not None:
            pairs = pairs[:limit]
        rows = ({"dataset": task, "example_idx": index, "instruction": instruction,
                 "references": list(references)}
                for index, (instruction, references) in enumerate(pairs))
        write_jsonl(os.path.join(output_dir, f"{task}_{split}.jsonl"), rows)
        counts.append(len(pairs))
    return tuple(counts)


def write_subset_names(output_dir, names):
    """subset_names.json: a JSON list of task names, indent 4 (the contract)."""
    with atomic_open(os.path.join(output_dir, "subset_names.json")) as file:
        json.dump(list(names), file, indent=4, ensure_ascii=False)
        file.write("\n")


def read_task_names(data_dir):
    """The task list of `{data_dir}/subset_names.json` (a JSON list of names)."""
    path = os.path.join(data_dir, "subset_names.json")
    tasks = read_json(path)
    if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
        raise CappyError(f"{path}: must be a JSON list of task names")
    return list(dict.fromkeys(tasks))


# ---------------------------------------------------------------------------
# The BIG-bench json rules (pypi source)


def dedupe_examples(examples):
    """Drop repeated examples, keeping first occurrences in order.

    Two examples are the same when ``json.dumps`` gives the same text, exactly
    as json_task.py decides (so key order matters, as it does there).
    """
    seen = set()
    distinct = []
    for example in examples:
        key = json.dumps(example)
        if key not in seen:
            seen.add(key)
            distinct.append(example)
    return distinct


def format_example(example, task_data):
    """(input, targets) of one example, as json_task.default_format_fn builds them.

    The input gets the task's example input/output prefixes (and, for examples
    with `target_scores`, the choices in a fixed random order); the target
    becomes a list. `task_data` is the (sub)task's json, whose prefixes apply.
    """
    input_prefix = task_data.get("example_input_prefix", "\nQ: ")
    output_prefix = task_data.get("example_output_prefix", "\nA: ")
    choice_prefix = task_data.get("choice_prefix", "\n  choice: ")
    append_choices = task_data.get("append_choices_to_input", True)

    text = example["input"]
    target = example.get("target")
    if "target_scores" in example:
        scores = example["target_scores"]
        if append_choices:
            import numpy as np  # only multiple-choice examples need it

            # A fresh generator per example, as the original builds one per call.
            order = np.random.RandomState(seed=FORMAT_SEED).permutation(sorted(scores))
            text = text + choice_prefix + choice_prefix.join(order)
        if "target" not in example:
            best = max(scores.values())
            worst = min(scores.values())
            if (len(scores) == 1 and best == 0) or (len(scores) > 1 and best <= worst):
                raise CappyError(f"{task_data.get('name')}: an example has no correct choice")
            # The first choice with the highest score, in the json's key order.
            target = [choice for choice, score in scores.items() if score == best][0]
    elif target is None:
        raise CappyError(f"{task_data.get('name')}: an example has no target")
    if not isinstance(target, list):
        target = [target]
    return input_prefix + text + output_prefix, target


def split_examples(pairs, min_validation, label):
    """(train, validation) of one (sub)task, by bigbench_bridge.py's rule.

    Shuffle with seed 42 (a private generator seeded like ``random.seed(42)``
    gives the same order without touching the global one), then the last
    ``max(int(0.2 * N), min_validation)`` are validation. When that leaves no
    train example the Hugging Face loader drops the task's train and validation
    splits altogether, so such a task cannot be one of the 45: say so.
    """
    pairs = list(pairs)
    random.Random(SPLIT_SEED).shuffle(pairs)
    total = len(pairs)
    n_validation = max(int(0.2 * total), min_validation)
    if n_validation >= total:
        raise CappyError(f"{label}: only {total} distinct examples, too few for a train "
                         f"split with {n_validation} validation examples (the Hugging "
                         f"Face bigbench loader has no train/validation split for it)")
    n_train = total - n_validation
    return pairs[:n_train], pairs[n_train:]


def _ascii_name(name):
    # json_task.py names (sub)tasks with non-ASCII characters replaced by '?'.
    return str(name).encode("ascii", errors="replace").decode()


def convert_json_task(task_data, min_validation, label):
    """One (sub)task json with `examples` -> (train, validation) lists of
    (instruction, references)."""
    if "examples" not in task_data:
        raise CappyError(f"{label}: task.json has no examples")
    task_prefix = str(task_data.get("task_prefix", ""))
    pairs = []
    for example in dedupe_examples(task_data["examples"]):
        text, targets = format_example(example, task_data)
        if not all(isinstance(target, str) for target in targets):
            raise CappyError(f"{label}: a target is not a string: {targets!r}")
        pairs.append(((task_prefix + text).strip(), [target.strip() for target in targets]))
    return split_examples(pairs, min_validation, label)


def convert_task(task, task_data, subtask_names=None, subtasks=None):
    """A whole task -> (train, validation) pairs.

    For a task with subtasks, `subtask_names` is the metadata's list
    (``task:subtask``) and `subtasks` the list of the subtask jsons; each subtask
    is split on its own with a minimum of ``16 // n_subtasks`` validation
    examples, and the splits are concatenated in `subtask_names` order.
    """
    if not subtask_names:
        if "examples" not in task_data:
            raise CappyError(f"{task}: task.json has no examples and task_metadata.json "
                             f"lists no subtasks")
        return convert_json_task(task_data, MIN_VALIDATION_EXAMPLES, task)
    if "examples" in task_data:
        raise CappyError(f"{task}: task.json has examples but task_metadata.json lists "
                         f"subtasks")
    parent = _ascii_name(task_data.get("name", task))
    by_name = {}
    for subtask in subtasks or []:
        by_name[f"{parent}:{_ascii_name(subtask.get('name'))}"] = subtask
    missing = [name for name in subtask_names if name not in by_name]
    if missing:
        raise CappyError(f"{task}: subtask(s) listed in task_metadata.json but not found "
                         f"in the sdist: {', '.join(missing)}")
    min_validation = MIN_VALIDATION_EXAMPLES // len(subtask_names)
    train, validation = [], []
    for name in subtask_names:
        sub_train, sub_validation = convert_json_task(by_name[name], min_validation, name)
        train.extend(sub_train)
        validation.extend(sub_validation)
    return train, validation


# ---------------------------------------------------------------------------
# Reading the sdist


def ensure_sdist(cache_dir, progress=True):
    """Path of the bigbench 1.0.0 sdist in `cache_dir`, downloading it once.

    pip downloads into a fresh temporary folder and the file is moved into place
    only when pip succeeded, so an interrupted download is never reused. With
    `progress`, pip's own progress bar is shown (its output goes to the terminal).
    """
    cache_dir = os.path.expanduser(cache_dir)
    path = os.path.join(cache_dir, SDIST_NAME)
    if os.path.isfile(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    download_dir = tempfile.mkdtemp(dir=cache_dir, prefix=".download-")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               SDIST_REQUIREMENT, "-d", download_dir]
    print(f"downloading {SDIST_REQUIREMENT} (about 360 MB) into {cache_dir}", file=sys.stderr)
    try:
        try:
            result = subprocess.run(command, text=True, stderr=subprocess.PIPE,
                                    stdout=None if progress else subprocess.PIPE)
        except OSError as error:
            raise CappyError(f"could not run pip to download {SDIST_REQUIREMENT}: "
                             f"{error}") from None
        downloaded = os.path.join(download_dir, SDIST_NAME)
        if result.returncode != 0 or not os.path.isfile(downloaded):
            detail = (result.stderr or result.stdout).strip().splitlines()
            last = detail[-1] if detail else f"exit status {result.returncode}"
            raise CappyError(f"pip download {SDIST_REQUIREMENT} failed ({last}); download "
                             f"{SDIST_NAME} yourself and pass --bigbench_sdist PATH")
        os.replace(downloaded, path)
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)
    return path


def _iter_members(sdist_path):
    """Stream the tarball's members in order, as (member, tarfile).

    Stream mode ('r|gz') reads the 360 MB archive once from front to back;
    random access would re-decompress from the start for every backward seek.
    """
    if not os.path.isfile(sdist_path):
        raise CappyError(f"{sdist_path}: file not found")
    try:
        with tarfile.open(sdist_path, mode="r|gz") as archive:
            for member in archive:
                yield member, archive
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise CappyError(f"{sdist_path}: not a readable .tar.gz sdist ({error})") from None


def _is_top_task_json(member_name):
    # <task>/task.json, not <task>/<subtask>/task.json
    return _TASK_JSON_RE.match(member_name).group(2) is None


def _load_member_json(archive, member, sdist_path):
    try:
        data = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise CappyError(f"{sdist_path}: cannot read {member.name} ({error})") from None
    try:
        # OrderedDict, as json_task.py loads it (plain dicts keep order too).
        return json.loads(data, object_pairs_hook=collections.OrderedDict)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CappyError(f"{sdist_path}: {member.name}: not valid JSON ({error})") from None


def scan_sdist(sdist_path, tasks):
    """First pass: which of `tasks` the sdist holds, and their subtask files.

    Returns {task: {"subtask_names": [...], "files": set of member names}} for
    the tasks present. task_metadata.json sits near the end of the archive, so
    a cheap listing pass (about 5 s) comes before any conversion; that way a
    bad or partial sdist is reported before any file is written.
    """
    wanted = set(tasks)
    files = collections.defaultdict(set)
    metadata = None
    for member, archive in _iter_members(sdist_path):
        if not member.isfile():
            continue
        match = _TASK_JSON_RE.match(member.name)
        if match and match.group(1) in wanted:
            files[match.group(1)].add(member.name)
        elif _METADATA_RE.match(member.name):
            full = _load_member_json(archive, member, sdist_path)
            metadata = {task: list(full[task].get("subtask_names") or [])
                        for task in wanted if isinstance(full.get(task), dict)}
            del full
    if metadata is None:
        raise CappyError(f"{sdist_path}: no bigbench/benchmark_tasks/task_metadata.json "
                         f"(is this the bigbench 1.0.0 sdist?)")
    found = {}
    for task in tasks:
        if not any(_is_top_task_json(name) for name in files.get(task, ())):
            continue
        if task not in metadata:
            raise CappyError(f"{sdist_path}: task {task} is missing from task_metadata.json")
        found[task] = {"subtask_names": metadata[task], "files": files[task]}
    return found


def iter_sdist_tasks(sdist_path, plan):
    """Second pass: yield (task, train, validation) for each task of `plan`
    (from scan_sdist), in archive order, one task in memory at a time."""
    pending = {task: dict(info, loaded={}) for task, info in plan.items()}
    member_task = {name: task for task, info in plan.items() for name in info["files"]}
    for member, archive in _iter_members(sdist_path):
        task = member_task.get(member.name)
        if task is None:
            continue
        info = pending[task]
        info["loaded"][member.name] = _load_member_json(archive, member, sdist_path)
        if len(info["loaded"]) < len(info["files"]):
            # Wait for the task's other files; they sit next to each other in
            # the archive, so only one task is held in memory at a time.
            continue
        loaded = pending.pop(task)["loaded"]
        top_name = next(name for name in loaded if _is_top_task_json(name))
        task_data = loaded.pop(top_name)
        subtasks = [loaded[name] for name in sorted(loaded)]
        train, validation = convert_task(task, task_data, info["subtask_names"], subtasks)
        del loaded, task_data, subtasks
        yield task, train, validation
    if pending:
        raise CappyError(f"{sdist_path}: archive ended before all files of "
                         f"{', '.join(sorted(pending))} were read")


def build_from_sdist(sdist_path, output_dir, tasks, max_train_rows=None,
                     max_validation_rows=None, progress=True):
    """Convert `tasks` from the sdist and write them; return [(task, n_train, n_val)]."""
    plan = scan_sdist(sdist_path, tasks)
    absent = [task for task in tasks if task not in plan]
    unexpected = [task for task in absent if task not in MISSING_FROM_SDIST]
    if unexpected:
        raise CappyError(f"{sdist_path}: task(s) not found in the sdist: {', '.join(unexpected)}")
    for task in absent:
        print(f"note: {task} is not in the {SDIST_REQUIREMENT} sdist; skipped "
              f"(--source hub has it)")
    if not plan:
        raise CappyError("nothing to build: none of the selected tasks is in the sdist")
    sizes = {}
    with progress_bar(total=len(plan), unit="task", shown=progress) as bar:
        for task, train, validation in iter_sdist_tasks(sdist_path, plan):
            sizes[task] = write_task(output_dir, task, train, validation,
                                     max_train_rows, max_validation_rows)
            bar.set_postfix_str(task)
            bar.update(1)
    written = [task for task in tasks if task in sizes]
    write_subset_names(output_dir, written)
    return [(task, *sizes[task]) for task in written]


# ---------------------------------------------------------------------------
# The hub source


def count_choice_rows(split_dataset):
    """(rows with multiple-choice targets, all rows, first row has them?) of a split.

    Every row is looked at, not only the first.
    """
    flags = [len(choices) > 0 for choices in split_dataset["multiple_choice_targets"]]
    return sum(flags), len(flags), bool(flags and flags[0])


def is_paper_generative(split_dataset, name=""):
    """Whether a config's train split counts as generative, as the paper counted.

    The paper's rule (the original code looked at the first train row only) is
    reproduced on purpose: minute_mysteries_qa, one of the paper's 45, mixes a
    free-text subtask (first in the train split) with a multiple-choice one, so
    "no row has choices" would drop it and give 44 tasks. Mixed splits are
    therefore kept when their first row is free text, and reported in one line.
    """
    n_choice, n_rows, first_has_choices = count_choice_rows(split_dataset)
    if n_rows == 0 or first_has_choices:
        return False
    if n_choice:
        from tqdm import tqdm

        tqdm.write(f"note: {name}: {n_choice} of {n_rows} train rows have multiple-choice "
              f"targets (kept: its first row is free text, as in the paper's selection)")
    return True


def hub_generative_tasks(config_names, load):
    """The generative configs among `config_names`; `load(name)` gives a DatasetDict."""
    kept = []
    for name in config_names:
        if name in HUB_EXCLUDED:
            continue
        dataset = load(name)
        if "train" in dataset and is_paper_generative(dataset["train"], name):
            kept.append(name)
    return kept


def _hub_call(function, *args):
    from cappy.engine.dataset_hub import hub_error

    try:
        return function(*args)
    except Exception as error:  # network, hub or schema trouble: one clear line
        raise hub_error(HUB_DATASET, error, "offline: --source pypi") from None


def build_from_hub(output_dir, tasks, max_train_rows=None, max_validation_rows=None,
                   progress=True):
    """Download `tasks` from tasksource/bigbench and write them.

    With all 45 tasks selected, every config of the dataset is checked and the
    generative ones must be exactly the paper's 45; with a --tasks subset only
    the selected configs are loaded (each must still be generative).
    """
    import datasets

    def load(name):
        return _hub_call(datasets.load_dataset, HUB_DATASET, name)

    full_check = sorted(tasks) == sorted(bigbench_tasks())
    if full_check:
        configs = _hub_call(datasets.get_dataset_config_names, HUB_DATASET)
        kept = hub_generative_tasks(
            progress_bar(configs, desc="checking configs", unit="config", shown=progress), load)
        if sorted(kept) != sorted(tasks):
            extra = sorted(set(kept) - set(tasks))
            missing = sorted(set(tasks) - set(kept))
            raise CappyError(f"{HUB_DATASET}: found {len(kept)} generative configs, expected "
                             f"the paper's {len(tasks)} (extra: {extra or 'none'}; missing: "
                             f"{missing or 'none'})")
    sizes = {}
    for task in progress_bar(tasks, unit="task", shown=progress):
        dataset = load(task)
        if not all(split in dataset for split in SPLITS):
            raise CappyError(f"{HUB_DATASET}/{task}: no train and validation splits")
        if not full_check and not is_paper_generative(dataset["train"], task):
            raise CappyError(f"{HUB_DATASET}/{task}: train split is multiple choice, "
                             f"not generative")
        pairs = {split: [(row["inputs"], list(row["targets"])) for row in dataset[split]]
                 for split in SPLITS}
        sizes[task] = write_task(output_dir, task, pairs["train"], pairs["validation"],
                                 max_train_rows, max_validation_rows)
        del dataset, pairs
    write_subset_names(output_dir, tasks)
    return [(task, *sizes[task]) for task in tasks]


# ---------------------------------------------------------------------------


def build(source, output_dir, tasks_arg=None, bigbench_sdist=None,
          cache_dir="~/.cache/cappy", max_train_rows=None, max_validation_rows=None,
          progress=True):
    """The entry point behind scripts/get_bigbench_data.py."""
    for flag, value in (("--max_train_rows", max_train_rows),
                        ("--max_validation_rows", max_validation_rows)):
        if value is not None and value < 1:
            raise CappyError(f"{flag} must be at least 1, got {value}")
    tasks = resolve_tasks(tasks_arg)
    if source == "hub":
        return build_from_hub(output_dir, tasks, max_train_rows, max_validation_rows, progress)
    if source == "pypi":
        sdist = bigbench_sdist or ensure_sdist(cache_dir, progress)
        return build_from_sdist(sdist, output_dir, tasks, max_train_rows,
                                max_validation_rows, progress)
    raise CappyError(f"--source must be hub or pypi, got {source!r}")
