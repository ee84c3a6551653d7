"""Device meshes and placing host arrays on them, for every process alike.

Every process holds the whole host array (the whole batch of a step, all the
parameters) and keeps the pieces its own devices own, so one process of N devices and
several processes of N devices in all compute the same global arrays.
"""

import jax
import numpy as np


def data_parallel_mesh():
    """Every device of every process on one axis, "dp"."""
    from jax.sharding import Mesh

    return Mesh(np.array(jax.devices()), ("dp",))


def place(tree, shardings):
    """Host arrays as global arrays laid out by `shardings` (a tree like `tree`)."""
    return jax.tree.map(lambda x, sharding: jax.make_array_from_callback(
        np.shape(x), sharding, lambda index: np.asarray(x)[index]), tree, shardings)
