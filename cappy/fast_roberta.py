"""A scoring-only forward pass for RoBERTa Cappy checkpoints, on the same parameters.

transformers' Flax RoBERTa runs one pair per row, padded, and every layer for
every position even though a score reads only the first token's final state.
For scoring (no dropout) this module computes the same function with less work:

- packed rows (`cappy.packing`): several pairs share a row, each attending only
  to its own tokens and numbering its positions from the start, so a row holds
  little padding and the scores are those of the pairs scored alone;
- the last layer only for each pair's first token, whose state the classifier
  reads: its keys and values still see every token, so the score is unchanged;
- attention written out, with the same einsums and float32 softmax as XLA's
  `jax.nn.dot_product_attention`, on the packed rows' segment mask.

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


def _attention(query, key, value, mask):
    """softmax(q k^T / sqrt(d)) v with masked keys left out; mask [rows, q, k]."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    logits = logits * (query.shape[-1] ** -0.5)
    logits = jnp.where(mask[:, None], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


def _layer(x, params, config, dtype, kept, mask):
    """One encoder layer for the positions `kept` ([rows, n] indices, or None for all)."""
    rows, length, hidden = x.shape
    heads = config.num_attention_heads
    attention = params["attention"]
    projections = attention["self"]
    # Keys and values need every token; queries only those whose state is kept.
    x_kept = x if kept is None else jnp.take_along_axis(x, kept[..., None], axis=1)
    heads_of = lambda t: t.reshape(rows, t.shape[1], heads, hidden // heads)  # noqa: E731
    context = _attention(heads_of(_dense(x_kept, projections["query"], dtype)),
                         heads_of(_dense(x, projections["key"], dtype)),
                         heads_of(_dense(x, projections["value"], dtype)), mask)
    context = context.reshape(rows, -1, hidden)
    eps = config.layer_norm_eps
    x = _layer_norm(_dense(context, attention["output"]["dense"], dtype) + x_kept,
                    attention["output"]["LayerNorm"], eps, dtype)
    inner = jax.nn.gelu(_dense(x, params["intermediate"]["dense"], dtype), approximate=False)
    return _layer_norm(_dense(inner, params["output"]["dense"], dtype) + x,
                       params["output"]["LayerNorm"], eps, dtype)


def packed_roberta_scores(params, config, input_ids, segment_ids, position_ids, first_tokens,
                          token_type_ids=None, dtype=jnp.float32):
    """`logits[..., 0]` of FlaxRobertaForSequenceClassification for every packed pair.

    Inputs are [rows, width]: `segment_ids` numbers the pairs of a row from 1
    (0 is padding), `position_ids` are RoBERTa's position ids of each pair alone
    (pad_token_id + 1 onwards). `first_tokens` [rows, n] holds the index of each
    pair's first token. Returns float32 [rows, n]; entries past a row's last
    pair are meaningless.
    """
    roberta = params["roberta"]
    embeddings = roberta["embeddings"]
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
    x = (embeddings["word_embeddings"]["embedding"][input_ids]
         + embeddings["position_embeddings"]["embedding"][position_ids]
         + embeddings["token_type_embeddings"]["embedding"][token_type_ids])
    x = _layer_norm(x.astype(dtype), embeddings["LayerNorm"], config.layer_norm_eps, dtype)
    is_token = segment_ids[:, None, :] > 0
    same_pair = (segment_ids[:, :, None] == segment_ids[:, None, :]) & is_token
    first_segments = jnp.take_along_axis(segment_ids, first_tokens, axis=1)
    first_same_pair = (first_segments[:, :, None] == segment_ids[:, None, :]) & is_token
    layers = roberta["encoder"]["layer"]
    for index in range(config.num_hidden_layers):
        if index < config.num_hidden_layers - 1:
            x = _layer(x, layers[str(index)], config, dtype, None, same_pair)
        else:
            x = _layer(x, layers[str(index)], config, dtype, first_tokens, first_same_pair)
    head = params["classifier"]
    first = jnp.tanh(_dense(x, head["dense"], dtype))
    return _dense(first, head["out_proj"], dtype)[..., 0].astype(jnp.float32)


def roberta_scores(params, config, input_ids, attention_mask, token_type_ids=None,
                   dtype=jnp.float32):
    """`logits[..., 0]` for one pair per row, padded on the right (float32 [rows])."""
    segment_ids = attention_mask.astype(jnp.int32)
    # RoBERTa numbers real tokens from pad_token_id + 1; padding keeps pad_token_id.
    position_ids = jnp.cumsum(segment_ids, axis=1) * segment_ids + config.pad_token_id
    first_tokens = jnp.zeros((input_ids.shape[0], 1), jnp.int32)
    return packed_roberta_scores(params, config, input_ids, segment_ids, position_ids,
                                 first_tokens, token_type_ids, dtype)[:, 0]
