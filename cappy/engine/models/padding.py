"""Length-aware batching: pad each batch only to its bucket, from a small fixed set.

JAX compiles once per input shape, so lengths are rounded up to a power of two
(at least `MIN_BUCKET`, at most the maximum length): a handful of shapes instead
of one per batch, and far less padding than always using the maximum length.
"""

import numpy as np

MIN_BUCKET = 16


def bucket_length(length, max_length, min_bucket=MIN_BUCKET):
    """The padded length for a batch whose longest sequence has `length` tokens."""
    bucket = min_bucket
    while bucket < length:
        bucket *= 2
    return min(bucket, max_length)


def length_sorted_order(lengths):
    """Indices that sort by length (stable, so equal lengths keep input order)."""
    return np.argsort(np.asarray(lengths), kind="stable")


def pad_batch(sequences, length, pad_id, left=False):
    """Stack token-id lists into (ids, mask) arrays of width `length`."""
    ids = np.full((len(sequences), length), pad_id, dtype=np.int32)
    mask = np.zeros((len(sequences), length), dtype=np.int32)
    for row, seq in enumerate(sequences):
        seq = seq[:length]
        if left:
            ids[row, length - len(seq):] = seq
            mask[row, length - len(seq):] = 1
        else:
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
    return ids, mask
