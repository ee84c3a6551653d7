"""Everything cappy takes from Redco (0.4.23), in one place.

Redco gives the rules for splitting a model's parameters over the "mp" axis of a device
mesh (`sharding_rules`, `parameter_specs`): the original release's model-sharded layout.
Everything else is cappy's own: the device mesh and the random stream
(`cappy.engine.runtime.mesh.Devices`), joining several processes (`cappy.engine.runtime.hosts`), and the
scoring, training and generation steps over the mesh (`cappy.engine.jobs.scoring`,
`cappy.engine.jobs.training`, `cappy.engine.jobs.candidate_generation`). What depends on how Redco's Trainer
behaved in the original release (its example order) is here too, so that a change in
Redco is mended here.
"""

import jax


def sharding_rules(params, n_model_shards):
    """Redco's rules for splitting `params` over `n_model_shards` devices: per parameter
    name, which dimension goes over the "mp" axis (attention and feed-forward kernels as in
    Megatron, embeddings over their vocabulary)."""
    from redco.deployers.partition_utils import get_sharding_rules

    return get_sharding_rules(params, n_model_shards)


def parameter_specs(params, rules):
    """The PartitionSpec of each parameter of `params` under Redco's `rules` (a plain dict)."""
    from flax.core import unfreeze
    from redco.deployers.partition_utils import get_params_spec

    return unfreeze(get_params_spec(params, rules))


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
