"""Reading and validating jsonl, and writing results atomically.

Every result file is written to a temporary name in the same folder and renamed
into place, so a crash never leaves a half-written or placeholder file behind.
A full disk or quota met while writing (a file here, or a folder through
`disk_full_as_error`) becomes one line naming what was not written, with
nothing partial kept.
"""

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import time

from cappy.engine.errors import CappyError, located

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number",
               list: "a list", dict: "an object", bool: "a boolean"}


def _check_type(value, expected):
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _has_lone_surrogate(value):
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(item) for item in value.values())
    return False


def parse_jsonl_line(path, line_number, text, schema=None):
    """Parse one jsonl line and check `schema` ({field: type}); raise a located error."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise located(path, line_number, None, f"not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise located(path, line_number, None, "a row must be a JSON object")
    if "\\ud" in text.lower():  # an escaped surrogate, which no tokenizer can take alone
        for field, value in row.items():
            if _has_lone_surrogate(value):
                raise located(path, line_number, field,
                              "holds an unpaired surrogate (\\ud800-\\udfff), not text")
    for field, expected in (schema or {}).items():
        if field not in row:
            raise located(path, line_number, field, "missing")
        if not _check_type(row[field], expected):
            raise located(path, line_number, field,
                          f"must be {_TYPE_NAMES.get(expected, expected.__name__)}, "
                          f"got {type(row[field]).__name__}")
    return row


def jsonl_lines(path, on_undecodable=None):
    """Yield (line_number, text) for each non-empty line of a jsonl file. A line that is not
    UTF-8 is an error naming the file, the line and the byte; with `on_undecodable`, that
    error is passed to it and the line skipped."""
    if not os.path.isfile(path):
        raise CappyError(f"{path}: file not found")
    with open(path, "rb") as file:
        for line_number, raw in enumerate(file, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problem = located(path, line_number, None,
                                  f"not valid UTF-8 (byte {error.start + 1} of the line, "
                                  f"{raw[error.start:error.start + 1]!r})")
                if on_undecodable is None:
                    raise problem from None
                on_undecodable(problem)
                continue
            if text.strip():
                yield line_number, text


def iter_jsonl(path, schema=None):
    """Yield (line_number, row) for each non-empty line of a jsonl file."""
    for line_number, text in jsonl_lines(path):
        yield line_number, parse_jsonl_line(path, line_number, text, schema)


def read_jsonl(path, schema=None, allow_empty=False):
    """Read a whole jsonl file into a list of dicts, validating every row."""
    rows = [row for _, row in iter_jsonl(path, schema)]
    if not rows and not allow_empty:
        raise CappyError(f"{path}: file is empty")
    return rows


def read_json(path):
    if not os.path.isfile(path):
        raise CappyError(f"{path}: file not found")
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise located(path, error.lineno, None, f"not valid JSON ({error.msg})") from None
        except UnicodeDecodeError as error:
            raise CappyError(f"{path}: not valid UTF-8 (byte {error.start + 1})") from None


# ---- a full disk: one line, nothing partial kept ------------------------------------------

# A full disk, a full quota, and the I/O error some network file systems give for either.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


def disk_full_reason(error):
    """The OS's words ("No space left on device") when `error`, or one it was raised from, is a
    full disk or quota (DISK_FULL_ERRNOS), else None. Writers in native code (orbax's
    tensorstore, safetensors) raise their own types, whose message carries the OS's text."""
    seen = set()
    while error is not None and id(error) not in seen and not isinstance(error, CappyError):
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return error.strerror or os.strerror(error.errno)
        text = str(error)
        for code in DISK_FULL_ERRNOS:
            if os.strerror(code) in text:
                return os.strerror(code)
        error = error.__cause__ or error.__context__
    return None


def human_bytes(n):
    """1536 -> "1.5 KiB"."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def free_bytes(path):
    """Free bytes on the file system of `path` (or of the nearest folder above it that
    exists), or None when that cannot be asked."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def disk_full_line(path, reason, needed=None, kept=None):
    """The one line a write of `path` that the disk could not hold ends with: the file, the
    OS's reason, the space needed (`needed` bytes where known, else more than is free once
    the partial output is removed), that nothing partial was kept, and what was (`kept`; by
    default the previous `path`, if there is one)."""
    free = free_bytes(path)
    if free is None:
        space = f" (about {human_bytes(needed)} needed)" if needed else ""
    elif needed:
        space = f" (about {human_bytes(needed)} needed, {human_bytes(free)} free)"
    else:
        space = f" (it needs more than the {human_bytes(free)} free)"
    if kept is None:
        kept = (f"the previous {os.path.basename(path)} is unchanged; " if os.path.exists(path)
                else "") + "free space, then run the same command again"
    return f"{path}: not written: {reason}{space}; nothing partial was kept; {kept}"


@contextlib.contextmanager
def disk_full_as_error(path, needed=None, kept=None):
    """Around a write of `path` (a file or a folder): a full disk or quota found in it
    becomes one CappyError line (`disk_full_line`). The writer removes what it staged."""
    try:
        yield
    except CappyError:
        raise
    except Exception as error:
        reason = disk_full_reason(error)
        if reason is None:
            raise
        raise CappyError(disk_full_line(path, reason, needed, kept)) from None


def check_room_to_write(path, needed, kept=None):
    """Just before writing `path` (a folder of a size known in advance): the line a full disk
    gives when fewer than `needed` bytes are free, before anything is written."""
    free = free_bytes(path)
    if free is not None and free < needed:
        raise CappyError(disk_full_line(path, "too little space left on the device", needed,
                                        kept))


def check_free_space(path, needed, what, advice="free space or write elsewhere"):
    """Before long work: refuse in one line when the file system that will hold `path` has
    less than `needed` bytes free (`what` says what would be written there)."""
    free = free_bytes(path)
    if free is not None and free < needed:
        raise CappyError(f"{path}: about {human_bytes(needed)} needed for {what}, and its "
                         f"disk has {human_bytes(free)} free; {advice}")


_LATE_REPORTS = []  # when each report of a failed writer's work in flight was dropped


def _late_report(text, disk_full_too=False):
    """Whether `text` is what a failed writer's work in flight reports (its closed event
    loop; in a library's log, also its own failed writes); if so, note when."""
    late = "Event loop is closed" in text or (disk_full_too and any(
        os.strerror(code) in text for code in DISK_FULL_ERRNOS))
    if late:
        _LATE_REPORTS.append(time.time())
    return late


class _LateWriteNoise(logging.Filter):
    """Drops what a failed writer's work still in flight logs (see drop_late_write_reports)."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        return not _late_report(f"{record.getMessage()} {error}", disk_full_too=True)


def drop_late_write_reports():
    """Before a writer with work in flight (orbax: asyncio and tensorstore threads): should it
    fail, that work goes on, then reports to its closed event loop with tracebacks ("Event
    loop is closed", unretrieved futures) while the caller reports the failure once. Drop
    those reports, and only those (installed once per process)."""
    import sys

    if not getattr(sys.excepthook, "_cappy_late_writes", False):
        # Native threads print them through sys.excepthook (PyErr_Print), Python's own
        # through sys.unraisablehook and logging.
        previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

        def unraisable_hook(unraisable):
            if not _late_report(str(unraisable.exc_value)):
                previous_unraisable(unraisable)

        def except_hook(kind, value, traceback):
            if not _late_report(str(value)):
                previous_except(kind, value, traceback)

        except_hook._cappy_late_writes = True
        sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook
        for name in ("asyncio", "concurrent.futures", "absl"):
            logging.getLogger(name).addFilter(_LateWriteNoise())


def after_a_failed_write(folder, quiet_s=0.5, limit_s=10.0):
    """After a writer with work in flight has failed (see drop_late_write_reports): wait
    until `folder` has stopped changing and the late reports have stopped, so that removing
    the folder leaves nothing behind."""
    import gc

    def sizes():
        found = []
        for root, _, names in os.walk(folder):
            for name in names:
                with contextlib.suppress(OSError):  # removed meanwhile
                    found.append((root, name, os.path.getsize(os.path.join(root, name))))
        return sorted(found)

    gc.collect()  # the failed write's objects: what they hold in flight reports now
    # Until the folder has stopped changing and nothing has reported for `quiet_s`.
    last, since, start = sizes(), time.time(), time.time()
    while time.time() - max([since] + _LATE_REPORTS[-1:]) < quiet_s \
            and time.time() - start < limit_s:
        time.sleep(0.05)
        now = sizes()
        if now != last:
            last, since = now, time.time()


class AtomicFiles:
    """Files written as one: each to a temporary beside it, all renamed into place only
    once every one is written and synced (see `atomic_files`)."""

    def __init__(self):
        self.staged = []  # (path, temporary path, open file)
        self.current = None  # the file being written: written one after the other

    def open(self, path, mode="w"):
        self.current = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        remove_stale_temporaries(folder, os.path.basename(path))
        fd, tmp_path = tempfile.mkstemp(dir=folder, suffix=".tmp",
                                        prefix=f".{os.path.basename(path)}.{os.getpid()}.")
        try:
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared
            file = os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")
        except BaseException:
            os.close(fd)
            os.remove(tmp_path)
            raise
        self.staged.append((path, tmp_path, file))
        return file


@contextlib.contextmanager
def atomic_files():
    """Write several files as one (a result and its predictions): `files.open(path)` gives a
    temporary file beside `path`; on success all are synced, then renamed into place in the
    order opened (open last the one whose presence marks the whole as finished).

    On any exception every temporary file is removed and every `path` is untouched; a full
    disk or quota becomes one CappyError line naming the file being written."""
    files = AtomicFiles()
    try:
        try:
            yield files
            for files.current, _, file in files.staged:
                file.flush()
                os.fsync(file.fileno())
                file.close()
            for path, tmp_path, _ in files.staged:
                os.replace(tmp_path, path)
        except BaseException:
            for _, tmp_path, file in files.staged:
                with contextlib.suppress(OSError, ValueError):  # a full disk fails its flush
                    file.close()
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp_path)
            raise
    except Exception as error:
        reason = disk_full_reason(error)
        if reason is None or files.current is None:
            raise
        raise CappyError(disk_full_line(files.current, reason)) from None


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file beside `path`; on success rename it to `path`.

    On any exception the temporary file is removed and `path` is untouched; a full disk
    or quota becomes one CappyError line (`disk_full_line`).
    """
    with atomic_files() as files:
        yield files.open(path, mode)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


# ---- what a killed run leaves behind: the one rule ------------------------------------

def remove_stale_temporaries(folder, name=None, locked=False):
    """Remove the temporary files earlier writes left in `folder` (a SIGKILL leaves them):
    those of the file `name` (`.{name}.{pid}.{random}.tmp`), or of any file when None,
    whose writing process is gone; with `locked` (the caller holds the output's run lock,
    so no other writer is live) every one."""
    prefix = f".{name}." if name else "."
    for entry in os.listdir(folder):
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid = entry[len(prefix):].split(".", 1)[0] if name else None
        if locked or (pid and pid.isdigit() and not _process_alive(int(pid))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, entry))


STAGING = ".partial"


def staging_folder(final, shared=False):
    """Where a folder is built before it takes `final`'s place, beside it: named by this
    process (`final.partial-PID`), or `final.partial` for one several processes write
    together."""
    final = final.rstrip(os.sep)
    return f"{final}{STAGING}" if shared else f"{final}{STAGING}-{os.getpid()}"


def remove_stale_staging(folder, locked=False):
    """Remove the staging folders earlier writes left in `folder`: those of a process that
    is gone, and, with `locked` (the caller holds the output, so no other writer is live),
    the shared ones too."""
    if not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        base, _, pid = entry.rpartition(STAGING)
        if not base:
            continue
        if (pid == "" and locked) or (pid.startswith("-") and pid[1:].isdigit()
                                      and not _process_alive(int(pid[1:]))):
            shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)


@contextlib.contextmanager
def staged_folder(final, needed=None, kept=None, shared=False, leader=True):
    """Build a folder beside `final` (the path yielded), then put it in `final`'s place, the
    folder there before removed only once the new one is complete. A failure removes what
    was staged and leaves `final` as it was; a full disk is one line (`disk_full_line`,
    `needed` and `kept` as it takes them). With several processes writing one folder
    (`shared`), only the `leader` makes, renames and removes; the caller syncs them."""
    staging = staging_folder(final, shared)
    # The staging folder is removed before the error line counts the free space.
    with disk_full_as_error(final, needed, kept):
        try:
            if leader:
                shutil.rmtree(staging, ignore_errors=True)
                os.makedirs(staging)
            yield staging
            if leader:
                if os.path.exists(final):
                    shutil.rmtree(final)
                os.replace(staging, final)
        except BaseException:
            if leader:
                shutil.rmtree(staging, ignore_errors=True)
            raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dump_jsonl(file, rows):
    for row in rows:
        file.write(json.dumps(row, ensure_ascii=False) + "\n")


def dump_json(file, obj):
    json.dump(obj, file, indent=2, ensure_ascii=False)
    file.write("\n")


def write_jsonl(path, rows):
    """Write rows as jsonl, atomically."""
    with atomic_open(path) as file:
        dump_jsonl(file, rows)


def write_json(path, obj):
    """Write one JSON document, atomically."""
    with atomic_open(path) as file:
        dump_json(file, obj)


# ---- output locations, checked before any work -------------------------------------------

def _check_can_create_in(folder, what):
    """`folder` exists as a folder and takes a new file, or can be made: a probe file is
    created and removed in the nearest existing folder above it."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise CappyError(f"{what}: {existing} is a file, so nothing can be written under it")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".cappy-write-probe.", suffix=".tmp")
    except OSError as error:
        raise CappyError(f"{what}: cannot write in {existing} ({error.strerror})") from None
    os.close(fd)
    os.remove(probe)


def check_output_file(path, flag, inputs=()):
    """Before any work: `path` (the value of `flag`) can be written as a file: it is not a
    folder, its folder takes a new file, and it is none of `inputs`."""
    what = f"{flag} {path}"
    if os.path.isdir(path):
        raise CappyError(f"{what}: is a folder; give a file name")
    for given in inputs:
        if given and (os.path.abspath(given) == os.path.abspath(path) or (
                os.path.exists(given) and os.path.exists(path)
                and os.path.samefile(given, path))):
            raise CappyError(f"{what}: is also an input ({given}); write the output elsewhere")
    _check_can_create_in(os.path.dirname(os.path.abspath(path)), what)


def check_output_folder(path, flag):
    """Before any work: `path` (the value of `flag`) is a folder, or one can be made there,
    that takes new files."""
    what = f"{flag} {path}"
    if os.path.exists(path) and not os.path.isdir(path):
        raise CappyError(f"{what}: is a file; give a folder")
    _check_can_create_in(os.path.abspath(path), what)


def lock_holder(path):
    """{"pid", "host", "started"} of the live run holding `path`'s lock, or None (no lock,
    or its process is gone). A lock from another host counts as live: it cannot be checked."""
    import socket

    try:
        with open(f"{path}.lock", encoding="utf-8") as file:
            holder = json.load(file)
    except (OSError, ValueError):
        return None
    pid = holder.get("pid") if isinstance(holder, dict) else None
    if not isinstance(pid, int):
        return None
    if holder.get("host") == socket.gethostname() and not _process_alive(pid):
        return None
    return holder


@contextlib.contextmanager
def run_lock(path, what):
    """One run at a time for the output `path`: `{path}.lock` holds this process's id while
    it runs. A second run refuses in one line naming the holder; the lock of a process that
    is gone (killed) is taken over."""
    import socket

    lock = f"{path}.lock"
    os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_umask())
        except FileExistsError:
            holder = lock_holder(path)
            if holder is not None:
                raise CappyError(f"{what}: another run is writing it (pid {holder['pid']} on "
                                 f"{holder.get('host')}, since {holder.get('started')}; "
                                 f"lock {lock})") from None
            with contextlib.suppress(FileNotFoundError):  # its process is gone: take it over
                os.remove(lock)
            continue
        try:
            with disk_full_as_error(lock), os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(me, file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            raise
        break
    else:
        raise CappyError(f"{what}: could not take the lock {lock}")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
