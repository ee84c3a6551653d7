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


class Devices:
    """Where a job computes, cappy's own: every device of every process as one mesh, each
    model copy on `n_model_shards` devices (a ("dp", "mp") mesh, the parameters sharded by
    Redco's rules; without model shards every device on "dp", each holding every
    parameter); whether progress is shown; and the random stream of steps that draw keys
    (generation's sampling), which starts from `seed` as the original's Redco Deployer's did.

    Build it with `devices_for`, which joins a run of several processes first."""

    def __init__(self, n_model_shards=1, seed=0, progress=False):
        from jax.sharding import Mesh

        data_parallel = data_parallel_size(n_model_shards)
        self.n_model_shards, self.progress = n_model_shards, bool(progress)
        devices = np.array(jax.devices())
        self.mesh = (Mesh(devices, ("dp",)) if n_model_shards == 1 else
                     Mesh(devices.reshape(data_parallel, n_model_shards), ("dp", "mp")))
        self._key = jax.random.PRNGKey(seed)

    @property
    def model_sharded(self):
        return self.n_model_shards > 1

    @property
    def data_parallel(self):
        """Model copies: what a per-device batch size is multiplied by."""
        return self.mesh.shape["dp"]

    def micro_batch_size(self, per_device_batch_size):
        """Examples of one step over every model copy."""
        return per_device_batch_size * self.data_parallel

    def sharding(self, spec=()):
        """A NamedSharding on this mesh: `()` replicated, `("dp",)` rows spread."""
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def sharding_rules(self, params):
        """Redco's rules for sharding `params` over the model-shard axis (None without it)."""
        if not self.model_sharded:
            return None
        from cappy.engine.runtime.redco_adapter import sharding_rules

        return sharding_rules(params, self.n_model_shards)

    def parameter_shardings(self, params, rules=None):
        """The shardings of `params` (a tree like it): replicated without model shards, else
        split over "mp" by `rules` (default: `sharding_rules(params)`)."""
        from flax.core import unfreeze
        from jax.sharding import NamedSharding, PartitionSpec

        params = unfreeze(params)
        if not self.model_sharded:
            return jax.tree.map(lambda _: self.sharding(), params)
        from cappy.engine.runtime.redco_adapter import parameter_specs

        specs = parameter_specs(params, rules if rules is not None else self.sharding_rules(params))
        return jax.tree.map(lambda spec: NamedSharding(self.mesh, spec), specs,
                            is_leaf=lambda x: isinstance(x, PartitionSpec))

    def next_key(self):
        """The next key of the step stream (split off as Redco's Deployer.gen_rng did)."""
        self._key, key = jax.random.split(self._key)
        return key

    def reseed(self, key):
        """Restart the step stream from `key`."""
        self._key = key


def devices_for(n_model_shards=1, seed=0, progress=False, hosts=None):
    """`Devices` for a job; `hosts` (a configuration with the `cappy.engine.runtime.hosts.HostSettings`
    fields) joins the multi-process runtime first, before anything touches a device."""
    if hosts is not None:
        from cappy.engine.runtime.hosts import join

        join(hosts)
    return Devices(n_model_shards, seed, progress)


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
