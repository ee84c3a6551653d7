"""Reading command-line values that every entry point shares."""

from cappy.engine.errors import CappyError


def comma_list(text, flag=None):
    """`"a, b,,a"` -> `["a", "b"]`: names stripped, empty and repeated ones dropped, in order.

    None (the flag not given) gives None. With `flag`, a value naming nothing is an error
    that names the flag.
    """
    if text is None:
        return None
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names and flag:
        raise CappyError(f"{flag}: no names given")
    return names
