"""Finetune-and-rerank on one task: training data, schedule, ties, results, resume."""

import json
import os

import numpy as np
import pytest
from conftest import assert_close, run_script

from cappy.bigbench import task
from cappy.bigbench.examples import build_finetune_examples
from cappy.engine.rouge import rouge_l
from cappy.engine.jobs.training import learning_rate_schedule


def cand(text, ll=-1.0):
    return {"response": text, "log_likelihood_sum": ll, "log_likelihood_mean": ll}


def row(instruction, refs, texts, idx=0):
    samples = {"beam4": [cand(texts[0])], "sampling": [cand(t) for t in texts[1:3]],
               "temp0.9": [cand(texts[3])], "topk40": [cand(texts[4])],
               "topp0.95": [cand(texts[5])]}
    return {"dataset": "toy", "example_idx": idx, "instruction": instruction,
            "references": refs, "flan_samples": samples}


TRAIN_ROWS = [
    row("name a fruit", ["apple", "pear"], ["apple", "apple", "red apple", "dog", "pear", "x"]),
    row("name a colour", ["red"], ["red", "blue", "blue", "red apple", "green", "red"], 1),
]


def test_finetune_examples_labels_dedup_and_size():
    examples, n_distinct = build_finetune_examples(TRAIN_ROWS, train_size=50, seed=11111)
    assert len(examples) == 50
    distinct = {(e["instruction"], e["response"]): e["label"] for e in examples}
    assert len(distinct) == n_distinct
    # Gold references are 1.0 and never relabelled by an identical candidate.
    assert distinct[("name a fruit", "apple")] == 1.0
    assert distinct[("name a fruit", "pear")] == 1.0
    assert distinct[("name a colour", "red")] == 1.0
    # Candidates carry their ROUGE-L against the references (best over them).
    assert distinct[("name a fruit", "red apple")] == pytest.approx(rouge_l("red apple", ["apple", "pear"]))
    assert distinct[("name a fruit", "dog")] == 0.0
    assert distinct[("name a colour", "red apple")] == pytest.approx(2 / 3)
    # Negatives: a reference of another instruction, label 0, one per gold reference at most.
    negatives = [k for k, v in distinct.items() if v == 0.0 and k[1] in {"apple", "pear", "red"}]
    assert all(k not in {("name a fruit", "apple"), ("name a fruit", "pear"),
                         ("name a colour", "red")} for k in negatives)
    assert len(negatives) <= 3
    # Every distinct example appears, repeated as evenly as train_size allows.
    counts = {}
    for e in examples:
        counts[(e["instruction"], e["response"])] = counts.get((e["instruction"], e["response"]), 0) + 1
    assert set(counts) == set(distinct)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_finetune_examples_deterministic_and_cut():
    a, _ = build_finetune_examples(TRAIN_ROWS, train_size=7, seed=3)
    b, _ = build_finetune_examples(TRAIN_ROWS, train_size=7, seed=3)
    c, _ = build_finetune_examples(TRAIN_ROWS, train_size=7, seed=4)
    assert a == b and len(a) == 7
    assert a != c


def test_paper_schedule_never_decays_and_corrected_does():
    args = dict(learning_rate=2e-5, warmup_rate=0.1, train_size=102400,
                global_micro_batch_size=8, accumulate_grad_batches=16)
    updates = np.arange(800)
    paper = np.array([learning_rate_schedule(**args, mode="paper")(u) for u in updates])
    fixed = np.array([learning_rate_schedule(**args, mode="corrected")(u) for u in updates])
    # As published: still warming up at the last of the 800 updates, 62.5% of the peak.
    assert np.all(np.diff(paper) > 0)
    assert paper[-1] == pytest.approx(2e-5 * 799 / 1280, rel=1e-5)
    assert paper.max() < 0.63 * 2e-5
    # Corrected: peak at 10% of the updates, then linear decay towards zero.
    assert int(np.argmax(fixed)) == 80 and fixed[80] == pytest.approx(2e-5)
    assert fixed[-1] == pytest.approx(2e-5 / 720, rel=1e-4)
    assert np.all(np.diff(fixed[80:]) < 0)


def test_rerank_ties_go_to_the_earliest_candidate():
    r = row("q", ["b"], ["a", "b", "c", "b", "d", "e"])
    scores = {("q", t): s for t, s in {"a": 0.1, "b": 0.9, "c": 0.9, "d": 0.9, "e": 0.2}.items()}
    assert task.rerank_rows([r], scores) == [("b", pytest.approx(0.9))]
    flat = {k: 0.5 for k in scores}
    assert task.rerank_rows([r], flat)[0][0] == "a"


def write_candidates(folder, task):
    folder.mkdir(parents=True, exist_ok=True)
    rows = {"train": TRAIN_ROWS, "validation": [
        row("name a fruit", ["apple"], ["pear", "apple", "apple pie", "x", "y", "z"]),
        row("name a colour", ["red"], ["blue", "red", "green", "red", "x", "y"], 1)]}
    for split, rs in rows.items():
        (folder / f"{task}_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))


def task_args(tmp_path, scorer, *extra):
    return ["--model_name_or_path", scorer, "--bigbench_gen_dir", tmp_path / "gens",
            "--bigbench_gen_model", "gen", "--bigbench_subset_name", "toy",
            "--results_dir", tmp_path / "results", "--train_size", 32,
            "--per_device_batch_size", 4, "--accumulate_grad_batches", 2,
            "--max_length", 64, "--quiet", *extra]


def test_end_to_end_result_files_and_skip(tiny_scorer, tmp_path):
    write_candidates(tmp_path / "gens" / "gen", "toy")
    result = run_script("cappy_bigbench.py", *task_args(tmp_path, tiny_scorer),
                        python_flags=("-X", "importtime"))
    assert result.returncode == 0, result.stderr[-3000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")]
    assert "transformers" in imported
    assert "torch" not in imported  # JAX only: no PyTorch (a second of start-up)
    folder = tmp_path / "results" / "gen"
    saved = json.loads((folder / "toy.json").read_text())
    assert 0.0 <= saved["rougeL"] <= 1.0
    assert saved["counts"]["validation_rows"] == 2
    assert saved["counts"]["train_examples"] == 32 and saved["counts"]["optimizer_updates"] == 4
    assert saved["counts"]["distinct_pairs_scored"] == 11  # 12 candidates, "red" twice in row 2
    assert saved["settings"]["lr_schedule"] == "paper"
    # The saved settings are the run's typed configuration, whole: they rebuild it.
    config = task.parse_args([str(a) for a in task_args(tmp_path, tiny_scorer)])
    assert isinstance(config, task.TaskConfig) and config.train_size == 32 and not config.verbose
    assert task.TaskConfig(**saved["settings"]) == config
    preds = [json.loads(line) for line in (folder / "toy.predictions.jsonl").read_text().splitlines()]
    assert [p["example_idx"] for p in preds] == [0, 1]
    assert np.mean([p["rougeL"] for p in preds]) == pytest.approx(saved["rougeL"])
    for p, r in zip(preds, (["apple"], ["red"])):
        assert p["rougeL"] == pytest.approx(rouge_l(p["choice"], r))
    assert sorted(os.listdir(folder)) == ["toy.json", "toy.predictions.jsonl"]

    again = run_script("cappy_bigbench.py", *task_args(tmp_path, tiny_scorer))
    assert again.returncode == 0 and "skip:" in again.stdout
    assert json.loads((folder / "toy.json").read_text()) == saved


def test_crash_leaves_no_result_and_rerun_finishes(tiny_scorer, tmp_path, monkeypatch):
    write_candidates(tmp_path / "gens" / "gen", "toy")
    args = task.parse_args([str(a) for a in task_args(
        tmp_path, tiny_scorer, "--learning_rate", "0")])

    from cappy.engine.jobs import scoring

    def crash(*a, **k):
        raise RuntimeError("simulated crash while scoring")

    monkeypatch.setattr(scoring.PairScorer, "score", crash)
    with pytest.raises(RuntimeError):
        task.run_task(args, log=lambda *_: None)
    folder = tmp_path / "results" / "gen"
    assert not folder.exists() or os.listdir(folder) == []
    monkeypatch.undo()

    # learning_rate 0: no training, the initial model reranks.
    result = task.run_task(args, log=lambda *_: None)
    assert result["counts"]["optimizer_updates"] == 0
    assert result["timings_s"]["train"] < 5
    assert (folder / "toy.json").exists()


def test_scores_do_not_depend_on_batch_size_or_order(tiny_scorer):
    from cappy.engine.models import roberta
    from cappy.engine.weights.cappy_checkpoint import load_cappy
    from cappy.engine.runtime.mesh import Devices
    from cappy.engine.jobs.scoring import PairScorer

    model, tokenizer = load_cappy(tiny_scorer)
    devices = Devices()
    instructions = [f"question {i} " + "word " * (i * 7 % 40) for i in range(23)]
    responses = [f"answer {i % 5}" + " more" * (i % 4) for i in range(23)]
    base = PairScorer(model, tokenizer, devices, max_length=64,
                      per_device_batch_size=1).score(instructions, responses, model.params)
    big = PairScorer(model, tokenizer, devices, max_length=64,
                     per_device_batch_size=16).score(instructions, responses, model.params)
    perm = np.random.RandomState(0).permutation(23)
    shuffled = PairScorer(model, tokenizer, devices, max_length=64, per_device_batch_size=4).score(
        [instructions[i] for i in perm], [responses[i] for i in perm], model.params)
    assert base.dtype == np.float32
    assert_close(big, base)
    assert_close(shuffled, base[perm])
    # Against the model's output with one pair per row, as the tokenizer pads it
    # (same truncation: some pairs exceed 64).
    encoded = tokenizer(instructions, responses, max_length=64, truncation=True,
                        padding="max_length", return_tensors="np")
    direct = roberta.padded_scores(model.params, model.config, encoded["input_ids"],
                                   encoded["attention_mask"])
    assert max(len(tokenizer(i, r)["input_ids"]) for i, r in zip(instructions, responses)) > 64
    assert_close(base, direct)
