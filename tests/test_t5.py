"""Cappy's own T5 (`cappy.engine.t5`) and decoding (`cappy.engine.models.decoding`): logits against
transformers' PyTorch T5, the cache against whole sequences, and generations
against those transformers' Flax `generate()` made before the switch."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cappy.engine.models import decoding, t5
from cappy.engine.weights.files import torch_state
from cappy.engine.weights.tiny_models import as_trained, seeded_parameters
from conftest import assert_close

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                      "generation_golden.json")


def small_config(gated=True, **overrides):
    from transformers import T5Config

    settings = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                    num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=8,
                    relative_attention_max_distance=20,
                    feed_forward_proj="gated-gelu" if gated else "relu",
                    tie_word_embeddings=not gated, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0, dropout_rate=0.0)
    settings.update(overrides)
    return T5Config(**settings)


def padded(rng, batch, width, vocab=96, left=False):
    lengths = rng.integers(2, width + 1, batch)
    lengths[0] = width
    ids = np.zeros((batch, width), np.int32)
    mask = np.zeros((batch, width), np.int32)
    for row, length in enumerate(lengths):
        cells = slice(width - length, width) if left else slice(0, length)
        ids[row, cells] = rng.integers(2, vocab, length)
        mask[row, cells] = 1
    return ids, mask


def torch_t5(config, params):
    import torch
    from transformers import T5ForConditionalGeneration

    module = T5ForConditionalGeneration(config).eval()
    if not t5.is_v1_0(config) and module.lm_head.weight is module.shared.weight:
        # transformers 5 ties the head to the embeddings for every T5 on construction;
        # v1.1's checkpoints hold a head of their own.
        module.lm_head.weight = torch.nn.Parameter(module.shared.weight.detach().clone())
    state = {name: torch.from_numpy(value) for name, value in torch_state(params).items()}
    for stack in ("encoder", "decoder"):
        state[f"{stack}.embed_tokens.weight"] = state["shared.weight"]
    if t5.is_v1_0(config):
        state["lm_head.weight"] = state["shared.weight"]
    module.load_state_dict(state, strict=True)
    return module


@pytest.mark.parametrize("gated", [True, False], ids=["v1.1 gated gelu", "v1.0 relu tied"])
def test_logits_match_transformers_pytorch(gated):
    torch = pytest.importorskip("torch")
    config = small_config(gated)
    params = as_trained(t5.init_params(config, seed=int(gated)), int(gated))
    rng = np.random.default_rng(0)
    ids, mask = padded(rng, 5, 23)
    decoder_ids, decoder_mask = padded(rng, 5, 11)
    decoder_ids[:, 0] = config.decoder_start_token_id
    with torch.no_grad():
        expected = torch_t5(config, params)(
            input_ids=torch.as_tensor(ids).long(), attention_mask=torch.as_tensor(mask).long(),
            decoder_input_ids=torch.as_tensor(decoder_ids).long(),
            decoder_attention_mask=torch.as_tensor(decoder_mask).long()).logits.numpy()
    states = t5.encode(params, config, ids, mask)
    got = np.asarray(t5.decode(params, config, decoder_ids, states, mask, decoder_mask))
    real = decoder_mask.astype(bool)
    assert np.std(expected[real]) > 0.1
    assert_close(got[real], expected[real])


def test_one_position_at_a_time_equals_the_whole_sequence():
    config = small_config()
    params = as_trained(t5.init_params(config, seed=3), 3)
    rng = np.random.default_rng(1)
    ids, mask = padded(rng, 4, 17)
    targets = rng.integers(2, 96, (4, 9)).astype(np.int32)
    targets[:, 0] = config.decoder_start_token_id
    states = t5.encode(params, config, ids, mask)
    whole = np.asarray(t5.decode(params, config, targets, states, mask))
    cache = t5.init_cache(params, config, states, mask, max_length=12)
    step = jax.jit(lambda cache, tokens, position: t5.decode_step(params, config, cache, tokens,
                                                                  position))
    for position in range(targets.shape[1]):
        logits, cache = step(cache, targets[:, position], jnp.asarray(position))
        assert_close(logits, whole[:, position])


def relative_bucket(offset, bidirectional, buckets, max_distance):
    """T5's bucket of one key-minus-query offset, written out scalar by scalar."""
    import math

    bucket = 0
    if bidirectional:
        buckets //= 2
        bucket += buckets if offset > 0 else 0
        distance = abs(offset)
    else:
        distance = -min(offset, 0)
    exact = buckets // 2
    if distance < exact:
        return bucket + distance
    far = exact + int(math.log(distance / exact) / math.log(max_distance / exact)
                      * (buckets - exact))
    return bucket + min(far, buckets - 1)


def test_relative_position_buckets():
    offsets = jnp.arange(-200, 201)
    for bidirectional in (True, False):
        got = np.asarray(t5.relative_position_bucket(offsets, bidirectional, 32, 128))
        expected = [relative_bucket(int(o), bidirectional, 32, 128) for o in offsets]
        assert got.tolist() == expected


def golden_t5(name="t5"):
    """A T5 record of tests/data/generation_golden.json: (record, config, its weights)."""
    from transformers import T5Config

    from test_causal_lm import boost_end_of_sequence, golden_record

    record = golden_record(name)
    config = T5Config(**record["config"])
    params = boost_end_of_sequence(seeded_parameters(
        t5.parameter_shapes(config), record["seed"], record["std"]), config, record["eos_boost"])
    return record, config, params


def t5_generate(params, config, ids, mask, search, **kwargs):
    start = config.decoder_start_token_id

    def prefill(params):
        states = t5.encode(params, config, ids, mask)
        cache = t5.init_cache(params, config, states, mask, max_length=64)
        return t5.decode_step(params, config, cache, jnp.full((ids.shape[0],), start),
                              jnp.asarray(0))

    def step(params, cache, tokens, index):
        return t5.decode_step(params, config, cache, tokens, index)

    prompt = jnp.full((ids.shape[0], 1), start, jnp.int32)
    return search(params, prefill, step, prompt, max_length=64, min_length=3,
                  eos_id=config.eos_token_id, pad_id=config.pad_token_id, **kwargs)


@pytest.mark.parametrize("name", ["t5", "t5 v1.0"])
def test_generations_match_transformers_flax_generate(name):
    """Beam search (4 beams) and greedy search with the Flax rules on 20 prompts in padded
    batches of 5 give, token for token, what transformers 4.57.6's Flax generate() gave
    on the same seeded weights (tests/data/generation_golden.json, made by
    scripts/baselines/make_generation_golden.py; min_length 3, max_length 64)."""
    record, config, params = golden_t5(name)
    width = record["prompt_width"]
    found = {"beam4": [], "greedy": []}
    searches = {"beam4": jax.jit(lambda p, i, m: t5_generate(p, config, i, m,
                                                             decoding.beam_search)),
                "greedy": jax.jit(lambda p, i, m: t5_generate(p, config, i, m,
                                                              decoding.greedy_or_sample))}
    for start in range(0, len(record["prompts"]), 5):
        chunk = record["prompts"][start:start + 5]
        ids = np.zeros((len(chunk), width), np.int32)
        mask = np.zeros((len(chunk), width), np.int32)
        for row, prompt in enumerate(chunk):
            ids[row, :len(prompt)] = prompt
            mask[row, :len(prompt)] = 1
        for name, search in searches.items():
            found[name] += np.asarray(search(params, ids, mask)).tolist()
    lengths = {len([t for t in s if t]) for s in record["beam4"]}
    assert len(lengths) > 5  # the recorded beams end at many different lengths
    assert found["beam4"] == record["beam4"]
    assert found["greedy"] == record["greedy"]


@pytest.mark.parametrize("name", ["t5", "t5 v1.0"])
def test_log_likelihoods_match_the_recorded_ones(name):
    """The recorded beams' log-likelihood sums under the Flax model, all 20 in one padded
    batch (sums of up to 64 log-probabilities, the largest about 100: float32 rounding of
    each adds up over them)."""
    record, config, params = golden_t5(name)
    width, n = record["prompt_width"], len(record["prompts"])
    ids, mask = np.zeros((n, width), np.int32), np.zeros((n, width), np.int32)
    decoder, targets = np.zeros((n, 64), np.int32), np.zeros((n, 64), np.int32)
    target_mask = np.zeros((n, 64), np.int32)
    for row, (prompt, sequence) in enumerate(zip(record["prompts"], record["beam4"])):
        target = sequence[1:]
        if config.eos_token_id in target:
            target = target[:target.index(config.eos_token_id) + 1]
        ids[row, :len(prompt)], mask[row, :len(prompt)] = prompt, 1
        decoder[row, :len(target)] = [config.decoder_start_token_id] + target[:-1]
        targets[row, :len(target)], target_mask[row, :len(target)] = target, 1
    logits = jax.jit(lambda i, m, d, dm: t5.decode(params, config, d, t5.encode(
        params, config, i, m), m, dm))(ids, mask, decoder, target_mask)
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    got = (np.take_along_axis(log_probs, targets[..., None], -1)[..., 0] * target_mask).sum(-1)
    assert_close(got, record["beam4_log_likelihood_sum"], rel=2e-5)


@pytest.mark.parametrize("settings", [{"temperature": 0.9, "top_k": 50}, {"top_k": 40},
                                      {"top_k": 50, "top_p": 0.95}, {"top_k": 50},
                                      {"top_p": 0.5}])
def test_sampling_filters_match_transformers_logits_processors(settings):
    torch = pytest.importorskip("torch")
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = np.random.default_rng(5).normal(0, 3, (6, 300)).astype(np.float32)
    logits[1, :10] = 4.0  # ties
    warped = torch.as_tensor(logits)
    if settings.get("temperature"):
        warped = TemperatureLogitsWarper(settings["temperature"])(None, warped)
    if settings.get("top_k"):
        warped = TopKLogitsWarper(settings["top_k"])(None, warped)
    if settings.get("top_p"):
        warped = TopPLogitsWarper(settings["top_p"])(None, warped)
    expected = torch.softmax(warped, dim=-1).numpy()
    got = np.asarray(jax.nn.softmax(decoding.sampling_logits(jnp.asarray(logits), **settings)))
    assert_close(got, expected, rel=1e-6)  # probabilities: at most 1
    assert (got > 0).sum(axis=-1).max() < 300  # something was filtered


def test_no_end_of_sequence_until_past_the_minimum_length():
    """As transformers' Flax generate() blocks it: while cur_len <= min_length."""
    logits = jnp.zeros((2, 5)).at[:, 1].set(9.0)
    assert decoding.suppress_eos_before(logits, 3, 3, 1)[:, 1].tolist() == [-np.inf] * 2
    assert decoding.suppress_eos_before(logits, 4, 3, 1)[:, 1].tolist() == [9.0] * 2
    assert decoding.suppress_eos_before(logits, 4, 3, 1)[:, 0].tolist() == [0.0] * 2


@pytest.mark.parametrize("variant", ["v1.1 gated gelu", "v1.0 relu tied"])
def test_greedy_and_beam_search_match_transformers_pytorch_generate(variant):
    """Greedy and 4-beam search on 24 prompts of 3 to 32 tokens, in right-padded batches
    of 8, token for token as transformers' PyTorch generate() gives them (float32, CPU).
    PyTorch lifts the minimum-length block one step earlier than the Flax generate()
    the original ran (tests: test_no_end_of_sequence_until_past_the_minimum_length),
    so it is told min_length 4 for cappy's 3; beam search runs with PyTorch's rules
    (`decoding.beam_search`). Then the log-likelihood sums of the beam outputs, as
    candidate generation computes them, against PyTorch's within 1e-3."""
    torch = pytest.importorskip("torch")
    from test_causal_lm import (assert_searches_match_pytorch, candidate_log_likelihoods,
                                summed_log_probs)

    # v1.0's tied head scales logits by d_model ** -0.5: larger weights, a larger boost.
    record, config, params = golden_t5({"v1.1 gated gelu": "t5", "v1.0 relu tied": "t5 v1.0"}
                                       [variant])
    reference = torch_t5(config, params)
    searches = {"greedy": decoding.greedy_or_sample,
                "beam4": functools.partial(decoding.beam_search, rules="pytorch")}
    compiled = {name: jax.jit(lambda i, m, search=search: t5_generate(params, config, i, m,
                                                                      search))
                for name, search in searches.items()}

    def torch_generate(ids, mask, num_beams):
        with torch.no_grad():
            return reference.generate(
                input_ids=torch.as_tensor(ids).long(), attention_mask=torch.as_tensor(mask).long(),
                max_length=64, min_length=4, num_beams=num_beams, do_sample=False,
                early_stopping=False, length_penalty=1.0, decoder_start_token_id=0,
                eos_token_id=1, pad_token_id=0).numpy()

    def prompts(rng):
        ids, mask = padded(rng, 8, 32)
        mask[:, :3] = 1  # at least 3 tokens
        return np.where(mask == 1, np.maximum(ids, 2), 0).astype(np.int32), mask

    rng = np.random.default_rng(11)
    lengths, outputs = assert_searches_match_pytorch(
        [prompts(rng) for _ in range(3)], compiled, {"greedy": 1, "beam4": 4}, torch_generate,
        config.eos_token_id)
    assert len(lengths) > 5  # the outputs end at many different lengths

    # Without the decoder start token: the targets candidate generation scores.
    batch, got = candidate_log_likelihoods(
        config, params, [(ids, mask, tokens[1:]) for ids, mask, tokens in outputs], 64)
    with torch.no_grad():
        logits = reference(input_ids=torch.as_tensor(batch["input_ids"]).long(),
                           attention_mask=torch.as_tensor(batch["attention_mask"]).long(),
                           labels=torch.as_tensor(batch["labels"]).long()).logits
    expected = summed_log_probs(torch.log_softmax(logits, dim=-1).numpy(), batch["labels"],
                                batch["label_mask"])
    assert np.std(expected) > 1.0
    # Sums of up to 64 log-probabilities: float32 rounding of each adds up over them.
    assert_close(got, expected, rel=2e-5)


def test_per_row_sampling_settings_equal_each_setting_alone():
    """One compiled program serves every sampling decoding: settings as [rows] arrays
    (and only the largest top_k sorted) give each row what its setting gives alone."""
    logits = jnp.asarray(np.random.default_rng(6).normal(0, 3, (4, 300)).astype(np.float32))
    settings = [(1.0, 50, 1.0), (0.9, 50, 1.0), (1.0, 40, 1.0), (1.0, 50, 0.95)]
    temperature, top_k, top_p = (np.array(column) for column in zip(*settings))
    together = jax.jit(lambda x, t, k, p: decoding.sampling_logits(x, t, k, p, max_top_k=50))(
        logits, temperature, top_k, top_p)
    for row, (t, k, p) in enumerate(settings):
        alone = decoding.sampling_logits(logits[row:row + 1], t, k, p)
        np.testing.assert_array_equal(np.asarray(together[row:row + 1]), np.asarray(alone))
    kept = np.isfinite(np.asarray(together)).sum(axis=-1)
    assert kept[0] == kept[1] == 50 and kept[2] == 40 and kept[3] < 50
