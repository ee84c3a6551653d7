"""T5 generators, both variants in use: T5 v1.0 (ReLU feed-forward, embeddings tied to
the output head, whose input is scaled by d_model ** -0.5) and v1.1 / FLAN-T5
(gated GELU, a head of its own), as pure functions of (parameters, config, inputs).

The parameters are the checkpoint's tree in the names of `flax_model.msgpack`
(`shared/embedding`, `encoder/block/N/layer/M/...`, `lm_head/kernel`); the
semantics are transformers' T5 (tests compare logits and generations with its
PyTorch model): relative position buckets (bidirectional in the encoder, causal
in the decoder) from each stack's first block, shared by its other blocks; RMS
norm with float32 statistics; attention without the 1/sqrt(d) scaling; the
softmax in float32.

`encode` and `decode` compute whole sequences (log-likelihoods of candidates);
`init_cache` and `decode_step` compute one decoder position at a time against a
key/value cache (`cappy.engine.models.decoding`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from cappy.engine.models.attention import attention_context
from cappy.engine.models.decoding import write_cache

FEED_FORWARD = {"relu": False, "gated-gelu": True}  # feed_forward_proj -> gated


def unsupported_reason(config):
    """Why these functions cannot compute `config`'s model exactly, or None."""
    if config.model_type not in ("t5", "mt5", "umt5"):
        return f"model_type {config.model_type!r}"
    if config.model_type == "umt5":
        return "model_type 'umt5' (a relative attention bias in every layer)"
    if config.feed_forward_proj not in FEED_FORWARD:
        return (f"feed_forward_proj {config.feed_forward_proj!r} (supported: "
                f"{', '.join(FEED_FORWARD)})")
    return None


def _gated(config):
    return FEED_FORWARD[config.feed_forward_proj]


def is_v1_0(config):
    """T5 v1.0 (the head is the embedding matrix, on states scaled by d_model ** -0.5)
    rather than v1.1 (a head of its own, no scaling). transformers 4 tells them apart
    by `tie_word_embeddings`; transformers 5 sets that True for every T5 and keeps
    the difference in `scale_decoder_outputs`."""
    return bool(getattr(config, "scale_decoder_outputs", config.tie_word_embeddings))


# ---- parameters ---------------------------------------------------------------------

def parameter_shapes(config):
    """The shape of every parameter, in the checkpoint's tree."""
    d_model, inner = config.d_model, config.num_heads * config.d_kv

    def attention(with_bias):
        shapes = {"q": {"kernel": (d_model, inner)}, "k": {"kernel": (d_model, inner)},
                  "v": {"kernel": (d_model, inner)}, "o": {"kernel": (inner, d_model)}}
        if with_bias:
            shapes["relative_attention_bias"] = {
                "embedding": (config.relative_attention_num_buckets, config.num_heads)}
        return shapes

    if _gated(config):
        feed_forward = {"wi_0": {"kernel": (d_model, config.d_ff)},
                        "wi_1": {"kernel": (d_model, config.d_ff)},
                        "wo": {"kernel": (config.d_ff, d_model)}}
    else:
        feed_forward = {"wi": {"kernel": (d_model, config.d_ff)},
                        "wo": {"kernel": (config.d_ff, d_model)}}
    norm = {"weight": (d_model,)}

    def stack(n_blocks, decoder):
        blocks = {}
        for index in range(n_blocks):
            layers = {"0": {"SelfAttention": attention(index == 0), "layer_norm": norm}}
            if decoder:
                layers["1"] = {"EncDecAttention": attention(False), "layer_norm": norm}
            layers[str(len(layers))] = {"DenseReluDense": feed_forward, "layer_norm": norm}
            blocks[str(index)] = {"layer": layers}
        return {"block": blocks, "final_layer_norm": norm}

    shapes = {"shared": {"embedding": (config.vocab_size, d_model)},
              "encoder": stack(config.num_layers, False),
              "decoder": stack(config.num_decoder_layers, True)}
    if not is_v1_0(config):
        shapes["lm_head"] = {"kernel": (d_model, config.vocab_size)}
    return shapes


def init_params(config, seed):
    """Random parameters, initialised as transformers initialises T5 (float32, host)."""
    rng = np.random.default_rng(seed)
    d_model, d_kv, heads = config.d_model, config.d_kv, config.num_heads
    std_of = {"q": (d_model * d_kv) ** -0.5, "k": d_model ** -0.5, "v": d_model ** -0.5,
              "o": (heads * d_kv) ** -0.5, "wi": d_model ** -0.5, "wi_0": d_model ** -0.5,
              "wi_1": d_model ** -0.5, "wo": config.d_ff ** -0.5,
              "relative_attention_bias": d_model ** -0.5, "shared": 1.0, "lm_head": 1.0}

    def initialise(shapes, path):
        if isinstance(shapes, dict):
            return {name: initialise(value, path + (name,)) for name, value in shapes.items()}
        if path[-1] == "weight":  # RMS norm scales
            return np.ones(shapes, np.float32)
        std = std_of[path[-2]] * config.initializer_factor
        return rng.normal(0.0, std, shapes).astype(np.float32)

    return initialise(parameter_shapes(config), ())


# ---- building blocks ----------------------------------------------------------------

def relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """T5's bucket of each key-minus-query offset: exact for small offsets, logarithmic
    up to `max_distance`; a separate half of the buckets for positive offsets when
    bidirectional, and none for them when causal."""
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    exact = num_buckets // 2
    # Distances past `exact` take log-spaced buckets (clamped below log(1) for safety).
    scaled = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact)
              / math.log(max_distance / exact) * (num_buckets - exact))
    far = jnp.minimum(exact + scaled.astype(relative_position.dtype), num_buckets - 1)
    return buckets + jnp.where(distance < exact, distance, far)


def position_bias(table, config, query_positions, key_positions, bidirectional):
    """[1, heads, queries, keys] bias added to the attention logits."""
    offsets = key_positions[None, :] - query_positions[:, None]
    buckets = relative_position_bucket(offsets, bidirectional,
                                       config.relative_attention_num_buckets,
                                       config.relative_attention_max_distance)
    return jnp.transpose(_embed(table, buckets), (2, 0, 1))[None].astype(jnp.float32)


def _embed(table, ids):
    return jnp.take(jnp.asarray(table), ids, axis=0)


def _rms_norm(x, weight, eps, dtype):
    # T5's layer norm: no mean, no bias; statistics in float32.
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return (weight.astype(dtype) * x32.astype(dtype)).astype(dtype)


def _project(x, params, dtype):
    return x @ params["kernel"].astype(dtype)


def _heads(x, heads):
    batch, length, _ = x.shape
    return x.reshape(batch, length, heads, -1)


def _attend(query, key, value, bias, params, dtype):
    """softmax(q k^T + bias) v, then the output projection; q [b, q, h, d], k/v [b, k, h, d],
    bias (position bias and mask as -inf-like terms) broadcastable to [b, h, q, k]."""
    return _project(attention_context(query, key, value, bias, dtype), params["o"], dtype)


def _feed_forward(x, params, config, dtype):
    if _gated(config):
        gate = jax.nn.gelu(_project(x, params["wi_0"], dtype), approximate=True)
        inner = gate * _project(x, params["wi_1"], dtype)
    else:
        inner = jax.nn.relu(_project(x, params["wi"], dtype))
    return _project(inner, params["wo"], dtype)


def _mask_bias(mask):
    """0 where attended, a large negative number elsewhere ([b, 1, q or 1, k])."""
    return jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


# ---- whole sequences --------------------------------------------------------------------

def encode(params, config, input_ids, attention_mask, dtype=jnp.float32):
    """The encoder's final states [batch, source, d_model]."""
    heads, eps = config.num_heads, config.layer_norm_epsilon
    blocks = params["encoder"]["block"]
    x = _embed(params["shared"]["embedding"], input_ids).astype(dtype)
    positions = jnp.arange(input_ids.shape[1])
    bias = (position_bias(blocks["0"]["layer"]["0"]["SelfAttention"]["relative_attention_bias"]
                          ["embedding"], config, positions, positions, bidirectional=True)
            + _mask_bias(attention_mask[:, None, None, :].astype(bool)))
    for index in range(config.num_layers):
        layers = blocks[str(index)]["layer"]
        attention = layers["0"]["SelfAttention"]
        h = _rms_norm(x, layers["0"]["layer_norm"]["weight"], eps, dtype)
        x = x + _attend(_heads(_project(h, attention["q"], dtype), heads),
                        _heads(_project(h, attention["k"], dtype), heads),
                        _heads(_project(h, attention["v"], dtype), heads), bias, attention, dtype)
        h = _rms_norm(x, layers["1"]["layer_norm"]["weight"], eps, dtype)
        x = x + _feed_forward(h, layers["1"]["DenseReluDense"], config, dtype)
    return _rms_norm(x, params["encoder"]["final_layer_norm"]["weight"], eps, dtype)


def _decoder_block(x, layers, config, dtype, self_kv, self_bias, cross_kv, cross_bias):
    """One decoder block for the positions in x, given each attention's keys and values."""
    heads, eps = config.num_heads, config.layer_norm_epsilon
    attention = layers["0"]["SelfAttention"]
    h = _rms_norm(x, layers["0"]["layer_norm"]["weight"], eps, dtype)
    x = x + _attend(_heads(_project(h, attention["q"], dtype), heads), *self_kv(h), self_bias,
                    attention, dtype)
    attention = layers["1"]["EncDecAttention"]
    h = _rms_norm(x, layers["1"]["layer_norm"]["weight"], eps, dtype)
    x = x + _attend(_heads(_project(h, attention["q"], dtype), heads), *cross_kv, cross_bias,
                    attention, dtype)
    h = _rms_norm(x, layers["2"]["layer_norm"]["weight"], eps, dtype)
    return x + _feed_forward(h, layers["2"]["DenseReluDense"], config, dtype)


def _cross_kv(encoder_states, attention, config, dtype):
    heads = config.num_heads
    return (_heads(_project(encoder_states, attention["k"], dtype), heads),
            _heads(_project(encoder_states, attention["v"], dtype), heads))


def lm_logits(params, config, states, dtype=jnp.float32):
    """Next-token logits (float32) from the decoder's final states."""
    states = _rms_norm(states, params["decoder"]["final_layer_norm"]["weight"],
                       config.layer_norm_epsilon, dtype)
    if is_v1_0(config):  # the embedding matrix, on rescaled states
        states = states * (config.d_model ** -0.5)
        return jnp.einsum("...d,vd->...v", states, params["shared"]["embedding"].astype(dtype),
                          preferred_element_type=jnp.float32)
    return jnp.einsum("...d,dv->...v", states, params["lm_head"]["kernel"].astype(dtype),
                      preferred_element_type=jnp.float32)


def decode(params, config, decoder_input_ids, encoder_states, encoder_mask,
           decoder_mask=None, dtype=jnp.float32):
    """Teacher-forced logits [batch, target, vocab] (float32) of whole target sequences."""
    heads = config.num_heads
    blocks = params["decoder"]["block"]
    length = decoder_input_ids.shape[1]
    x = _embed(params["shared"]["embedding"], decoder_input_ids).astype(dtype)
    positions = jnp.arange(length)
    causal = positions[None, :] <= positions[:, None]
    mask = causal[None, None]
    if decoder_mask is not None:
        mask = mask & decoder_mask[:, None, None, :].astype(bool)
    self_bias = (position_bias(blocks["0"]["layer"]["0"]["SelfAttention"]
                               ["relative_attention_bias"]["embedding"], config, positions,
                               positions, bidirectional=False) + _mask_bias(mask))
    cross_bias = _mask_bias(encoder_mask[:, None, None, :].astype(bool))
    for index in range(config.num_decoder_layers):
        layers = blocks[str(index)]["layer"]
        attention = layers["0"]["SelfAttention"]

        def self_kv(h, attention=attention):
            return (_heads(_project(h, attention["k"], dtype), heads),
                    _heads(_project(h, attention["v"], dtype), heads))

        x = _decoder_block(x, layers, config, dtype, self_kv, self_bias,
                           _cross_kv(encoder_states, layers["1"]["EncDecAttention"], config,
                                     dtype), cross_bias)
    return lm_logits(params, config, x, dtype)


# ---- one position at a time -----------------------------------------------------------

def init_cache(params, config, encoder_states, encoder_mask, max_length, dtype=jnp.float32):
    """The decoding state of a batch: empty self-attention keys and values for
    `max_length` positions per block, and the cross-attention keys and values."""
    batch = encoder_states.shape[0]
    shape = (batch, max_length, config.num_heads, config.d_kv)
    blocks = params["decoder"]["block"]
    layers = [blocks[str(i)]["layer"] for i in range(config.num_decoder_layers)]
    return {"self_k": [jnp.zeros(shape, dtype) for _ in layers],
            "self_v": [jnp.zeros(shape, dtype) for _ in layers],
            "cross": [_cross_kv(encoder_states, block["1"]["EncDecAttention"], config, dtype)
                      for block in layers],
            "cross_bias": _mask_bias(encoder_mask[:, None, None, :].astype(bool))}


def decode_step(params, config, cache, tokens, position, dtype=jnp.float32):
    """Logits [batch, vocab] (float32) of the next token after `tokens` [batch], the
    decoder input at `position` (a traced scalar), and the cache with it added."""
    heads = config.num_heads
    blocks = params["decoder"]["block"]
    max_length = cache["self_k"][0].shape[1]
    x = _embed(params["shared"]["embedding"], tokens).astype(dtype)[:, None]
    keys = jnp.arange(max_length)
    self_bias = (position_bias(blocks["0"]["layer"]["0"]["SelfAttention"]
                               ["relative_attention_bias"]["embedding"], config,
                               position[None], keys, bidirectional=False)
                 + _mask_bias((keys <= position)[None, None, None, :]))
    new_k, new_v = [], []
    for index in range(config.num_decoder_layers):
        layers = blocks[str(index)]["layer"]
        attention = layers["0"]["SelfAttention"]

        def self_kv(h, attention=attention, index=index):
            return (write_cache(cache["self_k"][index],
                                _heads(_project(h, attention["k"], dtype), heads), position, new_k),
                    write_cache(cache["self_v"][index],
                                _heads(_project(h, attention["v"], dtype), heads), position, new_v))

        x = _decoder_block(x, layers, config, dtype, self_kv, self_bias, cache["cross"][index],
                           cache["cross_bias"])
    return lm_logits(params, config, x[:, 0], dtype), {**cache, "self_k": new_k, "self_v": new_v}
