"""Packing pairs into rows for scoring: several pairs share one row of a few fixed
widths, so a batch holds real tokens instead of padding and JAX compiles one
shape per width.

Each pair keeps its own positions and attends only to its own tokens
(`cappy.engine.models.roberta.packed_scores`), so a packed pair scores what it
scores alone, padded. scripts/benchmark.py reports the share of computed
positions that are real tokens (on its PromptSource-like mix: 98% packed,
against 25% for the original's fixed padding).
"""

import bisect

import numpy as np

# A row holds at most width // MIN_PAIR_TOKENS pairs: the last layer computes one
# query per slot, so slots are kept few; only rows of very short pairs fill them.
MIN_PAIR_TOKENS = 16


def row_widths(max_length):
    """The row widths: max_length and its half (when the half is at least 32).

    Pairs longer than half go alone or with short ones in full rows; the rest
    share half-width rows, where attention costs half as much per token.
    """
    half = max_length // 2
    return (half, max_length) if half >= 32 else (max_length,)


def max_pairs_per_row(width):
    return max(1, width // MIN_PAIR_TOKENS)


def rows_per_batch(width, tokens_per_batch):
    """Rows of `width` in a batch of (at most) `tokens_per_batch` tokens; at least one."""
    return max(1, tokens_per_batch // width)


def computed_positions(rows, tokens_per_batch):
    """Positions a batched run of these packed rows computes, the last batch of each
    width filled up to its fixed shape included."""
    total = 0
    for width in {width for width, _ in rows}:
        n_rows = sum(1 for w, _ in rows if w == width)
        per_batch = rows_per_batch(width, tokens_per_batch)
        total += -(-n_rows // per_batch) * per_batch * width
    return total


def pack_rows(lengths, widths):
    """Assign pairs of these token lengths to rows: [(width, [pair indices])].

    Greedy, longest first: a row is opened by the longest pair left, at the
    narrowest width that holds it, and filled with the longest pairs left that
    still fit (at most `max_pairs_per_row(width)` pairs). Deterministic.
    """
    widths = sorted(widths)
    lengths = [int(n) for n in lengths]
    too_long = [n for n in lengths if n > widths[-1]]
    if too_long:
        raise ValueError(f"a pair of {max(too_long)} tokens does not fit a row of {widths[-1]}")
    waiting = {}  # length -> indices, the earliest last (popped first)
    for index in reversed(range(len(lengths))):
        waiting.setdefault(lengths[index], []).append(index)
    available = sorted(waiting)  # lengths with pairs waiting

    def take(length):
        indices = waiting[length]
        index = indices.pop()
        if not indices:
            del available[bisect.bisect_left(available, length)]
        return index

    rows = []
    while available:
        longest = available[-1]
        width = widths[bisect.bisect_left(widths, longest)]
        row, space = [take(longest)], width - longest
        while len(row) < max_pairs_per_row(width) and available and available[0] <= space:
            fitting = available[bisect.bisect_right(available, space) - 1]
            row.append(take(fitting))
            space -= fitting
        rows.append((width, row))
    return rows


def collate_packed_rows(rows, width, pad_id):
    """Model inputs for a batch of rows, each a list of encoded pairs (`encode_pairs`).

    Returns input_ids, segment_ids (pairs numbered from 1, 0 for padding),
    position_ids (RoBERTa's: pad_id + 1 onwards within each pair, pad_id on
    padding), first_tokens [rows, max_pairs_per_row(width)] (each pair's first
    index; 0 past the last pair) and token_type_ids when the pairs have them.
    """
    n_rows, slots = len(rows), max_pairs_per_row(width)
    input_ids = np.full((n_rows, width), pad_id, np.int32)
    segment_ids = np.zeros((n_rows, width), np.int32)
    position_ids = np.full((n_rows, width), pad_id, np.int32)
    first_tokens = np.zeros((n_rows, slots), np.int32)
    with_types = bool(rows) and bool(rows[0]) and "token_type_ids" in rows[0][0]
    token_type_ids = np.zeros((n_rows, width), np.int32)
    for r, pairs in enumerate(rows):
        if len(pairs) > slots:
            raise ValueError(f"{len(pairs)} pairs in a row of {slots} slots")
        at = 0
        for slot, pair in enumerate(pairs):
            ids = pair["input_ids"]
            end = at + len(ids)
            if end > width:
                raise ValueError(f"pairs of {end} tokens in a row of width {width}")
            input_ids[r, at:end] = ids
            segment_ids[r, at:end] = slot + 1
            position_ids[r, at:end] = np.arange(pad_id + 1, pad_id + 1 + len(ids))
            if with_types:
                token_type_ids[r, at:end] = pair["token_type_ids"]
            first_tokens[r, slot] = at
            at = end
    batch = {"input_ids": input_ids, "segment_ids": segment_ids, "position_ids": position_ids,
             "first_tokens": first_tokens}
    if with_types:
        batch["token_type_ids"] = token_type_ids
    return batch
