"""`cappy bigbench-tasks` (= scripts/run_cappy_bigbench.py): cappy_bigbench.py for every
BIG-Bench task and generator, resumably.

    cappy bigbench-tasks [--gen_models flan-t5-xl,flan-t5-xxl] [--tasks codenames,gem] \
        [--devices 0,1,2,3 | --cuda_idx 0] [--dry_run] \
        [any cappy_bigbench.py flag, e.g. --train_size 1024 --lr_schedule corrected]

Tasks come from `{bigbench_data_dir}/subset_names.json`; generators default to every
FLAN-T5 folder found in `--bigbench_gen_dir`. Each (generator, task) runs as its own
process; its output goes to `{results_dir}/{model}/{task}.log`. One failure never stops
the batch: the summary lists each failure with the last line the task printed (its
error) and its log, and the exit code is 1 if any
task failed. `--devices 0,1,...` runs one task per GPU at a time, each child with
`CUDA_VISIBLE_DEVICES` set to its device; without it tasks run one after another;
`--cuda_idx 0` (the original's flag) runs them one after another with
`CUDA_VISIBLE_DEVICES=0`. Unknown flags are passed to every child unchanged.

A task counts as done only when its result file `{results_dir}/{model}/{task}.json`
is valid JSON with a numeric `rougeL` (see `read_result`). Anything else (a
placeholder such as the original code's `running...`, a truncated file, a missing
key) is unfinished: it is run again, with `--overwrite`, and never averaged.
"""

import contextlib
import dataclasses
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time

from cappy.bigbench.candidates import CandidateFolders
from cappy.bigbench.data import read_task_names
from cappy.bigbench.results import log_file, read_result, result_file
from cappy.engine.config import setting
from cappy.engine.runtime.process import job_command
from cappy.engine.errors import CappyError, Stopped, stop_signal
from cappy.engine.flags import comma_list
from cappy.engine.io import lock_holder
from cappy.paper import FLAN_T5_MODELS

# The child of each (generator, task): cappy_bigbench.py's command, run as a module so
# that an installed copy needs no checkout.
TASK_MODULE = "cappy.bigbench.task"
# The folder that holds the cappy package, put on each child's PYTHONPATH so that the
# child imports the same cappy as the runner, installed or not.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Flags the runner sets for each child from --gen_models and --tasks.
PER_TASK_FLAGS = ("--bigbench_gen_model", "--bigbench_subset_name")


def select_tasks(all_tasks, wanted, source):
    """`wanted` (comma list or None) checked against the task list, in the order given."""
    if not wanted:
        return list(all_tasks)
    names = comma_list(wanted, "--tasks")
    unknown = [t for t in names if t not in all_tasks]
    if unknown:
        raise CappyError(f"--tasks: not in {source}: {', '.join(unknown)}")
    return names


def select_gen_models(gen_dir, wanted):
    """The generators to run: `wanted` (comma list), or every FLAN-T5 folder in `gen_dir`."""
    if wanted:
        models = comma_list(wanted, "--gen_models")
        absent = [m for m in models if not os.path.isdir(os.path.join(gen_dir, m))]
        if absent:
            raise CappyError(f"{gen_dir}: no candidate folder for {', '.join(absent)}")
        return models
    models = [m for m in FLAN_T5_MODELS if os.path.isdir(os.path.join(gen_dir, m))]
    if not models:
        raise CappyError(f"{gen_dir}: no FLAN-T5 candidate folders ({', '.join(FLAN_T5_MODELS)}); "
                         f"generate or download them, or name folders with --gen_models")
    return models


def check_passthrough(extra):
    """Refuse flags the runner sets per child, and stray words that are not flags."""
    if extra and not extra[0].startswith("-"):
        raise CappyError(f"unexpected argument {extra[0]!r} (flags for cappy_bigbench.py "
                         f"start with --)")
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name in PER_TASK_FLAGS:
            raise CappyError(f"{name} is set for each task by the runner; use --gen_models "
                             f"and --tasks instead")


class Job:
    """One (generator, task) run of the child script."""

    def __init__(self, index, total, model, task, command, log_path, result_path):
        self.index, self.total = index, total
        self.model, self.task = model, task
        self.command, self.log_path, self.result_path = command, log_path, result_path
        self.status, self.detail, self.seconds, self.device = None, "", 0.0, None

    @property
    def label(self):
        return f"[{self.index}/{self.total}] {self.model} {self.task}"


def child_command(script=None):
    """The command line of one task, before its flags: `script` (a path) or the task module."""
    return [sys.executable, script] if script else [sys.executable, "-m", TASK_MODULE]


def plan_jobs(child, gen_dir, results_dir, models, tasks, extra, overwrite=False):
    """(jobs to launch, [(model, task, rougeL)] already done and skipped); `child` is
    `child_command()`'s list."""
    todo, skipped = [], []
    for model in models:
        for task in tasks:
            result_path = result_file(results_dir, model, task)
            state, value = read_result(result_path)
            if state == "done" and not overwrite:
                skipped.append((model, task, value))
                continue
            command = [*child, "--bigbench_gen_dir", gen_dir,
                       "--bigbench_gen_model", model, "--bigbench_subset_name", task,
                       "--results_dir", results_dir, *extra]
            if state != "missing":  # a stale or finished file the child would skip on
                command.append("--overwrite")
            todo.append((model, task, command, result_path))
    jobs = [Job(i, len(todo), model, task, command, log_file(results_dir, model, task),
                result_path)
            for i, (model, task, command, result_path) in enumerate(todo, start=1)]
    return jobs, skipped


class BatchRunner:
    """Runs jobs one after another, or one per device from a shared queue."""

    def __init__(self, jobs, devices=None, out=None, quiet=False):
        self.jobs, self.quiet = jobs, quiet
        self.devices = devices
        self.out = out or sys.stdout
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        self._procs = {}
        self._procs_lock = threading.Lock()

    def say(self, text):
        with self._print_lock:
            print(text, file=self.out, flush=True)

    def run(self):
        try:
            if not self.devices:
                for job in self.jobs:
                    if self._stop.is_set():
                        break
                    self._run_one(job, device=None)
            else:
                pending = queue.Queue()
                for job in self.jobs:
                    pending.put(job)
                workers = [threading.Thread(target=self._worker, args=(pending, device),
                                            name=f"device-{device}", daemon=True)
                           for device in self.devices]
                for worker in workers:
                    worker.start()
                for worker in workers:
                    while worker.is_alive():
                        worker.join(timeout=0.2)
        except (KeyboardInterrupt, Stopped) as stop:
            self._stop_children(stop_signal(stop))
            raise
        return self.jobs

    def _stop_children(self, signum, grace_s=60):
        """Pass the signal on to each running child's process group, wait for them (a
        SIGKILL after `grace_s`), and mark their tasks interrupted."""
        self._stop.set()
        with self._procs_lock:
            running = list(self._procs.items())
        for _, proc in running:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signum)
        deadline = time.monotonic() + grace_s
        for _, proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        stopped = {key for key, _ in running}
        for job in self.jobs:
            if id(job) in stopped:
                job.status = "interrupted"
                job.detail = f"stopped by {signal.Signals(signum).name}"

    def _worker(self, pending, device):
        while not self._stop.is_set():
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            self._run_one(job, device)

    def _run_one(self, job, device):
        job.device = device
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            [PACKAGE_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        prefix = ""
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
            prefix = f"CUDA_VISIBLE_DEVICES={device} "
        where = f" (device {device})" if device is not None else ""
        holder = lock_holder(job.result_path)
        if holder is not None:  # another run is on it: leave it, and its log, alone
            job.status = "failed"
            job.detail = (f"another run is on it (pid {holder['pid']} on {holder.get('host')})"
                          f"; its log is {job.log_path}")
            self.say(f"{job.label} FAILED ({job.detail})")
            return
        if not self.quiet:
            self.say(f"{job.label} ...{where}")
        start = time.monotonic()
        try:
            os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
            with open(job.log_path, "w", encoding="utf-8") as log:
                log.write(f"$ {prefix}{shlex.join(job.command)}\n")
                log.write(f"# started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                log.flush()
                # A process group of its own: a signal reaches it through the runner,
                # which then waits for it (no orphan left holding a device).
                proc = subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
                with self._procs_lock:
                    self._procs[id(job)] = proc
                returncode = proc.wait()
                with self._procs_lock:
                    self._procs.pop(id(job), None)
                job.seconds = time.monotonic() - start
                log.write(f"\n# exit code {returncode} after {job.seconds:.1f} s\n")
        except OSError as error:  # could not write the log or start the child
            job.seconds = time.monotonic() - start
            job.status, job.detail = "failed", f"could not run: {error}"
            self.say(f"{job.label} FAILED ({job.detail})")
            return
        if self._stop.is_set():  # stopped by a signal: _stop_children records it
            job.status = "interrupted"
            job.detail = f"exit code {returncode}"
            return
        state, value = read_result(job.result_path)
        if returncode != 0:
            said = last_output_line(job.log_path)
            job.status = "failed"
            job.detail = f"exit code {returncode}" + (f": {said}" if said else "")
        elif state != "done":
            job.status = "failed"
            job.detail = ("exit code 0 but no result file" if state == "missing"
                          else f"exit code 0 but result unfinished: {value}")
        else:
            job.status, job.detail = "done", f"ROUGE-L {100 * value:.2f}"
        if job.status == "done":
            if not self.quiet:
                self.say(f"{job.label} done {job.seconds:.1f} s, {job.detail}")
        else:
            self.say(f"{job.label} FAILED ({job.detail}; see {job.log_path})")


def last_output_line(log_path, limit=300):
    """The last line a failed task printed (its one-line error), so that the runner's own
    lines say why without opening the log; None if it printed nothing."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 65536))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.rsplit("\r", 1)[-1].strip() for line in tail.splitlines()]
    lines = [line for line in lines if line and not line.startswith("# exit code ")]
    if not lines or lines[-1].startswith(("$ ", "# started ")):  # only the runner's header
        return None
    said = lines[-1]
    return said if len(said) <= limit else said[:limit - 3] + "..."


def format_summary(jobs, skipped):
    """The closing summary: counts, then each failure with its log."""
    done = [j for j in jobs if j.status == "done"]
    failed = [j for j in jobs if j.status == "failed"]
    interrupted = [j for j in jobs if j.status == "interrupted"]
    not_run = [j for j in jobs if j.status is None]
    parts = [f"{len(done)} done", f"{len(skipped)} skipped (already finished)",
             f"{len(failed)} failed"]
    if interrupted:
        parts.append(f"{len(interrupted)} interrupted (unfinished: run again to finish)")
    if not_run:
        parts.append(f"{len(not_run)} not run")
    lines = ["summary: " + ", ".join(parts)]
    for job in failed:
        lines.append(f"  FAILED {job.model} {job.task}: {job.detail}; log: {job.log_path}")
    return "\n".join(lines)


def parse_devices(text, cuda_idx=None):
    """The CUDA_VISIBLE_DEVICES value of each parallel worker, or None (environment unchanged).

    `--devices 0,1` makes one worker per GPU; `--cuda_idx 0,1` (the original runner's flag)
    one worker that sees all of them.
    """
    if text is not None and cuda_idx is not None:
        raise CappyError("--devices and --cuda_idx: give one (--devices runs one task per "
                         "GPU in parallel, --cuda_idx one task at a time on those GPUs)")
    if cuda_idx is not None:
        text, flag = str(cuda_idx), "--cuda_idx"
    elif text is None:
        return None
    else:
        flag = "--devices"
    devices = [d.strip() for d in text.split(",")]
    if not devices or any(not d for d in devices):
        raise CappyError(f"{flag} {text!r}: expected a comma-separated list such as 0,1,2,3")
    return [",".join(devices)] if flag == "--cuda_idx" else devices


@dataclasses.dataclass(kw_only=True)
class BatchConfig(CandidateFolders):
    """The batch runner's settings; the task flags it does not know go to every task."""
    gen_models: str | None = setting(None, "comma-separated generator folders (default: "
                                     "every FLAN-T5 folder in --bigbench_gen_dir)", type=str)
    tasks: str | None = setting(None, "comma-separated tasks (default: all of "
                                "subset_names.json)", type=str)
    results_dir: str = setting("bigbench_cappy_results", "where each cappy_bigbench.py run "
                               "writes its result")
    devices: str | None = setting(None, "comma-separated GPU ids: one task per device in "
                                  "parallel", type=str)
    cuda_idx: str | None = setting(None, "the original's flag: every task, one at a time, "
                                   "with CUDA_VISIBLE_DEVICES set to this value (such as 0, "
                                   "or 0,1 to give each task two GPUs)", type=str)
    overwrite: bool = setting(False, "run finished tasks again too (passes --overwrite)")
    verbose: bool = setting(True, "print only failures and the summary (and pass --quiet to "
                            "each task: no progress bars in its log)", flag="--quiet")
    dry_run: bool = setting(False, "print the commands without running them")
    script: str | None = setting(None, "a per-task script to run instead of "
                                 "cappy_bigbench.py's command (python -m cappy.bigbench.task)",
                                 type=str)
    task_flags: tuple = setting((), "Unknown flags are passed through to each "
                                "cappy_bigbench.py run.", rest=True)


def run_batch(config, out=None):
    """The runner's main: plan, skip what is done, run the rest, summarise; return exit code."""
    out = out or sys.stdout
    if config.script and not os.path.isfile(config.script):
        raise CappyError(f"{config.script}: script not found")
    child = child_command(os.path.abspath(config.script) if config.script else None)
    extra = list(config.task_flags)
    if not config.verbose and "--quiet" not in extra:
        extra.append("--quiet")
    check_passthrough(extra)
    devices = parse_devices(config.devices, config.cuda_idx)
    tasks = select_tasks(read_task_names(config.bigbench_data_dir), config.tasks,
                         os.path.join(config.bigbench_data_dir, "subset_names.json"))
    models = select_gen_models(config.bigbench_gen_dir, config.gen_models)
    jobs, skipped = plan_jobs(child, config.bigbench_gen_dir, config.results_dir, models, tasks,
                              extra, overwrite=config.overwrite)

    def say(text):
        print(text, file=out, flush=True)

    say(f"{len(models)} generator(s) x {len(tasks)} task(s): {len(jobs)} to run, "
        f"{len(skipped)} already finished (skipped)")
    for model in models:
        n = sum(1 for m, _, _ in skipped if m == model)
        if n:
            say(f"  {model}: {n} finished task(s) skipped")
    if devices and len(devices) == 1:
        where = f"one task at a time with CUDA_VISIBLE_DEVICES={devices[0]}"
    elif devices:
        where = f"{len(devices)} device(s) in parallel: {','.join(devices)}"
    if config.dry_run:
        if devices:
            say(f"# would run on {where} (CUDA_VISIBLE_DEVICES set per child)")
        for job in jobs:
            say(f"{shlex.join(job.command)} > {shlex.quote(job.log_path)} 2>&1")
        return 0
    if devices:
        say(f"running on {where}")
    start = time.monotonic()
    runner = BatchRunner(jobs, devices=devices, out=out, quiet=not config.verbose)
    try:
        runner.run()
    except (KeyboardInterrupt, Stopped) as stop:
        signum = stop_signal(stop)
        say(f"\nstopped by {signal.Signals(signum).name}")
        say(format_summary(jobs, skipped))
        return 128 + signum
    say(f"finished in {time.monotonic() - start:.1f} s")
    say(format_summary(jobs, skipped))
    return 1 if any(job.status == "failed" for job in jobs) else 0


parse_args, main = job_command(BatchConfig, __doc__, run_batch, computes=False)
