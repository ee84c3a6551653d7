"""Where a model comes from: a local folder or a hub id, checked before it is read, so
that a missing folder, missing files or an unreachable hub is one line, not the hub's
minute of retries (one request of a few seconds finds the hub down; a cached copy then
loads offline).
"""

import os
from cappy.engine.errors import CappyError


def _looks_local(name_or_path):
    """A path rather than a hub id ("name" or "owner/name")."""
    return (os.path.isabs(name_or_path) or name_or_path.startswith((".", "~"))
            or name_or_path.count("/") > 1 or os.path.exists(name_or_path))


_WENT_OFFLINE = []  # the hub endpoint this process found unreachable, once it has


# A saved tokenizer has at least one of these; without any, transformers 5 builds an empty
# one (special tokens only) and every text would score as the same few ids.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")


def check_model_source(name_or_path, what):
    """Before a load: a local path that does not exist is named at once; for a hub id,
    when the hub cannot be reached (one request, a few seconds), this process goes
    offline, so a cached copy loads without the hub's minute of retries. Returns a
    one-line error for a later load failure to use, or None."""
    if _looks_local(name_or_path):
        if not os.path.isdir(name_or_path):
            raise CappyError(f"{name_or_path}: folder not found")
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise CappyError(f"{name_or_path}: no config.json, so not a saved model folder")
        if not any(os.path.isfile(os.path.join(name_or_path, name)) for name in TOKENIZER_FILES):
            raise CappyError(f"{name_or_path}: no tokenizer files (one of "
                             f"{', '.join(TOKENIZER_FILES)}); save the tokenizer beside the "
                             f"model (tokenizer.save_pretrained)")
        return None
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        if _hub_reachable():
            return None
        constants.HF_HUB_OFFLINE = True  # what transformers and huggingface_hub consult
        _WENT_OFFLINE.append(constants.ENDPOINT)
    if _WENT_OFFLINE:
        return (f"cannot load {what} {name_or_path!r}: the hub ({_WENT_OFFLINE[0]}) cannot be "
                f"reached and no copy is in the local cache; connect, or pass a local folder "
                f"(HF_HUB_OFFLINE=1 skips the hub)")
    return (f"cannot load {what} {name_or_path!r}: HF_HUB_OFFLINE is set and no copy is in "
            f"the local cache; unset it to download, or pass a local folder")


def load_error(what, name_or_path, error, unreachable):
    """The one line a failed load of `what` reports: check_model_source's `unreachable`
    where the hub or the cache was wanting, else the error's own first line."""
    text = str(error)
    if unreachable and ("cache" in text.lower() or "offline" in text.lower()):
        return unreachable
    first_line = (text.strip().splitlines() or [type(error).__name__])[0]
    return f"cannot load {what} {name_or_path!r}: {first_line}"


def _hub_reachable(timeout=3.0):
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # noqa: BLE001 (any failure to get an answer means unreachable)
        return False
    return True


def resolve_file(name_or_path, filename):
    """The local path of `filename` in a folder or hub repository, or None if it has none."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(name_or_path, filename)
    except EntryNotFoundError:  # also: not in the cache when offline
        return None
