"""One clear line for bad input or a stop, never a traceback from deep inside a library."""

import contextlib
import functools
import signal
import sys
import threading


class CappyError(Exception):
    """A user-facing error: bad input, a missing file, an impossible flag.

    The message is printed as one line and the process exits non-zero.
    """


class Stopped(BaseException):
    """SIGTERM or SIGHUP (what job schedulers and closed terminals send), raised in the main
    thread as Ctrl-C raises KeyboardInterrupt, so that temporary files are removed on the
    way out (`cappy.engine.io.atomic_open`)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def stop_signal(stop):
    """The signal number a KeyboardInterrupt or Stopped stands for."""
    return stop.signum if isinstance(stop, Stopped) else signal.SIGINT


def located(path, line, field, problem):
    """The error for a bad field of a jsonl row: ``file:line: field 'x': problem``."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    if field is None:
        return CappyError(f"{where}: {problem}")
    return CappyError(f"{where}: field '{field}': {problem}")


# ---- device memory exhausted ----------------------------------------------------------------

# The step runners' error type: `jax.errors.JaxRuntimeError` (jaxlib's XlaRuntimeError before).
_XLA_ERRORS = ("JaxRuntimeError", "XlaRuntimeError")


def device_memory_reason(error):
    """The first line of XLA's message ("RESOURCE_EXHAUSTED: Out of memory while trying to
    allocate ...") when `error` is a device running out of memory, else None. Orbax says
    RESOURCE_EXHAUSTED for a full disk too, with another type: only XLA's own count."""
    if not any(cls.__name__ in _XLA_ERRORS for cls in type(error).__mro__):
        return None
    first = (str(error).strip().splitlines() or [""])[0]
    if not first.startswith("RESOURCE_EXHAUSTED"):
        return None
    return first if len(first) <= 160 else first[:157] + "..."


def device_memory_line(reason, lower=None, kept=None):
    """One line for a device out of memory: XLA's first line, the settings to lower, what
    was kept."""
    lower = lower or ("lower the batch size per device or the max length, or split the model "
                      "over more devices (--n_model_shards)")
    return f"the device ran out of memory ({reason}): {lower}" + (f"; {kept}" if kept else "")


@contextlib.contextmanager
def device_memory_guard(lower, kept=None):
    """Around a job's compiled steps (scoring, training, generation): XLA's RESOURCE_EXHAUSTED,
    wherever it surfaces (dispatch is asynchronous), becomes one CappyError line naming the
    settings to lower (`lower`, with the job's own flags) and what was kept (`kept`, a
    callable asked at that moment: finished files, the last checkpoint)."""
    try:
        yield
    except Exception as error:
        reason = device_memory_reason(error)
        if reason is None:
            raise
        raise CappyError(device_memory_line(reason, lower, kept() if kept else None)) from None


def _exit(code):
    """Exit with `code`; in a run of several processes at once, without JAX's shutdown
    barrier, which would wait for peers that may be gone (cappy.engine.hosts.leave_now)."""
    jax = sys.modules.get("jax")
    if jax is not None and jax.distributed.is_initialized():
        from cappy.engine.hosts import leave_now

        leave_now(code)
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
        except CappyError as error:
            print(f"error: {error}", file=sys.stderr)
            _exit(2)
        except (KeyboardInterrupt, Stopped) as stop:
            signum = stop_signal(stop)
            print(f"stopped by {signal.Signals(signum).name}; no partial output was kept",
                  file=sys.stderr)
            _exit(128 + signum)
        except Exception as error:
            line = _machine_fault_line(error)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            _exit(2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    return wrapper


def _machine_fault_line(error):
    """One line for what a job met without a guard of its own: a lost peer, a device out of
    memory, a full disk (the writers name their file themselves; this is the backstop)."""
    from cappy.engine.hosts import lost_peer_line
    from cappy.engine.io import disk_full_reason

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
