"""One clear line for bad input or a stop, never a traceback from deep inside a library."""

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


def _exit(code):
    """Exit with `code`; in a run of several processes at once, without JAX's shutdown
    barrier, which would wait for peers that may be gone (cappy.engine.hosts.leave_now)."""
    jax = sys.modules.get("jax")
    if jax is not None and jax.distributed.is_initialized():
        from cappy.engine.hosts import leave_now

        leave_now(code)
    sys.exit(code)


def exit_on_error(main):
    """Wrap an entry point: a CappyError becomes `error: ...` on stderr and exit 2; Ctrl-C,
    SIGTERM and SIGHUP become one line and exit 128 + the signal (130, 143, 129)."""

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
            from cappy.engine.hosts import lost_peer_line

            line = lost_peer_line(error)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            _exit(2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    return wrapper
