"""A scoring-only forward pass for RoBERTa Cappy checkpoints, on the same parameters.

transformers' Flax RoBERTa computes attention as explicit einsums with an
additive mask, and runs every layer for every position even though a score
reads only the first token's final state. For scoring (no dropout) this module
computes the same function with less work:

- attention through `jax.nn.dot_product_attention` (cuDNN's fused kernel on
  NVIDIA GPUs when the shapes allow it, XLA's otherwise);
- the last layer only for the first token, whose state the classifier reads:
  its keys and values still see every token, so the score is unchanged.

It reads the parameter tree of `FlaxRobertaForSequenceClassification` as it is
(no conversion), and matches that model's logits within floating-point noise
(tests check 1e-5 in float32). Training keeps transformers' module, whose
dropout this path does not implement.
"""

import jax
import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("roberta", "xlm-roberta")
SUPPORTED_ACTIVATIONS = ("gelu",)


def supports(config):
    """True when `config` describes a model this forward pass computes exactly."""
    return (config.model_type in SUPPORTED_MODEL_TYPES
            and config.hidden_act in SUPPORTED_ACTIVATIONS
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "is_decoder", False)
            and config.num_labels == 1)


def _dense(x, params, dtype):
    return x @ params["kernel"].astype(dtype) + params["bias"].astype(dtype)


def _layer_norm(x, params, eps, dtype):
    # Statistics in float32 whatever the compute dtype, and the variance as
    # E[x^2] - E[x]^2, as Flax's LayerNorm computes them.
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.maximum(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) - jnp.square(mean), 0.0)
    factor = jax.lax.rsqrt(var + eps) * params["scale"]
    return ((x32 - mean) * factor + params["bias"]).astype(dtype)


def _position_ids(input_ids, pad_token_id):
    # RoBERTa numbers real tokens from pad_token_id + 1; padding keeps pad_token_id.
    is_token = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.cumsum(is_token, axis=1) * is_token + pad_token_id


def _layer(x, mask, params, config, dtype, first_token_only):
    batch, length, hidden = x.shape
    heads = config.num_attention_heads
    head_dim = hidden // heads
    attention = params["attention"]
    projections = attention["self"]
    # Keys and values need every token; queries only those whose state is kept.
    kept = x[:, :1] if first_token_only else x
    query = _dense(kept, projections["query"], dtype)
    key = _dense(x, projections["key"], dtype)
    value = _dense(x, projections["value"], dtype)
    shape = lambda t: t.reshape(batch, t.shape[1], heads, head_dim)  # noqa: E731
    context = jax.nn.dot_product_attention(shape(query), shape(key), shape(value),
                                           mask=mask[:, None, None, :])
    context = context.reshape(batch, -1, hidden)
    eps = config.layer_norm_eps
    x = _layer_norm(_dense(context, attention["output"]["dense"], dtype) + kept,
                    attention["output"]["LayerNorm"], eps, dtype)
    inner = jax.nn.gelu(_dense(x, params["intermediate"]["dense"], dtype), approximate=False)
    return _layer_norm(_dense(inner, params["output"]["dense"], dtype) + x,
                       params["output"]["LayerNorm"], eps, dtype)


def roberta_scores(params, config, input_ids, attention_mask, token_type_ids=None,
                   dtype=jnp.float32):
    """`logits[..., 0]` of FlaxRobertaForSequenceClassification, in float32.

    `params` is that model's parameter tree; inputs are padded on the right.
    """
    roberta = params["roberta"]
    embeddings = roberta["embeddings"]
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
    x = (embeddings["word_embeddings"]["embedding"][input_ids]
         + embeddings["position_embeddings"]["embedding"][
             _position_ids(input_ids, config.pad_token_id)]
         + embeddings["token_type_embeddings"]["embedding"][token_type_ids])
    x = _layer_norm(x.astype(dtype), embeddings["LayerNorm"], config.layer_norm_eps, dtype)
    mask = attention_mask.astype(bool)
    layers = roberta["encoder"]["layer"]
    for index in range(config.num_hidden_layers):
        last = index == config.num_hidden_layers - 1
        x = _layer(x, mask, layers[str(index)], config, dtype, first_token_only=last)
    head = params["classifier"]
    first = jnp.tanh(_dense(x[:, 0], head["dense"], dtype))
    return _dense(first, head["out_proj"], dtype)[:, 0].astype(jnp.float32)
