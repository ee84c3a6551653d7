"""Cappy's model: a RoBERTa (or XLM-RoBERTa) encoder with a one-output regression
head, as pure functions of (parameters, config, inputs).

The parameters are the checkpoint's own tree, in the names of `flax_model.msgpack`
(`roberta/embeddings/...`, `roberta/encoder/layer/N/...`, `classifier/dense`,
`classifier/out_proj`); `cappy.engine.weights.cappy_checkpoint` reads and writes them, and maps them
to and from PyTorch's names. The semantics are transformers' RoBERTa sequence
classifier (tests compare logits and gradients with its PyTorch model within
1e-5), computed with less work:

- packed rows (`cappy.engine.models.packing`): several pairs share a row, each attending only
  to its own tokens and numbering its positions from the start, so a pair scores
  what it scores alone, padded;
- the last layer only for each pair's first token, whose state the head reads:
  its keys and values still see every token, so the score is unchanged;
- attention written out with float32 logits and softmax on the packed rows'
  segment mask; LayerNorm statistics in float32 whatever the compute dtype.

Training (`dropout_rng` given) applies dropout exactly where RoBERTa has it:
`hidden_dropout_prob` after the embeddings, after the attention output
projection and after the feed-forward output; `attention_probs_dropout_prob` on
the attention weights; the head's dropout (`classifier_dropout`, else
`hidden_dropout_prob`) before both head layers. Every position draws its own
mask, so the pairs of a row never share one; the attention-weight mask is
shared across heads, as in transformers' Flax RoBERTa that trained the
published Cappy.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from cappy.engine.models.initialise import initialise

SUPPORTED_MODEL_TYPES = ("roberta", "xlm-roberta")
SUPPORTED_ACTIVATIONS = ("gelu",)


def unsupported_reason(config):
    """Why this forward pass cannot compute `config`'s model exactly, or None."""
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {config.model_type!r} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
    if config.hidden_act not in SUPPORTED_ACTIVATIONS:
        return f"hidden_act {config.hidden_act!r} (supported: {', '.join(SUPPORTED_ACTIVATIONS)})"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {config.position_embedding_type!r} (only 'absolute')"
    if getattr(config, "is_decoder", False):
        return "a decoder configuration (is_decoder=True)"
    if config.num_labels != 1:
        return f"num_labels={config.num_labels} (a Cappy scorer has one output)"
    return None


def supports(config):
    """True when `config` describes a model this forward pass computes exactly."""
    return unsupported_reason(config) is None


def longest_pair(config):
    """The most tokens a pair can have: RoBERTa numbers positions from pad_token_id + 1
    (512 for RoBERTa's table of 514)."""
    return config.max_position_embeddings - config.pad_token_id - 1


def check_max_length(config, max_length, source="the model"):
    from cappy.engine.errors import CappyError

    if max_length > longest_pair(config):
        raise CappyError(f"--max_length {max_length} is more than {source}'s position table "
                         f"holds ({longest_pair(config)} tokens)")
    if max_length < 4:
        raise CappyError(f"--max_length {max_length} leaves no room for a pair")


def classifier_dropout_rate(config):
    rate = getattr(config, "classifier_dropout", None)
    return config.hidden_dropout_prob if rate is None else rate


# ---- parameters and their initialisation (host side, numpy) -------------------------

def _dense_shapes(fan_in, fan_out):
    return {"kernel": (fan_in, fan_out), "bias": (fan_out,)}


def _layer_norm_shapes(width):
    return {"scale": (width,), "bias": (width,)}


def head_shapes(config):
    hidden = config.hidden_size
    return {"dense": _dense_shapes(hidden, hidden), "out_proj": _dense_shapes(hidden, 1)}


def parameter_shapes(config):
    """The shape of every parameter of the scorer, in the checkpoint's tree."""
    hidden, inner = config.hidden_size, config.intermediate_size
    embeddings = {"word_embeddings": {"embedding": (config.vocab_size, hidden)},
                  "position_embeddings": {"embedding": (config.max_position_embeddings, hidden)},
                  "token_type_embeddings": {"embedding": (config.type_vocab_size, hidden)},
                  "LayerNorm": _layer_norm_shapes(hidden)}
    layer = {"attention": {"self": {name: _dense_shapes(hidden, hidden)
                                    for name in ("query", "key", "value")},
                           "output": {"dense": _dense_shapes(hidden, hidden),
                                      "LayerNorm": _layer_norm_shapes(hidden)}},
             "intermediate": {"dense": _dense_shapes(hidden, inner)},
             "output": {"dense": _dense_shapes(inner, hidden),
                        "LayerNorm": _layer_norm_shapes(hidden)}}
    layers = {str(index): layer for index in range(config.num_hidden_layers)}
    return {"roberta": {"embeddings": embeddings, "encoder": {"layer": layers}},
            "classifier": head_shapes(config)}


def init_head(config, seed):
    """A fresh one-output head as RoBERTa initialises it: weights normal with
    `initializer_range`, biases zero (float32, host)."""
    return initialise(head_shapes(config), np.random.default_rng([seed, 1]),
                       config.initializer_range)


def init_params(config, seed):
    """Random parameters of the whole scorer, initialised as RoBERTa is (float32, host):
    embeddings and weights normal with `initializer_range` (the padding rows of the
    word and position tables zero, as PyTorch's RoBERTa sets them), biases zero,
    LayerNorm scales one."""
    shapes = parameter_shapes(config)
    params = {"roberta": initialise(shapes["roberta"], np.random.default_rng([seed, 0]),
                                     config.initializer_range),
              "classifier": init_head(config, seed)}
    embeddings = params["roberta"]["embeddings"]
    for table in ("word_embeddings", "position_embeddings"):
        embeddings[table]["embedding"][config.pad_token_id] = 0.0
    return params


# ---- the forward pass -----------------------------------------------------------------

class _Dropout:
    """The dropout masks of one forward pass (none when `rng` is None: evaluation).

    Every mask comes from one draw of random bits, sliced site by site in the
    order `_dropout_shapes` plans: XLA then compiles one random-bits kernel
    instead of one per site (about a second less compilation per shape on CPUs).
    Each 32-bit word gives two 16-bit draws; a position is kept when its draw is
    below round((1 - rate) * 2^16), and kept values are scaled by the inverse of
    that exact keep probability, so the mask is unbiased.
    """

    def __init__(self, rng, shapes):
        self.shapes = list(shapes)
        total = sum(math.prod(shape) for shape in self.shapes)
        self.bits = None
        if rng is not None and total:
            words = jax.random.bits(rng, (-(-total // 2),), jnp.uint32)
            self.bits = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)
        self.offset = 0

    def __call__(self, x, rate, mask_shape=None):
        if self.bits is None or rate == 0.0:
            return x
        shape = tuple(mask_shape or x.shape)
        planned = self.shapes.pop(0)
        assert shape == planned, f"dropout mask {shape} where {planned} was planned"
        size = math.prod(shape)
        bits = self.bits[self.offset:self.offset + size].reshape(shape)
        self.offset += size
        threshold = min(max(round((1.0 - rate) * 2 ** 16), 1), 2 ** 16 - 1)
        keep = bits < np.uint16(threshold)
        return jnp.where(keep, x * jnp.asarray(2 ** 16 / threshold, x.dtype),
                         jnp.zeros((), x.dtype))


def _dropout_shapes(config, rows, width, slots):
    """The masks one training forward pass draws, in the order it draws them."""
    hidden, attention = config.hidden_dropout_prob, config.attention_probs_dropout_prob
    head, size = classifier_dropout_rate(config), config.hidden_size
    planned = []

    def plan(rate, shape):
        if rate:
            planned.append(shape)

    plan(hidden, (rows * width, size))  # embeddings
    for index in range(config.num_hidden_layers):
        queries = slots if index == config.num_hidden_layers - 1 else width
        plan(attention, (rows, 1, queries, width))
        plan(hidden, (rows * queries, size))  # attention output
        plan(hidden, (rows * queries, size))  # feed-forward output
    plan(head, (rows * slots, size))
    plan(head, (rows * slots, size))
    return planned


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


def _attention(query, key, value, mask, dropout, rate):
    """softmax(q k^T / sqrt(d)) v with masked keys left out; q [rows, q, heads, d],
    k and v [rows, k, heads, d], mask [rows, q, k]."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    logits = logits * (query.shape[-1] ** -0.5)
    logits = jnp.where(mask[:, None], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    rows, _, queries, keys = weights.shape
    weights = dropout(weights, rate, (rows, 1, queries, keys))  # one mask for all heads
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


def _layer(x, params, config, dtype, rows, kept, mask, dropout):
    """One encoder layer on x [rows * width, hidden], for the positions `kept`
    (flat indices [rows * n], or None for all); returns their new states.

    Activations stay 2-D, positions by features: XLA:CPU runs elementwise work
    on rank-3 arrays several times slower.
    """
    hidden, heads = config.hidden_size, config.num_attention_heads
    attention = params["attention"]
    projections = attention["self"]
    # Keys and values need every token; queries only those whose state is kept.
    x_kept = x if kept is None else x[kept]
    heads_of = lambda t: t.reshape(rows, -1, heads, hidden // heads)  # noqa: E731
    # The key bias adds q.b to every logit of a query alike, which softmax ignores:
    # left out, its gradient is exactly zero instead of rounding noise that Adam
    # would turn into a random walk of a parameter that changes nothing.
    keys = x @ projections["key"]["kernel"].astype(dtype)
    context = _attention(heads_of(_dense(x_kept, projections["query"], dtype)),
                         heads_of(keys),
                         heads_of(_dense(x, projections["value"], dtype)), mask,
                         dropout, config.attention_probs_dropout_prob)
    context = context.reshape(-1, hidden)
    eps, rate = config.layer_norm_eps, config.hidden_dropout_prob
    x = _layer_norm(dropout(_dense(context, attention["output"]["dense"], dtype), rate) + x_kept,
                    attention["output"]["LayerNorm"], eps, dtype)
    inner = jax.nn.gelu(_dense(x, params["intermediate"]["dense"], dtype), approximate=False)
    return _layer_norm(dropout(_dense(inner, params["output"]["dense"], dtype), rate) + x,
                       params["output"]["LayerNorm"], eps, dtype)


def packed_scores(params, config, batch, dtype=jnp.float32, dropout_rng=None):
    """`logits[..., 0]` of RoBERTa's sequence classifier for every packed pair.

    `batch` (`cappy.engine.models.packing.collate_packed_rows`) holds [rows, width] arrays:
    `input_ids`, `segment_ids` (the pairs of a row numbered from 1, 0 for
    padding), `position_ids` (RoBERTa's, pad_token_id + 1 onwards within each
    pair), optionally `token_type_ids`, and `first_tokens` [rows, slots], the
    index of each pair's first token. Returns float32 [rows, slots]; slots past
    a row's last pair hold meaningless values. `dropout_rng` switches training
    on (dropout drawn from that key).
    """
    input_ids, segment_ids = batch["input_ids"], batch["segment_ids"]
    first_tokens = batch["first_tokens"]
    rows, width = input_ids.shape
    dropout = _Dropout(dropout_rng, _dropout_shapes(config, rows, width, first_tokens.shape[1])
                       if dropout_rng is not None else ())
    token_type_ids = batch.get("token_type_ids")
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
    embeddings = params["roberta"]["embeddings"]
    lookup = lambda table, ids: jnp.take(table["embedding"], ids.reshape(-1), axis=0)  # noqa: E731
    x = (lookup(embeddings["word_embeddings"], input_ids)
         + lookup(embeddings["position_embeddings"], batch["position_ids"])
         + lookup(embeddings["token_type_embeddings"], token_type_ids))
    x = _layer_norm(x.astype(dtype), embeddings["LayerNorm"], config.layer_norm_eps, dtype)
    x = dropout(x, config.hidden_dropout_prob)
    is_token = segment_ids[:, None, :] > 0
    same_pair = (segment_ids[:, :, None] == segment_ids[:, None, :]) & is_token
    first_segments = jnp.take_along_axis(segment_ids, first_tokens, axis=1)
    first_same_pair = (first_segments[:, :, None] == segment_ids[:, None, :]) & is_token
    first_positions = (first_tokens + width * jnp.arange(rows)[:, None]).reshape(-1)
    layers = params["roberta"]["encoder"]["layer"]
    last = config.num_hidden_layers - 1
    for index in range(config.num_hidden_layers):
        kept, mask = (first_positions, first_same_pair) if index == last else (None, same_pair)
        x = _layer(x, layers[str(index)], config, dtype, rows, kept, mask, dropout)
    head, rate = params["classifier"], classifier_dropout_rate(config)
    first = jnp.tanh(_dense(dropout(x, rate), head["dense"], dtype))
    # The one-output projection in float32: scores rounded to bf16's 8 bits would tie
    # candidates whose scores differ in the third digit.
    scores = _dense(dropout(first, rate).astype(jnp.float32), head["out_proj"], jnp.float32)
    return scores[:, 0].reshape(first_tokens.shape)


def padded_scores(params, config, input_ids, attention_mask, token_type_ids=None,
                  dtype=jnp.float32, dropout_rng=None):
    """`logits[..., 0]` for one pair per row, padded on the right (float32 [rows])."""
    segment_ids = jnp.asarray(attention_mask).astype(jnp.int32)
    # RoBERTa numbers real tokens from pad_token_id + 1; padding keeps pad_token_id.
    position_ids = jnp.cumsum(segment_ids, axis=1) * segment_ids + config.pad_token_id
    batch = {"input_ids": input_ids, "segment_ids": segment_ids, "position_ids": position_ids,
             "first_tokens": jnp.zeros((segment_ids.shape[0], 1), jnp.int32)}
    if token_type_ids is not None:
        batch["token_type_ids"] = token_type_ids
    return packed_scores(params, config, batch, dtype, dropout_rng)[:, 0]


def weighted_squared_error(params, config, batch, dtype=jnp.float32, dropout_rng=None):
    """sum(weights * (score - label)^2) over a packed batch's pairs: Cappy's MSE, with
    each pair's share of its optimizer update in `batch["weights"]` ([rows, slots],
    0 for empty slots) and its label in `batch["labels"]`."""
    scores = packed_scores(params, config, batch, dtype, dropout_rng)
    weights = batch["weights"]
    squared = jnp.square(scores - batch["labels"])
    return jnp.sum(jnp.where(weights > 0, weights * squared, 0.0))
