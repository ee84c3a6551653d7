"""The fast paths compute the same results as the original's: scoring through
cappy.fast_roberta with pairs packed into rows, bucketed padding in training,
and float32 scores whatever the compute dtype. No timings here: see
scripts/benchmark.py."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cappy import fast_roberta, packing
from cappy.bigbench_cappy import rerank_rows
from cappy.candidates import DECODINGS, all_candidates
from cappy.scoring import PairScorer, collate_pairs, encode_pairs, load_cappy
from cappy.tiny_models import sample_texts


def realistic_roberta(num_layers=3, hidden=64, heads=4, seed=0, model_type="roberta"):
    """A random RoBERTa (or XLM-RoBERTa) scorer, initialised a little wider than
    RoBERTa's 0.02 so that scores spread (std > 1e-3) while activations stay in a
    trained model's range."""
    import transformers

    config_class, model_class = {
        "roberta": ("RobertaConfig", "FlaxRobertaForSequenceClassification"),
        "xlm-roberta": ("XLMRobertaConfig", "FlaxXLMRobertaForSequenceClassification"),
    }[model_type]
    config = getattr(transformers, config_class)(
        vocab_size=300, hidden_size=hidden, num_hidden_layers=num_layers,
        num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=130,
        num_labels=1, type_vocab_size=1, initializer_range=0.05)
    return getattr(transformers, model_class)(config, seed=seed)


def random_batch(rng, batch, width, pad_id=1, vocab=300):
    lengths = rng.integers(2, width + 1, batch)
    lengths[0] = width  # one full row: no padding at all
    ids = np.full((batch, width), pad_id, np.int32)
    mask = np.zeros((batch, width), np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(3, vocab, length)
        ids[row, 0] = 0
        mask[row, :length] = 1
    return ids, mask


# XLM-RoBERTa, which the fast path also accepts, has the same parameter tree.
@pytest.mark.parametrize("width,model_type", [(5, "roberta"), (16, "roberta"), (64, "roberta"),
                                              (128, "roberta"), (48, "xlm-roberta")])
def test_fast_forward_matches_transformers(width, model_type):
    model = realistic_roberta(model_type=model_type)
    assert model.config.model_type == model_type and fast_roberta.supports(model.config)
    ids, mask = random_batch(np.random.default_rng(width), 6, width)
    expected = np.asarray(model(input_ids=ids, attention_mask=mask, train=False).logits[:, 0])
    got = np.asarray(fast_roberta.roberta_scores(model.params, model.config, ids, mask))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.std(expected) > 1e-3  # the scores differ, so agreement means something


def test_fast_forward_ignores_padding_width():
    """A row scores the same whatever padding follows it (the bucket boundary)."""
    model = realistic_roberta()
    ids, mask = random_batch(np.random.default_rng(0), 4, 20)
    narrow = fast_roberta.roberta_scores(model.params, model.config, ids, mask)
    wide_ids = np.pad(ids, ((0, 0), (0, 108)), constant_values=model.config.pad_token_id)
    wide_mask = np.pad(mask, ((0, 0), (0, 108)))
    wide = fast_roberta.roberta_scores(model.params, model.config, wide_ids, wide_mask)
    np.testing.assert_allclose(np.asarray(narrow), np.asarray(wide), atol=1e-5, rtol=0)


def test_fast_path_is_used_only_where_exact():
    model = realistic_roberta()
    assert fast_roberta.supports(model.config)
    for name, value in (("hidden_act", "gelu_new"), ("num_labels", 2),
                        ("position_embedding_type", "relative_key"), ("model_type", "bert")):
        config = copy.deepcopy(model.config)
        setattr(config, name, value)
        assert not fast_roberta.supports(config), name


def test_bfloat16_compute_gives_float32_scores_close_to_float32():
    model = realistic_roberta()
    ids, mask = random_batch(np.random.default_rng(1), 6, 32)
    full = np.asarray(fast_roberta.roberta_scores(model.params, model.config, ids, mask))
    half = fast_roberta.roberta_scores(model.params, model.config, ids, mask,
                                       dtype=jnp.bfloat16)
    assert half.dtype == jnp.float32
    # bfloat16 keeps 8 bits of mantissa: agreement to a few percent of the spread.
    np.testing.assert_allclose(np.asarray(half), full, atol=0.05 * np.ptp(full) + 1e-3)


def random_pairs(rng, n, longest, vocab=300):
    """Token ids shaped like encoded pairs: <s> first, lengths 3 to `longest`."""
    lengths = rng.integers(3, longest + 1, n)
    return [{"input_ids": [0] + list(rng.integers(3, vocab, length - 1))} for length in lengths]


def test_pack_rows_places_every_pair_once_within_its_row():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(105), 0.6, 2000), 5, 512).astype(int)
    rows = packing.pack_rows(lengths, (256, 512))
    placed = sorted(i for _, row in rows for i in row)
    assert placed == list(range(len(lengths)))
    for width, row in rows:
        assert width in (256, 512)
        assert sum(lengths[i] for i in row) <= width
        assert len(row) <= packing.max_pairs_per_row(width)
        longest = max(lengths[i] for i in row)
        assert (width == 256) == (longest <= 256)  # the narrowest width that holds it
    real = lengths.sum() / sum(width for width, _ in rows)
    assert real > 0.9  # a mix like the benchmark's PromptSource-like one
    assert packing.pack_rows(lengths, (256, 512)) == rows  # deterministic
    with pytest.raises(ValueError, match="513 tokens"):
        packing.pack_rows([12, 513], (256, 512))


def test_computed_positions_count_whole_batches():
    rows = [(256, [0]), (256, [1]), (256, [2]), (512, [3])]
    # 4 rows of 256 or 2 of 512 per 1024-token batch; last batches filled up
    assert packing.computed_positions(rows, 1024) == 4 * 256 + 2 * 512
    assert packing.computed_positions(rows, 256) == 3 * 256 + 1 * 512  # at least a row
    assert packing.rows_per_batch(512, 100) == 1


def test_short_pairs_fill_a_row_up_to_its_slots():
    rows = packing.pack_rows([4] * 40, (64,))
    assert [len(row) for _, row in rows] == [4] * 10  # 64 // MIN_PAIR_TOKENS slots
    assert packing.row_widths(512) == (256, 512) and packing.row_widths(40) == (40,)


@pytest.mark.parametrize("widths", [(32, 64), (64,)])
def test_packed_forward_matches_transformers_pair_by_pair(widths):
    """Pairs sharing a row score what each scores alone in transformers' module."""
    model = realistic_roberta()
    rng = np.random.default_rng(len(widths))
    pairs = random_pairs(rng, 30, 64) + random_pairs(rng, 10, 6)  # some rows fill every slot
    pad_id = model.config.pad_token_id
    ids, mask = pad_rows(pairs, 64, pad_id)
    expected = np.asarray(model(input_ids=ids, attention_mask=mask, train=False).logits[:, 0])
    assert np.std(expected) > 1e-3
    rows = packing.pack_rows([len(p["input_ids"]) for p in pairs], widths)
    assert any(len(row) > 2 for _, row in rows) and any(len(row) == 1 for _, row in rows)
    got = np.full(len(pairs), np.nan, np.float32)
    for width in widths:
        batch_rows = [row for w, row in rows if w == width] + [[]]  # and an empty row
        batch = packing.collate_packed_rows([[pairs[i] for i in row] for row in batch_rows],
                                            width, pad_id)
        scores = np.asarray(fast_roberta.packed_roberta_scores(
            model.params, model.config, batch["input_ids"], batch["segment_ids"],
            batch["position_ids"], batch["first_tokens"]))
        assert scores.dtype == np.float32 and np.all(np.isfinite(scores))
        for row, row_scores in zip(batch_rows, scores):
            got[row] = row_scores[:len(row)]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def pad_rows(pairs, width, pad_id):
    from cappy.batching import pad_batch

    return pad_batch([p["input_ids"] for p in pairs], width, pad_id)


@pytest.fixture(scope="module")
def tiny(tiny_scorer):
    return load_cappy(tiny_scorer)


def candidate_rows(n_rows=6, n_candidates=10, seed=0):
    texts = sample_texts()
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_rows):
        picks = rng.choice(len(texts), n_candidates)
        candidates = [texts[j][:rng.integers(5, 200)] for j in picks]
        candidates[-1] = candidates[0]  # a duplicate, scored once
        samples = {decoding: [{"response": c} for c in candidates[j::len(DECODINGS)]]
                   for j, decoding in enumerate(DECODINGS)}
        rows.append({"instruction": texts[i], "references": [texts[i + 1]],
                     "flan_samples": samples})
    return rows


@pytest.mark.parametrize("fast", [True, False])
def test_scoring_equals_fixed_width_scoring_and_same_choices(tiny, fast):
    """The project's paths (packed rows through the fast forward, or transformers'
    module on bucketed batches; each pair once) pick what the original path
    (transformers' module, every pair padded to max_length) picks."""
    from redco import Deployer

    model, tokenizer = tiny
    rows = candidate_rows()
    pairs = [(row["instruction"], cand["response"]) for row in rows
             for cand in all_candidates(row)]
    deployer = Deployer(jax_seed=0, verbose=False)
    ours = PairScorer(model, tokenizer, deployer, max_length=128, per_device_batch_size=4,
                      fast=fast)
    assert ours.fast == fast
    distinct = list(dict.fromkeys(pairs))
    assert len(distinct) < len(pairs)
    our_scores = ours.score([p[0] for p in distinct], [p[1] for p in distinct], model.params)

    encoded = encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], 128)
    original = []
    for start in range(0, len(encoded), 4):
        batch = collate_pairs(encoded[start:start + 4], tokenizer.pad_token_id, 128,
                              bucketed=False)
        assert batch["input_ids"].shape[1] == 128
        original.extend(np.asarray(model(**batch, train=False).logits[:, 0]))
    original_of = dict(zip(pairs, original))
    np.testing.assert_allclose(our_scores, [original_of[p] for p in distinct], atol=1e-5)
    ours_of = dict(zip(distinct, our_scores.tolist()))
    assert ([c for c, _ in rerank_rows(rows, ours_of)]
            == [c for c, _ in rerank_rows(rows, original_of)])


def test_scorer_scores_each_distinct_pair_once(tiny, monkeypatch):
    from redco import Deployer

    model, tokenizer = tiny
    texts = sample_texts()
    instructions = [texts[0], texts[1], texts[0], texts[2], texts[0]]
    responses = ["yes", "no", "yes", "maybe", "no"]
    scorer = PairScorer(model, tokenizer, Deployer(jax_seed=0, verbose=False), max_length=128)
    seen = []
    score_distinct = scorer._score_distinct
    monkeypatch.setattr(scorer, "_score_distinct",
                        lambda i, r, *a: seen.append(list(zip(i, r))) or score_distinct(i, r, *a))
    scores = scorer.score(instructions, responses, model.params)
    assert seen == [list(dict.fromkeys(zip(instructions, responses)))]
    assert scores[0] == scores[2] and len(set(scores.tolist())) == 4
    alone = scorer.score(instructions[3:4], responses[3:4], model.params)
    np.testing.assert_allclose(scores[3], alone[0], atol=1e-5)


def test_batch_tokens_follow_the_batch_size_capped_only_on_cpus(tiny, monkeypatch):
    """A packed batch holds per_device_batch_size x max_length tokens (the original's
    batch of padded pairs); only CPUs cap it at CPU_TOKENS_PER_BATCH."""
    from redco import Deployer

    from cappy import scoring

    model, tokenizer = tiny
    deployer = Deployer(jax_seed=0, verbose=False)
    big = PairScorer(model, tokenizer, deployer, max_length=512, per_device_batch_size=32)
    small = PairScorer(model, tokenizer, deployer, max_length=512, per_device_batch_size=2)
    assert big.tokens_per_batch() == PairScorer.CPU_TOKENS_PER_BATCH < 32 * 512
    assert small.tokens_per_batch() == 2 * 512
    monkeypatch.setattr(scoring.jax, "default_backend", lambda: "gpu")
    assert big.tokens_per_batch() == 32 * 512
    assert packing.rows_per_batch(512, big.tokens_per_batch()) == 32


def test_bucketed_training_equals_fixed_width_training(tiny_scorer):
    """Padding training batches to their bucket instead of max_length changes
    nothing but floating-point noise: same batches, same parameters.

    Dropout is switched off here: its masks are drawn for the batch's shape, so
    with dropout on, the two paddings give two different (equally valid)
    random draws, as two seeds would.
    """
    from redco import Deployer

    from cappy.training import make_trainer

    model, tokenizer = load_cappy(tiny_scorer)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    texts = sample_texts()
    encoded = encode_pairs(tokenizer, texts[:16], texts[16:32], 128)
    examples = [{**enc, "label": float(i % 3) / 2} for i, enc in enumerate(encoded)]
    batch = collate_pairs(encoded[:4], tokenizer.pad_token_id, 128)
    np.testing.assert_allclose(  # dropout really is off
        model(**batch, dropout_rng=jax.random.PRNGKey(0), train=True).logits,
        model(**batch, train=False).logits, atol=1e-6)
    finals = []
    for bucketed in (True, False):
        trainer = make_trainer(model, tokenizer, Deployer(jax_seed=3, verbose=False),
                               train_size=16, per_device_batch_size=4,
                               accumulate_grad_batches=1, learning_rate=1e-3,
                               lr_schedule="corrected", max_length=128, bucketed=bucketed)
        trainer.train(examples=examples, per_device_batch_size=4, desc=None)
        finals.append(jax.tree.map(lambda x: np.asarray(x[0]), trainer.state.params))

    def largest_difference(a, b):
        return max(float(np.max(np.abs(x - y)))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    assert largest_difference(finals[0], model.params) > 1e-4  # training moved the weights
    assert largest_difference(finals[0], finals[1]) < 1e-5
    scorer = PairScorer(model, tokenizer, Deployer(jax_seed=0, verbose=False), max_length=128)
    scores = [scorer.score(texts[32:48], texts[48:64], params) for params in finals]
    assert np.std(scores[0]) > 1e-3
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)


def test_bfloat16_training_keeps_float32_parameters(tiny_scorer):
    """Mixed precision: compute in bfloat16, parameters and optimizer state in float32."""
    from redco import Deployer

    from cappy.training import host_params, make_trainer

    model, tokenizer = load_cappy(tiny_scorer, dtype="bfloat16")
    texts = sample_texts()
    encoded = encode_pairs(tokenizer, texts[:8], texts[8:16], 64)
    examples = [{**enc, "label": float(i % 2)} for i, enc in enumerate(encoded)]
    trainer = make_trainer(model, tokenizer, Deployer(jax_seed=0, verbose=False), train_size=8,
                           per_device_batch_size=4, accumulate_grad_batches=1,
                           learning_rate=1e-3, lr_schedule="corrected", max_length=64)
    trainer.train(examples=examples, per_device_batch_size=4, desc=None)
    params = host_params(trainer)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype("float32")}
    assert {leaf.dtype for leaf in jax.tree.leaves(trainer.state.opt_state)
            if hasattr(leaf, "dtype") and leaf.ndim > 1} == {np.dtype("float32")}
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree.leaves(params), jax.tree.leaves(model.params)))
    assert 0 < moved < 1  # a finite, real update


SCORE_ON_DEVICES = """
import json, sys
from redco import Deployer
from cappy.scoring import PairScorer, load_cappy
from cappy.tiny_models import sample_texts
model, tokenizer = load_cappy(sys.argv[1])
deployer = Deployer(jax_seed=0, n_model_shards=int(sys.argv[2]), verbose=False)
scorer = PairScorer(model, tokenizer, deployer, max_length=128, per_device_batch_size=1,
                    params_sharding_rules=deployer.get_sharding_rules(model.params))
texts = sample_texts()
scores = scorer.score(texts[:40], [t[:5 + 9 * i] for i, t in enumerate(texts[40:80])],
                      model.params)
print(json.dumps([len(deployer.mesh.devices.flat) if deployer.mesh is not None else 0,
                  scores.tolist()]))
"""


@pytest.mark.slow  # three fresh processes, 10-20 s each here
def test_packed_scoring_on_two_devices_matches_one_device(tiny_scorer):
    """Packed rows split across devices (data parallel) or with the parameters
    sharded over a mesh score what one device scores."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    results = {}
    for name, devices, shards in (("one", 1, 1), ("data", 2, 1), ("model", 2, 2)):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        done = subprocess.run([sys.executable, "-c", SCORE_ON_DEVICES, tiny_scorer, str(shards)],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["model"][0] == 2  # the parameters really were sharded over a mesh
    base = np.asarray(results["one"][1])
    assert np.std(base) > 1e-3
    for name in ("data", "model"):
        np.testing.assert_allclose(results[name][1], base, atol=1e-5, rtol=0)
