"""How a cappy command starts and ends as a process of its own: its flags parsed into its
configuration (`job_command`), PyTorch kept out of transformers and JAX's compilation
cache on for the commands that compute, and every way out turned into one line and an
exit code (`exit_on_error`): bad input, a stop signal, a lost peer, a device out of
memory, a full disk. In a run of several processes an error exit skips JAX's shutdown
barrier, which would wait for peers that may be gone, and process 0's tells the others
first (`hosts.tell_peers_and_leave`).
"""

import functools
import os
import signal
import sys
import threading

from cappy.engine.config import build_parser, parse_config
from cappy.engine.errors import (STOP_SIGNALS, CappyError, Stopped, device_memory_line,
                                 device_memory_reason, stop_signal)
from cappy.engine.io import disk_full_reason
from cappy.engine.runtime.hosts import lost_peer_line, tell_peers_and_leave, wait_if_leaving


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def _exit(code, line, peers_alive=True):
    """Exit with `code`, having said `line`; in a run of several processes at once, without
    JAX's shutdown barrier, which would wait for peers that may be gone, and process 0
    first tells the others, which leave too (`hosts.tell_peers_and_leave`)."""
    jax = sys.modules.get("jax")
    if jax is not None and jax.distributed.is_initialized():
        tell_peers_and_leave(code, line, wait=peers_alive)
    sys.exit(code)


def exit_on_error(main):
    """Wrap an entry point: a CappyError becomes `error: ...` on stderr and exit 2, as do a
    lost peer, a device out of memory and a full disk; Ctrl-C, SIGTERM and SIGHUP become one
    line and exit 128 + the signal (130, 143, 129)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
        try:
            return main(*args, **kwargs)
        except BaseException as error:
            # This process may be leaving on process 0's word (another thread), and its
            # collectives fail as process 0 goes: that thread alone speaks.
            wait_if_leaving()
            if isinstance(error, CappyError):
                print(f"error: {error}", file=sys.stderr)
                _exit(2, str(error))
            if isinstance(error, (KeyboardInterrupt, Stopped)):
                signum = stop_signal(error)
                line = f"stopped by {signal.Signals(signum).name}; no partial output was kept"
                print(line, file=sys.stderr)
                _exit(128 + signum, line)
            line = _machine_fault_line(error) if isinstance(error, Exception) else None
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            _exit(2, line, peers_alive=lost_peer_line(error) is None)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    return wrapper


def _machine_fault_line(error):
    """One line for what a job met without a guard of its own: a lost peer, a device out of
    memory, a full disk (the writers name their file themselves; this is the backstop)."""
    line = lost_peer_line(error)
    if line is not None:
        return line
    reason = device_memory_reason(error)
    if reason is not None:
        return device_memory_line(reason)
    reason = disk_full_reason(error)
    if reason is not None:
        where = getattr(error, "filename", None)
        return (f"{where or 'a file'}: {reason}; free space (or check the disk), then run the "
                f"same command again")
    return None


def job_command(config_class, doc, run, computes=True, environment=None):
    """`(parse_args, main)` of a command: flags made from `config_class` (described by
    `doc`'s first paragraph), then `run(config)`, whose int return is the exit code. When
    the command `computes` with JAX and is a process of its own (argv None, or
    `own_process`, as `cappy` passes it), `main` keeps PyTorch out of transformers and
    switches JAX's persistent compilation cache on first. `environment` holds variables the
    command sets, where unset, before anything is imported (the demo: HF_HUB_OFFLINE)."""

    def parse_args(argv=None, prog=None):
        parser = build_parser(config_class, doc.split("\n\n")[0], prog=prog)
        return parse_config(config_class, parser, argv)

    @exit_on_error
    def main(argv=None, prog=None, own_process=None):
        config = parse_args(argv, prog)
        for name, value in (environment or {}).items():
            os.environ.setdefault(name, value)
        if computes and (argv is None if own_process is None else own_process):
            from cappy.engine.runtime.compilation_cache import enable_compilation_cache
            from cappy.engine.runtime.transformers_setup import keep_torch_out_of_transformers

            keep_torch_out_of_transformers()  # a process computing with JAX only: start-up
            enable_compilation_cache()  # and the programs an earlier run compiled
        code = run(config)  # an exit code, or what the job returns (its result): 0
        return code if type(code) is int else 0

    parse_args.__doc__ = f"The command's flags -> a {config_class.__name__}."
    return parse_args, main
