"""Everything cappy takes from Redco (0.4.23), in one place.

Redco's Deployer sets up JAX's multi-process runtime, the (dp, mp) device mesh
and the parameters' sharding rules, and places parameters on the devices; its
Predictor runs scoring and generation batches over the devices. Training steps
are cappy's own (`cappy.engine.training`): an optimizer update of packed rows takes a
varying number of device steps, which Redco's Trainer (one fixed micro-batch
per step) cannot express. The few places that depend on Redco's internals or
on how its Trainer behaved are here, so that a change in Redco is mended here.
"""

import jax

from cappy.engine.errors import CappyError


def make_deployer(seed, n_model_shards=1, verbose=False, **multihost):
    """Redco's Deployer; `multihost` takes cappy.engine.hosts.multihost_kwargs(args)."""
    from redco import Deployer

    try:
        return Deployer(jax_seed=seed, n_model_shards=n_model_shards, verbose=verbose,
                        **multihost)
    except AssertionError:  # Redco's check that the shards divide the devices
        raise CappyError(f"--n_model_shards {n_model_shards} does not divide the "
                         f"{jax.device_count()} devices") from None


def make_predictor(deployer, collate_fn, pred_fn, output_fn, params_sharding_rules=None):
    from redco import Predictor

    return Predictor(deployer=deployer, collate_fn=collate_fn, pred_fn=pred_fn,
                     output_fn=output_fn, params_sharding_rules=params_sharding_rules)


def show_progress(deployer, shown):
    """Switch Redco's progress bars on or off (it keeps the switch in `_verbose`)."""
    deployer._verbose = bool(shown)


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
