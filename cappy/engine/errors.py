"""One clear line for bad input or a stop, never a traceback from deep inside a library."""

import contextlib
import signal


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
    """The first line of the error's message when `error` is a device running out of
    memory, else None: XLA's "RESOURCE_EXHAUSTED: Out of memory while trying to allocate
    ...", or PyTorch's `torch.OutOfMemoryError` ("CUDA out of memory. Tried to allocate
    ...", the torch backend's). Orbax says RESOURCE_EXHAUSTED for a full disk too, with
    another type: only XLA's own count."""
    names = {cls.__name__ for cls in type(error).__mro__}
    first = (str(error).strip().splitlines() or [""])[0]
    if names.intersection(_XLA_ERRORS):
        if not first.startswith("RESOURCE_EXHAUSTED"):
            return None
    elif not ("OutOfMemoryError" in names and type(error).__module__.startswith("torch")):
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


