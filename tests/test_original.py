"""cappy against the original release's own computation, not against itself: the scripts of
scripts/baselines/ run in the original's stack (transformers 4.57.6's Flax RoBERTa and
tokenizer, Redco 0.4.13; `original_python`), on the same checkpoint folder, which they
read through transformers' own Flax loader. Compared: every row's score, the PromptSource
choices and accuracy, and one BIG-Bench task's choices at learning rate 0 and after
finetuning with dropout off. The tiny Cappy has every bias and LayerNorm parameter drawn
(`cappy.engine.weights.tiny_models.as_trained`)."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from benchmarks.harness import REFERENCE_GENERATOR as GENERATOR
from benchmarks.harness import REFERENCE_TASK as TASK
from benchmarks.harness import bigbench_task_flags as task_flags
from cappy.engine.weights.tiny_models import sample_texts
from conftest import REPO, assert_close, run_script


def run_original(original_python, script, *args):
    done = subprocess.run(
        [original_python, os.path.join(REPO, "scripts", "baselines", script), *map(str, args)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def promptsource_file(path):
    """36 prompts of 3 or 4 choices over two datasets: instructions of 5 to 700 characters
    (some pairs longer than the 64 tokens kept, so truncation is compared too), one choice
    repeated across prompts."""
    texts = sample_texts()
    rng = np.random.default_rng(3)
    rows = []
    for index in range(36):
        instruction = " ".join(texts[index:index + 4])[:int(rng.integers(5, 700))]
        choices = ["yes", "no", texts[index + 50][:int(rng.integers(3, 60))]][:3 + index % 2] \
            + (["maybe"] if index % 2 else [])
        for choice, response in enumerate(choices):
            rows.append({"dataset_name": ("super_glue/cb", "anli")[index % 2],
                         "template_name": f"t{index % 3}", "example_idx": index,
                         "instruction": instruction, "response": response,
                         "label": int(choice == index % len(choices))})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


@pytest.fixture(scope="module")
def promptsource_runs(tiny_scorer, original_python, tmp_path_factory):
    """The original's evaluation of a PromptSource file, and cappy's two commands on it."""
    folder = tmp_path_factory.mktemp("promptsource")
    data = folder / "test.jsonl"
    rows = promptsource_file(data)
    run_original(original_python, "original_cappy_promptsource.py", "--model_name_or_path",
                 tiny_scorer, "--data_file", data, "--max_length", 64, "--output_file",
                 folder / "original.json", "--scores_file", folder / "original_scores.jsonl",
                 "--predictions_file", folder / "original_predictions.jsonl")
    scored = run_script("-m cappy", "score", "--model_name_or_path", tiny_scorer, "--input",
                        data, "--output", folder / "scores.jsonl", "--max_length", 64,
                        "--quiet")
    assert scored.returncode == 0, scored.stderr[-3000:]
    evaluated = run_script("cappy_promptsource.py", "--model_name_or_path", tiny_scorer,
                           "--data_file", data, "--max_length", 64, "--output_file",
                           folder / "cappy.json", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    return rows, folder


def test_every_score_is_the_originals(promptsource_runs, tiny_scorer):
    """The README's claim: scores equal the original release's within float32 rounding
    (1e-5 of their scale), pairs cut at max_length by transformers 4's tokenizer there and
    by cappy's own encoding here."""
    from transformers import AutoTokenizer

    rows, folder = promptsource_runs
    theirs = read_jsonl(folder / "original_scores.jsonl")
    ours = read_jsonl(folder / "scores.jsonl")
    assert [(r["instruction"], r["response"]) for r in ours] == \
        [(r["instruction"], r["response"]) for r in theirs]
    tokenizer = AutoTokenizer.from_pretrained(tiny_scorer)
    lengths = [len(tokenizer(r["instruction"], r["response"])["input_ids"]) for r in rows]
    assert max(lengths) > 64 and min(lengths) < 32  # both cut and short pairs
    expected = np.array([r["score"] for r in theirs])
    assert np.std(expected) > 0.05  # scores that differ, so agreement means something
    assert_close([r["score"] for r in ours], expected)


def test_promptsource_choices_and_accuracy_are_the_originals(promptsource_runs):
    rows, folder = promptsource_runs
    theirs = read_jsonl(folder / "original_predictions.jsonl")
    ours = read_jsonl(folder / "cappy.predictions.jsonl")
    key = lambda p: (p["dataset_name"], p["template_name"], str(p["example_idx"]))  # noqa: E731
    assert [key(p) for p in ours] == [key(p) for p in theirs]
    assert [p["prediction"] for p in ours] == [p["prediction"] for p in theirs]
    assert 0 < sum(p["correct"] for p in theirs) < len(theirs)
    accuracy = json.loads((folder / "cappy.json").read_text())["accuracy"]
    assert accuracy == json.loads((folder / "original.json").read_text())["accuracy"]


def run_cappy_task(scorer, folder, *flags):
    """cappy_bigbench.py's (predictions, ROUGE-L)."""
    done = run_script("cappy_bigbench.py", *task_flags(scorer, folder, *flags), "--results_dir",
                      folder / "cappy", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    return (read_jsonl(folder / "cappy" / GENERATOR / f"{TASK}.predictions.jsonl"),
            json.loads((folder / "cappy" / GENERATOR / f"{TASK}.json").read_text())["rougeL"])


def run_task_both_ways(original_python, scorer, folder, *flags):
    """(cappy's predictions, the original's, both ROUGE-L) for one task."""
    run_original(original_python, "original_cappy_bigbench.py",
                 *task_flags(scorer, folder, *flags), "--results_dir", folder / "original",
                 "--predictions_file", folder / "original.jsonl")
    ours, our_rouge = run_cappy_task(scorer, folder, *flags)
    theirs = read_jsonl(folder / "original.jsonl")
    their_rouge = json.loads((folder / "original" / GENERATOR / f"{TASK}.json").read_text())
    return ours, theirs, (our_rouge, their_rouge["rougeL"])


def test_bigbench_choices_at_learning_rate_0_are_the_originals(tiny_scorer, original_python,
                                                               tmp_path):
    """Reranking alone (the pretrained Cappy): every instruction's choice, its score and
    the task's ROUGE-L as the original's scoring of all 17 candidates gives them."""
    ours, theirs, rouge = run_task_both_ways(original_python, tiny_scorer, tmp_path,
                                             "--learning_rate", 0, "--train_size", 128)
    assert len(ours) == len(theirs) == 8
    assert [p["choice"] for p in ours] == [p["choice"] for p in theirs]
    assert_close([p["score"] for p in ours], [p["score"] for p in theirs])
    assert rouge[0] == pytest.approx(rouge[1], abs=1e-12)


def test_bigbench_finetuning_trains_the_originals_model(tiny_scorer, original_python, tmp_path):
    """Finetuning, dropout off: 4 optimizer updates of 128 examples under the published
    schedule, cappy's packed trainer against Redco's Trainer with every pair padded, at a
    rate that moves the scores; then the same choices and scores. Adam's updates carry
    float32 rounding of the gradients forward, hence 1e-4 of the scores' scale."""
    scorer = tmp_path / "no-dropout"
    shutil.copytree(tiny_scorer, scorer)
    config = json.loads((scorer / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (scorer / "config.json").write_text(json.dumps(config))
    flags = ("--train_size", 512, "--learning_rate", 1e-3)
    ours, theirs, rouge = run_task_both_ways(original_python, scorer, tmp_path / "trained",
                                             *flags)
    before, _ = run_cappy_task(scorer, tmp_path / "untrained", "--learning_rate", 0,
                               "--train_size", 512)
    moved = np.abs(np.array([p["score"] for p in ours]) - [p["score"] for p in before])
    assert moved.max() > 0.05  # the updates changed the model
    assert [p["choice"] for p in ours] == [p["choice"] for p in theirs]
    assert_close([p["score"] for p in ours], [p["score"] for p in theirs], rel=1e-4)
    assert rouge[0] == pytest.approx(rouge[1], abs=1e-12)
