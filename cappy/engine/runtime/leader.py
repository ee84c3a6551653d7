"""Process 0 writes and shows: the one rule for which process of a run writes its outputs
(results, candidate files, models; the locks on them) and shows progress bars. Every
process computes; a process on its own is process 0.
"""

import sys


def writes_outputs():
    """Whether this process writes the run's outputs: process 0 of a multi-process run, or
    a process on its own (one that never imported JAX, such as the torch backend's)."""
    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


def progress_bar(iterable=None, *, shown=True, **options):
    """A tqdm bar over `iterable` (or one updated by hand), drawn when `shown` (the
    command's --quiet not given) and only by the process that writes outputs."""
    import tqdm

    return tqdm.tqdm(iterable, disable=not (shown and writes_outputs()), **options)
