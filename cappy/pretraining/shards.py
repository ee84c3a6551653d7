"""The pretraining data's contract, one place for its writer (`cappy.pretraining.data`) and
its reader (`cappy.pretraining.train`):

    {data_dir}/manifest.json    {"format", "complete", "settings", "shards": {split: [{"file",
                                 "rows", "sha256", "dataset", ...}]}, "counts", "totals"}
    {data_dir}/shards/{split}-NNNNN.jsonl   rows {"instruction", "response",
                                 "label" in [0, 1], "source"}

A shard is listed once its file is complete; the reader checks each against its row
count and sha256 before training on any of its rows. Without a manifest,
`shards/{split}-*.jsonl` are read in name order (counted once at the start, no checksum).
"""

import glob
import hashlib
import os

from cappy.engine.errors import CappyError, located

MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"
SPLITS = ("train", "validation")


def manifest_path(data_dir):
    return os.path.join(data_dir, MANIFEST_NAME)


def shard_file(split, index):
    """A shard's file, relative to the data folder (as the manifest lists it)."""
    return f"{SHARDS_DIR}/{split}-{index:05d}.jsonl"


def shard_checksum(lines):
    """The sha256 the manifest records for a shard of these lines."""
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def manifest_shards(data_dir, manifest_path):
    from cappy.engine.io import read_json

    manifest = read_json(manifest_path)
    listed = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict):
        raise located(manifest_path, None, "shards", "missing or not an object")
    shards = {}
    for split in SPLITS:
        entries = listed.get(split, [])
        if not isinstance(entries, list):
            raise located(manifest_path, None, f"shards.{split}", "must be a list")
        shards[split] = []
        for i, entry in enumerate(entries):
            field = f"shards.{split}[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                raise located(manifest_path, None, f"{field}.file", "missing or not a string")
            rows = entry.get("rows")
            if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
                raise located(manifest_path, None, f"{field}.rows",
                              "must be a non-negative integer")
            checksum = entry.get("sha256")
            if checksum is not None and not (isinstance(checksum, str) and len(checksum) == 64):
                raise located(manifest_path, None, f"{field}.sha256", "not a sha256 hex digest")
            path = os.path.join(data_dir, entry["file"])
            if not os.path.isfile(path):
                raise CappyError(f"{manifest_path}: lists {entry['file']}, which is not in "
                                 f"{data_dir}")
            shards[split].append((path, rows, checksum))
    return shards


def count_rows(path):
    """Non-empty lines of a jsonl file (the rows a reader yields); bytes, so that a line that
    is not UTF-8 is reported where the shard is read (check_shard), not here."""
    with open(path, "rb") as file:
        return sum(1 for raw in file if raw.strip())


def find_shards(data_dir):
    """{split: [(path, rows, sha256 or None)]} from the manifest, else from
    `shards/{split}-*.jsonl` (counted, no checksum)."""
    if not os.path.isdir(data_dir):
        raise CappyError(f"{data_dir}: data folder not found")
    manifest_path = os.path.join(data_dir, "manifest.json")
    if os.path.isfile(manifest_path):
        shards = manifest_shards(data_dir, manifest_path)
    else:
        shards = {split: [(path, count_rows(path), None) for path in sorted(
            glob.glob(os.path.join(data_dir, "shards", f"{split}-*.jsonl")))]
            for split in SPLITS}
    if not sum(rows for _, rows, _ in shards["train"]):
        raise CappyError(f"{data_dir}: no training rows (no manifest.json listing train "
                         f"shards, and no rows in shards/train-*.jsonl)")
    return shards


def parse_pair(path, line_number, text):
    """{"instruction", "response", "label"} of one row; a located error if it is bad."""
    from cappy.engine.io import parse_jsonl_line
    from cappy.engine.rows import check_labelled_row

    row = parse_jsonl_line(path, line_number, text)
    problem = check_labelled_row(row)
    if problem:
        raise located(path, line_number, *problem)
    return {"instruction": row["instruction"], "response": row["response"],
            "label": float(row["label"])}


REBUILD_HINT = ("delete it and run scripts/build_pretraining_data.py again with the same "
                "flags, which rebuilds just that shard")


def check_shard(path, expected, sha256=None):
    """The whole shard read once before any of it is trained on: every row valid, the row
    count (and the checksum, when the builder recorded one) as the manifest says."""
    import hashlib

    from cappy.engine.io import jsonl_lines

    digest, n_read = hashlib.sha256(), 0
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if sha256 and digest.hexdigest() != sha256:
        raise CappyError(f"{path}: its checksum is not the manifest's (changed or damaged "
                         f"since it was built); {REBUILD_HINT}")
    try:
        for line_number, text in jsonl_lines(path):
            parse_pair(path, line_number, text)
            n_read += 1
    except CappyError as error:
        raise CappyError(f"{error}; {REBUILD_HINT}") from None
    if n_read != expected:  # the stream's order (and resuming) relies on the counts
        raise CappyError(f"{path}: expected {expected} rows (manifest or first count), "
                         f"read {n_read}; {REBUILD_HINT}")


def shard_rows(path, expected, sha256=None):
    """(path, line_number, text) of a shard's rows, once check_shard has read it whole."""
    check_shard(path, expected, sha256)
    with open(path, encoding="utf-8") as file:
        for line_number, text in enumerate(file, start=1):
            if text.strip():
                yield path, line_number, text
