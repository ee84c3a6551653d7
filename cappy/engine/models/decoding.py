"""Decoding with transformers' semantics, as the original runs got them from its Flax
`generate()` and the generation config: greedy search, sampling with temperature,
top-k and top-p (in that order, after the minimum-length rule), and beam search
with its length penalty, early stopping and end-of-sequence handling.

Every loop is a `lax.while_loop` over fixed shapes: a sequences array of
`max_length` tokens whose first `prompt_length` hold the prompt (the decoder
start token for T5, the left-padded prompt for a decoder-only model), and a
model-specific cache. A model provides two functions:

- `prefill(params) -> (logits [batch, vocab], cache)`: the next-token logits after
  the prompt, and the cache holding it;
- `step(params, cache, tokens [batch], index) -> (logits, cache)`: the logits after
  `tokens`, the inputs at position `index`.

Every cache leaf has the batch on its first axis, so beam search reorders beams
by indexing it.

Token rules a generation config sets, applied only when given (`generation_rules`; every
search takes them as keywords, and without them computes exactly what it did before
they existed): `forced_bos_id` (the only token possible at cur_len 1: BART's `<s>` after
its decoder start token), `forced_eos_id` (the only token, or tokens, possible at the
last position, max_length - 1) and `no_repeat_ngram_size` (no n-gram twice in a
sequence, the prompt or decoder start token included). Both transformers' generate()s
apply these from the generation config whatever the call passes, and so does cappy
(`cappy.engine.weights.generator_loading` reads them). Their order is PyTorch's (the n-gram ban before
the forced tokens, so a forced token always wins); the Flax generate() bans n-grams
last, which differs only where a forced token would repeat an n-gram and then leaves
no token at all.
"""

import jax
import jax.numpy as jnp

NEG = -1.0e7  # transformers' "impossible" score in beam search


# ---- logits processors ---------------------------------------------------------------

def suppress_eos_before(logits, cur_len, min_length, eos_id):
    """The minimum-length rule as transformers' Flax generate() applied it in the original
    runs: no end of sequence while cur_len <= min_length (cur_len counts the prompt and
    the tokens so far; its PyTorch version stops blocking one step earlier)."""
    blocked = logits.at[:, eos_id].set(-jnp.inf)
    return jnp.where(cur_len <= min_length, blocked, logits)


def _per_row(value, rows, off, dtype):
    """A setting as a [rows] array (None: `off`); scalars and per-row arrays alike, so
    one compiled program serves every sampling decoding."""
    return jnp.broadcast_to(jnp.asarray(off if value is None else value, dtype), (rows,))


def sampling_logits(logits, temperature=None, top_k=None, top_p=None, max_top_k=None):
    """What sampling draws from, as transformers' warpers run: temperature, then top-k
    (only the k highest logits stay; 0 or None: all), then top-p (the smallest set of
    highest-probability tokens whose probability reaches top_p, the token that
    crosses it included, at least one; 1.0 or None: all); the rest -inf. Ties are
    ordered as `lax.top_k` orders them. Each setting is a number or a [rows] array
    (traced values are fine), so one compiled program serves every sampling decoding.

    `max_top_k` (a Python int) promises every row's top_k is in 1..max_top_k: only
    that many logits are sorted (a full sort of a 32k vocabulary costs a CPU
    hundreds of milliseconds a step); without it the whole vocabulary is."""
    rows, vocab = logits.shape
    logits = logits / _per_row(temperature, rows, 1.0, logits.dtype)[:, None]
    top_k = _per_row(top_k, rows, 0, jnp.int32)[:, None]
    top_p = _per_row(top_p, rows, 1.0, jnp.float32)[:, None]
    values, indices = jax.lax.top_k(logits, min(max_top_k or vocab, vocab))  # high to low
    rank = jnp.arange(values.shape[1])[None, :]
    keep = (top_k <= 0) | (rank < top_k)
    values = jnp.where(keep, values, -jnp.inf)
    cumulative = jnp.cumsum(jax.nn.softmax(values.astype(jnp.float32), axis=-1), axis=-1)
    below = jnp.concatenate([jnp.ones_like(cumulative[:, :1], bool),
                             cumulative[:, :-1] < top_p], axis=-1)
    keep = keep & ((top_p >= 1.0) | below)
    rows_index = jnp.arange(rows)[:, None]
    return jnp.full_like(logits, -jnp.inf).at[rows_index, indices].set(
        jnp.where(keep, values, -jnp.inf))


def repeated_ngram_tokens(sequences, cur_len, ngram_size, vocab):
    """[rows, vocab] True for each token that would end an n-gram of `ngram_size` tokens
    already in sequences[:, :cur_len], as transformers' no-repeat-n-gram rule bans them:
    the n-grams whose first n - 1 tokens equal the last n - 1 so far. Fixed shapes: every
    n-gram start of the sequences array is compared, those not yet complete masked."""
    rows, width = sequences.shape
    starts = width - ngram_size + 1
    if starts <= 0:
        return jnp.zeros((rows, vocab), bool)
    # The last n - 1 tokens (clamped at 0 before there are that many: nothing matches then).
    prefix = jax.lax.dynamic_slice_in_dim(
        sequences, jnp.maximum(cur_len - (ngram_size - 1), 0), ngram_size - 1, axis=1)
    match = jnp.broadcast_to(jnp.arange(starts)[None, :] <= cur_len - ngram_size, (rows, starts))
    for offset in range(ngram_size - 1):
        match = match & (sequences[:, offset:offset + starts] == prefix[:, offset:offset + 1])
    following = sequences[:, ngram_size - 1:ngram_size - 1 + starts]
    counts = jnp.zeros((rows, vocab), jnp.int32).at[jnp.arange(rows)[:, None], following].add(
        match.astype(jnp.int32))
    return counts > 0


def _only(logits, token_ids):
    """Logits where only `token_ids` are possible (logit 0, the rest -inf), as transformers'
    forced-token rules write them."""
    allowed = jnp.zeros(logits.shape[-1], bool).at[jnp.asarray(token_ids)].set(True)
    return jnp.broadcast_to(jnp.where(allowed, 0.0, -jnp.inf).astype(logits.dtype), logits.shape)


def generation_rules(logits, sequences, cur_len, max_length, forced_bos_id=None,
                     forced_eos_id=None, no_repeat_ngram_size=0):
    """The generation config's token rules on next-token logits [rows, vocab] (or
    log-probabilities) after sequences [rows, max_length] holding cur_len tokens; each
    applied only when set (see the module's docstring)."""
    if no_repeat_ngram_size:
        banned = repeated_ngram_tokens(sequences, cur_len, no_repeat_ngram_size,
                                       logits.shape[-1])
        logits = jnp.where(banned, -jnp.inf, logits)
    if forced_bos_id is not None:
        logits = jnp.where(cur_len == 1, _only(logits, [forced_bos_id]), logits)
    if forced_eos_id is not None:
        ids = list(forced_eos_id) if isinstance(forced_eos_id, (list, tuple)) else [forced_eos_id]
        logits = jnp.where(cur_len == max_length - 1, _only(logits, ids), logits)
    return logits


# ---- searches --------------------------------------------------------------------------

def _put(sequences, tokens, index):
    return jax.lax.dynamic_update_slice_in_dim(sequences, tokens[:, None].astype(jnp.int32),
                                               index, axis=1)


def write_cache(cached, new, position, written):
    """Keys or values `cached` [batch, max_length, ...] with `new` [batch, 1, ...] written at
    `position` (a traced scalar); the result is also appended to `written`, the step's new
    cache."""
    updated = jax.lax.dynamic_update_slice_in_dim(cached, new, position, axis=1)
    written.append(updated)
    return updated


def greedy_or_sample(params, prefill, step, prompt, max_length, min_length, eos_id, pad_id,
                     rng=None, temperature=None, top_k=None, top_p=None, max_top_k=None,
                     **rules):
    """Greedy search (rng None) or sampling; [batch, max_length] sequences, the prompt
    first, each finished row padded with pad_id after its end of sequence. `rules`: the
    generation config's token rules (`generation_rules`), before temperature, top-k and
    top-p as in transformers."""
    batch, prompt_length = prompt.shape
    sequences = jnp.full((batch, max_length), pad_id, jnp.int32).at[:, :prompt_length].set(prompt)

    def choose(logits, sequences, cur_len, key):
        logits = suppress_eos_before(logits, cur_len, min_length, eos_id)
        if rules:
            logits = generation_rules(logits, sequences, cur_len, max_length, **rules)
        if key is None:
            return jnp.argmax(logits, axis=-1)
        return jax.random.categorical(
            key, sampling_logits(logits, temperature, top_k, top_p, max_top_k), axis=-1)

    def advance(state, logits):
        sequences, cur_len, finished, cache, key = state
        draw, key = (None, None) if key is None else jax.random.split(key)
        tokens = jnp.where(finished, pad_id, choose(logits, sequences, cur_len, draw))
        finished = finished | (tokens == eos_id)
        return sequences, cur_len, finished, cache, key, tokens

    logits, cache = prefill(params)
    state = (sequences, jnp.asarray(prompt_length), jnp.zeros(batch, bool), cache, rng)
    sequences, cur_len, finished, cache, key, tokens = advance(state, logits)
    state = (_put(sequences, tokens, cur_len), cur_len + 1, finished, cache, key)

    def cond(state):
        _, cur_len, finished, _, _ = state
        return (cur_len < max_length) & ~jnp.all(finished)

    def body(state):
        sequences, cur_len, finished, cache, key = state
        logits, cache = step(params, cache, sequences[:, cur_len - 1], cur_len - 1)
        sequences, cur_len, finished, cache, key, tokens = advance(
            (sequences, cur_len, finished, cache, key), logits)
        return _put(sequences, tokens, cur_len), cur_len + 1, finished, cache, key

    return jax.lax.while_loop(cond, body, state)[0]


def _gather_beams(tree, indices):
    """tree leaves [batch, beams, ...] picked along beams by indices [batch, k]."""
    rows = jnp.arange(indices.shape[0])[:, None]
    return jax.tree.map(lambda x: x[rows, indices], tree)


def _flat(tree, batch, beams):
    return jax.tree.map(lambda x: x.reshape((batch * beams,) + x.shape[2:]), tree)


def _unflat(tree, batch, beams):
    return jax.tree.map(lambda x: x.reshape((batch, beams) + x.shape[1:]), tree)


def beam_search(params, prefill, step, prompt, max_length, min_length, eos_id, pad_id,
                num_beams=4, length_penalty=1.0, early_stopping=False, rules="flax",
                **token_rules):
    """transformers' beam search: 2 x num_beams candidates kept per step so that beams
    reaching the end of sequence can be replaced; finished hypotheses scored by their
    summed log-probability over (generated length) ** length_penalty; the search stops
    at max_length or when no running beam can beat the finished ones (early_stopping
    True: as soon as num_beams are finished). Returns the best hypothesis per row,
    [batch, max_length].

    `rules` picks between the two versions transformers has, which part on a few rows:
    "flax" (its Flax generate(), what the original runs used): any of the 2 x num_beams
    candidates that ends may be kept, and a row that cannot improve still takes a
    better hypothesis while another row runs on; a row none of whose beams ended by
    max_length returns its best running beam. "pytorch" (its PyTorch generate(),
    transformers 4.5x and 5): only the best num_beams candidates may end, a row stops
    taking hypotheses once it cannot improve, and at max_length every running beam
    counts as finished. `token_rules`: the generation config's token rules
    (`generation_rules`), on each beam's log-probabilities as both apply them."""
    if rules not in ("flax", "pytorch"):
        raise ValueError(f"rules must be 'flax' or 'pytorch', got {rules!r}")
    pytorch = rules == "pytorch"
    batch, prompt_length = prompt.shape
    logits, cache = prefill(params)
    # Every beam starts from the same prompt and cache; only beam 0 counts at first.
    repeat = lambda x: jnp.repeat(x[:, None], num_beams, axis=1)  # noqa: E731
    cache = jax.tree.map(repeat, cache)
    running = repeat(jnp.full((batch, max_length), pad_id, jnp.int32)
                     .at[:, :prompt_length].set(prompt))
    running_scores = jnp.tile(jnp.array([0.0] + [NEG] * (num_beams - 1), jnp.float32),
                              (batch, 1))
    state = {"cur_len": jnp.asarray(prompt_length), "running": running,
             "running_scores": running_scores,
             "finished": jnp.full((batch, num_beams, max_length), pad_id, jnp.int32),
             "scores": jnp.full((batch, num_beams), NEG, jnp.float32),
             "is_finished": jnp.zeros((batch, num_beams), bool),
             "improvable": jnp.ones((batch, 1), bool), "cache": cache}

    def can_improve(running_scores, scores, is_finished, cur_len):
        best_running = running_scores[:, :1] / ((cur_len - prompt_length) ** length_penalty)
        worst_finished = jnp.where(is_finished, jnp.min(scores, axis=1, keepdims=True), NEG)
        return jnp.any(best_running > worst_finished, axis=-1, keepdims=True)

    def advance(state, logits):
        cur_len = state["cur_len"]
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        log_probs = suppress_eos_before(log_probs, cur_len, min_length, eos_id)
        if token_rules:
            log_probs = generation_rules(
                log_probs, state["running"].reshape(batch * num_beams, max_length), cur_len,
                max_length, **token_rules)
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.reshape(batch, num_beams, vocab)
                     + state["running_scores"][:, :, None]).reshape(batch, num_beams * vocab)
        top_scores, top_indices = jax.lax.top_k(log_probs, 2 * num_beams)
        top_beams = top_indices // vocab
        top_sequences = jax.lax.dynamic_update_slice_in_dim(
            _gather_beams(state["running"], top_beams),
            (top_indices % vocab)[:, :, None].astype(jnp.int32), cur_len, axis=2)
        just_finished = top_sequences[:, :, cur_len] == eos_id
        if pytorch:  # max_length is a stopping criterion like the end of sequence
            just_finished = just_finished | (cur_len + 1 >= max_length)
        # Running beams: the best num_beams that did not just end.
        running_candidates = top_scores + just_finished * NEG
        keep = jax.lax.top_k(running_candidates, num_beams)[1]
        running, running_scores = _gather_beams((top_sequences, running_candidates), keep)
        # Finished hypotheses: the best num_beams of the old ones and those just ended.
        may_finish = just_finished
        if pytorch:
            may_finish = may_finish & (jnp.arange(2 * num_beams) < num_beams) & state["improvable"]
        penalised = top_scores / ((cur_len + 1 - prompt_length) ** length_penalty)
        full = jnp.all(state["is_finished"], axis=-1, keepdims=True) & early_stopping
        penalised = penalised + (~may_finish | full) * NEG
        merged = (jnp.concatenate([state["finished"], top_sequences], axis=1),
                  jnp.concatenate([state["scores"], penalised], axis=1),
                  jnp.concatenate([state["is_finished"], may_finish], axis=1))
        best = jax.lax.top_k(merged[1], num_beams)[1]
        finished, scores, is_finished = _gather_beams(merged, best)
        cache = _gather_beams(state["cache"], _gather_beams(top_beams, keep))
        improvable = can_improve(running_scores, scores, is_finished, cur_len + 1)
        if pytorch:  # once a row cannot improve, it stays done
            improvable = improvable & state["improvable"]
        return {"cur_len": cur_len + 1, "running": running, "running_scores": running_scores,
                "finished": finished, "scores": scores, "is_finished": is_finished,
                "improvable": improvable, "cache": cache}

    state = advance(state, logits[:, None].repeat(num_beams, axis=1).reshape(batch * num_beams,
                                                                              -1))

    def cond(state):
        open_beams = ~(jnp.all(state["is_finished"]) & early_stopping)
        return (state["cur_len"] < max_length) & open_beams & jnp.any(state["improvable"])

    def body(state):
        cur_len = state["cur_len"]
        tokens = state["running"][:, :, cur_len - 1].reshape(-1)
        logits, cache = step(params, _flat(state["cache"], batch, num_beams), tokens,
                             cur_len - 1)
        return advance({**state, "cache": _unflat(cache, batch, num_beams)}, logits)

    state = jax.lax.while_loop(cond, body, state)
    # A row with no finished hypothesis returns its running beams.
    any_finished = jnp.any(state["is_finished"], axis=1)
    sequences = jnp.where(any_finished[:, None, None], state["finished"], state["running"])
    return sequences[:, 0]
