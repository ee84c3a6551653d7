"""One clear line for bad input, never a traceback from deep inside a library."""

import functools
import sys


class CappyError(Exception):
    """A user-facing error: bad input, a missing file, an impossible flag.

    The message is printed as one line and the process exits non-zero.
    """


def located(path, line, field, problem):
    """The error for a bad field of a jsonl row: ``file:line: field 'x': problem``."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    if field is None:
        return CappyError(f"{where}: {problem}")
    return CappyError(f"{where}: field '{field}': {problem}")


def exit_on_error(main):
    """Wrap an entry point: a CappyError becomes `error: ...` on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except CappyError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper
