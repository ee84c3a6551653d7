"""Several JAX processes on this machine, each with its own CPU devices and the host flags
added to its command: the local check of a multi-host run (`cappy processes`, the
tests of several processes).
"""

import dataclasses
import os
import socket

from cappy.engine.config import setting
from cappy.engine.errors import CappyError
from cappy.engine.runtime.process import job_command


def free_port():
    """A TCP port free on this machine now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def local_process_commands(command, n_processes, port, host_timeout=None):
    """`command` once per process, with the host flags of a run on this machine."""
    extra = [] if host_timeout is None else ["--host_timeout", str(host_timeout)]
    return [list(command) + ["--n_processes", str(n_processes), "--host0_address", "127.0.0.1",
                             "--host0_port", str(port), "--process_id", str(index)] + extra
            for index in range(n_processes)]


def local_process_env(devices_per_process, env=None):
    """The environment of one local process: JAX on the CPU with `devices_per_process`
    devices (XLA's forced host device count), whatever accelerators the machine has."""
    env = dict(os.environ if env is None else env)
    flags = [flag for flag in env.get("XLA_FLAGS", "").split()
             if not flag.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [
        f"--xla_force_host_platform_device_count={devices_per_process}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_local_processes(command, n_processes=2, devices_per_process=1, host_timeout=None,
                        cwds=None, env=None, out=None, shown=None):
    """Run `command` as `n_processes` JAX processes on this machine, coordinator on a free
    loopback port; each line they print is passed to `out` prefixed with `[i]` (only
    the processes in `shown`, when given). Returns the exit codes, in process order.
    Ctrl-C stops them all."""
    import subprocess
    import sys
    import threading

    out = out or sys.stdout
    port = free_port()
    cwds = cwds or [None] * n_processes
    lock = threading.Lock()

    def relay(index, stream):
        for line in stream:
            if shown is not None and index not in shown:
                continue
            with lock:
                out.write(f"[{index}] {line}")
                out.flush()

    processes, relays = [], []
    try:
        for index, argv in enumerate(local_process_commands(command, n_processes, port,
                                                            host_timeout)):
            process = subprocess.Popen(argv, cwd=cwds[index], text=True, errors="replace",
                                       env=local_process_env(devices_per_process, env),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            processes.append(process)
            relays.append(threading.Thread(target=relay, args=(index, process.stdout),
                                           daemon=True))
            relays[-1].start()
        codes = [process.wait() for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
    for thread in relays:
        thread.join(timeout=5)
    return codes


LOCAL_PROCESSES_DOC = """`cappy processes` (= scripts/run_local_processes.py): run a cappy command as
several JAX processes on this machine, the local check of a multi-host run, on the CPU (one
coordinator on a free loopback port, each process with its own CPU devices and the host
flags added to the command).

    cappy processes --n_processes 2 -- \\
        python -m cappy score --model_name_or_path MODEL --input pairs.jsonl --output out.jsonl

Each line the processes print is shown prefixed with its process index. Exits with the
first non-zero exit code, else 0.
"""


@dataclasses.dataclass(kw_only=True)
class LocalProcessesConfig:
    """The flags of `cappy processes`; the command to run comes after `--`."""
    n_processes: int = setting(2, "processes to start", at_least=1)
    devices_per_process: int = setting(1, "CPU devices of each process", at_least=1)
    host_timeout: int = setting(60, "--host_timeout given to each process (seconds)",
                                at_least=1)
    verbose: bool = setting(True, "show only process 0's output (the others' is dropped)",
                            flag="--quiet")
    command: tuple = setting((), "After --: the command to run, without the host flags.",
                             rest=True)


def run_local(config):
    """`cappy processes`: the command as config.n_processes processes; the first failure's
    exit code, else 0."""
    if not config.command:
        raise CappyError("give the command to run after --")
    codes = run_local_processes(list(config.command), config.n_processes,
                                config.devices_per_process, config.host_timeout,
                                shown=None if config.verbose else [0])
    return next((code for code in codes if code), 0)


parse_args, main = job_command(LocalProcessesConfig, LOCAL_PROCESSES_DOC, run_local,
                               computes=False)
