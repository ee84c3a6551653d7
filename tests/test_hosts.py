"""Several hosts, as two JAX processes on this machine (CPU devices, gloo collectives over
loopback: the code path of a GPU cluster minus NCCL), each compared with one process of two
devices: the same results, written once, by process 0; failures stop in one line."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, assert_close

from cappy.engine.runtime.local_processes import (free_port, local_process_commands,
                                                  local_process_env, run_local_processes)

# Both runs compile the same programs as the other tests do (fast, unoptimized), the same
# way, so that they compute alike.
QUICK = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "HF_HUB_OFFLINE": "1",
         "TOKENIZERS_PARALLELISM": "false"}


def env_with(**extra):
    return {**os.environ, **QUICK, **extra}


def two_processes(argv, cwds, host_timeout=120, work_log=None):
    """`python argv...` as two processes of one CPU device each; (exit codes, output).
    `work_log`: where each process counts the rows its device computed
    (cappy.engine.runtime.mesh.record_share; `assert_each_computed_half`)."""
    out = io.StringIO()
    extra = {} if work_log is None else {"CAPPY_WORK_LOG": str(work_log)}
    codes = run_local_processes([sys.executable, *map(str, argv)], 2, 1, host_timeout,
                                cwds=[str(c) for c in cwds], env=env_with(**extra), out=out)
    return codes, out.getvalue()


def assert_each_computed_half(work_log, *kinds):
    """Each of the two processes' devices held half of every global batch of each kind of
    work done (`kinds` among them): the processes shared it, neither did it all alone."""
    for process in (0, 1):
        with open(f"{work_log}.{process}.json", encoding="utf-8") as file:
            counts = json.load(file)
        assert set(kinds) <= set(counts), (process, counts)
        for kind, count in counts.items():
            assert count["global_rows"] > 0 and 2 * count["local_rows"] == count["global_rows"], \
                (process, kind, count)


def one_process(argv, cwd, devices=2):
    """`python argv...` as one process of `devices` CPU devices."""
    return subprocess.run([sys.executable, *map(str, argv)], cwd=str(cwd), text=True,
                          capture_output=True, timeout=600,
                          env=local_process_env(devices, env_with()))


def folders(tmp_path, *names):
    paths = [tmp_path / name for name in names]
    for path in paths:
        path.mkdir()
    return paths


def write_pairs(path, n=40):
    rows = [{"instruction": f"Question {i}: what is {i} plus {i % 7}?",
             "response": " ".join(["the answer is"] + [str(i + i % 7)] * (1 + i % 9))}
            for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def dies_mid_run():
    """Python code for `cappy` that dies (as if SIGKILLed) once it has scored a batch
    together with its peer, so that the peer is inside the next one."""
    return ("import os, sys; from cappy.engine.jobs import scoring; real = scoring.place; "
            "calls = []; "
            "scoring.place = lambda *a, **k: (calls.append(1), real(*a, **k))[1] "
            "if len(calls) < 2 else os._exit(9); "
            "sys.argv = ['cappy'] + sys.argv[1:]; from cappy.cli import main; sys.exit(main())")


# ---- in the default suite -----------------------------------------------------------

def test_score_over_two_processes_matches_one_process_and_only_process_0_writes(
        tiny_scorer, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    single, first, second = folders(tmp_path, "single", "first", "second")
    argv = ["-m", "cappy", "score", "--model_name_or_path", tiny_scorer, "--input", pairs,
            "--output", "scored.jsonl", "--batch_size", "2"]
    done = one_process(argv, single)
    assert done.returncode == 0, done.stderr[-3000:]
    codes, output = two_processes(argv, [first, second], work_log=tmp_path / "work")
    assert codes == [0, 0], output[-3000:]
    assert (first / "scored.jsonl").read_bytes() == (single / "scored.jsonl").read_bytes()
    assert_each_computed_half(tmp_path / "work", "scoring")
    assert os.listdir(second) == []  # process 1 computed, wrote nothing
    assert "[0] wrote scored.jsonl: 40 rows" in output
    assert "[1] wrote" not in output


def test_a_process_with_no_coordinator_stops_in_one_line(tiny_scorer, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 3)
    port = free_port()
    argv = local_process_commands(
        [sys.executable, "-m", "cappy", "score", "--model_name_or_path", tiny_scorer,
         "--input", str(pairs), "--output", str(tmp_path / "out.jsonl")], 2, port, 3)[1]
    start = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, text=True, capture_output=True, timeout=120,
                          env=local_process_env(1, env_with()))
    assert time.monotonic() - start < 60
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: process 1 of 2: no coordinator at 127.0.0.1:{port} "
                               "within 3 s")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_coordinator_whose_peers_never_come_stops_in_one_line(tiny_scorer, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", 3)
    argv = local_process_commands(
        [sys.executable, "-m", "cappy", "score", "--model_name_or_path", tiny_scorer,
         "--input", str(pairs), "--output", str(tmp_path / "out.jsonl")], 3, free_port(), 3)[0]
    done = subprocess.run(argv, cwd=REPO, text=True, capture_output=True, timeout=120,
                          env=local_process_env(1, env_with()))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: process 0 of 3: processes 1, 2 did not join at port ")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_process_whose_peer_dies_stops_in_one_line(tiny_scorer, tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    output = tmp_path / "out.jsonl"
    base = local_process_commands(
        [sys.executable, "-m", "cappy", "score", "--model_name_or_path", tiny_scorer,
         "--input", str(pairs), "--output", str(output), "--batch_size", "1"], 2, free_port(),
        60)
    dying = [sys.executable, "-c", dies_mid_run(), *base[1][3:]]
    env = local_process_env(1, env_with())
    survivor = subprocess.Popen(base[0], cwd=REPO, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
    peer = subprocess.Popen(dying, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _, stderr = survivor.communicate(timeout=90)
    finally:
        for process in (survivor, peer):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        peer.wait()
    assert peer.returncode == 9
    assert survivor.returncode == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("error: process 0 of 2: lost contact with another process (")
    # The last thing it says: no abort of JAX's runtime after it, no traceback.
    assert stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in stderr and "Check failure" not in stderr
    assert not output.exists()


def process_0_fails(when):
    """Python code for `cappy` as process 0 that stops on an error of its own (as a full
    disk while writing would stop it: only process 0 writes): `mid_run` once it has
    scored a batch with its peer, so that the peer waits inside the next one; `after`
    once the peer has finished and waits at JAX's shutdown barrier."""
    if when == "mid_run":
        fail = ("from cappy.engine.jobs import scoring; real = scoring.place; calls = []\n"
                "def place(*a, **k):\n"
                "    calls.append(1)\n"
                "    if len(calls) > 2: raise CappyError('simulated: disk full')\n"
                "    return real(*a, **k)\n"
                "scoring.place = place\n")
    else:  # the peer's own word "finished" to its watcher says it is at the barrier
        fail = ("from cappy import cli; real = cli.stream_rows\n"
                "def stream_rows(*a, **k):\n"
                "    real(*a, **k)\n"
                "    from jax._src import distributed\n"
                "    distributed.global_state.client.blocking_key_value_get("
                "'cappy/stop/1', 60000)\n"
                "    raise CappyError('simulated: disk full')\n"
                "cli.stream_rows = stream_rows\n")
    return ("import sys; from cappy.engine.errors import CappyError\n" + fail +
            "sys.argv = ['cappy'] + sys.argv[1:]; from cappy.cli import main; sys.exit(main())")


@pytest.mark.parametrize("when", ["mid_run", "after"])
def test_process_0_stopping_on_its_own_error_stops_the_others_in_one_line(
        tiny_scorer, tmp_path, when):
    """Only process 0 writes, so only it meets a full disk. Mid-run, the other process
    hears of it and leaves too, in one line with the same exit code; once the other has
    finished, process 0 meets it at JAX's shutdown barrier and it ends as it was (0).
    Before, JAX's coordination agent aborted the other with a C++ stack trace."""
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    output = tmp_path / "out.jsonl"
    base = local_process_commands(
        [sys.executable, "-m", "cappy", "score", "--model_name_or_path", tiny_scorer,
         "--input", str(pairs), "--output", str(output), "--batch_size", "1", "--quiet"], 2,
        free_port(), 60)
    failing = [sys.executable, "-c", process_0_fails(when), *base[0][3:]]
    env = local_process_env(1, env_with())
    processes = [subprocess.Popen(command, cwd=REPO, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env)
                 for command in (failing, base[1])]
    try:
        (_, err0), (_, err1) = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
    assert processes[0].returncode == 2, err0
    assert err0.strip().splitlines() == ["error: simulated: disk full"]
    if when == "mid_run":
        assert processes[1].returncode == 2, err1
        assert err1.strip().splitlines() == [
            "error: process 1 of 2: process 0 stopped, so this one stops too: simulated: "
            "disk full"]
        assert not output.exists()
    else:  # (the output was complete before the simulated error)
        assert processes[1].returncode == 0, err1
        assert err1.strip() == ""


def test_rendezvous_refuses_a_taken_port_and_a_repeated_process_id():
    import socket
    import threading

    from cappy.engine.errors import CappyError
    from cappy.engine.runtime.hosts import rendezvous

    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen(1)
        with pytest.raises(CappyError, match=r"process 0 of 2: cannot listen on port \d+"):
            rendezvous("127.0.0.1", taken.getsockname()[1], 2, 0, 2)

    port, errors = free_port(), {}

    def run(process_id):
        try:
            rendezvous("127.0.0.1", port, 3, process_id, 10)
        except CappyError as error:
            errors.setdefault(process_id, []).append(str(error))

    threads = [threading.Thread(target=run, args=(0,))]
    threads[0].start()
    time.sleep(0.3)
    for _ in range(2):  # two processes that both say they are process 1
        threads.append(threading.Thread(target=run, args=(1,)))
        threads[-1].start()
        time.sleep(0.3)
    for thread in threads:
        thread.join(timeout=30)
    assert errors[0] == ["process 0 of 3: a process that calls itself 1 was given an "
                         "--process_id another process has"]
    assert any("refused: process 1 was given an --process_id another process has" in text
               for text in errors[1])

def test_detect_cluster_takes_the_processes_from_slurms_environment(tiny_scorer, tmp_path):
    """--detect_cluster under srun, as two tasks of a SLURM step on this machine."""
    pairs = write_pairs(tmp_path / "pairs.jsonl", 12)
    single, first, second = folders(tmp_path, "single", "first", "second")
    argv = [sys.executable, "-m", "cappy", "score", "--model_name_or_path", tiny_scorer,
            "--input", str(pairs), "--output", "scored.jsonl"]
    done = one_process(argv[1:], single)
    assert done.returncode == 0, done.stderr[-3000:]
    codes, outputs = slurm_step(argv, [first, second])
    assert codes == [0, 0], outputs
    assert (first / "scored.jsonl").read_bytes() == (single / "scored.jsonl").read_bytes()
    assert os.listdir(second) == []

    alone = subprocess.run(argv + ["--detect_cluster"], cwd=str(second), text=True,
                           capture_output=True, timeout=120, env=local_process_env(1, env_with()))
    assert alone.returncode == 2
    assert alone.stderr.strip().splitlines() == [alone.stderr.strip()]
    assert alone.stderr.startswith("error: --detect_cluster: no cluster found")


def slurm_step(argv, cwds):
    """`argv` as the two tasks of a SLURM step on this machine (--detect_cluster); the
    processes' (exit codes, outputs)."""
    job = str(free_port())  # JAX's coordinator port comes from the job id
    processes = [subprocess.Popen(
        argv + ["--detect_cluster", "--host_timeout", "60"], cwd=str(cwd), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=local_process_env(1, env_with(
            SLURM_JOB_ID=job, SLURM_STEP_NODELIST="127.0.0.1", SLURM_NTASKS="2",
            SLURM_PROCID=str(index), SLURM_LOCALID=str(index))))
        for index, cwd in enumerate(cwds)]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    return [process.returncode for process in processes], outputs


@pytest.mark.slow  # about 20 s here
def test_detect_cluster_writes_one_shared_output_once(tiny_scorer, tmp_path):
    """Under --detect_cluster no process knows its id before joining: process 0 alone must
    take the output's lock, or the second process refuses a file on a shared folder."""
    from conftest import promptsource_rows

    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in promptsource_rows(2)))
    first, second = folders(tmp_path, "first", "second")
    output = tmp_path / "shared" / "results.json"
    codes, outputs = slurm_step(
        [sys.executable, os.path.join(REPO, "cappy_promptsource.py"), "--model_name_or_path",
         tiny_scorer, "--data_file", str(data), "--output_file", str(output),
         "--max_length", "64", "--quiet"], [first, second])
    assert codes == [0, 0], outputs
    assert json.loads(output.read_text())["accuracy"]
    assert sorted(os.listdir(output.parent)) == ["results.json", "results.predictions.jsonl"]


def test_the_local_launcher_prefixes_each_process_and_returns_the_first_failure(tmp_path):
    script = os.path.join(REPO, "scripts", "run_local_processes.py")
    code = ("import sys; args = sys.argv[1:]; i = int(args[args.index('--process_id') + 1]); "
            "print('hello from', i, args[args.index('--n_processes') + 1]); sys.exit(3 * i)")
    done = subprocess.run([sys.executable, script, "--n_processes", "3", "--", sys.executable,
                           "-c", code], text=True, capture_output=True, timeout=60)
    assert done.returncode == 3
    assert sorted(done.stdout.splitlines()) == [f"[{i}] hello from {i} 3" for i in range(3)]
    quiet = subprocess.run([sys.executable, script, "--n_processes", "2", "--quiet", "--",
                            sys.executable, "-c", code], text=True, capture_output=True,
                           timeout=60)
    assert quiet.returncode == 3 and quiet.stdout.splitlines() == ["[0] hello from 0 2"]
    missing = subprocess.run([sys.executable, script, "--"], text=True, capture_output=True,
                             timeout=60)
    assert missing.returncode == 2 and "give the command" in missing.stderr

# ---- the experiments (slow: each runs three processes of a whole command) ------------------

@pytest.mark.slow  # about 40 s here
def test_bigbench_task_over_two_processes_matches_one_process(tiny_scorer, tmp_path):
    from test_cappy_bigbench import write_candidates

    write_candidates(tmp_path / "gens" / "gen", "toy")
    single, first, second = folders(tmp_path, "single", "first", "second")
    argv = [os.path.join(REPO, "cappy_bigbench.py"), "--model_name_or_path", tiny_scorer,
            "--bigbench_gen_dir", tmp_path / "gens", "--bigbench_gen_model", "gen",
            "--bigbench_subset_name", "toy", "--results_dir", "results", "--train_size", 32,
            "--per_device_batch_size", 2, "--accumulate_grad_batches", 2, "--max_length", 64,
            "--quiet"]
    done = one_process(argv, single)
    assert done.returncode == 0, done.stderr[-3000:]
    codes, output = two_processes(argv, [first, second], work_log=tmp_path / "work")
    assert codes == [0, 0], output[-3000:]
    assert_each_computed_half(tmp_path / "work", "training", "scoring")
    ours, theirs = (json.loads((folder / "results/gen/toy.json").read_text())
                    for folder in (first, single))
    assert ours["rougeL"] == theirs["rougeL"]
    assert ours["counts"] == theirs["counts"]
    assert ours["environment"]["processes"] == 2 and theirs["environment"]["processes"] == 1
    assert ((first / "results/gen/toy.predictions.jsonl").read_bytes()
            == (single / "results/gen/toy.predictions.jsonl").read_bytes())
    assert sorted(os.listdir(first / "results/gen")) == ["toy.json", "toy.predictions.jsonl"]
    assert os.listdir(second) == []


@pytest.mark.slow  # about 30 s here
def test_promptsource_over_two_processes_matches_one_process(tiny_scorer, tmp_path):
    from conftest import promptsource_rows

    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in promptsource_rows(4)))
    single, first, second = folders(tmp_path, "single", "first", "second")
    argv = [os.path.join(REPO, "cappy_promptsource.py"), "--model_name_or_path", tiny_scorer,
            "--data_file", data, "--output_file", "results.json", "--max_length", 64,
            "--per_device_batch_size", 2, "--quiet"]
    done = one_process(argv, single)
    assert done.returncode == 0, done.stderr[-3000:]
    codes, output = two_processes(argv, [first, second], work_log=tmp_path / "work")
    assert codes == [0, 0], output[-3000:]
    assert_each_computed_half(tmp_path / "work", "scoring")
    ours, theirs = (json.loads((folder / "results.json").read_text())
                    for folder in (first, single))
    assert ours["accuracy"] == theirs["accuracy"] and ours["counts"] == theirs["counts"]
    assert ((first / "results.predictions.jsonl").read_bytes()
            == (single / "results.predictions.jsonl").read_bytes())
    assert os.listdir(second) == []


@pytest.mark.slow  # about 60 s each here
@pytest.mark.parametrize("n_model_shards", [1, 2])
def test_generation_over_two_processes_gives_the_same_files(tiny_t5, tmp_path, n_model_shards):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"instruction": f"Name a colour, number {i}.", "references": ["red"]}
            for i in range(5)]
    (data / "toy_validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    single, first, second = folders(tmp_path, "single", "first", "second")
    argv = [os.path.join(REPO, "scripts", "bigbench_flan_generate.py"),
            "--model_name_or_path", tiny_t5, "--data_dir", data, "--output_dir", "gens",
            "--tasks", "toy", "--splits", "validation", "--n_sample_gens", 2,
            "--per_device_batch_size", 2, "--max_tgt_len", 8, "--dtype", "float32",
            "--n_model_shards", n_model_shards]
    done = one_process(argv, single)
    assert done.returncode == 0, done.stderr[-3000:]
    codes, output = two_processes(argv, [first, second], work_log=tmp_path / "work")
    assert codes == [0, 0], output[-3000:]
    if n_model_shards == 1:  # data parallel: each process generates for half the rows
        assert_each_computed_half(tmp_path / "work", "generation")
    name = os.path.join("gens", os.path.basename(tiny_t5), "toy_validation.jsonl")
    assert (first / name).read_bytes() == (single / name).read_bytes()
    assert os.listdir(second) == []


@pytest.mark.slow  # about 60 s here
def test_pretraining_over_two_processes_killed_and_restarted_matches_one_process(tmp_path):
    from test_pretrain import final_params, flags, make_backbone, read_log, write_data

    from cappy.pretraining.train import list_checkpoints

    data = write_data(tmp_path / "pretraining_data", train=(48, 48))
    model = make_backbone(str(tmp_path / "tiny-mlm"))
    single, shared = str(tmp_path / "single"), str(tmp_path / "shared")
    work, idle = folders(tmp_path, "work", "idle")
    script = os.path.join(REPO, "cappy_pretrain.py")
    argv = [script, *flags(data, shared, model, "--max_steps", 24, "--eval_every", 8)]
    done = one_process([script, *flags(data, single, model, "--max_steps", 24,
                                       "--eval_every", 8)], work)
    assert done.returncode == 0, done.stderr[-3000:]

    # Both processes killed (SIGKILL) once a checkpoint is complete, then started again.
    env = local_process_env(1, env_with())
    commands = local_process_commands([sys.executable, *map(str, argv)], 2, free_port(), 120)
    processes = [subprocess.Popen(command, cwd=str(cwd), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
                 for command, cwd in zip(commands, (work, idle))]
    deadline = time.monotonic() + 300
    while (not os.path.isdir(os.path.join(shared, "checkpoints"))
           or not [step for step, _ in list_checkpoints(shared) if step >= 4]):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.02)
    for process in processes:
        process.kill()
        process.wait()
    assert not os.path.exists(os.path.join(shared, "final"))  # killed before the end
    codes, output = two_processes(argv, [work, idle], work_log=tmp_path / "work-log")
    assert codes == [0, 0], output[-3000:]
    assert_each_computed_half(tmp_path / "work-log", "training")
    assert "[0] resuming from" in output
    assert "[1] resuming" not in output  # process 1 says nothing

    ours, theirs = read_log(shared), read_log(single)
    assert [row["step"] for row in ours] == [row["step"] for row in theirs]
    # another layout of the same devices: float32 rounding of the collectives only, on
    # losses and parameters of magnitude about 1
    assert_close([r.get("train_loss", 0) for r in ours],
                 [r.get("train_loss", 0) for r in theirs], rel=1e-6)
    ours, theirs = final_params(shared), final_params(single)
    assert ours.keys() == theirs.keys()
    for key in theirs:
        assert_close(ours[key], theirs[key], rel=1e-6, err_msg=str(key))
    assert os.listdir(idle) == []


@pytest.mark.slow  # about 20 s here
def test_cappy_finetune_over_two_processes_saves_the_same_model(tiny_scorer, tmp_path):
    rows = [{"instruction": f"question {i}", "response": f"answer {i % 5}", "label": i % 2}
            for i in range(64)]
    train = tmp_path / "labelled.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    single, first, second = folders(tmp_path, "single", "first", "second")
    argv = ["-m", "cappy", "finetune", "--model_name_or_path", tiny_scorer, "--train_file",
            train, "--output_dir", "model", "--batch_size", 4, "--max_length", 32, "--quiet"]
    done = one_process(argv, single)
    assert done.returncode == 0, done.stderr[-3000:]
    codes, output = two_processes(argv, [first, second], work_log=tmp_path / "work")
    assert codes == [0, 0], output[-3000:]
    assert_each_computed_half(tmp_path / "work", "training")
    for name in ("model.safetensors", "flax_model.msgpack", "config.json"):
        assert (first / "model" / name).read_bytes() == (single / "model" / name).read_bytes()
    assert os.listdir(second) == []
    assert "[0] saved model" in output and "[1] saved" not in output
