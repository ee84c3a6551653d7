"""Attention as the encoder-decoder generators compute it (T5, BART): the same einsums,
float32 logits and softmax, whatever the caller's masks and position terms."""

import jax
import jax.numpy as jnp


def attention_context(query, key, value, bias, dtype):
    """softmax(q k^T + bias) v with the heads joined: q [b, q, h, d], k/v [b, k, h, d], bias
    (masks and position terms, -inf-like where a key is left out) broadcastable to
    [b, h, q, k]; the logits and softmax in float32, the weights then in `dtype`."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits + bias, axis=-1).astype(dtype)
    context = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    batch, length = context.shape[:2]
    return context.reshape(batch, length, -1)
