"""Reading and validating jsonl, and writing results atomically.

Every result file is written to a temporary name in the same folder and renamed
into place, so a crash never leaves a half-written or placeholder file behind.
"""

import contextlib
import json
import os
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


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file beside `path`; on success rename it to `path`.

    On any exception the temporary file is removed and `path` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp_path = tempfile.mkstemp(dir=folder, suffix=".tmp",
                                    prefix=f".{os.path.basename(path)}.{os.getpid()}.")
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared files
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path):
    """Remove the temporary files of earlier writes of `path` whose process is gone (a
    SIGKILL leaves them: `.{name}.{pid}.{random}.tmp`); a live writer's are kept."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f".{name}."
    for entry in os.listdir(folder):
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid = entry[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, entry))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_jsonl(path, rows):
    """Write rows as jsonl, atomically."""
    with atomic_open(path) as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path, obj):
    """Write one JSON document, atomically."""
    with atomic_open(path) as file:
        json.dump(obj, file, indent=2, ensure_ascii=False)
        file.write("\n")


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
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(me, file)
        break
    else:
        raise CappyError(f"{what}: could not take the lock {lock}")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
