"""Packed scoring computes the same results as the original's fixed-width path: rows
of several pairs, each distinct pair scored once, the same choices, batch sizes
in tokens. No timings here: see scripts/benchmark.py. (The model itself is
checked against transformers in tests/test_model.py, training in
tests/test_training.py.)"""

import numpy as np
import pytest

from cappy.engine.models import packing, roberta
from cappy.bigbench.task import rerank_rows
from cappy.bigbench.candidates import all_candidates
from cappy.engine.recipes import DECODINGS
from cappy.engine.weights.cappy_checkpoint import load_cappy
from cappy.engine.runtime.mesh import Devices
from cappy.engine.jobs.scoring import PairScorer, collate_pairs, encode_pairs
from cappy.engine.weights.tiny_models import sample_texts
from conftest import assert_close


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


def test_scoring_equals_fixed_width_scoring_and_same_choices(tiny):
    """Packed rows, each pair once, pick what the original's path picks: every pair
    padded to max_length, in input order, duplicates scored again."""
    model, tokenizer = tiny
    rows = candidate_rows()
    pairs = [(row["instruction"], cand["response"]) for row in rows
             for cand in all_candidates(row)]
    ours = PairScorer(model, tokenizer, Devices(), max_length=128,
                      per_device_batch_size=4)
    distinct = list(dict.fromkeys(pairs))
    assert len(distinct) < len(pairs)
    our_scores = ours.score([p[0] for p in distinct], [p[1] for p in distinct])

    encoded = encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], 128,
                           "longest_first")
    original = []
    for start in range(0, len(encoded), 4):
        batch = collate_pairs(encoded[start:start + 4], tokenizer.pad_token_id, 128,
                              bucketed=False)
        assert batch["input_ids"].shape[1] == 128
        original.extend(np.asarray(roberta.padded_scores(
            model.params, model.config, batch["input_ids"], batch["attention_mask"])))
    original_of = dict(zip(pairs, original))
    assert_close(our_scores, [original_of[p] for p in distinct])
    ours_of = dict(zip(distinct, our_scores.tolist()))
    assert ([c for c, _ in rerank_rows(rows, ours_of)]
            == [c for c, _ in rerank_rows(rows, original_of)])


def test_scorer_scores_each_distinct_pair_once(tiny, monkeypatch):
    model, tokenizer = tiny
    texts = sample_texts()
    instructions = [texts[0], texts[1], texts[0], texts[2], texts[0]]
    responses = ["yes", "no", "yes", "maybe", "no"]
    scorer = PairScorer(model, tokenizer, Devices(), max_length=128)
    seen = []
    score_distinct = scorer._score_distinct
    monkeypatch.setattr(scorer, "_score_distinct",
                        lambda i, r, *a: seen.append(list(zip(i, r))) or score_distinct(i, r, *a))
    scores = scorer.score(instructions, responses, model.params)
    assert seen == [list(dict.fromkeys(zip(instructions, responses)))]
    assert scores[0] == scores[2] and len(set(scores.tolist())) == 4
    alone = scorer.score(instructions[3:4], responses[3:4], model.params)
    assert_close([scores[3]], [alone[0]])


def test_batch_tokens_follow_the_batch_size_capped_only_on_cpus(tiny, monkeypatch):
    """A packed batch holds per_device_batch_size x max_length tokens (the original's
    batch of padded pairs); only CPUs cap it at CPU_TOKENS_PER_BATCH."""
    from cappy.engine.jobs import scoring

    model, tokenizer = tiny
    devices = Devices()
    big = PairScorer(model, tokenizer, devices, max_length=512, per_device_batch_size=32)
    small = PairScorer(model, tokenizer, devices, max_length=512, per_device_batch_size=2)
    assert big.tokens_per_batch() == PairScorer.CPU_TOKENS_PER_BATCH < 32 * 512
    assert small.tokens_per_batch() == 2 * 512
    monkeypatch.setattr(scoring.jax, "default_backend", lambda: "gpu")
    assert big.tokens_per_batch() == 32 * 512
    assert packing.rows_per_batch(512, big.tokens_per_batch()) == 32


SCORE_ON_DEVICES = """
import json, sys
import jax
from cappy.engine.weights.cappy_checkpoint import load_cappy
from cappy.engine.runtime.mesh import Devices
from cappy.engine.jobs.scoring import PairScorer
from cappy.engine.weights.tiny_models import sample_texts
model, tokenizer = load_cappy(sys.argv[1])
devices = Devices(int(sys.argv[2]))
scorer = PairScorer(model, tokenizer, devices, max_length=128, per_device_batch_size=1,
                    params_sharding_rules=devices.sharding_rules(model.params))
texts = sample_texts()
scores = scorer.score(texts[:40], [t[:5 + 9 * i] for i, t in enumerate(texts[40:80])],
                      model.params)
placed = scorer.device_params(model.params)
split = sum(1 for x in jax.tree.leaves(placed) if x.addressable_shards[0].data.shape != x.shape)
print(json.dumps([split, scores.tolist()]))
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
    # the parameters really were split over the mesh with model shards, and only then
    assert results["model"][0] > 0 and results["data"][0] == 0 and results["one"][0] == 0
    base = np.asarray(results["one"][1])
    assert np.std(base) > 1e-3
    for name in ("data", "model"):
        assert_close(results[name][1], base)


def test_pairs_are_encoded_as_the_tokenizer_encodes_them():
    """encode_pairs tokenizes each distinct text once and assembles the pairs with the
    tokenizer's post-processor; the ids are those of tokenizer(instruction, response):
    cut from either side, left whole, with instructions shared by many responses."""
    from cappy.engine.weights.tiny_models import make_scorer_tokenizer

    tokenizer = make_scorer_tokenizer(sample_texts())
    texts = sample_texts()
    rng = np.random.default_rng(0)
    instructions = [" ".join(texts[i:i + int(rng.integers(1, 12))])
                    for i in rng.integers(0, len(texts) - 12, 120)] * 2
    responses = [texts[j][:int(rng.integers(1, 400))]
                 for j in rng.integers(0, len(texts), 240)]
    tokenizer("a", "b", max_length=8, truncation=True)  # a last call that cut: not carried
    for side in ("right", "left"):
        tokenizer.truncation_side = side
        for max_length in (48, 512):
            expected = tokenizer(instructions, responses, max_length=max_length,
                                 truncation=True)["input_ids"]
            assert sum(len(ids) == max_length for ids in expected) > 5  # pairs were cut
            got = encode_pairs(tokenizer, instructions, responses, max_length, "longest_first")
            assert [example["input_ids"] for example in got] == expected, (side, max_length)
        whole = encode_pairs(tokenizer, instructions, responses, 48, "longest_first",
                             truncate=False)
        assert [e["input_ids"] for e in whole] == tokenizer(instructions, responses)["input_ids"]
