"""The batch runner with a fake per-task script: failure isolation, resume,
pass-through flags, one task per device in parallel, and bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, run_script

from cappy.bigbench.results import read_result
from cappy.bigbench.runner import last_output_line

RUNNER = "scripts/run_cappy_bigbench.py"

# Stands in for cappy_bigbench.py: records its launch, fails on "bad" tasks,
# exits 0 without a result on "silent" tasks, otherwise writes a result file.
FAKE = textwrap.dedent("""\
    import argparse, json, os, sys, time
    p = argparse.ArgumentParser()
    for flag in ("--bigbench_gen_dir", "--bigbench_gen_model", "--bigbench_subset_name",
                 "--results_dir", "--lr_schedule"):
        p.add_argument(flag)
    p.add_argument("--train_size", type=int)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args()
    model, task = args.bigbench_gen_model, args.bigbench_subset_name
    with open(os.path.join(args.results_dir, "launches.txt"), "a") as f:
        f.write(f"{model} {task} {os.getpid()}\\n")
    print(f"fake start {model} {task}", flush=True)
    start = time.time()
    if "bad" in task:
        print(f"boom: cannot do {task}", file=sys.stderr)
        sys.exit(3)
    time.sleep(args.sleep)
    if "silent" in task:
        sys.exit(0)
    path = os.path.join(args.results_dir, model, task + ".json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"rougeL": 0.5, "argv": sys.argv[1:], "start": start, "end": time.time(),
                   "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)
    print("fake done", flush=True)
""")


@pytest.fixture
def setup(tmp_path):
    """(fake script, data dir, gen dir, results dir) with flan-t5-small/base and my-llm."""
    fake = tmp_path / "fake_cappy_bigbench.py"
    fake.write_text(FAKE)
    data, gens, results = tmp_path / "data", tmp_path / "gens", tmp_path / "results"
    data.mkdir()
    for model in ("flan-t5-small", "flan-t5-base", "my-llm"):
        (gens / model).mkdir(parents=True)
    results.mkdir()
    return fake, data, gens, results


def write_tasks(data, tasks):
    (data / "subset_names.json").write_text(json.dumps(tasks))


def run_runner(setup, *args, env=None):
    fake, data, gens, results = setup
    return run_script(RUNNER, "--script", fake, "--bigbench_data_dir", data,
                      "--bigbench_gen_dir", gens, "--results_dir", results, *args,
                      env=env, timeout=120)


def launches(results):
    """The (model, task) of each child launched, in order."""
    path = results / "launches.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [" ".join(line.split()[:2]) for line in lines]


def result(results, model, task):
    return json.loads((results / model / f"{task}.json").read_text())


def test_failure_isolated_and_summarised(setup):
    fake, data, gens, results = setup
    write_tasks(data, ["alpha", "bad_task", "gamma"])
    out = run_runner(setup)
    assert out.returncode == 1, out.stdout + out.stderr
    # Default generators: the FLAN-T5 folders only, in size order; my-llm is not run.
    assert launches(results) == [f"{m} {t}" for m in ("flan-t5-small", "flan-t5-base")
                                 for t in ("alpha", "bad_task", "gamma")]
    for model in ("flan-t5-small", "flan-t5-base"):
        assert result(results, model, "alpha")["rougeL"] == 0.5
        assert result(results, model, "gamma")["rougeL"] == 0.5  # ran after the failure
        assert not (results / model / "bad_task.json").exists()
        log = (results / model / "bad_task.log").read_text()
        assert log.startswith("$ ") and "--bigbench_subset_name bad_task" in log
        assert "boom: cannot do bad_task" in log and "# exit code 3" in log
        assert "fake done" in (results / model / "alpha.log").read_text()
    lines = out.stdout.splitlines()
    assert "[1/6] flan-t5-small alpha ..." in lines
    assert any(line.startswith("[1/6] flan-t5-small alpha done ") and line.endswith(
        " s, ROUGE-L 50.00") for line in lines)
    bad_log = results / "flan-t5-small" / "bad_task.log"
    # The child's own last line says why, so the runner's lines do without opening the log.
    assert (f"[2/6] flan-t5-small bad_task FAILED (exit code 3: boom: cannot do bad_task; "
            f"see {bad_log})") in lines
    assert "summary: 4 done, 0 skipped (already finished), 2 failed" in lines
    assert (f"  FAILED flan-t5-small bad_task: exit code 3: boom: cannot do bad_task; log: "
            f"{bad_log}") in lines
    assert (f"  FAILED flan-t5-base bad_task: exit code 3: boom: cannot do bad_task; log: "
            f"{results / 'flan-t5-base' / 'bad_task.log'}") in lines
    assert out.stderr == ""


def test_quiet_prints_failures_and_the_summary_and_quiets_each_task(setup):
    fake, data, gens, results = setup
    write_tasks(data, ["alpha", "bad_task"])
    out = run_runner(setup, "--gen_models", "my-llm", "--quiet")
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert not any(" ..." in line or " done " in line for line in lines), lines
    bad_log = results / "my-llm" / "bad_task.log"
    assert (f"[2/2] my-llm bad_task FAILED (exit code 3: boom: cannot do bad_task; "
            f"see {bad_log})") in lines
    assert "summary: 1 done, 0 skipped (already finished), 1 failed" in lines
    assert result(results, "my-llm", "alpha")["argv"][-1] == "--quiet"


def test_exit_zero_without_result_is_a_failure(setup):
    fake, data, gens, results = setup
    write_tasks(data, ["silent_task"])
    out = run_runner(setup, "--gen_models", "my-llm")
    assert out.returncode == 1
    assert "  FAILED my-llm silent_task: exit code 0 but no result file; log: " in out.stdout


def test_resume_skips_done_and_reruns_unfinished(setup):
    fake, data, gens, results = setup
    write_tasks(data, ["alpha", "beta", "gamma"])
    folder = results / "flan-t5-small"
    folder.mkdir()
    done = '{"rougeL": 0.25}\n'  # the authors' released files hold only this
    (folder / "alpha.json").write_text(done)
    (folder / "beta.json").write_text("running...")  # the original code's placeholder
    out = run_runner(setup, "--gen_models", "flan-t5-small")
    assert out.returncode == 0, out.stdout + out.stderr
    assert launches(results) == ["flan-t5-small beta", "flan-t5-small gamma"]
    assert (folder / "alpha.json").read_text() == done
    assert not (folder / "alpha.log").exists()
    assert "--overwrite" in result(results, "flan-t5-small", "beta")["argv"]
    assert "--overwrite" not in result(results, "flan-t5-small", "gamma")["argv"]
    assert "1 generator(s) x 3 task(s): 2 to run, 1 already finished (skipped)" in out.stdout
    assert "summary: 2 done, 1 skipped (already finished), 0 failed" in out.stdout

    again = run_runner(setup, "--gen_models", "flan-t5-small")
    assert again.returncode == 0
    assert len(launches(results)) == 2  # nothing launched the second time
    assert "0 to run, 3 already finished (skipped)" in again.stdout
    assert "summary: 0 done, 3 skipped (already finished), 0 failed" in again.stdout

    forced = run_runner(setup, "--gen_models", "flan-t5-small", "--tasks", "alpha",
                        "--overwrite")
    assert forced.returncode == 0
    assert launches(results)[-1] == "flan-t5-small alpha"
    assert "--overwrite" in result(results, "flan-t5-small", "alpha")["argv"]


def test_pass_through_flags_and_task_selection(setup):
    fake, data, gens, results = setup
    write_tasks(data, ["alpha", "beta", "gamma"])
    out = run_runner(setup, "--gen_models", "my-llm", "--tasks", "gamma,alpha",
                     "--train_size", "1024", "--lr_schedule", "corrected")
    assert out.returncode == 0, out.stdout + out.stderr
    assert launches(results) == ["my-llm gamma", "my-llm alpha"]
    argv = result(results, "my-llm", "gamma")["argv"]
    assert argv == ["--bigbench_gen_dir", str(gens), "--bigbench_gen_model", "my-llm",
                    "--bigbench_subset_name", "gamma", "--results_dir", str(results),
                    "--train_size", "1024", "--lr_schedule", "corrected"]


def test_devices_run_in_parallel_one_task_per_device(setup):
    fake, data, gens, results = setup
    tasks = ["t1", "t2", "t3", "t4"]
    write_tasks(data, tasks)
    out = run_runner(setup, "--gen_models", "my-llm", "--devices", "0,1", "--sleep", "0.6")
    assert out.returncode == 0, out.stdout + out.stderr
    runs = [result(results, "my-llm", t) for t in tasks]
    assert {r["cuda"] for r in runs} == {"0", "1"}
    by_device = {d: sorted((r["start"], r["end"]) for r in runs if r["cuda"] == d)
                 for d in ("0", "1")}
    for intervals in by_device.values():  # one task at a time on each device
        for (_, end), (next_start, _) in zip(intervals, intervals[1:]):
            assert next_start >= end
    first0, first1 = by_device["0"][0], by_device["1"][0]
    assert first0[0] < first1[1] and first1[0] < first0[1]  # the two devices overlapped
    assert "running on 2 device(s) in parallel: 0,1" in out.stdout
    assert "summary: 4 done, 0 skipped (already finished), 0 failed" in out.stdout


@pytest.mark.parametrize("cuda_idx", ["3", "0,1"])
def test_cuda_idx_runs_one_task_at_a_time_with_those_gpus(setup, cuda_idx):
    """The original runner's --cuda_idx: every child sees CUDA_VISIBLE_DEVICES=cuda_idx."""
    fake, data, gens, results = setup
    tasks = ["t1", "t2"]
    write_tasks(data, tasks)
    out = run_runner(setup, "--gen_models", "my-llm", "--cuda_idx", cuda_idx,
                     env={"CUDA_VISIBLE_DEVICES": "7"})
    assert out.returncode == 0, out.stdout + out.stderr
    runs = sorted((result(results, "my-llm", t) for t in tasks), key=lambda r: r["start"])
    assert [r["cuda"] for r in runs] == [cuda_idx, cuda_idx]
    assert runs[1]["start"] >= runs[0]["end"]
    assert f"running on one task at a time with CUDA_VISIBLE_DEVICES={cuda_idx}" in out.stdout
    assert "--cuda_idx" not in " ".join(runs[0]["argv"])  # ours, not passed on


def test_without_devices_environment_unchanged(setup):
    fake, data, gens, results = setup
    write_tasks(data, ["t1"])
    out = run_runner(setup, "--gen_models", "my-llm", env={"CUDA_VISIBLE_DEVICES": "7"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert result(results, "my-llm", "t1")["cuda"] == "7"


def test_dry_run_launches_nothing(setup):
    fake, data, gens, results = setup
    write_tasks(data, ["alpha", "beta"])
    out = run_runner(setup, "--dry_run", "--train_size", "8")
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stdout.splitlines() if "--bigbench_subset_name" in line]
    assert len(commands) == 4
    assert commands[0].endswith(
        f"--bigbench_gen_model flan-t5-small --bigbench_subset_name alpha --results_dir "
        f"{results} --train_size 8 > {results}/flan-t5-small/alpha.log 2>&1")
    assert os.listdir(results) == []


@pytest.mark.parametrize("args, message", [
    (("--gen_models", "nope"), "no candidate folder for nope"),
    (("--tasks", "alpha,zeta"), "--tasks: not in"),
    (("--bigbench_subset_name", "alpha"), "--bigbench_subset_name is set for each task"),
    (("stray",), "unexpected argument 'stray'"),
    (("--devices", "0,,1"), "--devices"),
    (("--devices", "0,1", "--cuda_idx", "0"), "--devices and --cuda_idx: give one"),
])
def test_bad_input_is_one_line(setup, args, message):
    fake, data, gens, results = setup
    write_tasks(data, ["alpha"])
    out = run_runner(setup, *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert launches(results) == []


def test_no_generator_folders(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_tasks(data, ["alpha"])
    (tmp_path / "gens" / "my-llm").mkdir(parents=True)  # not a FLAN-T5 folder
    for gens in (tmp_path / "gens", tmp_path / "absent"):
        out = run_script(RUNNER, "--bigbench_data_dir", data, "--bigbench_gen_dir", gens,
                         "--results_dir", tmp_path / "results", timeout=60)
        assert out.returncode == 2
        assert out.stderr.strip().splitlines() == [
            f"error: {gens}: no FLAN-T5 candidate folders (flan-t5-small, flan-t5-base, "
            f"flan-t5-large, flan-t5-xl, flan-t5-xxl); generate or download them, or name "
            f"folders with --gen_models"]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("text, expected", [
    ('{"rougeL": 0.25}', ("done", 0.25)),
    ('{"rougeL": 0}', ("done", 0.0)),
    ("running...", ("unfinished", "not JSON ('running...')")),
    ("", ("unfinished", "empty file")),
    ('{"rougeL": 0.3', ("unfinished", "not JSON ('{\"rougeL\": 0.3')")),
    ('{"score": 0.3}', ("unfinished", "no 'rougeL' field")),
    ('[0.3]', ("unfinished", "no 'rougeL' field")),
    ('{"rougeL": "0.3"}', ("unfinished", "'rougeL' is not a number ('0.3')")),
    ('{"rougeL": true}', ("unfinished", "'rougeL' is not a number (True)")),
    ('{"rougeL": NaN}', ("unfinished", "'rougeL' is not a number (nan)")),
])
def test_read_result(tmp_path, text, expected):
    path = tmp_path / "task.json"
    path.write_text(text)
    assert read_result(str(path)) == expected
    assert read_result(str(tmp_path / "absent.json")) == ("missing", None)


@pytest.mark.parametrize("text, expected", [
    ("$ cmd\n# started x\nloading\ncappy_bigbench.py: disk full\n\n# exit code 2 after 1.0 s\n",
     "cappy_bigbench.py: disk full"),
    # a progress bar's carriage returns: the last state of the line, not the whole bar
    ("$ cmd\n# started x\nscoring 10%\rscoring 50%\rKilled by the OOM killer  \n",
     "Killed by the OOM killer"),
    ("$ cmd\n# started x\n\n# exit code -9 after 3.0 s\n", None),  # printed nothing
    ("$ cmd\n# started x\n" + "x" * 400 + "\n", "x" * 297 + "..."),
])
def test_last_output_line(tmp_path, text, expected):
    path = tmp_path / "task.log"
    path.write_text(text)
    assert last_output_line(str(path)) == expected
    assert last_output_line(str(tmp_path / "absent.log")) is None


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_child_too_and_the_task_stays_unfinished(setup, signum, code):
    """SIGTERM (a job scheduler) or SIGINT to the runner reaches the running child, in a
    process group of its own; the runner waits for it, reports the task interrupted, and
    exits 128 + the signal. No orphan keeps computing, no result is written."""
    fake, data, gens, results = setup
    write_tasks(data, ["slow", "next"])
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    runner = subprocess.Popen(
        [sys.executable, os.path.join(REPO, RUNNER), "--script", str(fake),
         "--bigbench_data_dir", str(data), "--bigbench_gen_dir", str(gens),
         "--results_dir", str(results), "--gen_models", "my-llm", "--sleep", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while not (results / "launches.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int((results / "launches.txt").read_text().split()[2])
    time.sleep(0.5)
    runner.send_signal(signum)
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == code, stdout + stderr
    assert f"stopped by {signal.Signals(signum).name}" in stdout
    assert "summary: 0 done, 0 skipped (already finished), 0 failed, 1 interrupted" in stdout
    assert "1 not run" in stdout
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the child is gone
    assert not (results / "my-llm" / "slow.json").exists()
    assert launches(results) == ["my-llm slow"]  # the next task was not started


STOPPABLE_WRITE = """
import sys, time
from cappy.engine.runtime.process import exit_on_error
from cappy.engine.io import atomic_open

@exit_on_error
def main():
    with atomic_open(sys.argv[1]) as file:
        file.write("half a result")
        print("writing", flush=True)
        time.sleep(30)

main()
"""


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                          (signal.SIGINT, 130)])
def test_every_command_stops_on_a_signal_in_one_line_leaving_nothing(tmp_path, signum, code):
    """What every entry point's exit_on_error does: one line, exit 128 + the signal, and the
    file being written is neither there nor left half-written beside it."""
    out = tmp_path / "result.json"
    proc = subprocess.Popen([sys.executable, "-c", STOPPABLE_WRITE, str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert stderr.strip().splitlines() == [
        f"stopped by {signal.Signals(signum).name}; no partial output was kept"]
    assert os.listdir(tmp_path) == []


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """SIGKILL cannot be caught: its temporary file stays, and the next write of the same
    file removes it (but never a live writer's)."""
    from cappy.engine.io import write_json

    out = tmp_path / "result.json"
    proc = subprocess.Popen([sys.executable, "-c", STOPPABLE_WRITE, str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n"
    proc.kill()
    proc.wait(timeout=30)
    (left,) = os.listdir(tmp_path)
    assert left.startswith(".result.json.") and left.endswith(".tmp")
    alive = tmp_path / f".result.json.{os.getpid()}.abc.tmp"  # this process: alive
    alive.write_text("in progress")
    write_json(str(out), {"rougeL": 0.5})
    assert sorted(os.listdir(tmp_path)) == [alive.name, "result.json"]


def test_a_task_another_run_is_on_is_left_alone_with_its_log(setup):
    """A second runner does not start a task that another run holds (the lock beside its
    result file), and does not truncate that run's log."""
    import socket

    fake, data, gens, results = setup
    write_tasks(data, ["busy", "free"])
    (results / "my-llm").mkdir()
    log = results / "my-llm" / "busy.log"
    log.write_text("the other run's log\n")
    (results / "my-llm" / "busy.json.lock").write_text(json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "started": "then"}))
    out = run_runner(setup, "--gen_models", "my-llm")
    assert out.returncode == 1
    assert f"my-llm busy FAILED (another run is on it (pid {os.getpid()}" in out.stdout
    assert log.read_text() == "the other run's log\n"
    assert launches(results) == ["my-llm free"]
