"""Candidate generation: five decodings, 17 candidates, honest log-likelihoods, resume."""

import json
import math
import os

import numpy as np
import pytest
from conftest import run_script

from cappy.engine.jobs import candidate_generation as generation
from cappy.bigbench import candidates
from cappy.bigbench.candidates import read_candidate_file
from cappy.engine.recipes import DECODINGS

INSTRUCTIONS = [
    "Q: What is two plus three?\nA:",
    "Sort the following words alphabetically: banana apple cherry\nA:",
    "Q: How many legs does a spider have? Think about it carefully and answer with a number.\nA:",
    "Translate into French: the cat sleeps.",
    "Q: True or false: the sun rises in the west.\nA:",
]


def write_task(data_dir, task, n_train=3, n_validation=2):
    os.makedirs(data_dir, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_validation)):
        with open(os.path.join(data_dir, f"{task}_{split}.jsonl"), "w") as f:
            for i in range(n):
                f.write(json.dumps({"dataset": task, "example_idx": i,
                                    "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)],
                                    "references": [f"answer {i}"]}) + "\n")


def direct_log_likelihood(gen, instruction, response):
    """Log-likelihood of `response` with no batching, bucketing or padding at all."""
    import jax

    from cappy.engine.models import causal_lm, t5

    generator = gen.generator
    params, config = generator.params, generator.config
    src = gen.tokenizer(instruction, max_length=gen.max_src_len, truncation=True)["input_ids"]
    tgt = gen._encode_targets([response])[0]
    if gen.is_seq2seq:
        dec_in = [generator.decoder_start_token_id] + tgt[:-1]
        ids = np.array([src])
        states = t5.encode(params, config, ids, np.ones_like(ids))
        logits = t5.decode(params, config, np.array([dec_in]), states, np.ones_like(ids))[0]
    else:
        ids = np.array([src + tgt])
        logits = causal_lm.forward(params, config, ids, np.ones_like(ids))[0]
        logits = logits[len(src) - 1:len(src) - 1 + len(tgt)]
    logp = jax.nn.log_softmax(np.asarray(logits, np.float32), axis=-1)
    total = float(sum(logp[i, t] for i, t in enumerate(tgt)))
    return total, total / len(tgt)


@pytest.fixture(scope="module")
def t5_generator(tiny_t5):
    return generation.CandidateGenerator(
        tiny_t5, n_sample_gens=2, per_device_batch_size=2, max_src_len=32, max_tgt_len=12,
        dtype="float32", verbose=False)


def check_candidates(cands, n_sample_gens):
    assert list(cands) == list(DECODINGS)
    for name, runs in cands.items():
        assert len(runs) == (1 if name == "beam4" else n_sample_gens)
        for c in runs:
            assert isinstance(c["response"], str)
            assert math.isfinite(c["log_likelihood_sum"]) and c["log_likelihood_sum"] < 0
            assert math.isfinite(c["log_likelihood_mean"])
            assert c["log_likelihood_mean"] >= c["log_likelihood_sum"]


def test_seq2seq_candidates_and_log_likelihoods_match_unpadded(t5_generator):
    cands = t5_generator.generate(INSTRUCTIONS)
    assert len(cands) == len(INSTRUCTIONS)
    for row in cands:
        check_candidates(row, n_sample_gens=2)
    # Bucketed, batched, length-sorted scoring equals a plain one-example forward pass.
    for i in (0, 2, 4):
        for name in ("beam4", "topp0.95"):
            c = cands[i][name][0]
            total, mean = direct_log_likelihood(t5_generator, INSTRUCTIONS[i], c["response"])
            assert c["log_likelihood_sum"] == pytest.approx(total, abs=1e-3)
            assert c["log_likelihood_mean"] == pytest.approx(mean, abs=1e-4)


def test_same_seed_same_candidates_and_order_independent_rows(t5_generator):
    t5_generator.reseed(7, "x")
    first = t5_generator.generate(INSTRUCTIONS[:3])
    t5_generator.reseed(7, "x")
    again = t5_generator.generate(INSTRUCTIONS[:3])
    assert first == again
    # Beam search is deterministic: a row's beam candidate does not depend on its batch.
    alone = t5_generator.generate([INSTRUCTIONS[2]])
    assert alone[0]["beam4"][0]["response"] == first[2]["beam4"][0]["response"]


def test_resume_after_crash_matches_uninterrupted_run(t5_generator, tmp_path, monkeypatch):
    data = tmp_path / "data"
    for task in ("task_a", "task_b"):
        write_task(str(data), task)
    out1, out2 = str(tmp_path / "resumed"), str(tmp_path / "straight")
    todo, done = candidates.plan_bigbench_generation(str(data), out1, ["task_a", "task_b"],
                                                     ["train", "validation"])
    assert len(todo) == 4 and not done

    real_generate = t5_generator.generate
    calls = {"n": 0}

    def crash_on_third(instructions, desc=""):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_generate(instructions, desc)

    monkeypatch.setattr(t5_generator, "generate", crash_on_third)
    with pytest.raises(RuntimeError):
        for task, split, rows, path in todo:
            candidates.write_candidates(t5_generator, rows, path, seed=42)
    monkeypatch.setattr(t5_generator, "generate", real_generate)
    assert sorted(os.listdir(out1)) == ["task_a_train.jsonl", "task_a_validation.jsonl"]

    todo, done = candidates.plan_bigbench_generation(str(data), out1, ["task_a", "task_b"],
                                                     ["train", "validation"])
    assert [(t, s) for t, s, _ in done] == [("task_a", "train"), ("task_a", "validation")]
    for task, split, rows, path in todo:
        candidates.write_candidates(t5_generator, rows, path, seed=42)

    todo, _ = candidates.plan_bigbench_generation(str(data), out2, ["task_a", "task_b"],
                                                  ["train", "validation"])
    for task, split, rows, path in todo:
        candidates.write_candidates(t5_generator, rows, path, seed=42)
    for name in sorted(os.listdir(out2)):
        with open(os.path.join(out1, name)) as a, open(os.path.join(out2, name)) as b:
            assert a.read() == b.read(), name
    rows = read_candidate_file(os.path.join(out1, "task_b_validation.jsonl"),
                               need_log_likelihood=True)
    assert rows[0]["dataset"] == "task_b" and rows[0]["references"] == ["answer 0"]


def test_decoder_only_generator(tiny_gpt2):
    gen = generation.CandidateGenerator(
        tiny_gpt2, n_sample_gens=1, per_device_batch_size=2, max_src_len=32, max_tgt_len=8,
        dtype="float32", verbose=False)
    assert not gen.is_seq2seq
    cands = gen.generate(INSTRUCTIONS[:3])
    for row in cands:
        check_candidates(row, n_sample_gens=1)
    for i in range(3):
        c = cands[i]["sampling"][0]
        total, mean = direct_log_likelihood(gen, INSTRUCTIONS[i], c["response"])
        assert c["log_likelihood_sum"] == pytest.approx(total, abs=1e-3)


def test_cli_writes_17_candidates_then_skips(tiny_t5, tmp_path):
    data, out = tmp_path / "data", tmp_path / "gens"
    write_task(str(data), "task_a", n_train=2, n_validation=2)
    (data / "subset_names.json").write_text(json.dumps(["task_a"]))
    args = ["--model_name_or_path", tiny_t5, "--data_dir", data, "--output_dir", out,
            "--max_src_len", 32, "--max_tgt_len", 8, "--dtype", "float32",
            "--per_device_batch_size", 2]
    result = run_script("scripts/bigbench_flan_generate.py", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    folder = out / "tiny-t5"
    assert sorted(os.listdir(folder)) == ["task_a_train.jsonl", "task_a_validation.jsonl"]
    rows = read_candidate_file(str(folder / "task_a_validation.jsonl"), need_log_likelihood=True)
    assert len(rows) == 2
    assert sum(len(v) for v in rows[0]["flan_samples"].values()) == 17
    again = run_script("scripts/bigbench_flan_generate.py", *args)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    data, out = tmp_path / "data", tmp_path / "gens"
    write_task(str(data), "task_a")
    with open(data / "task_a_validation.jsonl", "a") as f:
        f.write('{"instruction": "fine"}\n{"instruction": 3}\n')
    result = run_script("scripts/bigbench_flan_generate.py", "--model_name_or_path", "unused",
                        "--data_dir", data, "--output_dir", out, "--tasks", "task_a")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "task_a_validation.jsonl:4: field 'instruction': must be a string" in lines[0]
    assert not out.exists()

    missing = run_script("scripts/bigbench_flan_generate.py", "--data_dir", data,
                         "--output_dir", out, "--tasks", "no_such_task")
    assert missing.returncode == 2
    assert "no_such_task_train.jsonl: file not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_model_sharded_over_two_devices_matches_one(tiny_t5, tmp_path):
    """--n_model_shards 2 on two forced host devices gives one device's beam candidates."""
    data = tmp_path / "data"
    write_task(str(data), "task_a", n_train=1, n_validation=3)
    common = ["--model_name_or_path", tiny_t5, "--data_dir", data, "--tasks", "task_a",
              "--splits", "validation", "--max_src_len", 32, "--max_tgt_len", 8,
              "--dtype", "float32", "--per_device_batch_size", 2, "--n_sample_gens", 1]
    two = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    one = run_script("scripts/bigbench_flan_generate.py", *common, "--output_dir", tmp_path / "one")
    sharded = run_script("scripts/bigbench_flan_generate.py", *common, "--output_dir",
                         tmp_path / "two", "--n_model_shards", 2, env=two)
    assert one.returncode == 0, one.stderr[-2000:]
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    assert "generating on 2 devices: 1 model copy of 2 devices" in sharded.stderr
    a = read_candidate_file(str(tmp_path / "one" / "tiny-t5" / "task_a_validation.jsonl"),
                            need_log_likelihood=True)
    b = read_candidate_file(str(tmp_path / "two" / "tiny-t5" / "task_a_validation.jsonl"),
                            need_log_likelihood=True)
    for x, y in zip(a, b):
        bx, by = x["flan_samples"]["beam4"][0], y["flan_samples"]["beam4"][0]
        assert bx["response"] == by["response"]
        assert bx["log_likelihood_sum"] == pytest.approx(by["log_likelihood_sum"], abs=1e-4)
