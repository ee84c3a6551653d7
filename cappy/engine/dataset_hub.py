"""Reading one split of a Hugging Face hub dataset, including repositories that
still ship only a loading script (which `datasets` 4 and 5 no longer run): those are
read from the hub's automatic parquet export of the same config and split."""

import os

SCRIPT_ERROR = "scripts are no longer supported"


def hub_error(where, error, hint=None):
    """A failed read from the hub (network, authentication, a missing repository or
    split) as one line: what was read, the error's first line, and what to do."""
    from cappy.engine.errors import CappyError

    first_line = (str(error).splitlines() or [""])[0]
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    hints = [hint] if hint else []
    if offline:
        hints.append("HF_HUB_OFFLINE is set: only cached datasets can be read")
    return CappyError(f"cannot read {where} from the hub: {type(error).__name__}: {first_line}"
                      + (f" ({'; '.join(hints)})" if hints else ""))


def parquet_export_files(repo, config, split):
    """The hub's export: refs/convert/parquet/<config or default>/<split>/NNNN.parquet."""
    return (f"hf://datasets/{repo}@refs%2Fconvert%2Fparquet/{config or 'default'}/"
            f"{split}/*.parquet")


def load_hub_dataset(repo, config, split, streaming=False, revision=None):
    """`datasets.load_dataset` of one split (a Dataset, or an IterableDataset when
    streaming). An explicit `revision` is taken as it is, without the fallback."""
    import datasets

    try:
        return datasets.load_dataset(repo, config, split=split, streaming=streaming,
                                     revision=revision)
    except RuntimeError as error:
        if SCRIPT_ERROR not in str(error) or revision:
            raise
    return datasets.load_dataset("parquet",
                                 data_files={split: parquet_export_files(repo, config, split)},
                                 split=split, streaming=streaming)
