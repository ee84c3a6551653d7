"""Cappy's own decoder-only generators (`cappy.engine.models.causal_lm`): GPT-2 and the Llama family
against transformers' PyTorch models, the cache against whole sequences, and GPT-2
generations against those transformers' Flax `generate()` made before the switch."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cappy.engine.models import causal_lm, decoding
from cappy.engine.weights.files import torch_state
from cappy.engine.weights.tiny_models import as_trained, seeded_parameters
from conftest import assert_close

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                      "generation_golden.json")


def config_of(kind, **overrides):
    import transformers

    if kind == "gpt2":
        settings = dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.2)
        settings.update(overrides)
        return transformers.GPT2Config(**settings)
    settings = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    bos_token_id=2, eos_token_id=1, pad_token_id=0, initializer_range=0.2,
                    tie_word_embeddings=False)
    settings.update(overrides)
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                    "mistral": transformers.MistralConfig}[kind]
    return config_class(**settings)


CASES = {
    "gpt2": ("gpt2", {}),
    "llama gqa": ("llama", {}),
    "llama3 rope": ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                               "original_max_position_embeddings": 16},
                              "rope_theta": 500000.0}),
    "qwen2 tied": ("qwen2", {"tie_word_embeddings": True}),
    "mistral": ("mistral", {"sliding_window": None}),
    # Windows shorter than the prompts: a token sees only the last few slots.
    "mistral window": ("mistral", {"sliding_window": 6}),
    "qwen2 window": ("qwen2", {"use_sliding_window": True, "sliding_window": 5,
                               "max_window_layers": 1}),
}


def torch_model(config, params):
    import torch
    from transformers import AutoModelForCausalLM

    module = AutoModelForCausalLM.from_config(config).eval()
    state = {name: torch.from_numpy(value) for name, value in torch_state(params).items()}
    if config.model_type == "gpt2" or config.tie_word_embeddings:
        embeddings = "transformer.wte.weight" if config.model_type == "gpt2" else \
            "model.embed_tokens.weight"
        state["lm_head.weight"] = state[embeddings]
    module.load_state_dict(state, strict=True)
    return module


def left_padded(rng, batch, width, vocab=96):
    lengths = rng.integers(1, width + 1, batch)
    lengths[0] = width
    ids = np.zeros((batch, width), np.int32)
    mask = np.zeros((batch, width), np.int32)
    for row, length in enumerate(lengths):
        ids[row, width - length:] = rng.integers(2, vocab, length)
        mask[row, width - length:] = 1
    return ids, mask


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers_pytorch(case):
    torch = pytest.importorskip("torch")
    kind, overrides = CASES[case]
    config = config_of(kind, **overrides)
    assert causal_lm.unsupported_reason(config) is None
    params = as_trained(causal_lm.init_params(config, seed=7), 7)
    rng = np.random.default_rng(2)
    ids, mask = left_padded(rng, 5, 21)
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    with torch.no_grad():
        expected = torch_model(config, params)(
            input_ids=torch.as_tensor(ids).long(), attention_mask=torch.as_tensor(mask).long(),
            position_ids=torch.as_tensor(positions).long()).logits.numpy()
    got = np.asarray(causal_lm.forward(params, config, ids, mask))
    real = mask.astype(bool)
    assert np.std(expected[real]) > 0.1
    assert_close(got[real], expected[real])


def test_a_sliding_window_changes_what_a_token_sees():
    """The window cases above compute other logits than the same weights without it,
    so their agreement with PyTorch says the window is applied, and applied as its."""
    for case, plain in (("mistral window", {"sliding_window": None}),
                        ("qwen2 window", {"use_sliding_window": False})):
        kind, overrides = CASES[case]
        windowed = config_of(kind, **overrides)
        whole = config_of(kind, **{**overrides, **plain})
        assert [causal_lm.sliding_window(windowed, i) for i in range(2)] == (
            [6, 6] if kind == "mistral" else [None, 5])
        assert causal_lm.sliding_window(whole, 1) is None
        params = as_trained(causal_lm.init_params(windowed, seed=7), 7)
        ids, mask = left_padded(np.random.default_rng(2), 5, 21)
        near, far = (np.asarray(causal_lm.forward(params, c, ids, mask)) for c in (windowed,
                                                                                   whole))
        assert np.max(np.abs(near[:, -1] - far[:, -1])) > 0.1, case
        # within the window's first slots nothing differs
        assert_close(near[0, :5], far[0, :5])


@pytest.mark.parametrize("case", ["gpt2", "llama gqa", "mistral window", "qwen2 window"])
def test_prefill_and_steps_equal_the_whole_sequence(case):
    kind, overrides = CASES[case]
    config = config_of(kind, **overrides)
    params = as_trained(causal_lm.init_params(config, seed=8), 8)
    rng = np.random.default_rng(3)
    ids, mask = left_padded(rng, 4, 9)
    more = rng.integers(2, 96, (4, 5)).astype(np.int32)
    whole = np.asarray(causal_lm.forward(params, config, np.concatenate([ids, more], 1),
                                         np.concatenate([mask, np.ones_like(more)], 1)))
    logits, cache = causal_lm.prefill(params, config, ids, mask, max_length=16)
    assert_close(logits, whole[:, 8])
    step = jax.jit(lambda cache, tokens, index: causal_lm.step(params, config, cache, tokens,
                                                               index))
    for offset in range(more.shape[1]):
        logits, cache = step(cache, more[:, offset], jnp.asarray(9 + offset))
        assert_close(logits, whole[:, 9 + offset])


def generate(params, config, ids, mask, search, max_new, min_new, **kwargs):
    width = ids.shape[1]
    return search(params, lambda p: causal_lm.prefill(p, config, ids, mask, width + max_new),
                  lambda p, cache, tokens, index: causal_lm.step(p, config, cache, tokens,
                                                                 index),
                  ids, max_length=width + max_new, min_length=width + min_new,
                  eos_id=config.eos_token_id, pad_id=config.pad_token_id, **kwargs)[:, width:]


def golden_record(name):
    with open(GOLDEN, encoding="utf-8") as file:
        return json.load(file)[name]


def boost_end_of_sequence(params, config, boost):
    """The end-of-sequence token's output weights times `boost`, in place, as
    scripts/baselines/make_generation_golden.py boosts them: outputs then end at many
    lengths, as a trained model's do."""
    from cappy.engine.models import t5

    eos = config.eos_token_id
    if config.model_type == "gpt2":
        params["transformer"]["wte"]["embedding"][eos] *= boost
    elif config.model_type == "t5":  # transformers 5 says every T5 ties its head
        if t5.is_v1_0(config):
            params["shared"]["embedding"][eos] *= boost
        else:
            params["lm_head"]["kernel"][:, eos] *= boost
    elif config.tie_word_embeddings:
        params["model"]["embed_tokens"]["embedding"][eos] *= boost
    else:
        params["lm_head"]["kernel"][:, eos] *= boost
    return params


@pytest.mark.parametrize("name", ["gpt2", "llama gqa", "mistral"])
def test_generations_match_transformers_flax_generate(name):
    """Beam search (4 beams) and greedy search with the Flax rules on 20 left-padded
    prompts in batches of 5, token for token as transformers 4.57.6's Flax generate()
    gave them (tests/data/generation_golden.json, which
    scripts/baselines/make_generation_golden.py makes; min_length prompt + 3, 64 new
    tokens). The weights are drawn over the names of transformers' Flax tree, so equal
    outputs also say that cappy's parameter tree is that tree."""
    record = golden_record(name)
    config = config_of(record["family"], **record["config"])
    params = boost_end_of_sequence(seeded_parameters(
        causal_lm.parameter_shapes(config), record["seed"], record["std"]), config,
        record["eos_boost"])
    width = record["prompt_width"]
    found = {"beam4": [], "greedy": []}
    searches = {"beam4": jax.jit(lambda p, i, m: generate(p, config, i, m, decoding.beam_search,
                                                          64, 3)),
                "greedy": jax.jit(lambda p, i, m: generate(p, config, i, m,
                                                           decoding.greedy_or_sample, 64, 3))}
    for start in range(0, len(record["prompts"]), 5):
        chunk = record["prompts"][start:start + 5]
        ids = np.zeros((len(chunk), width), np.int32)
        mask = np.zeros((len(chunk), width), np.int32)
        for row, prompt in enumerate(chunk):
            ids[row, width - len(prompt):] = prompt
            mask[row, width - len(prompt):] = 1
        for decoding_name, search in searches.items():
            found[decoding_name] += np.asarray(search(params, ids, mask)).tolist()
    assert len({len(until_end(s, config.eos_token_id)) for s in record["beam4"]}) > 5
    assert found["greedy"] == record["greedy"]
    assert found["beam4"] == record["beam4"]


def until_end(sequence, eos_id):
    """The tokens up to and including the first end of sequence."""
    sequence = list(sequence)
    return sequence[:sequence.index(eos_id) + 1] if eos_id in sequence else sequence


def assert_searches_match_pytorch(batches, compiled, beams, torch_generate, eos_id):
    """Each compiled search's outputs on each (ids, mask) batch, token for token up to the
    end of sequence, as torch_generate(ids, mask, num_beams) gives them. Returns the
    output lengths seen and the beam search's (ids, mask, tokens) triples."""
    lengths, beam_outputs = set(), []
    for ids, mask in batches:
        for name, search in compiled.items():
            got = np.asarray(search(ids, mask))
            expected = torch_generate(ids, mask, beams[name])
            for row in range(len(ids)):
                ours = until_end(got[row], eos_id)
                assert ours == until_end(expected[row], eos_id), (name, row)
                lengths.add(len(ours))
                if beams[name] > 1:
                    beam_outputs.append((ids[row], mask[row], ours))
    return lengths, beam_outputs


def candidate_log_likelihoods(config, params, outputs, width):
    """(batch, sums): (prompt ids, prompt mask, response) triples batched as candidate
    generation batches them (responses right-padded to `width`), and the responses'
    log-likelihood sums as it computes them."""
    from cappy.engine.jobs.candidate_generation import _token_log_likelihoods
    from cappy.engine.models.families import target_logits

    labels = np.zeros((len(outputs), width), np.int32)
    label_mask = np.zeros_like(labels)
    for row, (_, _, response) in enumerate(outputs):
        labels[row, :len(response)], label_mask[row, :len(response)] = response, 1
    batch = {"input_ids": np.stack([o[0] for o in outputs]),
             "attention_mask": np.stack([o[1] for o in outputs]),
             "labels": labels, "label_mask": label_mask}
    sums = _token_log_likelihoods(target_logits(as_generator(config, params), params, batch),
                                  labels, label_mask)["log_likelihood_sum"]
    return batch, np.asarray(sums)


def summed_log_probs(log_probs, labels, label_mask):
    return (np.take_along_axis(log_probs, labels[..., None], -1)[..., 0] * label_mask).sum(-1)


def as_generator(config, params):
    from cappy.engine.weights.generator_loading import Generator

    return Generator(config=config, params=params, tokenizer=None, dtype="float32",
                     decoder_start_token_id=0, eos_token_id=config.eos_token_id,
                     pad_token_id=config.pad_token_id, sampling_defaults={},
                     beam_defaults={})


@pytest.mark.parametrize("case", list(CASES))
def test_searches_and_log_likelihoods_match_transformers_pytorch(case):
    """Greedy and 4-beam search on 24 left-padded prompts of 1 to 24 tokens, in batches of
    8, token for token as transformers' PyTorch generate() gives them (float32, CPU;
    beam search with PyTorch's rules, min_length one above cappy's as PyTorch lifts the
    block a step earlier); then the log-likelihood sums of the beam outputs, as
    candidate generation computes them, against PyTorch's within 1e-3."""
    torch = pytest.importorskip("torch")
    kind, overrides = CASES[case]
    config = config_of(kind, **overrides)
    params = seeded_parameters(causal_lm.parameter_shapes(config), 5, 0.3)
    if kind == "gpt2":
        embeddings = params["transformer"]["wte"]["embedding"]
    elif config.tie_word_embeddings:
        embeddings = params["model"]["embed_tokens"]["embedding"]
    else:
        embeddings = params["lm_head"]["kernel"].T
    embeddings[config.eos_token_id] *= 3.0  # ends at varied lengths
    reference = torch_model(config, params)
    width, max_new, min_new = 24, 24, 3
    searches = {"greedy": decoding.greedy_or_sample,
                "beam4": functools.partial(decoding.beam_search, rules="pytorch")}
    compiled = {name: jax.jit(lambda i, m, search=search: generate(params, config, i, m, search,
                                                                   max_new, min_new))
                for name, search in searches.items()}

    def torch_generate(ids, mask, num_beams):
        with torch.no_grad():
            return reference.generate(
                input_ids=torch.as_tensor(ids).long(), attention_mask=torch.as_tensor(mask).long(),
                max_new_tokens=max_new, min_length=width + min_new + 1, num_beams=num_beams,
                do_sample=False, early_stopping=False, length_penalty=1.0,
                eos_token_id=config.eos_token_id,
                pad_token_id=config.pad_token_id).numpy()[:, width:]

    rng = np.random.default_rng(12)
    lengths, outputs = assert_searches_match_pytorch(
        [left_padded(rng, 8, width) for _ in range(3)], compiled, {"greedy": 1, "beam4": 4},
        torch_generate, config.eos_token_id)
    assert len(lengths) > 5  # the outputs end at many different lengths

    batch, got = candidate_log_likelihoods(config, params, outputs, max_new)
    labels, label_mask = batch["labels"], batch["label_mask"]
    ids = np.concatenate([batch["input_ids"], labels], axis=1)
    mask = np.concatenate([batch["attention_mask"], label_mask], axis=1)
    with torch.no_grad():
        logits = reference(input_ids=torch.as_tensor(ids).long(),
                           attention_mask=torch.as_tensor(mask).long(),
                           position_ids=torch.as_tensor(np.maximum(np.cumsum(mask, -1) - 1, 0))
                           .long()).logits
        log_probs = torch.log_softmax(logits[:, width - 1:-1], dim=-1).numpy()
    expected = summed_log_probs(log_probs, labels, label_mask)
    assert np.std(expected) > 1.0
    # Sums of up to 64 log-probabilities: float32 rounding of each adds up over them.
    assert_close(got, expected, rel=2e-5)
