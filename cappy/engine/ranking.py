"""Choosing by score, one rule everywhere: the highest score wins, the earliest on a tie."""

import numpy as np


def best_index(scores):
    """The index of the highest score; a tie goes to the earliest."""
    return int(np.argmax(np.asarray(scores)))


def ranked_order(scores):
    """Indices from the highest score down; equal scores keep their order."""
    return np.argsort(-np.asarray(scores), kind="stable")
