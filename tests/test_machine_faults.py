"""Faults of the machine itself: a disk that fills up mid-write, a device out of memory.

Each ends in one `error:` line (exit 2) naming the file or the settings to lower; nothing
partial is kept, the previous complete output (a result, a model folder, the last
checkpoint, finished candidate files and shards) stays as it was, and running again
resumes from it. Full disks are real: a small tmpfs, mounted here (root only), filled by
a filler file; device memory is exhausted by raising XLA's own error type in a step.
"""

import importlib.util
import json
import os
import shutil
import subprocess

import jax
import numpy as np
import pytest
from conftest import ENVIRONMENT, REPO, run_script

from cappy.engine.errors import CappyError
from cappy.engine.runtime.process import exit_on_error

# What XLA raises when an allocation fails on a device (first line, then pages of detail).
OOM_TEXT = ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.\n"
            "BufferAssignment OOM Debugging.\nBufferAssignment stats:\n  parameter allocation: "
            "1.33GiB\n")


def out_of_device_memory():
    return jax.errors.JaxRuntimeError(OOM_TEXT)


@pytest.fixture
def small_disk(tmp_path):
    """`mount(size)`: a fresh tmpfs of `size` under tmp_path, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip(ENVIRONMENT + "mounting a tmpfs needs root")
    mounted = []

    def mount(size="1M", name="disk"):
        folder = tmp_path / name
        folder.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                   str(folder)], capture_output=True, text=True)
        except OSError as error:  # no mount command
            pytest.skip(f"{ENVIRONMENT}cannot mount a tmpfs here: {error}")
        if done.returncode:
            pytest.skip(f"{ENVIRONMENT}cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(disk, leave=0):
    """Fill `disk` with a filler file until `leave` bytes are free (tmpfs counts pages)."""
    path = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(path, "ab") as file:
        file.write(b"\0" * max(0, free - leave))
    assert shutil.disk_usage(disk).free <= leave
    return path


def one_line(stderr):
    """The only line of stderr: an `error:` line, no traceback."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def snapshot(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in files_under(folder)}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---- one place decides: what is a full disk, what is a device out of memory -------------

def test_full_disks_and_exhausted_devices_are_told_apart():
    import errno

    from cappy.engine.errors import device_memory_reason
    from cappy.engine.io import disk_full_reason

    orbax = ValueError('RESOURCE_EXHAUSTED: Error writing "params.a/0.0" in OCDBT database: '
                       'Failed to write 311211 bytes to file 7: No space left on device '
                       "[os_error_code='28']")
    safetensors = RuntimeError("Error while serializing: I/O error: No space left on device "
                               "(os error 28)")
    assert device_memory_reason(orbax) is None  # orbax says RESOURCE_EXHAUSTED for a disk
    assert disk_full_reason(orbax) == disk_full_reason(safetensors) == "No space left on device"
    assert disk_full_reason(OSError(errno.EDQUOT, "Disk quota exceeded")) == "Disk quota exceeded"
    assert disk_full_reason(OSError(errno.EIO, "Input/output error")) == "Input/output error"
    assert disk_full_reason(OSError(errno.EACCES, "Permission denied")) is None
    assert device_memory_reason(out_of_device_memory()) == (
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.")
    assert device_memory_reason(jax.errors.JaxRuntimeError("INTERNAL: other")) is None
    assert disk_full_reason(out_of_device_memory()) is None


def test_xla_running_out_of_memory_is_recognised():
    """XLA's own error, not an injected one: an allocation of 4 TiB, in a process whose address
    space is capped at 8 GiB (so that it fails at once, whatever the machine)."""
    import sys

    cap = 8 << 30
    code = ("import resource\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))\n"
            "import jax, jax.numpy as jnp\n"
            "from cappy.engine.errors import device_memory_guard\n"
            "from cappy.engine.runtime.process import exit_on_error\n"
            "@exit_on_error\n"
            "def main():\n"
            "    with device_memory_guard('lower the size', lambda: 'nothing kept'):\n"
            "        jax.jit(lambda x: jnp.zeros((2 ** 40,), jnp.float32) + x)(1.0)"
            ".block_until_ready()\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 2, done.stderr[-3000:]
    assert one_line(done.stderr) == (
        "error: the device ran out of memory (RESOURCE_EXHAUSTED: Out of memory allocating "
        "4398046511104 bytes.): lower the size; nothing kept")


def test_a_fault_no_writer_caught_is_still_one_line(capsys):
    """The backstop in exit_on_error, for a job without a guard of its own."""
    import errno

    def raising(error):
        @exit_on_error
        def main():
            raise error
        with pytest.raises(SystemExit) as stop:
            main()
        assert stop.value.code == 2
        return one_line(capsys.readouterr().err)

    line = raising(out_of_device_memory())
    assert line.startswith("error: the device ran out of memory (RESOURCE_EXHAUSTED: Out of "
                           "memory while trying to allocate 17179869184 bytes.): lower the "
                           "batch size per device or the max length")
    line = raising(OSError(errno.ENOSPC, "No space left on device", "/data/out.bin"))
    assert line == ("error: /data/out.bin: No space left on device; free space (or check the "
                    "disk), then run the same command again")


# ---- a full disk ------------------------------------------------------------------------

def test_cappy_score_output_on_a_full_disk(small_disk, tiny_scorer, tmp_path):
    disk = small_disk("1M")
    # Long extra fields are copied to the output, not scored: a big output, quickly.
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"instruction": f"Question {i}?", "response": "yes", "note": "n" * 8000}
        for i in range(24)])
    output = disk / "scored.jsonl"
    output.write_text(json.dumps({"instruction": "old", "response": "run", "score": 0.5}) + "\n")
    before = output.read_bytes()
    fill(disk, 64 << 10)
    done = run_script("-m cappy", "score", "--model_name_or_path", tiny_scorer, "--input", pairs,
                      "--output", output, "--max_length", 64, "--quiet")
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_line(done.stderr)
    assert line.startswith(f"error: {output}: not written: No space left on device (it needs "
                           f"more than the "), line
    assert line.endswith("free); nothing partial was kept; the previous scored.jsonl is "
                         "unchanged; free space, then run the same command again"), line
    assert output.read_bytes() == before
    assert files_under(disk) == ["filler", "scored.jsonl"]  # no temporary, no lock


def test_a_result_and_its_predictions_are_written_both_or_neither(small_disk):
    from cappy.engine.io import atomic_files, dump_json, dump_jsonl

    disk = small_disk("64K")
    (disk / "task.predictions.jsonl").write_text("old predictions\n")
    (disk / "task.json").write_text('{"rougeL": 0.5}\n')
    before = snapshot(disk)
    fill(disk, 8 << 10)
    # Both stay in their write buffers until synced: the predictions' page fits, the
    # result's two pages then do not.
    with pytest.raises(CappyError) as error:
        with atomic_files() as files:
            dump_jsonl(files.open(str(disk / "task.predictions.jsonl")), [{"choice": "a" * 3000}])
            dump_json(files.open(str(disk / "task.json")), {"rougeL": 0.7, "pad": "p" * 6000})
    assert str(error.value).startswith(f"{disk / 'task.json'}: not written: No space left on "
                                       f"device")
    assert snapshot(disk) == {**before, "filler": snapshot(disk)["filler"]}  # neither replaced


def test_a_log_row_or_a_lock_the_disk_cannot_hold_leaves_nothing_behind(small_disk):
    from cappy.engine.io import run_lock
    from cappy.pretraining.train import append_log

    disk = small_disk("64K")
    log = disk / "log.jsonl"
    append_log(str(log), {"step": 1, "train_loss": 0.5})
    before = log.read_bytes()
    fill(disk, 0)
    with pytest.raises(CappyError) as error:  # a row longer than the rest of its page
        append_log(str(log), {"step": 2, "note": "n" * 8000})
    assert str(error.value).startswith(f"{log}: not written: No space left on device")
    assert "no checkpoint had been written" in str(error.value)
    assert log.read_bytes() == before  # no torn line
    with pytest.raises(CappyError) as error:
        with run_lock(str(disk / "out.jsonl"), "--output out.jsonl"):
            pytest.fail("ran without its lock")
    assert str(error.value).startswith(f"{disk / 'out.jsonl.lock'}: not written: No space")
    assert sorted(os.listdir(disk)) == ["filler", "log.jsonl"]


def test_a_bigbench_task_result_on_a_full_disk_keeps_the_previous_result(
        small_disk, tiny_scorer, tmp_path):
    from cappy.bigbench.results import read_result
    from test_cappy_bigbench import task_args, write_candidates

    write_candidates(tmp_path / "gens" / "gen", "toy")
    disk = small_disk("1M")
    results = disk / "results" / "gen"
    results.mkdir(parents=True)
    (results / "toy.json").write_text(json.dumps({"rougeL": 0.5, "run": "earlier"}))
    (results / "toy.predictions.jsonl").write_text(json.dumps({"choice": "earlier"}) + "\n")
    before = snapshot(results)
    # A page for the run's lock and one for the predictions: none for the result.
    filler = fill(disk, 8 << 10)
    args = task_args(tmp_path, tiny_scorer, "--overwrite")
    args[args.index("--results_dir") + 1] = disk / "results"
    done = run_script("cappy_bigbench.py", *args)
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_line(done.stderr)
    assert line.startswith(f"error: {results / 'toy.json'}: not written: No space left on "
                           f"device"), line
    assert "nothing partial was kept; the previous toy.json is unchanged" in line
    # The earlier result with its own predictions (the new ones, written, were not kept
    # without their result); no lock, no temporary.
    assert snapshot(results) == before
    assert read_result(str(results / "toy.json")) == ("done", 0.5)

    os.remove(filler)  # space again: the same command runs the task
    done = run_script("cappy_bigbench.py", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    state, value = read_result(str(results / "toy.json"))
    assert state == "done" and value != 0.5
    assert len((results / "toy.predictions.jsonl").read_text().splitlines()) == 2


def load_generate_script():
    spec = importlib.util.spec_from_file_location(
        "bigbench_flan_generate", os.path.join(REPO, "scripts", "bigbench_flan_generate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generation_args(data, out, tiny_t5):
    return ["--model_name_or_path", tiny_t5, "--data_dir", str(data), "--output_dir", str(out),
            "--tasks", "task_a", "--max_src_len", "32", "--max_tgt_len", "8", "--dtype",
            "float32", "--per_device_batch_size", "2", "--n_sample_gens", "1", "--quiet"]


def test_candidate_files_on_a_full_disk_keep_the_finished_ones_and_resume(
        small_disk, tiny_t5, tmp_path, monkeypatch, capsys):
    from cappy.bigbench import candidates
    from test_generation import write_task

    write_task(str(tmp_path / "data"), "task_a", n_train=3, n_validation=2)
    disk = small_disk("1M")
    script = load_generate_script()
    real, calls = candidates.write_candidates, []

    def filling_after_the_first(*args, **kwargs):  # another job fills the disk meanwhile
        calls.append(args[2])
        if len(calls) == 2:
            fill(disk, 0)
        return real(*args, **kwargs)

    monkeypatch.setattr(candidates, "write_candidates", filling_after_the_first)
    argv = generation_args(tmp_path / "data", disk / "gens", tiny_t5)
    with pytest.raises(SystemExit) as stop:
        script.main(argv)
    assert stop.value.code == 2
    folder = disk / "gens" / "tiny-t5"
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {folder / 'task_a_validation.jsonl'}: not written: No space "
                           f"left on device (it needs more than the 0 bytes free); nothing "
                           f"partial was kept; free space"), line
    assert files_under(folder) == ["task_a_train.jsonl"]
    first = snapshot(folder)
    assert len(candidates.read_candidate_file(str(folder / "task_a_train.jsonl"),
                                              need_log_likelihood=True)) == 3

    os.remove(disk / "filler")
    monkeypatch.setattr(candidates, "write_candidates", real)
    assert script.main(argv) == 0
    assert files_under(folder) == ["task_a_train.jsonl", "task_a_validation.jsonl"]
    assert {name: data for name, data in snapshot(folder).items() if name in first} == first
    assert len(candidates.read_candidate_file(str(folder / "task_a_validation.jsonl"),
                                              need_log_likelihood=True)) == 2


def test_candidate_generation_refuses_a_disk_too_small_before_loading_the_model(
        small_disk, tmp_path):
    from test_generation import write_task

    write_task(str(tmp_path / "data"), "task_a", n_train=3, n_validation=2)
    disk = small_disk("1M")
    fill(disk, 8 << 10)
    done = run_script("scripts/bigbench_flan_generate.py", "--model_name_or_path",
                      tmp_path / "not-loaded" / "my-t5", "--data_dir", tmp_path / "data",
                      "--output_dir", disk / "gens", "--tasks", "task_a")
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_line(done.stderr)
    assert line.startswith(f"error: {disk / 'gens' / 'my-t5'}: about "), line
    # 4 KiB: the run's lock took a page of the 8
    assert line.endswith("needed for 2 candidate files, and its disk has 4.0 KiB free; free "
                         "space or write elsewhere"), line
    assert files_under(disk) == ["filler"]


def finetune_rows(path):
    return write_jsonl(path, [{"instruction": f"Is {i} even?", "response": ["yes", "no"][i % 2],
                               "label": float(i % 3 == 0)} for i in range(8)])


def finetune_argv(model, rows, output_dir, *extra):
    return ["finetune", "--model_name_or_path", model, "--train_file", str(rows),
            "--output_dir", str(output_dir), "--batch_size", "4", "--max_length", "32",
            "--quiet", *extra]


def test_a_finetuned_model_on_a_full_disk_keeps_the_previous_folder(
        small_disk, tiny_scorer, tmp_path, monkeypatch, capsys):
    from cappy import cli
    from cappy.engine.weights import cappy_checkpoint as checkpoints

    disk = small_disk("2M")
    output_dir = disk / "my-cappy"
    shutil.copytree(tiny_scorer, output_dir)  # the model an earlier run saved there
    before = snapshot(output_dir)
    real = checkpoints.write_weights

    def filling_first(*args):  # the disk fills up while the model is written
        fill(disk, 4 << 10)
        return real(*args)

    monkeypatch.setattr(checkpoints, "write_weights", filling_first)
    with pytest.raises(SystemExit) as stop:
        cli.main(finetune_argv(tiny_scorer, finetune_rows(tmp_path / "rows.jsonl"), output_dir,
                               "--overwrite"))
    assert stop.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {output_dir}: not written: No space left on device "
                           f"(about "), line
    assert line.endswith("needed, 4.0 KiB free); nothing partial was kept; the previous "
                         "my-cappy is unchanged; free space, then run the same command again"), line
    assert snapshot(output_dir) == before
    assert sorted(os.listdir(disk)) == ["filler", "my-cappy"]  # no staging folder left
    checkpoints.load_cappy(str(output_dir))  # still loads


def test_cappy_finetune_refuses_a_disk_too_small_before_training(
        small_disk, tiny_scorer, tmp_path, monkeypatch, capsys):
    from cappy import cli
    from cappy.engine.jobs import session

    disk = small_disk("1M")
    fill(disk, 64 << 10)
    monkeypatch.setattr(session.Cappy, "finetune", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as stop:
        cli.main(finetune_argv(tiny_scorer, finetune_rows(tmp_path / "rows.jsonl"),
                               disk / "my-cappy"))
    assert stop.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {disk / 'my-cappy'}: about "), line
    assert line.endswith("needed for the saved model, and its disk has 64.0 KiB free; free "
                         "space or write elsewhere"), line
    assert files_under(disk) == ["filler"]


def test_pretraining_shards_on_a_full_disk_keep_the_finished_ones_and_resume_exactly(
        small_disk, tmp_path, capsys):
    import hashlib

    from cappy.pretraining import data as pd
    from test_pretraining_data import build, shard_bytes

    reference = tmp_path / "reference"
    reference_manifest = build(reference)
    disk = small_disk("1M")
    out = disk / "pretraining_data"
    filler = fill(disk, 40 << 10)  # a few shards' worth
    with pytest.raises(SystemExit) as stop:
        exit_on_error(lambda: build(out))()
    assert stop.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {out}/"), line
    assert ": not written: No space left on device (it needs more than the " in line
    assert "; nothing partial was kept; " in line
    assert not [name for name in files_under(out) if name.endswith(".tmp")]
    manifest = pd.read_manifest(str(out))
    assert manifest is not None and not manifest["complete"]
    listed = [entry for split in pd.SPLITS for entry in manifest["shards"][split]]
    assert listed  # some shards were finished before the disk filled...
    for entry in listed:  # ...and each is whole, as its manifest entry says
        with open(out / entry["file"], "rb") as file:
            assert hashlib.sha256(file.read()).hexdigest() == entry["sha256"]

    os.remove(filler)
    manifest = build(out)  # the same command resumes
    assert manifest["complete"] and manifest["shards"] == reference_manifest["shards"]
    assert shard_bytes(str(out)) == shard_bytes(str(reference))


# ---- pretraining: a failed checkpoint write never costs the last one ---------------------

@pytest.fixture(scope="module")
def pretraining(tmp_path_factory):
    """(data, backbone, an uninterrupted six-step run) of tests/test_pretrain.py's shape."""
    import cappy_pretrain
    from test_pretrain import flags, make_backbone, write_data

    folder = tmp_path_factory.mktemp("pretraining")
    data = write_data(folder / "data")
    backbone = make_backbone(str(folder / "backbone"))
    full = str(folder / "full")
    assert cappy_pretrain.main(flags(data, full, backbone)) == 0
    return data, backbone, full


def assert_same_run(output_dir, full):
    """The same losses step by step and the same final parameters, bit for bit."""
    from test_pretrain import final_params, read_log

    resumed_log, full_log = read_log(output_dir), read_log(full)
    assert [r["step"] for r in resumed_log] == [r["step"] for r in full_log]
    assert ([r.get("train_loss") for r in resumed_log] == [r.get("train_loss") for r in full_log])
    resumed, expected = final_params(output_dir), final_params(full)
    assert resumed.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(resumed[key], expected[key], err_msg=str(key))


def test_a_checkpoint_write_that_fills_the_disk_keeps_the_last_one_and_resumes_exactly(
        small_disk, pretraining, monkeypatch, capsys):
    import cappy_pretrain
    from cappy.engine.jobs import training
    from cappy.pretraining.train import list_checkpoints
    from test_pretrain import flags

    data, backbone, full = pretraining
    disk = small_disk("4M")
    output_dir = str(disk / "run")
    real, filled = training.save_state, []

    def filling_at_step_4(trainer, path):  # another job fills the disk meanwhile, once
        if "step-4" in path and not filled:
            filled.append(fill(disk, 8 << 10))
        return real(trainer, path)

    monkeypatch.setattr(training, "save_state", filling_at_step_4)
    with pytest.raises(SystemExit) as stop:
        cappy_pretrain.main(flags(data, output_dir, backbone))
    assert stop.value.code == 2
    line = one_line(capsys.readouterr().err)
    step_2 = os.path.join(output_dir, "checkpoints", "step-2")
    assert line.startswith(f"error: {output_dir}/checkpoints/step-4: not written: No space "
                           f"left on device (about "), line
    assert line.endswith(f"needed, 8.0 KiB free); nothing partial was kept; the last "
                         f"checkpoint, step 2 ({step_2}), is intact: free space, then run the "
                         f"same command to resume from it"), line
    assert [step for step, _ in list_checkpoints(output_dir)] == [2]
    assert os.listdir(os.path.join(output_dir, "checkpoints")) == ["step-2"]  # no staging

    os.remove(disk / "filler")
    assert cappy_pretrain.main(flags(data, output_dir, backbone)) == 0
    assert f"resuming from {step_2}" in capsys.readouterr().out
    assert_same_run(output_dir, full)


def test_a_disk_that_fills_during_training_stops_before_the_next_checkpoint(
        small_disk, pretraining, monkeypatch, capsys):
    """Checked just before each checkpoint: orbax never starts a write it cannot finish."""
    import cappy_pretrain
    from cappy.engine.jobs import training
    from cappy.pretraining.train import list_checkpoints
    from test_pretrain import flags

    data, backbone, _ = pretraining
    disk = small_disk("4M")
    output_dir = str(disk / "run")
    real_update, real_save = training.Trainer.update, training.save_state

    def filling_at_update_3(self, examples, update_index=None, *args, **kwargs):
        if update_index == 3:  # another job fills the disk while this one trains
            fill(disk, 16 << 10)
        return real_update(self, examples, update_index, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "update", filling_at_update_3)
    monkeypatch.setattr(training, "save_state", lambda trainer, path: (
        pytest.fail("orbax started") if "step-4" in path else real_save(trainer, path)))
    with pytest.raises(SystemExit) as stop:
        cappy_pretrain.main(flags(data, output_dir, backbone))
    assert stop.value.code == 2
    step_2 = os.path.join(output_dir, "checkpoints", "step-2")
    line = one_line(capsys.readouterr().err)
    assert line == (f"error: {output_dir}/checkpoints/step-4: not written: too little space left "
                    f"on the device (about 409.6 KiB needed, 16.0 KiB free); nothing partial was "
                    f"kept; the last checkpoint, step 2 ({step_2}), is intact: free space, then "
                    f"run the same command to resume from it")
    assert [step for step, _ in list_checkpoints(output_dir)] == [2]
    assert os.listdir(os.path.join(output_dir, "checkpoints")) == ["step-2"]


def test_pretraining_refuses_a_disk_too_small_for_its_checkpoints_before_training(
        small_disk, pretraining, monkeypatch, capsys):
    import cappy_pretrain
    from cappy.engine.jobs.training import Trainer
    from test_pretrain import flags

    data, backbone, _ = pretraining
    disk = small_disk("1M")
    fill(disk, 256 << 10)
    output_dir = disk / "run"
    monkeypatch.setattr(Trainer, "update", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as stop:
        cappy_pretrain.main(flags(data, str(output_dir), backbone))
    assert stop.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {output_dir}: about "), line
    assert line.endswith("needed for this run's checkpoints (about 409.6 KiB each, "
                         "--keep_checkpoints 2 and one being written) and final model, and its "
                         "disk has 256.0 KiB free; free space, lower --keep_checkpoints, or "
                         "choose another --output_dir"), line
    assert files_under(disk) == ["filler"]


# ---- a device out of memory ----------------------------------------------------------------

def test_pretraining_out_of_device_memory_names_the_settings_and_keeps_the_checkpoint(
        pretraining, tmp_path, monkeypatch, capsys):
    import cappy_pretrain
    from cappy.engine.jobs.training import Trainer
    from cappy.pretraining.train import list_checkpoints
    from test_pretrain import flags

    data, backbone, full = pretraining
    output_dir = str(tmp_path / "run")
    real = Trainer.update

    def exhausted_at_update_3(self, examples, update_index=None, *args, **kwargs):
        if update_index == 3:  # the step after the checkpoint at step 2
            raise out_of_device_memory()
        return real(self, examples, update_index, *args, **kwargs)

    monkeypatch.setattr(Trainer, "update", exhausted_at_update_3)
    with pytest.raises(SystemExit) as stop:
        cappy_pretrain.main(flags(data, output_dir, backbone))
    assert stop.value.code == 2
    step_2 = os.path.join(output_dir, "checkpoints", "step-2")
    assert one_line(capsys.readouterr().err) == (
        f"error: the device ran out of memory (RESOURCE_EXHAUSTED: Out of memory while trying "
        f"to allocate 17179869184 bytes.): lower --per_device_batch_size (4), or split the "
        f"model over more devices with --n_model_shards (1), raising --accumulate_grad_batches "
        f"(2) as much (the same steps), or lower --eval_per_device_batch_size (8); the last "
        f"checkpoint, step 2 ({step_2}), is intact: run again with those settings to resume "
        f"from it")
    assert [step for step, _ in list_checkpoints(output_dir)] == [2]

    monkeypatch.setattr(Trainer, "update", real)
    assert cappy_pretrain.main(flags(data, output_dir, backbone)) == 0
    assert_same_run(output_dir, full)


def test_generation_out_of_device_memory_keeps_the_finished_candidate_files(
        tiny_t5, tmp_path, monkeypatch, capsys):
    from cappy.bigbench.candidates import read_candidate_file
    from cappy.engine.jobs.candidate_generation import CandidateGenerator
    from test_generation import write_task

    write_task(str(tmp_path / "data"), "task_a", n_train=3, n_validation=2)
    real, calls = CandidateGenerator.generate, []

    def exhausted_on_the_second_file(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise out_of_device_memory()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CandidateGenerator, "generate", exhausted_on_the_second_file)
    with pytest.raises(SystemExit) as stop:
        load_generate_script().main(generation_args(tmp_path / "data", tmp_path / "gens",
                                                    tiny_t5))
    assert stop.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "error: the device ran out of memory (RESOURCE_EXHAUSTED: Out of memory while trying "
        "to allocate 17179869184 bytes.): lower --per_device_batch_size (2), --max_src_len (32) "
        "or --max_tgt_len (8), or split the model over more devices with --n_model_shards (1); "
        "1 of the 2 candidate files to write were finished and are kept (a re-run skips them)")
    folder = tmp_path / "gens" / "tiny-t5"
    assert files_under(folder) == ["task_a_train.jsonl"]
    assert len(read_candidate_file(str(folder / "task_a_train.jsonl"))) == 3


def test_scoring_out_of_device_memory_names_the_settings(tiny_scorer, tmp_path, monkeypatch,
                                                         capsys):
    """XLA's error raised by the compiled scoring step itself (where it is traced)."""
    from cappy import cli
    from cappy.engine.models import roberta

    def exhausted(*args, **kwargs):
        raise out_of_device_memory()

    monkeypatch.setattr(roberta, "packed_scores", exhausted)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"instruction": "2 + 2?", "response": "4"}])
    output = tmp_path / "scored.jsonl"
    output.write_text("earlier\n")
    with pytest.raises(SystemExit) as stop:
        cli.main(["score", "--model_name_or_path", tiny_scorer, "--input", str(pairs),
                  "--output", str(output), "--batch_size", "16", "--quiet"])
    assert stop.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: the device ran out of memory (RESOURCE_EXHAUSTED: Out of memory while trying "
        f"to allocate 17179869184 bytes.): lower --batch_size (16) or --max_length, or split "
        f"the model over more devices with --n_model_shards; --output {output} was left as it "
        f"was")
    assert output.read_text() == "earlier\n"
    assert sorted(os.listdir(tmp_path)) == ["pairs.jsonl", "scored.jsonl"]
