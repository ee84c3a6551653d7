"""Cappy's own BART (`cappy.engine.models.bart`) and the generation-config token rules BART's
checkpoints set (`cappy.engine.models.decoding.generation_rules`): logits against transformers'
PyTorch BART and mBART, the cache against whole sequences, greedy and beam search against
PyTorch's generate(), loading what transformers saves, candidate generation, and a
pretraining build augmented by a tiny BART and a tiny T5."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cappy.engine.models import bart, decoding
from cappy.engine.weights.files import torch_state
from cappy.engine.errors import CappyError
from cappy.engine.weights.generator_loading import Generator, load_generator
from cappy.engine.weights.tiny_models import as_trained, seeded_parameters
from conftest import assert_close

BOS, PAD, EOS = 0, 1, 2  # BART's ids; its decoding starts from EOS
RULES = {"forced_bos_id": BOS, "forced_eos_id": (EOS,), "no_repeat_ngram_size": 3}


def small_config(kind="bart", **overrides):
    from transformers import BartConfig, MBartConfig

    settings = dict(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=3,
                    encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=64,
                    decoder_ffn_dim=48, max_position_embeddings=64, dropout=0.0,
                    pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                    decoder_start_token_id=EOS, forced_eos_token_id=EOS)
    settings.update(overrides)
    return {"bart": BartConfig, "mbart": MBartConfig}[kind](**settings)


def trained_params(config, seed, std=0.3, eos_boost=0.0):
    """Seeded weights with every bias, LayerNorm and final_logits_bias moved off its
    initial value (`as_trained`); the end of sequence made likelier by `eos_boost` in
    final_logits_bias, so that outputs end at many lengths."""
    params = as_trained(seeded_parameters(bart.parameter_shapes(config), seed, std), seed)
    params["final_logits_bias"][0, config.eos_token_id] += eos_boost
    return params


def torch_bart(config, params):
    import torch
    from transformers import BartForConditionalGeneration, MBartForConditionalGeneration

    model_class = {"bart": BartForConditionalGeneration,
                   "mbart": MBartForConditionalGeneration}[config.model_type]
    module = model_class(config).eval()
    state = {name: torch.from_numpy(value) for name, value in torch_state(params).items()}
    for stack in ("encoder", "decoder"):  # tied to the shared embedding
        state[f"model.{stack}.embed_tokens.weight"] = state["model.shared.weight"]
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.shared.weight"]
    module.load_state_dict(state, strict=True)
    return module


def padded(rng, batch, width, vocab=96, shortest=2):
    """Right-padded random sources (pad 1) of `shortest` to `width` tokens, the first row full."""
    lengths = rng.integers(shortest, width + 1, batch)
    lengths[0] = width
    ids = np.full((batch, width), PAD, np.int32)
    mask = np.zeros((batch, width), np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(3, vocab, length)
        mask[row, :length] = 1
    return ids, mask


CASES = {"bart": ("bart", {}),
         "bart scale_embedding, own head": ("bart", {"scale_embedding": True,
                                                     "tie_word_embeddings": False}),
         "mbart": ("mbart", {"scale_embedding": True})}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers_pytorch(case):
    torch = pytest.importorskip("torch")
    kind, overrides = CASES[case]
    config = small_config(kind, **overrides)
    params = trained_params(config, seed=len(case))
    rng = np.random.default_rng(0)
    ids, mask = padded(rng, 5, 23)
    decoder_ids, decoder_mask = padded(rng, 5, 11)
    decoder_ids[:, 0] = config.decoder_start_token_id
    with torch.no_grad():
        expected = torch_bart(config, params)(
            input_ids=torch.as_tensor(ids).long(), attention_mask=torch.as_tensor(mask).long(),
            decoder_input_ids=torch.as_tensor(decoder_ids).long(),
            decoder_attention_mask=torch.as_tensor(decoder_mask).long()).logits.numpy()
    states = bart.encode(params, config, ids, mask)
    got = np.asarray(bart.decode(params, config, decoder_ids, states, mask, decoder_mask))
    real = decoder_mask.astype(bool)
    assert np.std(expected[real]) > 0.5
    assert_close(got[real], expected[real], rel=1e-4)


@pytest.mark.parametrize("kind", ["bart", "mbart"])
def test_one_position_at_a_time_equals_the_whole_sequence(kind):
    config = small_config(kind, scale_embedding=kind == "mbart")
    params = trained_params(config, seed=3)
    rng = np.random.default_rng(1)
    ids, mask = padded(rng, 4, 17)
    targets = rng.integers(3, 96, (4, 9)).astype(np.int32)
    targets[:, 0] = config.decoder_start_token_id
    states = bart.encode(params, config, ids, mask)
    whole = np.asarray(bart.decode(params, config, targets, states, mask))
    cache = bart.init_cache(params, config, states, mask, max_length=12)
    step = jax.jit(lambda cache, tokens, position: bart.decode_step(params, config, cache,
                                                                    tokens, position))
    for position in range(targets.shape[1]):
        logits, cache = step(cache, targets[:, position], jnp.asarray(position))
        assert_close(logits, whole[:, position])


def test_sources_longer_than_the_position_table_are_refused():
    config = small_config(max_position_embeddings=8)
    params = trained_params(config, seed=0)
    ids = np.full((1, 9), 5, np.int32)
    with pytest.raises(CappyError, match="a source of 9 tokens: this bart has 8 positions"):
        bart.encode(params, config, ids, np.ones_like(ids))


# ---- the generation config's token rules ------------------------------------------------

@pytest.mark.parametrize("ngram_size", [1, 2, 3, 4])
def test_token_rules_match_transformers_logits_processors(ngram_size):
    """No repeated n-gram, the forced first token (cur_len 1) and the forced last one
    (max_length - 1), against transformers' PyTorch processors on sequences full of
    repeats, at every length."""
    torch = pytest.importorskip("torch")
    from transformers import (ForcedBOSTokenLogitsProcessor, ForcedEOSTokenLogitsProcessor,
                              LogitsProcessorList, NoRepeatNGramLogitsProcessor)

    rng = np.random.default_rng(ngram_size)
    rows, width, vocab = 6, 12, 7
    sequences = rng.integers(0, 4, (rows, width)).astype(np.int32)  # few tokens: many repeats
    logits = rng.normal(0, 2, (rows, vocab)).astype(np.float32)
    processors = LogitsProcessorList([
        NoRepeatNGramLogitsProcessor(ngram_size), ForcedBOSTokenLogitsProcessor(5),
        ForcedEOSTokenLogitsProcessor(width, [6, 3])])
    rules = jax.jit(lambda x, s, n: decoding.generation_rules(
        x, s, n, width, forced_bos_id=5, forced_eos_id=(6, 3), no_repeat_ngram_size=ngram_size))
    banned = 0
    for cur_len in range(1, width):
        expected = processors(torch.as_tensor(sequences[:, :cur_len]).long(),
                              torch.as_tensor(logits)).numpy()
        got = np.asarray(rules(logits, sequences, cur_len))
        np.testing.assert_array_equal(got, expected, err_msg=f"cur_len {cur_len}")
        banned += int(np.isinf(got).sum())
    assert banned > 0


def bart_generate(params, config, ids, mask, search, max_length, **kwargs):
    start = config.decoder_start_token_id

    def prefill(params):
        states = bart.encode(params, config, ids, mask)
        cache = bart.init_cache(params, config, states, mask, max_length)
        return bart.decode_step(params, config, cache, jnp.full((ids.shape[0],), start),
                                jnp.asarray(0))

    def step(params, cache, tokens, index):
        return bart.decode_step(params, config, cache, tokens, index)

    prompt = jnp.full((ids.shape[0], 1), start, jnp.int32)
    return search(params, prefill, step, prompt, max_length=max_length, min_length=3,
                  eos_id=config.eos_token_id, pad_id=config.pad_token_id, **kwargs)


def until_end(sequence, eos_id):
    """The tokens up to the end of sequence after the decoder start token."""
    tokens = [int(t) for t in sequence]
    return tokens[:tokens.index(eos_id, 1) + 1] if eos_id in tokens[1:] else tokens


def as_generator(config, params):
    return Generator(config=config, params=params, tokenizer=None, dtype="float32",
                     decoder_start_token_id=config.decoder_start_token_id,
                     eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
                     sampling_defaults={}, beam_defaults={}, token_rules=dict(RULES))


# case -> (config changes, early stopping, end-of-sequence boost: the outputs end at
# many lengths, a few only at max_length)
GENERATION_CASES = {"bart, early stopping": ({}, True, 4.0),
                    "bart scale_embedding": ({"scale_embedding": True}, False, 3.0)}


@pytest.mark.parametrize("case", list(GENERATION_CASES))
def test_greedy_and_beam_search_match_transformers_pytorch_generate(case):
    """Greedy and 4-beam search on 24 prompts of 3 to 32 tokens, in right-padded batches
    of 8, token for token as transformers' PyTorch generate() gives them (float32, CPU),
    with bart-large's token rules (forced <s> first, forced </s> at max_length - 1, no
    repeated 3-gram). PyTorch lifts the minimum-length block one step earlier than the
    Flax generate() the original ran, so it is told min_length 4 for cappy's 3; beam
    search runs with PyTorch's rules. Then the log-likelihood sums of the beam outputs, as
    candidate generation computes them, against PyTorch's."""
    torch = pytest.importorskip("torch")
    from test_causal_lm import summed_log_probs

    from cappy.engine.jobs.candidate_generation import _token_log_likelihoods
    from cappy.engine.models.families import target_logits

    overrides, early_stopping, eos_boost = GENERATION_CASES[case]
    config = small_config(decoder_layers=2, decoder_attention_heads=4, **overrides)
    params = trained_params(config, seed=5, eos_boost=eos_boost)
    reference = torch_bart(config, params)
    max_length = 32
    searches = {"greedy": (decoding.greedy_or_sample, 1),
                "beam4": (functools.partial(decoding.beam_search, rules="pytorch",
                                            early_stopping=early_stopping), 4)}
    compiled = {name: jax.jit(lambda i, m, search=search: bart_generate(
        params, config, i, m, search, max_length, **RULES)) for name, (search, _) in
        searches.items()}

    rng = np.random.default_rng(11)
    lengths, beam_outputs = [], []
    for _ in range(3):
        ids, mask = padded(rng, 8, 32, shortest=3)
        for name, (_, num_beams) in searches.items():
            got = np.asarray(compiled[name](ids, mask))
            with torch.no_grad():
                expected = reference.generate(
                    input_ids=torch.as_tensor(ids).long(),
                    attention_mask=torch.as_tensor(mask).long(), max_length=max_length,
                    min_length=4, num_beams=num_beams, do_sample=False,
                    early_stopping=early_stopping, length_penalty=1.0,
                    decoder_start_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
                    forced_bos_token_id=BOS, forced_eos_token_id=EOS,
                    no_repeat_ngram_size=3).numpy()
            for row in range(len(ids)):
                ours = until_end(got[row], EOS)
                assert ours == until_end(expected[row], EOS), (name, row)
                assert ours[:2] == [EOS, BOS] and ours[-1] == EOS
                lengths.append(len(ours))
                if num_beams > 1:
                    beam_outputs.append((ids[row], mask[row], ours[1:]))
    assert len(set(lengths)) > 5  # the outputs end at many different lengths
    assert max_length in lengths  # ... some only by the forced end of sequence

    labels = np.full((len(beam_outputs), max_length), PAD, np.int32)
    label_mask = np.zeros_like(labels)
    for row, (_, _, response) in enumerate(beam_outputs):
        labels[row, :len(response)], label_mask[row, :len(response)] = response, 1
    batch = {"input_ids": np.stack([o[0] for o in beam_outputs]),
             "attention_mask": np.stack([o[1] for o in beam_outputs]),
             "labels": labels, "label_mask": label_mask}
    got = np.asarray(_token_log_likelihoods(target_logits(as_generator(config, params), params,
                                                          batch), labels, label_mask)
                     ["log_likelihood_sum"])
    with torch.no_grad():
        logits = reference(input_ids=torch.as_tensor(batch["input_ids"]).long(),
                           attention_mask=torch.as_tensor(batch["attention_mask"]).long(),
                           labels=torch.as_tensor(labels).long()).logits
    expected = summed_log_probs(torch.log_softmax(logits, dim=-1).numpy(), labels, label_mask)
    assert np.std(expected) > 1.0
    # Sums of up to 31 log-probabilities: float32 rounding of each adds up over them.
    assert_close(got, expected, rel=1e-5)


def golden_bart():
    """The BART record of tests/data/generation_golden.json: (record, config, its weights,
    its token rules)."""
    from transformers import BartConfig

    from test_causal_lm import golden_record

    record = golden_record("bart")
    config = BartConfig(**record["config"])
    params = seeded_parameters(bart.parameter_shapes(config), record["seed"], record["std"])
    params["final_logits_bias"][0, config.eos_token_id] += record["eos_bias"]
    rules = {"forced_bos_id": record["generation"]["forced_bos_token_id"],
             "forced_eos_id": (record["generation"]["forced_eos_token_id"],)}
    return record, config, params, rules


def test_generations_match_transformers_flax_generate():
    """Beam search (4 beams) and greedy search with the Flax rules, which candidate
    generation runs, on 20 prompts in right-padded batches of 5, with BART's forced first
    and last tokens: token for token what transformers 4.57.6's Flax generate() gave on
    the same seeded weights (tests/data/generation_golden.json, made by
    scripts/baselines/make_generation_golden.py; min_length 3, max_length 64)."""
    record, config, params, rules = golden_bart()
    width = record["prompt_width"]
    searches = {name: jax.jit(lambda p, i, m, search=search: bart_generate(
        p, config, i, m, search, 64, **rules))
        for name, search in (("beam4", decoding.beam_search),
                             ("greedy", decoding.greedy_or_sample))}
    found = {"beam4": [], "greedy": []}
    for start in range(0, len(record["prompts"]), 5):
        chunk = record["prompts"][start:start + 5]
        ids = np.zeros((len(chunk), width), np.int32)
        mask = np.zeros((len(chunk), width), np.int32)
        for row, prompt in enumerate(chunk):
            ids[row, :len(prompt)] = prompt
            mask[row, :len(prompt)] = 1
        for name, search in searches.items():
            found[name] += np.asarray(search(params, ids, mask)).tolist()
    lengths = {len(until_end(s, EOS)) for name in found for s in record[name]}
    assert len(lengths) > 5 and 64 in lengths  # some end only by the forced end of sequence
    assert all(s[:2] == [EOS, BOS] for s in record["greedy"] + record["beam4"])
    assert found["beam4"] == record["beam4"]
    assert found["greedy"] == record["greedy"]


def test_log_likelihoods_match_the_recorded_ones():
    """The recorded beams' log-likelihood sums under the Flax model, all 20 in one padded
    batch (sums of up to 63 log-probabilities: float32 rounding of each adds up)."""
    record, config, params, _ = golden_bart()
    width, n = record["prompt_width"], len(record["prompts"])
    ids, mask = np.zeros((n, width), np.int32), np.zeros((n, width), np.int32)
    decoder, targets = np.zeros((n, 64), np.int32), np.zeros((n, 64), np.int32)
    target_mask = np.zeros((n, 64), np.int32)
    for row, (prompt, sequence) in enumerate(zip(record["prompts"], record["beam4"])):
        target = until_end(sequence, EOS)[1:]
        ids[row, :len(prompt)], mask[row, :len(prompt)] = prompt, 1
        decoder[row, :len(target)] = [config.decoder_start_token_id] + target[:-1]
        targets[row, :len(target)], target_mask[row, :len(target)] = target, 1
    logits = jax.jit(lambda i, m, d, dm: bart.decode(params, config, d, bart.encode(
        params, config, i, m), m, dm))(ids, mask, decoder, target_mask)
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    got = (np.take_along_axis(log_probs, targets[..., None], -1)[..., 0] * target_mask).sum(-1)
    assert_close(got, record["beam4_log_likelihood_sum"], rel=2e-5)


# ---- loading --------------------------------------------------------------------------

def test_weights_transformers_saved_load_with_their_logits(tmp_path):
    """model.safetensors as transformers 5's save_pretrained writes it (PyTorch names, the
    tied embedding once as model.shared.weight), as older checkpoints keep it (under the
    encoder's name), and without final_logits_bias (transformers reads zeros)."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file, save_file
    from transformers import BartForConditionalGeneration

    from cappy.engine.weights.tiny_models import make_scorer_tokenizer, tiny_bart_config

    tokenizer = make_scorer_tokenizer()
    config = tiny_bart_config(tokenizer, max_position_embeddings=64, init_std=0.2)
    torch.manual_seed(0)
    module = BartForConditionalGeneration(config).eval()
    with torch.no_grad():  # every bias and LayerNorm off its initial value
        for name, parameter in module.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
        module.final_logits_bias.normal_(0.0, 0.5)
    folder = str(tmp_path / "saved")
    module.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    texts = ["Question: what is two plus three?", "The quick brown fox."]
    source = tokenizer(texts, padding=True, return_tensors="np")
    target = tokenizer(["five", "jumps over the lazy dog"], padding=True, return_tensors="np")
    decoder_ids = np.concatenate([np.full((2, 1), EOS), target["input_ids"][:, :-1]], axis=1)

    def logits_of(generator):
        params, config = generator.params, generator.config
        states = bart.encode(params, config, source["input_ids"], source["attention_mask"])
        return np.asarray(bart.decode(params, config, decoder_ids, states,
                                      source["attention_mask"], target["attention_mask"]))

    def expected_logits():
        with torch.no_grad():
            return module(input_ids=torch.as_tensor(source["input_ids"]),
                          attention_mask=torch.as_tensor(source["attention_mask"]),
                          decoder_input_ids=torch.as_tensor(decoder_ids),
                          decoder_attention_mask=torch.as_tensor(target["attention_mask"])
                          ).logits.numpy()

    generator = load_generator(folder)
    assert generator.source.endswith("(model.safetensors)")
    assert generator.token_rules == {"forced_eos_id": (EOS,)}  # BartConfig's default
    assert generator.decoder_start_token_id == EOS and generator.pad_token_id == PAD
    expected = expected_logits()
    real = target["attention_mask"].astype(bool)
    assert np.std(expected[real]) > 0.5
    assert_close(logits_of(generator)[real], expected[real], rel=1e-4)

    state = load_file(os.path.join(folder, "model.safetensors"))
    assert "model.shared.weight" in state and "final_logits_bias" in state
    state["model.encoder.embed_tokens.weight"] = state.pop("model.shared.weight")
    del state["final_logits_bias"]
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with torch.no_grad():
        module.final_logits_bias.zero_()
    assert_close(logits_of(load_generator(folder))[real], expected_logits()[real], rel=1e-4)


def test_the_generation_settings_come_from_the_generation_config_or_config_json(tmp_path):
    """bart-large's settings (in generation_config.json, or only in config.json as older
    checkpoints keep them, which transformers 5 still reads) become decoding's token rules
    and beam search's early stopping; a rule cappy does not implement is refused in one
    line."""
    from cappy.engine.weights.tiny_models import make_tiny_bart

    folder = make_tiny_bart(str(tmp_path / "bart"))
    generator = load_generator(folder)
    assert generator.token_rules == RULES
    assert generator.beam_defaults == {"length_penalty": 1.0, "early_stopping": True}
    assert generator.module is bart and generator.is_seq2seq

    generation = json.loads(open(os.path.join(folder, "generation_config.json")).read())
    os.remove(os.path.join(folder, "generation_config.json"))
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    config.update({key: generation[key] for key in (
        "forced_bos_token_id", "forced_eos_token_id", "no_repeat_ngram_size", "num_beams",
        "early_stopping")})
    with open(os.path.join(folder, "config.json"), "w") as file:
        json.dump(config, file)
    legacy = load_generator(folder)
    assert legacy.token_rules == RULES and legacy.beam_defaults["early_stopping"] is True

    config["suppress_tokens"] = [5, 6]
    with open(os.path.join(folder, "config.json"), "w") as file:
        json.dump(config, file)
    with pytest.raises(CappyError) as error:
        load_generator(folder)
    message = str(error.value)
    assert "\n" not in message and "sets suppress_tokens" in message


@pytest.mark.parametrize("change, problem", [
    ({"normalize_before": True}, "normalize_before or add_final_layer_norm"),
    ({"activation_function": "quick_gelu"}, "activation_function 'quick_gelu'"),
    ({"model_type": "marian"}, "model_type 'marian'")],
    ids=["normalize_before", "activation", "marian"])
def test_what_cappy_does_not_compute_is_refused_in_one_line(tmp_path, change, problem):
    from cappy.engine.weights.tiny_models import make_tiny_bart

    folder = make_tiny_bart(str(tmp_path / "bart"))
    config = json.loads(open(os.path.join(folder, "config.json")).read())
    config.update(change)
    with open(os.path.join(folder, "config.json"), "w") as file:
        json.dump(config, file)
    with pytest.raises(CappyError) as error:
        load_generator(folder)
    message = str(error.value)
    assert "\n" not in message and problem in message


# ---- candidates and pretraining data ------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory):
    from cappy.engine.weights.tiny_models import make_tiny_bart

    return make_tiny_bart(str(tmp_path_factory.mktemp("models") / "tiny-bart"))


def test_candidates_of_a_tiny_bart_obey_its_rules_and_score_honestly(tiny_bart):
    """Candidate generation takes a BART like any generator: every decoding's sequences
    start with </s> <s>, repeat no 3-gram and end with </s> (forced at the last position
    where nothing ended them); each candidate's log-likelihood equals an unpadded
    one-example forward pass."""
    from cappy.engine.jobs.candidate_generation import CandidateGenerator
    from cappy.engine.recipes import DECODINGS

    from test_generation import INSTRUCTIONS, check_candidates

    gen = CandidateGenerator(tiny_bart, n_sample_gens=2, per_device_batch_size=8,
                             max_src_len=32, max_tgt_len=12, dtype="float32", verbose=False)
    candidates = gen.generate(INSTRUCTIONS)
    generator = gen.generator
    params, config = generator.params, generator.config
    for row, instruction in enumerate(INSTRUCTIONS):
        check_candidates(candidates[row], n_sample_gens=2)
        source = gen._encode_sources([instruction])[0]  # cut at max_src_len
        for name in ("beam4", "topp0.95"):
            candidate = candidates[row][name][0]
            target = gen._encode_targets([candidate["response"]])[0]
            assert target[0] == BOS and target[-1] == EOS
            ids = np.array([source])
            states = bart.encode(params, config, ids, np.ones_like(ids))
            logits = bart.decode(params, config, np.array([[EOS] + target[:-1]]), states,
                                 np.ones_like(ids))[0]
            log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
            total = float(sum(log_probs[i, token] for i, token in enumerate(target)))
            assert_close(candidate["log_likelihood_sum"], total, rel=1e-5)

    # The whole sequences each decoding's step makes (the texts drop the special tokens).
    examples = [{"src_ids": ids} for ids in gen._encode_sources(INSTRUCTIONS)]
    runs = [jax.jit(lambda batch, settings=settings: gen._generate_step(
        None, params, batch, settings))(gen._collate_sources(examples))
        for settings in (DECODINGS["beam4"], {})]  # beam search, greedy search
    sampled = gen._collate_sources([{**example, **gen._sampling_settings("sampling")}
                                    for example in examples])
    sample = jax.jit(lambda rng: gen._generate_step(rng, params, sampled, {"do_sample": True}))
    runs += [sample(jax.random.PRNGKey(seed)) for seed in range(4)]
    for sequences in runs:
        for sequence in np.asarray(sequences):
            tokens = until_end(sequence, EOS)
            assert tokens[:2] == [EOS, BOS] and tokens[-1] == EOS
            trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
            assert len(trigrams) == len(set(trigrams))


def test_pretraining_data_augmented_by_a_tiny_bart_and_a_tiny_t5_resumes_exactly(
        tiny_bart, tiny_t5, tmp_path):
    """A pretraining build with a tiny BART and a tiny T5 as augmenters (each loaded as
    the build loads generators, cappy.engine.jobs.candidate_generation.CandidateGenerator from the
    settings, once for the three builds) labels both models' responses by ROUGE-L; a
    rerun after a crash and a deleted shard rebuilds every shard byte for byte (each
    batch is sampled from its own seed, whatever ran before)."""
    from rouge_score import rouge_scorer

    from cappy.pretraining import data as pd

    from test_pretraining_data import QA, build, expected_golds, qa_examples, read_rows, \
        shard_bytes

    examples = qa_examples(12)

    def small_loader(spec):
        return iter([dict(example) for example in examples])

    loaded = {}

    def load_once(model, build_settings):  # the build's own loader; compiled once per model
        if model not in loaded:
            loaded[model] = pd._default_generator_loader(model, build_settings)
        return loaded[model]

    settings = dict(specs=[QA], augment_models=(tiny_bart, tiny_t5), augment_samples=2,
                    augment_batch_size=4, augment_max_src_len=32, augment_max_tgt_len=8,
                    augment_dtype="float32", generator_loader=load_once)
    reference_dir = str(tmp_path / "reference")
    reference = build(reference_dir, load=small_loader, **settings)
    kinds = reference["counts"][QA.name]["kinds"]
    assert kinds.get("augment/tiny-bart", 0) > 0 and kinds.get("augment/tiny-t5", 0) > 0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    golds = expected_golds()
    for rows in read_rows(reference_dir, reference).values():
        for row in rows:
            if pd.parse_source(row["source"])[2].startswith("augment/"):
                gold = golds[row["instruction"]][0]
                assert row["response"] and row["response"] != gold
                assert row["label"] == pytest.approx(
                    scorer.score(gold, row["response"])["rougeL"].fmeasure, abs=1e-12)

    out = str(tmp_path / "resumed")

    def crashing_loader(spec):
        for i, example in enumerate(small_loader(spec)):
            if i == 9:
                raise RuntimeError("simulated crash")
            yield example

    with pytest.raises(RuntimeError, match="simulated crash"):
        build(out, load=crashing_loader, **settings)
    listed = [entry["file"] for split in pd.SPLITS
              for entry in pd.read_manifest(out)["shards"][split]]
    assert listed  # some shards were finished before the crash
    os.remove(os.path.join(out, listed[0]))
    manifest = build(out, load=small_loader, **settings)
    assert len(shard_bytes(out)) > len(listed)
    assert shard_bytes(out) == shard_bytes(reference_dir)
    assert manifest["shards"] == reference["shards"]
    assert manifest["counts"] == reference["counts"]
