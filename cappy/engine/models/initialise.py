"""Random parameters as transformers initialises its models, for tiny test models and new
heads: float32 host arrays, normal(0, std) kernels and embeddings, zero biases, unit
norm scales."""

import numpy as np


def initialise(shapes, rng, std, zeros=("bias",), ones=("scale",), path=()):
    """A tree of parameters for a tree of shapes: a leaf named in `zeros` is zero, one in
    `ones` is one, any other is drawn from `rng` (in the tree's order)."""
    if isinstance(shapes, dict):
        return {name: initialise(value, rng, std, zeros, ones, path + (name,))
                for name, value in shapes.items()}
    if path[-1] in zeros:
        return np.zeros(shapes, np.float32)
    if path[-1] in ones:
        return np.ones(shapes, np.float32)
    return rng.normal(0.0, std, shapes).astype(np.float32)
