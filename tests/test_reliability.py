"""Bad input, found before any work: one `error:` line, exit 2, inputs unchanged, nothing
written. Each case is run as a user would, as a process on real files."""

import hashlib
import json
import os
import shutil

import pytest
from conftest import run_script

PAIRS = [{"instruction": "What is 2 + 2?", "response": "4"},
         {"instruction": "What is 2 + 2?", "response": "five"}]


def write_lines(path, lines):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def snapshot(folder):
    """{relative path: sha256} of every file below `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                out[os.path.relpath(path, folder)] = hashlib.sha256(file.read()).hexdigest()
    return out


def assert_one_line_error(done, *needles):
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def work(tmp_path):
    write_lines(tmp_path / "pairs.jsonl", [json.dumps(row).encode() for row in PAIRS])
    return tmp_path


def cappy_score(model, *args):
    return run_script("-m cappy", "score", "--model_name_or_path", model, *args)


@pytest.mark.parametrize("lines, needles", [
    ([b'{"instruction": "a\xff", "response": "b"}'],
     ("bad.jsonl:1: not valid UTF-8 (byte 19 of the line, b'\\xff')",)),
    ([json.dumps(PAIRS[0]).encode(), b'{"instruction": "a\\ud800", "response": "b"}'],
     ("bad.jsonl:2: field 'instruction': holds an unpaired surrogate",)),
    ([], ("bad.jsonl: no rows to score",)),
])
def test_score_refuses_undecodable_or_empty_input(work, tiny_scorer, lines, needles):
    write_lines(work / "bad.jsonl", lines)
    before = snapshot(work)
    done = cappy_score(tiny_scorer, "--input", work / "bad.jsonl", "--output", work / "o.jsonl")
    assert_one_line_error(done, *needles)
    assert snapshot(work) == before


def test_skipped_bad_lines_are_counted_including_undecodable_ones(work, tiny_scorer):
    write_lines(work / "mixed.jsonl", [json.dumps(PAIRS[0]).encode(), b'{"instruction": "\xff"}',
                                       json.dumps(PAIRS[1]).encode()])
    done = cappy_score(tiny_scorer, "--input", work / "mixed.jsonl", "--output",
                       work / "o.jsonl", "--skip_bad_rows")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote" in done.stdout and "2 rows, skipped 1 bad rows" in done.stdout
    assert len((work / "o.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("output, needle", [
    ("folder", "--output {work}/folder: is a folder; give a file name"),
    ("pairs.jsonl", "is also an input"),
    ("a_file/out.jsonl", "{work}/a_file is a file, so nothing can be written under it"),
])
def test_score_refuses_an_output_it_cannot_write_before_the_model_loads(work, output, needle):
    (work / "folder").mkdir()
    (work / "a_file").write_text("x")
    before = snapshot(work)
    # The model does not exist: the output is checked before it would be loaded.
    done = cappy_score(str(work / "no-model"), "--input", work / "pairs.jsonl",
                       "--output", work / output)
    assert_one_line_error(done, needle.format(work=work))
    assert snapshot(work) == before


@pytest.mark.parametrize("flags, needle", [
    (("--batch_size", "0"), "--batch_size must be at least 1, got 0"),
    (("--max_length", "2"), "--max_length must be at least 6, got 2"),
    # the tiny Cappy's table holds 514 positions, RoBERTa's: two go to the padding offset
    (("--max_length", "513"), "--max_length 513 is more than"),
])
def test_score_refuses_out_of_range_numbers(work, tiny_scorer, flags, needle):
    done = cappy_score(tiny_scorer, "--input", work / "pairs.jsonl", "--output",
                       work / "o.jsonl", *flags)
    assert_one_line_error(done, needle)
    assert not (work / "o.jsonl").exists()


@pytest.mark.parametrize("flags, needle", [
    (("--learning_rate", "nan"), "--learning_rate must be a finite number, got nan"),
    (("--warmup_rate", "-1"), "--warmup_rate must be at least 0, got -1.0"),
    (("--warmup_rate", "1.5"), "--warmup_rate must be at most 1, got 1.5"),
    (("--train_size", "0"), "--train_size must be at least 1, got 0"),
    (("--per_device_batch_size", "0"), "--per_device_batch_size must be at least 1, got 0"),
    (("--max_length", "2"), "--max_length must be at least 6, got 2"),
])
def test_a_bigbench_task_refuses_out_of_range_settings_at_once(tmp_path, flags, needle):
    done = run_script("cappy_bigbench.py", "--results_dir", tmp_path / "results", *flags)
    assert_one_line_error(done, needle)
    assert os.listdir(tmp_path) == []


def test_max_length_above_the_position_table_is_refused_by_every_command(tmp_path,
                                                                        tiny_scorer):
    """The README's bound: --max_length from 6 to what the model's position table holds
    (512 tokens here), checked once the model's config is read, before any pair is
    scored; 512 itself is fine."""
    from conftest import promptsource_rows

    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in promptsource_rows(1)))
    needle = "--max_length 600 is more than"
    done = run_script("cappy_promptsource.py", "--model_name_or_path", tiny_scorer,
                      "--data_file", data, "--max_length", 600, "--output_file",
                      tmp_path / "results.json")
    line = assert_one_line_error(done, needle)
    assert "position table holds (512 tokens)" in line
    assert not (tmp_path / "results.json").exists()
    done = run_script("-m cappy", "score", "--model_name_or_path", tiny_scorer, "--input",
                      data, "--output", tmp_path / "scored.jsonl", "--max_length", 512,
                      "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_bigbench_task_refuses_a_results_dir_under_a_file(tmp_path, tiny_scorer):
    from test_cappy_bigbench import write_candidates

    write_candidates(tmp_path / "gens" / "gen", "toy")
    (tmp_path / "taken").write_text("not a folder")
    done = run_script("cappy_bigbench.py", "--model_name_or_path", tiny_scorer,
                      "--bigbench_gen_dir", tmp_path / "gens", "--bigbench_gen_model", "gen",
                      "--bigbench_subset_name", "toy", "--results_dir", tmp_path / "taken",
                      "--train_size", 32, "--per_device_batch_size", 4,
                      "--accumulate_grad_batches", 2, "--max_length", 64, "--quiet")
    assert_one_line_error(done, f"--results_dir {tmp_path}/taken/gen: {tmp_path}/taken is a "
                                f"file, so nothing can be written under it")


def test_promptsource_never_writes_over_its_test_file(tmp_path, tiny_scorer):
    from conftest import promptsource_rows

    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in promptsource_rows()))
    before = data.read_bytes()
    done = run_script("cappy_promptsource.py", "--data_file", data, "--output_file", data,
                      "--model_name_or_path", tiny_scorer)
    assert_one_line_error(done, f"--output_file {data}: is also an input ({data})")
    assert data.read_bytes() == before and os.listdir(tmp_path) == ["test.jsonl"]


def test_the_results_table_never_writes_over_a_result_file(tmp_path):
    results = tmp_path / "results" / "flan-t5-small"
    results.mkdir(parents=True)
    result = results / "codenames.json"
    result.write_text(json.dumps({"rougeL": 0.25}))
    done = run_script("scripts/present_cappy_bigbench_results.py", "--results_dir",
                      tmp_path / "results", "--bigbench_data_dir", tmp_path / "absent",
                      "--output_file", result)
    assert_one_line_error(done, "--output_file", "is also an input")
    assert json.loads(result.read_text()) == {"rougeL": 0.25}


def test_a_result_in_percent_is_not_averaged_in(tmp_path):
    results = tmp_path / "results" / "flan-t5-small"
    results.mkdir(parents=True)
    (results / "codenames.json").write_text(json.dumps({"rougeL": 19.5}))
    (results / "gem.json").write_text(json.dumps({"rougeL": 0.25}))
    data = tmp_path / "data"
    data.mkdir()
    (data / "subset_names.json").write_text(json.dumps(["codenames", "gem"]))
    done = run_script("scripts/present_cappy_bigbench_results.py", "--results_dir",
                      tmp_path / "results", "--bigbench_data_dir", data)
    assert done.returncode == 0, done.stderr
    assert "| Mean | 25.00 |" in done.stdout
    assert "codenames ['rougeL' 19.5 is outside [0, 1] (in percent?)]" in done.stdout


@pytest.mark.parametrize("remove, needle", [
    (("config.json",), "no config.json, so not a saved model folder"),
    (("tokenizer.json", "vocab.json", "merges.txt"), "no tokenizer files"),
])
def test_a_model_folder_missing_its_config_or_tokenizer_is_one_line(work, tiny_scorer, remove,
                                                                    needle):
    model = work / "model"
    shutil.copytree(tiny_scorer, model)
    for name in remove:
        if (model / name).exists():
            (model / name).unlink()
    done = cappy_score(str(model), "--input", work / "pairs.jsonl", "--output", work / "o.jsonl")
    assert_one_line_error(done, f"{model}: {needle}")
    assert not (work / "o.jsonl").exists()


def test_finetune_refuses_an_empty_validation_file_before_training(work, tiny_scorer):
    rows = [{**row, "label": 1.0} for row in PAIRS]
    write_lines(work / "train.jsonl", [json.dumps(row).encode() for row in rows])
    write_lines(work / "dev.jsonl", [])
    done = run_script("-m cappy", "finetune", "--model_name_or_path", tiny_scorer,
                      "--train_file", work / "train.jsonl", "--validation_file",
                      work / "dev.jsonl", "--output_dir", work / "out")
    assert_one_line_error(done, "dev.jsonl: no usable validation rows")
    assert not (work / "out").exists()


def test_one_run_of_a_task_at_a_time_and_a_dead_runs_lock_is_taken_over(tmp_path, tiny_scorer):
    import socket
    import subprocess
    import sys

    from test_cappy_bigbench import task_args, write_candidates

    write_candidates(tmp_path / "gens" / "gen", "toy")
    result = tmp_path / "results" / "gen" / "toy.json"
    result.parent.mkdir(parents=True)
    lock = tmp_path / "results" / "gen" / "toy.json.lock"
    host = socket.gethostname()
    lock.write_text(json.dumps({"pid": os.getpid(), "host": host, "started": "then"}))
    done = run_script("cappy_bigbench.py", *task_args(tmp_path, tiny_scorer))
    assert_one_line_error(done, f"{result}: another run is writing it (pid {os.getpid()} on "
                                f"{host}, since then; lock {lock})")
    assert not result.exists() and lock.exists()

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    lock.write_text(json.dumps({"pid": int(gone), "host": host, "started": "then"}))
    done = run_script("cappy_bigbench.py", *task_args(tmp_path, tiny_scorer))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(result.read_text())["rougeL"] >= 0 and not lock.exists()


def test_a_json_input_that_is_not_utf8_is_one_line(tmp_path):
    bad = tmp_path / "baselines.json"
    bad.write_bytes(b'{"flan-t5-small": {"beam4": "\xff"}}')
    results = tmp_path / "results" / "flan-t5-small"
    results.mkdir(parents=True)
    (results / "codenames.json").write_text(json.dumps({"rougeL": 0.25}))
    done = run_script("scripts/present_cappy_bigbench_results.py", "--results_dir",
                      tmp_path / "results", "--baselines_file", bad)
    assert_one_line_error(done, f"{bad}: not valid UTF-8 (byte 30)")


def test_a_jax_only_command_reads_pytorch_bin_weights_though_torch_is_kept_out(work,
                                                                               tiny_scorer):
    """`cappy score` keeps PyTorch out of transformers (start-up), yet a folder holding only
    `pytorch_model.bin` still loads, with the same scores as its safetensors."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    model = work / "bin-only"
    shutil.copytree(tiny_scorer, model)
    torch.save(load_file(str(model / "model.safetensors")), model / "pytorch_model.bin")
    for name in ("model.safetensors", "flax_model.msgpack"):
        (model / name).unlink()
    outputs = {}
    for name, folder in (("safetensors", tiny_scorer), ("bin", str(model))):
        done = cappy_score(folder, "--input", work / "pairs.jsonl", "--output",
                           work / f"{name}.jsonl")
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[name] = (work / f"{name}.jsonl").read_text()
    assert outputs["bin"] == outputs["safetensors"]


def test_one_promptsource_run_and_one_generator_run_at_a_time_per_output(tmp_path):
    """A live run's lock beside the output makes a second run refuse before any work."""
    import socket

    from conftest import promptsource_rows

    host = socket.gethostname()
    holder = json.dumps({"pid": os.getpid(), "host": host, "started": "then"})
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in promptsource_rows()))
    output = tmp_path / "results.json"
    (tmp_path / "results.json.lock").write_text(holder)
    done = run_script("cappy_promptsource.py", "--data_file", data, "--output_file", output,
                      "--model_name_or_path", tmp_path / "no-model-needed")
    assert_one_line_error(done, f"--output_file {output}: another run is writing it (pid "
                                f"{os.getpid()} on {host}, since then")
    assert not output.exists()

    bigbench = tmp_path / "bigbench"
    bigbench.mkdir()
    (bigbench / "toy_validation.jsonl").write_text(json.dumps({"instruction": "x"}) + "\n")
    gens = tmp_path / "gens"
    gens.mkdir()
    (gens / "my-t5.lock").write_text(holder)
    done = run_script("scripts/bigbench_flan_generate.py", "--model_name_or_path",
                      tmp_path / "my-t5", "--data_dir", bigbench, "--output_dir", gens,
                      "--tasks", "toy", "--splits", "validation")
    assert_one_line_error(done, f"--output_dir {gens / 'my-t5'}: another run is writing it")
    assert sorted(os.listdir(gens)) == ["my-t5.lock"]
