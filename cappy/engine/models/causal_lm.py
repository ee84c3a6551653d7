"""Decoder-only generators as pure functions of (parameters, config, inputs): GPT-2, and
the Llama architecture (RoPE, RMS norm, SwiGLU, grouped-query attention), which
Llama 2 and 3, Mistral and Qwen2 share.

Parameters are the checkpoint's tree in the names of `flax_model.msgpack`
(`transformer/h/N/...` for GPT-2, whose projections keep their [out, in] layout;
`model/layers/N/...` and `lm_head/kernel` for the Llama family); the semantics
are transformers' (tests compare logits and generations with its PyTorch models).
Prompts are left-padded: each row's positions count its real tokens from 0, and
padding is never attended. A sliding window (Mistral's `sliding_window`, Qwen2's layers
of `layer_types` "sliding_attention") lets a token attend to the `sliding_window` slots
up to its own, counted in the sequence's slots, padding included, as transformers'
masks count them.

`forward` computes whole sequences (log-likelihoods); `prefill` fills a key/value
cache with the prompt and `step` extends it one token at a time (`cappy.engine.models.decoding`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from cappy.engine.models.decoding import write_cache
from cappy.engine.models.initialise import initialise

LLAMA_FAMILY = ("llama", "mistral", "qwen2")
SUPPORTED_MODEL_TYPES = ("gpt2",) + LLAMA_FAMILY
ROPE_TYPES = ("default", "llama3")


def unsupported_reason(config):
    """Why these functions cannot compute `config`'s model exactly, or None."""
    model_type = config.model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {model_type!r}"
    if model_type == "gpt2":
        if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            return f"activation_function {config.activation_function!r}"
        if getattr(config, "scale_attn_by_inverse_layer_idx", False):
            return "scale_attn_by_inverse_layer_idx"
        return None
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r}"
    if _rope_type(config) not in ROPE_TYPES:
        return f"rope type {_rope_type(config)!r} (supported: {', '.join(ROPE_TYPES)})"
    return None


def _rope(config):
    """The rotary settings, theta included: transformers 5 keeps them all in
    `rope_parameters`; 4 in `rope_scaling` (None by default) and `rope_theta`."""
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
                or {})
    rope.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return rope


def _rope_type(config):
    rope = _rope(config)
    return rope.get("rope_type", rope.get("type", "default"))


def _head_dim(config):
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def sliding_window(config, layer_index):
    """The attention window of a layer in slots (None: the whole causal past)."""
    if config.model_type == "mistral":
        return getattr(config, "sliding_window", None)
    if config.model_type == "qwen2":
        types = getattr(config, "layer_types", None)
        if types is None:  # a config of transformers 4: no per-layer list
            sliding = (getattr(config, "use_sliding_window", False)
                       and layer_index >= getattr(config, "max_window_layers", 0))
        else:
            sliding = types[layer_index] == "sliding_attention"
        return getattr(config, "sliding_window", None) if sliding else None
    return None


def _windowed(mask, window, query_slots, key_slots):
    """`mask` [b, q, k] limited to keys within `window` slots of each query."""
    if window is None:
        return mask
    near = key_slots[None, :] > query_slots[:, None] - window
    return mask & near[None]


def _biases(config):
    """Which projections have a bias: Qwen2's query, key and value; Llama's all four
    when `attention_bias`; none for Mistral."""
    if config.model_type == "qwen2":
        return ("q_proj", "k_proj", "v_proj")
    if getattr(config, "attention_bias", False):
        return ("q_proj", "k_proj", "v_proj", "o_proj")
    return ()


# ---- parameters ---------------------------------------------------------------------

def parameter_shapes(config):
    """The shape of every parameter, in the checkpoint's tree."""
    if config.model_type == "gpt2":
        width, inner = config.n_embd, config.n_inner or 4 * config.n_embd

        def dense(out, inp):
            return {"kernel": (out, inp), "bias": (out,)}

        norm = {"scale": (width,), "bias": (width,)}
        block = {"ln_1": norm, "attn": {"c_attn": dense(3 * width, width),
                                        "c_proj": dense(width, width)},
                 "ln_2": norm, "mlp": {"c_fc": dense(inner, width), "c_proj": dense(width, inner)}}
        return {"transformer": {"wte": {"embedding": (config.vocab_size, width)},
                                "wpe": {"embedding": (config.n_positions, width)},
                                "h": {str(i): block for i in range(config.n_layer)},
                                "ln_f": norm}}
    hidden, head_dim = config.hidden_size, _head_dim(config)
    kv = config.num_key_value_heads * head_dim
    outputs = {"q_proj": config.num_attention_heads * head_dim, "k_proj": kv, "v_proj": kv}
    attention = {name: {"kernel": (hidden, size)} for name, size in outputs.items()}
    attention["o_proj"] = {"kernel": (config.num_attention_heads * head_dim, hidden)}
    for name in _biases(config):
        attention[name]["bias"] = (attention[name]["kernel"][1],)
    layer = {"input_layernorm": {"weight": (hidden,)}, "self_attn": attention,
             "post_attention_layernorm": {"weight": (hidden,)},
             "mlp": {"gate_proj": {"kernel": (hidden, config.intermediate_size)},
                     "up_proj": {"kernel": (hidden, config.intermediate_size)},
                     "down_proj": {"kernel": (config.intermediate_size, hidden)}}}
    shapes = {"model": {"embed_tokens": {"embedding": (config.vocab_size, hidden)},
                        "layers": {str(i): layer for i in range(config.num_hidden_layers)},
                        "norm": {"weight": (hidden,)}}}
    if not config.tie_word_embeddings:
        shapes["lm_head"] = {"kernel": (hidden, config.vocab_size)}
    return shapes


def init_params(config, seed):
    """Random parameters: weights normal with `initializer_range`, biases zero, norm
    scales one (float32, host)."""
    return initialise(parameter_shapes(config), np.random.default_rng(seed),
                      config.initializer_range, ones=("scale", "weight"))


# ---- building blocks ----------------------------------------------------------------

def _embed(table, ids):
    return jnp.take(jnp.asarray(table), ids, axis=0)


def _layer_norm(x, params, eps, dtype):
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps) * params["scale"]
            + params["bias"]).astype(dtype)


def _rms_norm(x, weight, eps, dtype):
    # Statistics in float32, then the scale in the compute dtype, as transformers does.
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return weight.astype(dtype) * x32.astype(dtype)


def _dense(x, params, dtype, transposed=False):
    kernel = params["kernel"].astype(dtype)
    y = x @ (kernel.T if transposed else kernel)
    return y + params["bias"].astype(dtype) if "bias" in params else y


def _inverse_frequencies(config):
    head_dim = _head_dim(config)
    scaling = _rope(config)
    theta = scaling["rope_theta"]
    inverse = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if _rope_type(config) == "llama3":  # longer wavelengths stretched, short ones kept
        factor, old = scaling["factor"], scaling["original_max_position_embeddings"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        wavelength = 2 * np.pi / inverse
        smooth = (old / wavelength - low) / (high - low)
        stretched = np.where(wavelength > old / low, inverse / factor, inverse)
        middle = (wavelength <= old / low) & (wavelength >= old / high)
        inverse = np.where(middle, (1 - smooth) * inverse / factor + smooth * inverse, stretched)
    return inverse.astype(np.float32)


def _rotate(x, positions, inverse_frequencies):
    """RoPE on x [batch, length, heads, head_dim] at positions [batch, length], halves
    rotated against each other as transformers' Llama does it."""
    angles = positions[..., None].astype(jnp.float32) * inverse_frequencies
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


def _attend(query, key, value, mask, scale, dtype):
    """Grouped-query attention: q [b, q, H, d], k/v [b, k, G, d] with H a multiple of G;
    mask [b, q, k] (True: attend). Returns [b, q, H * d]."""
    batch, length, heads, dim = query.shape
    groups = key.shape[2]
    query = query.reshape(batch, length, groups, heads // groups, dim)
    logits = jnp.einsum("bqgrd,bkgd->bgrqk", query, key,
                        preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    context = jnp.einsum("bgrqk,bkgd->bqgrd", weights, value)
    return context.reshape(batch, length, heads * dim)


def _block(x, params, config, dtype, positions, mask, kv):
    """One block for the positions in x [b, n, width]; kv(k, v) stores the new keys and
    values and returns the keys and values to attend to."""
    if config.model_type == "gpt2":
        eps, heads = config.layer_norm_epsilon, config.n_head
        width = config.n_embd
        h = _layer_norm(x, params["ln_1"], eps, dtype)
        q, k, v = jnp.split(_dense(h, params["attn"]["c_attn"], dtype, transposed=True), 3, -1)
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, width // heads)  # noqa: E731
        keys, values = kv(split(k), split(v))
        context = _attend(split(q), keys, values, mask, (width // heads) ** -0.5, dtype)
        x = x + _dense(context, params["attn"]["c_proj"], dtype, transposed=True)
        h = _layer_norm(x, params["ln_2"], eps, dtype)
        inner = jax.nn.gelu(_dense(h, params["mlp"]["c_fc"], dtype, transposed=True),
                            approximate=True)
        return x + _dense(inner, params["mlp"]["c_proj"], dtype, transposed=True)
    eps, head_dim = config.rms_norm_eps, _head_dim(config)
    attention = params["self_attn"]
    frequencies = _inverse_frequencies(config)
    h = _rms_norm(x, params["input_layernorm"]["weight"], eps, dtype)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], -1, head_dim)  # noqa: E731
    q = _rotate(split(_dense(h, attention["q_proj"], dtype)), positions, frequencies)
    k = _rotate(split(_dense(h, attention["k_proj"], dtype)), positions, frequencies)
    keys, values = kv(k, split(_dense(h, attention["v_proj"], dtype)))
    context = _attend(q, keys, values, mask, head_dim ** -0.5, dtype)
    x = x + _dense(context, attention["o_proj"], dtype)
    h = _rms_norm(x, params["post_attention_layernorm"]["weight"], eps, dtype)
    mlp = params["mlp"]
    inner = jax.nn.silu(_dense(h, mlp["gate_proj"], dtype)) * _dense(h, mlp["up_proj"], dtype)
    return x + _dense(inner, mlp["down_proj"], dtype)


def _layers(params, config):
    if config.model_type == "gpt2":
        blocks = params["transformer"]["h"]
        return [blocks[str(i)] for i in range(config.n_layer)]
    blocks = params["model"]["layers"]
    return [blocks[str(i)] for i in range(config.num_hidden_layers)]


def _embed_tokens(params, config, ids, positions, dtype):
    if config.model_type == "gpt2":
        model = params["transformer"]
        return (_embed(model["wte"]["embedding"], ids)
                + _embed(model["wpe"]["embedding"], positions)).astype(dtype)
    return _embed(params["model"]["embed_tokens"]["embedding"], ids).astype(dtype)


def _logits(params, config, x, dtype):
    if config.model_type == "gpt2":
        x = _layer_norm(x, params["transformer"]["ln_f"], config.layer_norm_epsilon, dtype)
        table = params["transformer"]["wte"]["embedding"]
        return jnp.einsum("...d,vd->...v", x, table.astype(dtype),
                          preferred_element_type=jnp.float32)
    x = _rms_norm(x, params["model"]["norm"]["weight"], config.rms_norm_eps, dtype)
    if config.tie_word_embeddings:
        return jnp.einsum("...d,vd->...v", x, params["model"]["embed_tokens"]["embedding"]
                          .astype(dtype), preferred_element_type=jnp.float32)
    return jnp.einsum("...d,dv->...v", x, params["lm_head"]["kernel"].astype(dtype),
                      preferred_element_type=jnp.float32)


def positions_of(mask):
    """Each token's position among its row's real tokens (padding at 0)."""
    return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0).astype(jnp.int32)


# ---- whole sequences and the cache -----------------------------------------------------

def forward(params, config, input_ids, attention_mask, dtype=jnp.float32):
    """Logits [batch, length, vocab] (float32) of whole sequences (left- or right-padded)."""
    length = input_ids.shape[1]
    positions = positions_of(attention_mask)
    causal = jnp.tril(jnp.ones((length, length), bool))
    mask = causal[None] & attention_mask[:, None, :].astype(bool)
    x = _embed_tokens(params, config, input_ids, positions, dtype)
    slots = jnp.arange(length)
    for index, layer in enumerate(_layers(params, config)):
        x = _block(x, layer, config, dtype, positions,
                   _windowed(mask, sliding_window(config, index), slots, slots),
                   lambda k, v: (k, v))
    return _logits(params, config, x, dtype)


def _cache_shape(config, batch, max_length):
    if config.model_type == "gpt2":
        return batch, max_length, config.n_head, config.n_embd // config.n_head
    return batch, max_length, config.num_key_value_heads, _head_dim(config)


def prefill(params, config, input_ids, attention_mask, max_length, dtype=jnp.float32):
    """(next-token logits [batch, vocab], cache) after the left-padded prompts."""
    batch, length = input_ids.shape
    positions = positions_of(attention_mask)
    valid = jnp.zeros((batch, max_length), bool).at[:, :length].set(attention_mask.astype(bool))
    causal = jnp.tril(jnp.ones((length, length), bool))
    mask = causal[None] & valid[:, None, :length]
    x = _embed_tokens(params, config, input_ids, positions, dtype)
    shape = _cache_shape(config, batch, max_length)
    keys, values = [], []

    def keep(k, v):
        keys.append(jnp.zeros(shape, dtype).at[:, :length].set(k))
        values.append(jnp.zeros(shape, dtype).at[:, :length].set(v))
        return k, v

    slots = jnp.arange(length)
    for index, layer in enumerate(_layers(params, config)):
        x = _block(x, layer, config, dtype, positions,
                   _windowed(mask, sliding_window(config, index), slots, slots), keep)
    cache = {"keys": keys, "values": values, "valid": valid,
             "next_position": positions[:, -1] + 1}
    return _logits(params, config, x[:, -1], dtype), cache


def step(params, config, cache, tokens, index, dtype=jnp.float32):
    """(logits [batch, vocab] after `tokens` [batch], placed at cache slot `index`,
    the cache with them)."""
    positions = cache["next_position"][:, None]
    valid = jax.lax.dynamic_update_slice_in_dim(
        cache["valid"], jnp.ones((tokens.shape[0], 1), bool), index, axis=1)
    x = _embed_tokens(params, config, tokens[:, None], positions, dtype)
    keys, values = [], []

    def keep(k, v, layer_index):
        return (write_cache(cache["keys"][layer_index], k, index, keys),
                write_cache(cache["values"][layer_index], v, index, values))

    key_slots = jnp.arange(valid.shape[1])
    for layer_index, layer in enumerate(_layers(params, config)):
        mask = _windowed(valid[:, None, :], sliding_window(config, layer_index),
                         jnp.reshape(index, (1,)), key_slots)
        x = _block(x, layer, config, dtype, positions, mask,
                   lambda k, v, i=layer_index: keep(k, v, i))
    cache = {"keys": keys, "values": values, "valid": valid,
             "next_position": cache["next_position"] + 1}
    return _logits(params, config, x[:, 0], dtype), cache
