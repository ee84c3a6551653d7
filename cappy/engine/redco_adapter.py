"""Everything cappy takes from Redco (0.4.23), in one place.

Redco's Deployer gives the (dp, mp) device mesh for model shards and the parameters'
sharding rules, and places parameters on the devices; its Predictor runs generation
batches over the devices. JAX's multi-process runtime is joined by cappy itself
(`cappy.engine.hosts`), and scoring and training steps are cappy's own
(`cappy.engine.scoring`, `cappy.engine.training`): an optimizer update of packed rows
takes a varying number of device steps, which Redco's Trainer (one fixed micro-batch per
step) cannot express, and scoring needs no random keys per batch. The few places that
depend on Redco's internals or on how its Trainer behaved are here, so that a change in
Redco is mended here.
"""

import jax


def make_deployer(seed, n_model_shards=1, verbose=False, hosts=None):
    """Redco's Deployer over every device of every process. `hosts` (a configuration with
    the cappy.engine.hosts.HostSettings fields) joins the multi-process runtime first,
    if it has not been joined; Redco's own joining is never used (see cappy.engine.hosts)."""
    from cappy.engine.hosts import join
    from cappy.engine.mesh import data_parallel_size

    if hosts is not None:
        join(hosts)
    data_parallel_size(n_model_shards)  # the shards divide the devices, or one line
    return _deployer_class()(jax_seed=seed, n_model_shards=n_model_shards, verbose=verbose,
                             n_processes=1)


class DataParallel:
    """What scoring (`cappy.engine.scoring.PairScorer`) reads of a deployer when the model is
    not sharded: no model-shard mesh (the scorer spreads rows over every device) and whether
    progress bars are on. Scoring-only commands use it instead of Redco's Deployer, whose
    import alone costs them 0.3 s of start-up."""

    mesh = None

    def __init__(self, verbose=False):
        self._verbose = verbose


def make_scoring_deployer(seed=0, n_model_shards=1, verbose=False, hosts=None):
    """The deployer of a command that only scores: `DataParallel` without model shards,
    else Redco's Deployer (its mesh and sharding rules); `hosts` as for make_deployer."""
    if n_model_shards > 1:
        return make_deployer(seed, n_model_shards, verbose, hosts)
    from cappy.engine.hosts import join

    if hosts is not None:
        join(hosts)
    return DataParallel(verbose)


def _deployer_class():
    """Redco's Deployer, with its data-parallel prediction over several processes made the
    same as over one process holding as many devices.

    Redco deals a prediction's examples to the processes in turn (process p takes every
    P-th), each process pads its own share, and each takes its own part of the step's
    random key; so a run's outputs (sampled candidates, and which rows share padding)
    depended on how the devices were spread over processes, and processes could even pad
    to different widths. Here every process collates the whole global batch and keeps
    its devices' rows of it, and the key is split over all devices as one process of
    them all splits it. One process takes Redco's own path, unchanged.
    """
    import numpy as np
    import tqdm
    from redco import Deployer

    class SpreadDeployer(Deployer):
        def _spread(self):
            return self.mesh is None and jax.process_count() > 1

        def gen_model_step_rng(self):
            if not self._spread():
                return super().gen_model_step_rng()
            rng = jax.random.split(self.gen_rng(), num=1)[0]  # one process's path, then
            keys = jax.random.split(rng, num=jax.device_count())  # its split over devices
            local = jax.local_device_count()
            return keys[jax.process_index() * local:(jax.process_index() + 1) * local]

        def get_model_input_batches(self, examples, per_device_batch_size, collate_fn,
                                    shuffle, shuffle_rng, desc, is_train=False,
                                    accumulate_grad_batches=None):
            if is_train or shuffle or not self._spread():
                return super().get_model_input_batches(
                    examples, per_device_batch_size, collate_fn, shuffle, shuffle_rng, desc,
                    is_train, accumulate_grad_batches)
            from cappy.engine.hosts import writes_outputs

            local, total = self.get_local_global_micro_batch_size(per_device_batch_size)
            start, devices = jax.process_index() * local, jax.local_device_count()

            def batches():
                from cappy.engine.mesh import record_share

                for offset in range(0, len(examples) - total + 1, total):
                    record_share("generation", local, total)
                    batch = collate_fn(examples=examples[offset:offset + total])
                    yield jax.tree.map(lambda x: np.asarray(x)[start:start + local].reshape(
                        (devices, -1) + np.shape(x)[1:]), batch)

            return tqdm.tqdm(batches(), total=len(examples) // total,
                             desc=f"{desc} (global_batch_size = {total})",
                             disable=not writes_outputs() or not self._verbose)

    return SpreadDeployer


def make_predictor(deployer, collate_fn, pred_fn, output_fn, params_sharding_rules=None):
    from redco import Predictor

    return Predictor(deployer=deployer, collate_fn=collate_fn, pred_fn=pred_fn,
                     output_fn=output_fn, params_sharding_rules=params_sharding_rules)


def show_progress(deployer, shown):
    """Switch Redco's progress bars on or off (it keeps the switch in `_verbose`)."""
    deployer._verbose = bool(shown)


def progress_shown(deployer):
    """Whether the deployer's progress bars are on (`show_progress`, its `verbose`)."""
    return bool(deployer._verbose)


def reseed(deployer, key):
    """Restart the random stream Redco hands to prediction steps (kept in `_rng`)."""
    deployer._rng = key


def original_example_order(seed, n_examples):
    """The order in which the original release trained on its examples.

    Its Redco Trainer permuted them with the first key of `Deployer(jax_seed=seed)`
    (`jax.random.split` of `PRNGKey(seed)`, second half), then cut them into
    global micro-batches in that order. Training in this order keeps which
    examples form each micro-batch and each optimizer update.
    """
    import numpy as np

    key = jax.random.split(jax.random.PRNGKey(seed))[1]
    return np.asarray(jax.random.permutation(key, n_examples))


def placement(deployer):
    """How parameters already on the devices are passed to a Predictor."""
    return {"params_replicated": True} if deployer.mesh is None else {"params_sharded": True}
