"""Reading and validating jsonl, and writing results atomically.

Every result file is written to a temporary name in the same folder and renamed
into place, so a crash never leaves a half-written or placeholder file behind.
"""

import contextlib
import json
import os
import tempfile

from cappy.engine.errors import CappyError, located

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number",
               list: "a list", dict: "an object", bool: "a boolean"}


def _check_type(value, expected):
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def parse_jsonl_line(path, line_number, text, schema=None):
    """Parse one jsonl line and check `schema` ({field: type}); raise a located error."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise located(path, line_number, None, f"not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise located(path, line_number, None, "a row must be a JSON object")
    for field, expected in (schema or {}).items():
        if field not in row:
            raise located(path, line_number, field, "missing")
        if not _check_type(row[field], expected):
            raise located(path, line_number, field,
                          f"must be {_TYPE_NAMES.get(expected, expected.__name__)}, "
                          f"got {type(row[field]).__name__}")
    return row


def iter_jsonl(path, schema=None):
    """Yield (line_number, row) for each non-empty line of a jsonl file."""
    if not os.path.isfile(path):
        raise CappyError(f"{path}: file not found")
    with open(path, encoding="utf-8") as file:
        for line_number, text in enumerate(file, start=1):
            if text.strip():
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


@contextlib.contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file beside `path`; on success rename it to `path`.

    On any exception the temporary file is removed and `path` is untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                    suffix=".tmp")
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
