"""BART generators (BART, BART0) and mBART, as pure functions of (parameters, config,
inputs), beside `cappy.engine.t5` and with the same functions.

The parameters are the checkpoint's tree in the names of `flax_model.msgpack`
(`model/shared/embedding`, `model/encoder/layers/N/self_attn/q_proj/kernel`,
`model/decoder/layers/N/encoder_attn/...`, `final_logits_bias`, and `lm_head/kernel`
only when the head is not tied); `cappy.engine.weights.cappy_checkpoint` maps PyTorch's names onto
them, and `cappy.engine.weights.generator_loading.TORCH_ALIASES` finds the shared embedding under the
encoder's or decoder's name where a checkpoint keeps it there. The semantics are
transformers' PyTorch `BartForConditionalGeneration` (tests compare logits and
generations with it): token embeddings times sqrt(d_model) when `scale_embedding`;
learned positions read at position + 2 (BART's offset); their sum normalised
(`layernorm_embedding`); blocks of self-attention, cross-attention (decoder) and a
feed-forward layer with the config's activation, every projection with a bias,
attention scaled by head_dim ** -0.5; the LayerNorm after each residual sum (BART) or
before each sublayer with a last LayerNorm closing each stack (mBART); next-token
logits from the shared embedding matrix (or a head of its own) plus `final_logits_bias`.
LayerNorm statistics, the softmax and the logits in float32.

`encode` and `decode` compute whole sequences (log-likelihoods of candidates);
`init_cache` and `decode_step` compute one decoder position at a time against a
key/value cache (`cappy.engine.models.decoding`). The token rules BART's generation configs
set (the forced first and last tokens, no repeated 3-grams) are decoding's, not the
model's: `cappy.engine.models.decoding` applies them, `cappy.engine.weights.generator_loading` reads them.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from cappy.engine.errors import CappyError
from cappy.engine.models.attention import attention_context
from cappy.engine.models.decoding import write_cache
from cappy.engine.models.initialise import initialise

SUPPORTED_MODEL_TYPES = ("bart", "mbart")
POSITION_OFFSET = 2  # transformers' BART reads position p at row p + 2 of the table
LAYER_NORM_EPS = 1e-5  # PyTorch's LayerNorm default, which BART keeps
# activation_function -> the function, as transformers' ACT2FN computes it.
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def unsupported_reason(config):
    """Why these functions cannot compute `config`'s model exactly, or None."""
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {config.model_type!r}"
    if config.activation_function not in ACTIVATIONS:
        return (f"activation_function {config.activation_function!r} (supported: "
                f"{', '.join(ACTIVATIONS)})")
    if config.model_type == "bart" and (getattr(config, "normalize_before", False)
                                        or getattr(config, "add_final_layer_norm", False)):
        # An old conversion of a pre-LayerNorm model; transformers' BART ignores the keys.
        return ("normalize_before or add_final_layer_norm set (a pre-LayerNorm model saved "
                "as model_type 'bart'; transformers computes it post-LayerNorm, mBART is "
                "model_type 'mbart')")
    for stack in ("encoder", "decoder"):
        heads = getattr(config, f"{stack}_attention_heads")
        if config.d_model % heads:
            return f"d_model {config.d_model} not divisible by {stack}_attention_heads {heads}"
    return None


def pre_norm(config):
    """mBART normalises before each sublayer and after each stack; BART after each sum."""
    return config.model_type == "mbart"


# ---- parameters ---------------------------------------------------------------------

def parameter_shapes(config):
    """The shape of every parameter, in the checkpoint's tree."""
    d_model, vocab = config.d_model, config.vocab_size

    def dense(width_in, width_out):
        return {"kernel": (width_in, width_out), "bias": (width_out,)}

    def norm():
        return {"scale": (d_model,), "bias": (d_model,)}

    def attention():
        return {name: dense(d_model, d_model)
                for name in ("q_proj", "k_proj", "v_proj", "out_proj")}

    def stack(n_layers, ffn_dim, decoder):
        layers = {}
        for index in range(n_layers):
            layer = {"self_attn": attention(), "self_attn_layer_norm": norm()}
            if decoder:
                layer.update(encoder_attn=attention(), encoder_attn_layer_norm=norm())
            layer.update(fc1=dense(d_model, ffn_dim), fc2=dense(ffn_dim, d_model),
                         final_layer_norm=norm())
            layers[str(index)] = layer
        shapes = {"embed_positions": {
                      "embedding": (config.max_position_embeddings + POSITION_OFFSET, d_model)},
                  "layernorm_embedding": norm(), "layers": layers}
        if pre_norm(config):
            shapes["layer_norm"] = norm()
        return shapes

    shapes = {"model": {"shared": {"embedding": (vocab, d_model)},
                        "encoder": stack(config.encoder_layers, config.encoder_ffn_dim, False),
                        "decoder": stack(config.decoder_layers, config.decoder_ffn_dim, True)},
              "final_logits_bias": (1, vocab)}
    if not config.tie_word_embeddings:
        shapes["lm_head"] = {"kernel": (d_model, vocab)}
    return shapes


def parameter_defaults(config):
    """{path: value} of the parameters a checkpoint may leave out: transformers takes a
    missing `final_logits_bias` (a buffer, not a weight) as zeros."""
    return {("final_logits_bias",): np.zeros((1, config.vocab_size), np.float32)}


def init_params(config, seed):
    """Random parameters, initialised as transformers initialises BART (float32, host):
    weights and embeddings normal with `init_std`, biases and final_logits_bias zero,
    LayerNorm scales one."""
    return initialise(parameter_shapes(config), np.random.default_rng(seed), config.init_std,
                      zeros=("bias", "final_logits_bias"))


# ---- building blocks ----------------------------------------------------------------

def _check_length(config, length, what):
    # Past the table, a position would read a fill value (NaN) instead of failing.
    if length > config.max_position_embeddings:
        raise CappyError(f"{what} of {length} tokens: this {config.model_type} has "
                         f"{config.max_position_embeddings} positions")


def _layer_norm(x, params, dtype):
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPS) * params["scale"]
            + params["bias"]).astype(dtype)


def _dense(x, params, dtype):
    return x @ params["kernel"].astype(dtype) + params["bias"].astype(dtype)


def _heads(x, heads):
    batch, length, _ = x.shape
    return x.reshape(batch, length, heads, -1)


def _query(h, attention, heads, dtype):
    query = _heads(_dense(h, attention["q_proj"], dtype), heads)
    return query * jnp.asarray(query.shape[-1] ** -0.5, dtype)


def _keys_values(states, attention, heads, dtype):
    return (_heads(_dense(states, attention["k_proj"], dtype), heads),
            _heads(_dense(states, attention["v_proj"], dtype), heads))


def _attend(query, key, value, bias, attention, dtype):
    """softmax(q k^T + bias) v, then the output projection; q (already scaled)
    [b, q, h, d], k/v [b, k, h, d], bias (the mask as -inf-like terms) broadcastable to
    [b, h, q, k]."""
    return _dense(attention_context(query, key, value, bias, dtype), attention["out_proj"],
                  dtype)


def _feed_forward(h, layer, config, dtype):
    inner = ACTIVATIONS[config.activation_function](_dense(h, layer["fc1"], dtype))
    return _dense(inner, layer["fc2"], dtype)


def _residual(x, norm, sublayer, config, dtype):
    """x plus sublayer's output, the LayerNorm after the sum (BART) or on the sublayer's
    input (mBART)."""
    if pre_norm(config):
        return x + sublayer(_layer_norm(x, norm, dtype))
    return _layer_norm(x + sublayer(x), norm, dtype)


def _mask_bias(mask):
    """0 where attended, a large negative number elsewhere."""
    return jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)


def _embed(params, config, stack, ids, positions, dtype):
    """The normalised sum of the token and position embeddings of `ids` [b, length] at
    `positions` [length]."""
    scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
    tokens = jnp.take(jnp.asarray(params["model"]["shared"]["embedding"]), ids, axis=0)
    table = jnp.asarray(stack["embed_positions"]["embedding"])
    x = tokens.astype(dtype) * jnp.asarray(scale, dtype) + jnp.take(
        table, positions + POSITION_OFFSET, axis=0).astype(dtype)
    return _layer_norm(x, stack["layernorm_embedding"], dtype)


# ---- whole sequences --------------------------------------------------------------------

def encode(params, config, input_ids, attention_mask, dtype=jnp.float32):
    """The encoder's final states [batch, source, d_model]."""
    _check_length(config, input_ids.shape[1], "a source")
    encoder, heads = params["model"]["encoder"], config.encoder_attention_heads
    x = _embed(params, config, encoder, input_ids, jnp.arange(input_ids.shape[1]), dtype)
    bias = _mask_bias(attention_mask[:, None, None, :].astype(bool))
    for index in range(config.encoder_layers):
        layer = encoder["layers"][str(index)]
        attention = layer["self_attn"]
        x = _residual(x, layer["self_attn_layer_norm"], lambda h: _attend(
            _query(h, attention, heads, dtype), *_keys_values(h, attention, heads, dtype), bias,
            attention, dtype), config, dtype)
        x = _residual(x, layer["final_layer_norm"],
                      lambda h: _feed_forward(h, layer, config, dtype), config, dtype)
    if pre_norm(config):
        x = _layer_norm(x, encoder["layer_norm"], dtype)
    return x


def _decoder_layer(x, layer, config, dtype, self_kv, self_bias, cross_kv, cross_bias):
    """One decoder layer for the positions in x, given each attention's keys and values
    (self_kv: a function of the layer's normalised input, which it also caches)."""
    heads = config.decoder_attention_heads
    attention = layer["self_attn"]
    x = _residual(x, layer["self_attn_layer_norm"], lambda h: _attend(
        _query(h, attention, heads, dtype), *self_kv(h), self_bias, attention, dtype),
        config, dtype)
    cross = layer["encoder_attn"]
    x = _residual(x, layer["encoder_attn_layer_norm"], lambda h: _attend(
        _query(h, cross, heads, dtype), *cross_kv, cross_bias, cross, dtype), config, dtype)
    return _residual(x, layer["final_layer_norm"],
                     lambda h: _feed_forward(h, layer, config, dtype), config, dtype)


def lm_logits(params, config, states, dtype=jnp.float32):
    """Next-token logits (float32) from the decoder's last states."""
    if pre_norm(config):
        states = _layer_norm(states, params["model"]["decoder"]["layer_norm"], dtype)
    if config.tie_word_embeddings:
        logits = jnp.einsum("...d,vd->...v", states,
                            params["model"]["shared"]["embedding"].astype(dtype),
                            preferred_element_type=jnp.float32)
    else:
        logits = jnp.einsum("...d,dv->...v", states, params["lm_head"]["kernel"].astype(dtype),
                            preferred_element_type=jnp.float32)
    return logits + params["final_logits_bias"][0].astype(jnp.float32)


def decode(params, config, decoder_input_ids, encoder_states, encoder_mask,
           decoder_mask=None, dtype=jnp.float32):
    """Teacher-forced logits [batch, target, vocab] (float32) of whole target sequences."""
    length = decoder_input_ids.shape[1]
    _check_length(config, length, "a target")
    decoder, heads = params["model"]["decoder"], config.decoder_attention_heads
    positions = jnp.arange(length)
    x = _embed(params, config, decoder, decoder_input_ids, positions, dtype)
    mask = (positions[None, :] <= positions[:, None])[None, None]
    if decoder_mask is not None:
        mask = mask & decoder_mask[:, None, None, :].astype(bool)
    self_bias = _mask_bias(mask)
    cross_bias = _mask_bias(encoder_mask[:, None, None, :].astype(bool))
    for index in range(config.decoder_layers):
        layer = decoder["layers"][str(index)]
        x = _decoder_layer(
            x, layer, config, dtype,
            lambda h, attention=layer["self_attn"]: _keys_values(h, attention, heads, dtype),
            self_bias, _keys_values(encoder_states, layer["encoder_attn"], heads, dtype),
            cross_bias)
    return lm_logits(params, config, x, dtype)


# ---- one position at a time -----------------------------------------------------------

def init_cache(params, config, encoder_states, encoder_mask, max_length, dtype=jnp.float32):
    """The decoding state of a batch: empty self-attention keys and values for
    `max_length` positions per layer, and the cross-attention keys and values."""
    _check_length(config, max_length, "a target")
    heads = config.decoder_attention_heads
    shape = (encoder_states.shape[0], max_length, heads, config.d_model // heads)
    layers = [params["model"]["decoder"]["layers"][str(i)] for i in range(config.decoder_layers)]
    return {"self_k": [jnp.zeros(shape, dtype) for _ in layers],
            "self_v": [jnp.zeros(shape, dtype) for _ in layers],
            "cross": [_keys_values(encoder_states, layer["encoder_attn"], heads, dtype)
                      for layer in layers],
            "cross_bias": _mask_bias(encoder_mask[:, None, None, :].astype(bool))}


def decode_step(params, config, cache, tokens, position, dtype=jnp.float32):
    """Logits [batch, vocab] (float32) of the next token after `tokens` [batch], the
    decoder input at `position` (a traced scalar), and the cache with it added."""
    decoder, heads = params["model"]["decoder"], config.decoder_attention_heads
    max_length = cache["self_k"][0].shape[1]
    x = _embed(params, config, decoder, tokens[:, None], position[None], dtype)
    keys = jnp.arange(max_length)
    self_bias = _mask_bias((keys <= position)[None, None, None, :])
    new_k, new_v = [], []
    for index in range(config.decoder_layers):
        layer = decoder["layers"][str(index)]

        def self_kv(h, attention=layer["self_attn"], index=index):
            k, v = _keys_values(h, attention, heads, dtype)
            return (write_cache(cache["self_k"][index], k, position, new_k),
                    write_cache(cache["self_v"][index], v, position, new_v))

        x = _decoder_layer(x, layer, config, dtype, self_kv, self_bias, cache["cross"][index],
                           cache["cross_bias"])
    return lm_logits(params, config, x[:, 0], dtype), {**cache, "self_k": new_k, "self_v": new_v}
