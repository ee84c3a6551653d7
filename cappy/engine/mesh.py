"""Device meshes and placing host arrays on them, for every process alike.

Every process holds the whole host array (the whole batch of a step, all the
parameters) and keeps the pieces its own devices own, so one process of N devices and
several processes of N devices in all compute the same global arrays.
"""

import json
import os

import jax
import numpy as np

WORK_LOG = "CAPPY_WORK_LOG"
_work = {}


def data_parallel_size(n_model_shards=1):
    """How many model copies the devices of every process hold, `n_model_shards` devices
    each: what a micro-batch's per-device size is multiplied by."""
    from cappy.engine.errors import CappyError

    if jax.device_count() % n_model_shards:
        raise CappyError(f"--n_model_shards {n_model_shards} does not divide the "
                         f"{jax.device_count()} devices")
    return jax.device_count() // n_model_shards


def data_parallel_mesh():
    """Every device of every process on one axis, "dp"."""
    from jax.sharding import Mesh

    return Mesh(np.array(jax.devices()), ("dp",))


def mesh_of(deployer):
    """The mesh a deployer computes on: its (dp, mp) mesh with model shards, else every
    device on "dp"."""
    return data_parallel_mesh() if deployer.mesh is None else deployer.mesh


def parameter_layout(deployer, params, rules=None):
    """(mesh, shardings of `params`) for a deployer: without model shards (its mesh None)
    every device on "dp", each holding every parameter; else the deployer's (dp, mp) mesh,
    the parameters sharded over "mp" by Redco's rules (`rules`, or the deployer's own)."""
    from flax.core import unfreeze
    from jax.sharding import NamedSharding, PartitionSpec

    params, mesh = unfreeze(params), mesh_of(deployer)
    if deployer.mesh is None:
        specs = jax.tree.map(lambda _: PartitionSpec(), params)
    else:
        rules = rules if rules is not None else deployer.get_sharding_rules(params)
        specs = unfreeze(deployer.get_params_spec(params, rules))
    return mesh, jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs,
                              is_leaf=lambda x: isinstance(x, PartitionSpec))


def place(tree, shardings):
    """Host arrays as global arrays laid out by `shardings` (a tree like `tree`, or one
    sharding for every array)."""
    from jax.sharding import Sharding

    if isinstance(shardings, Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    return jax.tree.map(lambda x, sharding: jax.make_array_from_callback(
        np.shape(x), sharding, lambda index: np.asarray(x)[index]), tree, shardings)


def record_share(kind, local_rows, global_rows):
    """Count a batch of `kind` (scoring, training, generation) of which this process's
    devices held `local_rows` of `global_rows`. With $CAPPY_WORK_LOG=PATH, the totals so
    far are kept in PATH.<process index>.json: how runs of several processes are checked
    to share the work (tests/test_hosts.py); a no-op otherwise."""
    path = os.environ.get(WORK_LOG)
    if not path:
        return
    totals = _work.setdefault(kind, [0, 0])
    totals[0] += int(local_rows)
    totals[1] += int(global_rows)
    with open(f"{path}.{jax.process_index()}.json", "w", encoding="utf-8") as file:
        json.dump({name: {"local_rows": a, "global_rows": b}
                   for name, (a, b) in _work.items()}, file)


def record_placed(kind, array):
    """`record_share` of a placed global array: the rows its shards on this process's
    devices cover (rows repeated over model shards counted once)."""
    if not os.environ.get(WORK_LOG):
        return
    held = set()
    for shard in array.addressable_shards:
        held.update(range(*shard.index[0].indices(array.shape[0])))
    record_share(kind, len(held), array.shape[0])
