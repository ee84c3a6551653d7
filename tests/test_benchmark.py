"""scripts/benchmark.py runs every path on the same data and reports figures
that agree with each other (scores, counts); timings themselves are not tested."""

import json
import os
import sys

import numpy as np
import pytest

from benchmarks import harness as benchmark
from cappy.engine.tiny_models import make_scorer_tokenizer, sample_texts
from conftest import run_script


def test_benchmark_script_end_to_end(tmp_path):
    out = tmp_path / "figures.json"
    result = run_script("scripts/benchmark.py", "--model_size", "micro", "--max_length", 128,
                        "--n_prompts", 6, "--train_size", 32,
                        "--per_device_train_batch_size", 4, "--accumulate_grad_batches", 4,
                        "--dropout", 0, "--generation_size", "micro",
                        "--generation_instructions", 3, "--output_file", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("command: python ")
    assert "| cappy |" in result.stdout and "| original (fixed padding) |" in result.stdout
    report = json.loads(out.read_text())
    assert report["command"].endswith(f"--output_file {out}")
    for data_name, entry in report["scoring"].items():
        assert entry["max_tokens"] <= 128
        expected = {"original (fixed padding)", "cappy"}
        assert expected <= set(entry["paths"]), data_name
        for name, figures in entry["paths"].items():
            # every path scores every pair the same as the original path
            assert figures["max_abs_difference_from_original"] < 1e-5, name
            assert figures["pairs_per_second"] == pytest.approx(
                entry["pairs"] / figures["seconds"])
            assert 0 < figures["real_token_fraction"] <= 1, name
        fraction = {name: f["real_token_fraction"] for name, f in entry["paths"].items()}
        assert fraction["cappy"] >= fraction["original (fixed padding)"], data_name
    bigbench = report["scoring"]["bigbench_candidates"]
    assert bigbench["distinct_pairs"] < bigbench["pairs"]  # repeated candidates, as sampled
    # repeated candidates are scored once and rows hold less padding
    fraction = {name: f["real_token_fraction"] for name, f in bigbench["paths"].items()}
    assert fraction["cappy"] > fraction["original (fixed padding)"]
    assert set(report["finetuning"]) == {benchmark.ORIGINAL, benchmark.BUCKETS, benchmark.CAPPY}
    fraction = {name: f["real_token_fraction"] for name, f in report["finetuning"].items()}
    assert 0 < fraction[benchmark.ORIGINAL] <= fraction[benchmark.BUCKETS] <= 1
    assert fraction[benchmark.CAPPY] > fraction[benchmark.ORIGINAL]
    for figures in report["finetuning"].values():
        assert 0 < figures["fraction_of_peak"] and figures["examples_per_second"] > 0
    # without dropout, fixed-width, bucketed and packed finetuning compute the same model
    assert report["finetuned_scores_max_abs_difference"] < 1e-5
    assert 0 < report["matmul_peak_tflops"]
    generation = report["generation"]
    assert generation["instructions"] == 3 and generation["candidates"] == 3 * 17
    assert generation["candidate_tokens"] >= generation["candidates"]  # every one ends
    assert generation["candidate_tokens_per_second"] > 0


def test_promptsource_like_pairs_mix_long_and_short():
    tokenizer = make_scorer_tokenizer(sample_texts())
    pairs = benchmark.promptsource_like_pairs(tokenizer, n_prompts=200, n_choices=4)
    lengths = np.array([len(tokenizer(a, b)["input_ids"]) for a, b in pairs])
    assert len(pairs) > 700  # 4 answer choices per prompt, almost all distinct
    assert 90 < lengths.mean() < 180 and lengths.max() > 300 and lengths.min() < 40


def test_model_flops_counts_real_tokens():
    from transformers import RobertaConfig

    config = RobertaConfig(hidden_size=8, num_hidden_layers=2, intermediate_size=32)
    # per layer and token: 2 * (4 * 8 * 8 + 2 * 8 * 32) + 4 * 8 * length
    assert benchmark.model_flops(config, [3]) == 2 * 3 * (2 * (256 + 512) + 4 * 8 * 3)
    assert benchmark.model_flops(config, [3], training=True) == 3 * benchmark.model_flops(
        config, [3])


@pytest.mark.slow  # two whole processes of each script, 20-40 s here
def test_whole_process_benchmark_runs_both_scripts(tmp_path):
    """Needs an interpreter with transformers<5 for the original script:
    $CAPPY_ORIGINAL_PYTHON (scripts/baselines/requirements-original.txt), or this one."""
    import subprocess

    original = os.environ.get("CAPPY_ORIGINAL_PYTHON", sys.executable)
    has_flax_classes = subprocess.run(
        [original, "-c", "from transformers import FlaxAutoModelForSequenceClassification"],
        capture_output=True).returncode == 0
    if not has_flax_classes:
        pytest.skip("no interpreter with transformers<5: set CAPPY_ORIGINAL_PYTHON")
    out = tmp_path / "processes.json"
    result = run_script("scripts/benchmark_processes.py", "--model_size", "micro",
                        "--train_size", 128, "--max_length", 64, "--repeats", 1,
                        "--work_dir", tmp_path / "work", "--output_file", out)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["seconds"]) == {"original", "cappy"}
    assert all(len(times) == 1 and times[0] > 0 for times in report["seconds"].values())
    assert all(0 <= value <= 1 for value in report["rougeL"].values())
    assert report["speedup"] == pytest.approx(report["seconds"]["original"][0]
                                              / report["seconds"]["cappy"][0])
    assert "| original |" in result.stdout and "| cappy |" in result.stdout
