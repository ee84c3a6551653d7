"""The BIG-Bench data builder (cappy/bigbench/data.py, scripts/get_bigbench_data.py).

Most tests convert a small slice of the real bigbench 1.0.0 sdist
(tests/data/bigbench_sdist_slice, packed into a .tar.gz here); one slow test checks
the published split sizes on the full sdist when it is on disk.
"""

import collections
import io
import itertools
import json
import os
import random
import subprocess
import sys
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from cappy.bigbench import data as bb  # noqa: E402
from cappy.engine.errors import CappyError  # noqa: E402

SLICE = os.path.join(REPO, "tests", "data", "bigbench_sdist_slice")
SLICE_TASKS_DIR = os.path.join(SLICE, "bigbench-1.0.0", "bigbench", "benchmark_tasks")
SCRIPT = os.path.join(REPO, "scripts", "get_bigbench_data.py")
SLICE_SIZES = {
    "auto_debugging": (18, 16),  # full task: 34 examples, validation minimum 16
    "codenames": (68, 17),  # full task: 85 examples, 20 % validation
    # 40 examples -> 8 validation; five subtasks of 9 -> 2 validation each (16 // 6)
    "modified_arithmetic": (32 + 5 * 7, 8 + 5 * 2),
    # two subtasks of 9 examples, each with 16 // 2 = 8 validation examples
    "minute_mysteries_qa": (2, 16),
    # 211 examples, one duplicate: 210 -> 168 / 42 (169 / 42 without de-duplication)
    "operators": (168, 42),
}
MODIFIED_ARITHMETIC_SUBTASKS = [
    "three_digit_addition_control", "three_digit_addition_plus_one",
    "three_digit_subtraction_control", "three_digit_subtraction_plus_one",
    "two_digit_multiplication_control", "two_digit_multiplication_plus_one",
]


def make_sdist(path, edit=None):
    """Pack the slice as an sdist-like .tar.gz at `path`.

    `edit(relative_path, obj)` may return a replacement for a json file's content.
    """
    with tarfile.open(path, "w:gz") as archive:
        for folder, dirs, files in os.walk(SLICE):
            dirs.sort()
            for name in sorted(files):
                if not name.endswith(".json"):
                    continue
                full = os.path.join(folder, name)
                relative = os.path.relpath(full, SLICE)
                with open(full, "rb") as file:
                    data = file.read()
                if edit is not None:
                    obj = json.loads(data, object_pairs_hook=collections.OrderedDict)
                    new = edit(relative, obj)
                    if new is not None:
                        data = json.dumps(new, indent=2).encode()
                info = tarfile.TarInfo(relative)
                info.size = len(data)
                archive.addfile(info, fileobj=io.BytesIO(data))
    return str(path)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    return make_sdist(tmp_path_factory.mktemp("sdist") / "bigbench-1.0.0.tar.gz")


@pytest.fixture(scope="module")
def built(sdist, tmp_path_factory):
    """The slice converted once: (output_dir, sizes)."""
    out = str(tmp_path_factory.mktemp("built"))
    sizes = bb.build("pypi", out, tasks_arg=",".join(SLICE_SIZES), bigbench_sdist=sdist,
                     progress=False)
    return out, sizes


def read_rows(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def load_slice_json(*parts):
    with open(os.path.join(SLICE_TASKS_DIR, *parts), encoding="utf-8") as file:
        return json.load(file, object_pairs_hook=collections.OrderedDict)


def run_script(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def listing(folder):
    return sorted(os.listdir(folder))


# --- splits and formatting -------------------------------------------------


def test_split_sizes_on_slice(built):
    out, sizes = built
    assert {task: (n_train, n_val) for task, n_train, n_val in sizes} == SLICE_SIZES
    for task, (n_train, n_val) in SLICE_SIZES.items():
        for split, expected in (("train", n_train), ("validation", n_val)):
            rows = read_rows(os.path.join(out, f"{task}_{split}.jsonl"))
            assert len(rows) == expected
            assert [row["example_idx"] for row in rows] == list(range(expected))
            for row in rows:
                assert list(row) == ["dataset", "example_idx", "instruction", "references"]
                assert row["dataset"] == task
                assert isinstance(row["instruction"], str) and row["instruction"]
                assert row["references"] and all(isinstance(r, str) for r in row["references"])
    with open(os.path.join(out, "subset_names.json"), encoding="utf-8") as file:
        text = file.read()
    assert json.loads(text) == sorted(SLICE_SIZES)  # the 45-task (alphabetical) order
    assert text.startswith('[\n    "auto_debugging",')  # indent 4


def all_rows(out, task):
    return [row for split in bb.SPLITS
            for row in read_rows(os.path.join(out, f"{task}_{split}.jsonl"))]


def test_instruction_formatting_default_prefixes(built):
    # codenames has no task_prefix and the default "\nQ: " / "\nA: " prefixes.
    example = load_slice_json("codenames", "task.json")["examples"][0]
    rows = [row for row in all_rows(built[0], "codenames")
            if row["references"] == ["director, kiss, popcorn, street"]]
    assert len(rows) == 1
    assert rows[0]["instruction"] == (
        "Q: Try to identify the 4 words best associated with the word DRIVE-IN from the "
        "following list: locust, fever, street, sherwood, kiss, popcorn, craft, ant, crystal, "
        "tear, cowboy, government, pine, mountie, soap, genie, king arthur, sphinx, director, "
        "bride, razor, fog, whistle. Give your answer in alphabetical order.\nA:")
    assert rows[0]["instruction"] == "Q: " + example["input"] + "\nA:"


def test_instruction_formatting_task_prefix(built):
    # operators: task_prefix, input prefix "\n", output prefix " = " (stripped).
    rows = [row for row in all_rows(built[0], "operators")
            if row["instruction"].endswith("\nop i is i.\nop 17 =")]
    assert len(rows) == 1
    assert rows[0]["instruction"] == ("Given the definition of the op operator, compute the "
                                      "result.\nop i is i.\nop 17 =")
    assert rows[0]["references"] == ["17"]


def test_multiple_choice_examples_get_their_choices(built):
    # minute_mysteries_qa:multiplechoice has target_scores and no target: the choices
    # are appended in np.random.RandomState(42).permutation order of the sorted
    # choices (a permutation of 4 is [1, 3, 0, 2]) and the target is the best choice.
    tail = ("Who stole the flower fund?\n  choice: Justin Thorn\n  choice: Linda Hinton"
            "\n  choice: James Faust\n  choice: Lincoln Smith\nAnswer:")
    rows = [row for row in all_rows(built[0], "minute_mysteries_qa")
            if row["instruction"].endswith(tail)]
    assert len(rows) == 1
    assert rows[0]["instruction"].startswith("Story: ")
    assert rows[0]["references"] == ["Lincoln Smith"]


def test_format_example_rules():
    task = {"name": "t"}
    assert bb.format_example({"input": "x", "target": "y"}, task) == ("\nQ: x\nA: ", ["y"])
    task = {"name": "t", "example_input_prefix": "<", "example_output_prefix": ">",
            "choice_prefix": "|", "append_choices_to_input": False}
    example = {"input": "x", "target_scores": {"b": 0, "a": 1, "c": 1}}
    # no choices appended; the first key with the top score is the target
    assert bb.format_example(example, task) == ("<x>", ["a"])
    assert bb.format_example({"input": "x", "target": ["p", "q"]}, task) == ("<x>", ["p", "q"])
    # choices appended: sorted, then permuted as RandomState(42).permutation(4) = [1, 3, 0, 2]
    task["append_choices_to_input"] = True
    example = {"input": "x", "target_scores": {"d": 0, "b": 0, "a": 1, "c": 0}}
    assert bb.format_example(example, task) == ("<x|b|d|a|c>", ["a"])
    with pytest.raises(CappyError, match="no correct choice"):
        bb.format_example({"input": "x", "target_scores": {"a": 0, "b": 0}}, task)


def test_dedupe_keeps_first_occurrences_in_order():
    a = collections.OrderedDict([("input", "1"), ("target", "a")])
    b = collections.OrderedDict([("input", "2"), ("target", "b")])
    # same content, different key order: different JSON text, so not a duplicate
    b_swapped = collections.OrderedDict([("target", "b"), ("input", "2")])
    examples = [a, b, dict(a), b_swapped, dict(b), a]
    assert bb.dedupe_examples(examples) == [a, b, b_swapped]
    operators = load_slice_json("operators", "task.json")["examples"]
    assert len(operators) == 211 and len(bb.dedupe_examples(operators)) == 210


def test_shuffle_matches_the_global_random_rule_and_is_deterministic():
    for n in (1, 17, 34, 211, 1000):
        items = list(range(n))
        expected = list(items)
        random.seed(42)
        random.shuffle(expected)  # the rule bigbench_bridge.py applies
        state = random.getstate()
        train, validation = bb.split_examples(items, 0, "t")
        assert train + validation == expected
        assert random.getstate() == state  # the global generator is left alone
        assert bb.split_examples(items, 0, "t") == (train, validation)


def test_split_sizes_rule():
    def sizes(n, minimum):
        train, validation = bb.split_examples(range(n), minimum, "t")
        return len(train), len(validation)

    assert sizes(34, 16) == (18, 16)
    assert sizes(85, 16) == (68, 17)
    assert sizes(26157, 16) == (20926, 5231)
    assert sizes(9, 2) == (7, 2)  # int(0.2 * 9) = 1 < 2
    assert sizes(4, 0) == (4, 0)  # 16 // 261 subtasks = 0: no validation at all
    with pytest.raises(CappyError, match="too few"):
        sizes(16, 16)


def subtask_of_rows(rows):
    """Which modified_arithmetic subtask each row's instruction comes from."""
    owner = {}
    for subtask in MODIFIED_ARITHMETIC_SUBTASKS:
        data = load_slice_json("modified_arithmetic", subtask, "task.json")
        for example in data["examples"]:
            instruction, _ = bb.format_example(example, data)
            owner[(str(data.get("task_prefix", "")) + instruction).strip()] = subtask
    return [owner[row["instruction"]] for row in rows]


def blocks(labels):
    return [(label, len(list(group))) for label, group in itertools.groupby(labels)]


def test_subtasks_concatenate_in_metadata_order(built):
    out = built[0]
    train = read_rows(os.path.join(out, "modified_arithmetic_train.jsonl"))
    validation = read_rows(os.path.join(out, "modified_arithmetic_validation.jsonl"))
    counts_train = [32] + [7] * 5
    counts_validation = [8] + [2] * 5
    assert blocks(subtask_of_rows(train)) == list(zip(MODIFIED_ARITHMETIC_SUBTASKS,
                                                      counts_train))
    assert blocks(subtask_of_rows(validation)) == list(zip(MODIFIED_ARITHMETIC_SUBTASKS,
                                                           counts_validation))


def test_subtask_order_follows_metadata_not_folders(tmp_path):
    def reverse_subtasks(relative, obj):
        if relative.endswith("task_metadata.json"):
            obj["modified_arithmetic"]["subtask_names"].reverse()
            return obj
        return None

    sdist = make_sdist(tmp_path / "reversed.tar.gz", reverse_subtasks)
    out = str(tmp_path / "out")
    bb.build("pypi", out, tasks_arg="modified_arithmetic", bigbench_sdist=sdist,
             progress=False)
    train = read_rows(os.path.join(out, "modified_arithmetic_train.jsonl"))
    assert blocks(subtask_of_rows(train)) == list(zip(MODIFIED_ARITHMETIC_SUBTASKS[::-1],
                                                      [7] * 5 + [32]))


def test_metadata_subtask_missing_from_archive_is_an_error(tmp_path):
    def add_subtask(relative, obj):
        if relative.endswith("task_metadata.json"):
            obj["modified_arithmetic"]["subtask_names"].append("modified_arithmetic:nope")
            return obj
        return None

    sdist = make_sdist(tmp_path / "s.tar.gz", add_subtask)
    with pytest.raises(CappyError, match="modified_arithmetic:nope"):
        bb.build("pypi", str(tmp_path / "out"), tasks_arg="modified_arithmetic",
                 bigbench_sdist=sdist, progress=False)


# --- the command line --------------------------------------------------------


def test_tasks_subset_and_determinism(sdist, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        result = run_script("--source", "pypi", "--bigbench_sdist", sdist, "--output_dir", out,
                            "--tasks", "codenames,auto_debugging")
        assert result.returncode == 0, result.stderr
    expected = ["auto_debugging_train.jsonl", "auto_debugging_validation.jsonl",
                "codenames_train.jsonl", "codenames_validation.jsonl", "subset_names.json"]
    assert listing(first) == expected  # no temporary files left behind
    with open(first / "subset_names.json") as file:
        assert json.load(file) == ["auto_debugging", "codenames"]
    for name in expected:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    # running again over the same folder gives the same bytes too
    before = {name: (first / name).read_bytes() for name in expected}
    assert run_script("--source", "pypi", "--bigbench_sdist", sdist, "--output_dir", first,
                      "--tasks", "codenames,auto_debugging").returncode == 0
    assert {name: (first / name).read_bytes() for name in expected} == before


def test_unknown_task_name_exits_2_with_one_line(sdist, tmp_path):
    out = tmp_path / "out"
    result = run_script("--source", "pypi", "--bigbench_sdist", sdist, "--output_dir", out,
                        "--tasks", "codenames,not_a_task,also_bad")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and "not_a_task, also_bad" in result.stderr
    assert not out.exists()


def test_missing_sdist_file_is_one_line(tmp_path):
    result = run_script("--source", "pypi", "--bigbench_sdist", tmp_path / "nope.tar.gz",
                        "--output_dir", tmp_path / "out", "--tasks", "codenames")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope.tar.gz'}: file not found"


def test_not_a_tarball_is_one_error(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(CappyError, match="not a readable"):
        bb.build("pypi", str(tmp_path / "out"), tasks_arg="codenames", bigbench_sdist=str(bad),
                 progress=False)


def test_tellmewhy_is_reported_and_left_out(sdist, tmp_path, capsys):
    out = str(tmp_path / "out")
    sizes = bb.build("pypi", out, tasks_arg="tellmewhy,codenames", bigbench_sdist=sdist,
                     progress=False)
    assert sizes == [("codenames", 68, 17)]
    captured = capsys.readouterr().out
    assert captured.count("\n") == 1 and "tellmewhy" in captured
    with open(os.path.join(out, "subset_names.json")) as file:
        assert json.load(file) == ["codenames"]
    with pytest.raises(CappyError, match="nothing to build"):
        bb.build("pypi", str(tmp_path / "out2"), tasks_arg="tellmewhy", bigbench_sdist=sdist,
                 progress=False)


def test_task_absent_from_the_archive_fails_before_writing(sdist, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(CappyError, match="not found in the sdist: word_sorting"):
        bb.build("pypi", str(out), tasks_arg="codenames,word_sorting", bigbench_sdist=sdist,
                 progress=False)
    assert not out.exists()


def test_failing_task_leaves_no_partial_files(tmp_path):
    # auto_debugging cut to 16 examples: no room for a train split, so an error.
    def shrink(relative, obj):
        if relative.endswith("auto_debugging/task.json"):
            obj["examples"] = obj["examples"][:16]
            return obj
        return None

    sdist = make_sdist(tmp_path / "s.tar.gz", shrink)
    out = tmp_path / "out"
    with pytest.raises(CappyError, match="auto_debugging: only 16 distinct examples"):
        bb.build("pypi", str(out), tasks_arg="auto_debugging,codenames", bigbench_sdist=sdist,
                 progress=False)
    # auto_debugging comes first in the archive: nothing at all was written
    assert not out.exists() or listing(out) == []


def test_interrupted_write_leaves_no_file(sdist, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = bb.write_jsonl

    def write_then_fail(path, rows):
        def rows_then_fail():
            yield from list(rows)[:3]
            raise KeyboardInterrupt  # e.g. Ctrl-C half-way through a file

        return real(path, rows_then_fail())

    monkeypatch.setattr(bb, "write_jsonl", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        bb.build("pypi", str(out), tasks_arg="codenames", bigbench_sdist=sdist, progress=False)
    assert not out.exists() or listing(out) == []


def test_max_rows_cut_the_first_rows(built, sdist, tmp_path):
    out = str(tmp_path / "cut")
    sizes = bb.build("pypi", out, tasks_arg="codenames", bigbench_sdist=sdist,
                     max_train_rows=5, max_validation_rows=3, progress=False)
    assert sizes == [("codenames", 5, 3)]
    for split, n in (("train", 5), ("validation", 3)):
        full = read_rows(os.path.join(built[0], f"codenames_{split}.jsonl"))
        assert read_rows(os.path.join(out, f"codenames_{split}.jsonl")) == full[:n]
    with pytest.raises(CappyError, match="--max_train_rows"):
        bb.build("pypi", out, tasks_arg="codenames", bigbench_sdist=sdist, max_train_rows=0)


def test_sdist_download_is_cached_and_failures_are_clear(tmp_path, monkeypatch):
    calls, shown = [], []

    def fake_run(command, **kwargs):
        calls.append(command)
        shown.append(kwargs.get("stdout", "captured"))
        download_dir = command[command.index("-d") + 1]
        with open(os.path.join(download_dir, bb.SDIST_NAME), "wb") as file:
            file.write(b"x")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(bb.subprocess, "run", fake_run)
    path = bb.ensure_sdist(str(tmp_path))
    assert path == str(tmp_path / bb.SDIST_NAME)
    assert calls and calls[0][1:4] == ["-m", "pip", "download"]
    assert "bigbench==1.0.0" in calls[0] and "--no-deps" in calls[0]
    assert bb.ensure_sdist(str(tmp_path)) == path and len(calls) == 1  # reused
    assert shown == [None]  # pip's progress bar reaches the terminal
    bb.ensure_sdist(str(tmp_path / "quiet"), progress=False)
    assert shown[-1] == subprocess.PIPE

    monkeypatch.setattr(bb.subprocess, "run", lambda command, **kwargs:
                        subprocess.CompletedProcess(command, 1, "", "ERROR: no network\n"))
    with pytest.raises(CappyError, match="no network.*--bigbench_sdist"):
        bb.ensure_sdist(str(tmp_path / "empty"))
    assert listing(tmp_path / "empty") == []  # no partial download left to reuse
    assert listing(tmp_path) == [bb.SDIST_NAME, "empty", "quiet"]


# --- the hub source (monkeypatched, no network) --------------------------------


def fake_config(generative=True, first_row_choices=False, rows=3, name="t"):
    import datasets

    def split(n, offset):
        choices = [[] for _ in range(n)]
        if not generative:
            choices = [["a", "b"] for _ in range(n)]
        elif first_row_choices is not None and n > 1:
            # a mixed config: one multiple-choice row, first or last
            choices[0 if first_row_choices else -1] = ["a", "b"]
        return datasets.Dataset.from_dict({
            "idx": list(range(n)),
            "inputs": [f"{name} input {offset + i}" for i in range(n)],
            "targets": [[f"{name} target {offset + i}"] for i in range(n)],
            "multiple_choice_targets": choices,
            "multiple_choice_scores": [[0] * len(c) for c in choices],
        })

    return datasets.DatasetDict(train=split(rows, 0), validation=split(2, 100))


def install_fake_hub(monkeypatch, configs):
    import datasets

    loaded = []

    def load_dataset(path, name):
        assert path == "tasksource/bigbench"
        loaded.append(name)
        return configs[name]

    monkeypatch.setattr(datasets, "get_dataset_config_names", lambda path: list(configs))
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return loaded


def paper_configs():
    configs = {name: fake_config(first_row_choices=None, name=name)
               for name in bb.bigbench_tasks()}
    # the paper's mixed task: free-text rows first, multiple-choice rows after
    configs["minute_mysteries_qa"] = fake_config(first_row_choices=False,
                                                 name="minute_mysteries_qa")
    configs["simple_arithmetic_json_subtasks"] = fake_config(first_row_choices=None)
    configs["anachronisms"] = fake_config(generative=False)
    configs["mixed_but_choice_first"] = fake_config(first_row_choices=True)
    return configs


def test_hub_source_keeps_exactly_the_paper_tasks(monkeypatch, tmp_path, capsys):
    install_fake_hub(monkeypatch, paper_configs())
    out = tmp_path / "out"
    sizes = bb.build("hub", str(out), progress=False)
    assert [task for task, _, _ in sizes] == bb.bigbench_tasks()
    assert all((n_train, n_val) == (3, 2) for _, n_train, n_val in sizes)
    with open(out / "subset_names.json") as file:
        assert json.load(file) == bb.bigbench_tasks()
    assert read_rows(out / "tense_validation.jsonl")[1] == {
        "dataset": "tense", "example_idx": 1, "instruction": "tense input 101",
        "references": ["tense target 101"]}
    assert "minute_mysteries_qa: 1 of 3 train rows" in capsys.readouterr().out


def test_hub_source_fails_loudly_when_the_count_is_not_45(monkeypatch, tmp_path):
    configs = paper_configs()
    configs["tense"] = fake_config(generative=False)
    configs["new_generative_task"] = fake_config(first_row_choices=None)
    install_fake_hub(monkeypatch, configs)
    out = tmp_path / "out"
    with pytest.raises(CappyError, match=r"extra: \['new_generative_task'\]; "
                                         r"missing: \['tense'\]"):
        bb.build("hub", str(out), progress=False)
    assert not out.exists()


def test_hub_source_with_a_subset_loads_only_those(monkeypatch, tmp_path):
    loaded = install_fake_hub(monkeypatch, paper_configs())
    sizes = bb.build("hub", str(tmp_path / "out"), tasks_arg="word_sorting,tense",
                     progress=False)
    assert [task for task, _, _ in sizes] == ["tense", "word_sorting"]
    assert loaded == ["tense", "word_sorting"]


# --- committed files ------------------------------------------------------------


def test_committed_subset_names_and_sample():
    with open(os.path.join(REPO, "bigbench_data", "subset_names.json")) as file:
        assert json.load(file) == bb.bigbench_tasks()
    assert len(bb.bigbench_tasks()) == 45
    sample = os.path.join(REPO, "cappy", "data", "bigbench_sample")
    with open(os.path.join(sample, "subset_names.json")) as file:
        tasks = json.load(file)
    assert len(tasks) == 3 and set(tasks) <= set(bb.bigbench_tasks())
    for task in tasks:
        for split, n in (("train", 24), ("validation", 8)):
            rows = read_rows(os.path.join(sample, f"{task}_{split}.jsonl"))
            assert len(rows) == n
            assert [row["example_idx"] for row in rows] == list(range(n))
            assert all(row["dataset"] == task and row["references"] for row in rows)
            assert all(len(row["instruction"].split()) < 60 for row in rows)


# --- the full sdist (slow, only where it is on disk) ---------------------------------

FULL_SDIST = os.environ.get("CAPPY_BIGBENCH_SDIST", "/tmp/dl/bigbench-1.0.0.tar.gz")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(FULL_SDIST),
                    reason="full bigbench 1.0.0 sdist not found (set CAPPY_BIGBENCH_SDIST)")
def test_full_sdist_sizes_and_sample(tmp_path):
    expected = {"auto_categorization": (263, 65), "auto_debugging": (18, 16),
                "codenames": (68, 17), "object_counting": (800, 200),
                "cryptonite": (20926, 5231)}
    sample = os.path.join(REPO, "cappy", "data", "bigbench_sample")
    with open(os.path.join(sample, "subset_names.json")) as file:
        sample_tasks = json.load(file)
    out = str(tmp_path / "out")
    sizes = bb.build("pypi", out, tasks_arg=",".join([*expected, *sample_tasks]),
                     bigbench_sdist=FULL_SDIST, progress=False)
    sizes = {task: (n_train, n_val) for task, n_train, n_val in sizes}
    assert {task: sizes[task] for task in expected} == expected
    # the committed sample is the first rows of the full conversion
    for task in sample_tasks:
        for split in bb.SPLITS:
            cut = read_rows(os.path.join(sample, f"{task}_{split}.jsonl"))
            assert read_rows(os.path.join(out, f"{task}_{split}.jsonl"))[:len(cut)] == cut
