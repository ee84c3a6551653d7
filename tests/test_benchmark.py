"""scripts/benchmark.py runs every path on the same data and reports figures
that agree with each other (scores, counts); timings themselves are not tested. The
original's paths are the release's own code in its own stack (`original_python`)."""

import json

import numpy as np
import pytest

from benchmarks import harness as benchmark
from cappy.engine.weights.tiny_models import make_scorer_tokenizer, sample_texts
from conftest import run_script


def test_benchmark_script_end_to_end(tmp_path, original_python):
    out = tmp_path / "figures.json"
    result = run_script("scripts/benchmark.py", "--model_size", "micro", "--max_length", 128,
                        "--n_prompts", 6, "--train_size", 32,
                        "--per_device_train_batch_size", 4, "--accumulate_grad_batches", 4,
                        "--dropout", 0, "--learning_rate", 1e-3, "--generation_size",
                        "micro", "--generation_instructions", 3, "--original_python",
                        original_python, "--output_file", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("command: python ")
    assert "| cappy |" in result.stdout and "| original (fixed padding) |" in result.stdout
    report = json.loads(out.read_text())
    assert report["command"].endswith(f"--output_file {out}")
    assert report["original_python"] == original_python and report["original_jax"] == "0.9.2"
    for data_name, entry in report["scoring"].items():
        assert entry["max_tokens"] <= 128
        expected = {"original (fixed padding)", "cappy"}
        assert expected <= set(entry["paths"]), data_name
        scale = max(1.0, entry["largest_abs_score"])
        for name, figures in entry["paths"].items():
            # every path scores every pair as the release's code does, within float32
            # rounding (1e-5 of the scores' scale: tests/conftest.py assert_close)
            assert figures["max_abs_difference_from_original"] < 1e-5 * scale, name
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
    # without dropout, the release's fixed-width and bucketed loops and the packed trainer
    # compute the same model, one that the updates moved far beyond that agreement
    assert report["finetuned_scores_max_abs_difference"] < 1e-5
    assert report["finetuned_scores_moved"] > 1e-2
    assert 0 < report["matmul_peak_tflops"]
    generation = report["generation"]
    assert generation["instructions"] == 3 and generation["candidates"] == 3 * 17
    assert generation["candidate_tokens"] >= generation["candidates"]  # every one ends
    assert generation["candidate_tokens_per_second"] > 0
    # PyTorch's generate() beside it: the same decodings, so as many candidates, each of at
    # least one token
    peer = generation["torch_generate"]
    assert peer["candidate_tokens"] >= generation["candidates"]
    assert generation["tokens_per_second_over_torch"] == pytest.approx(
        generation["candidate_tokens_per_second"] / peer["candidate_tokens_per_second"])


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
def test_whole_process_benchmark_runs_both_scripts(tmp_path, original_python):
    out = tmp_path / "processes.json"
    result = run_script("scripts/benchmark_processes.py", "--model_size", "micro",
                        "--train_size", 128, "--max_length", 64, "--repeats", 1,
                        "--python", original_python, "--work_dir", tmp_path / "work",
                        "--output_file", out)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["seconds"]) == {"original", "cappy"}
    assert all(len(times) == 1 and times[0] > 0 for times in report["seconds"].values())
    assert all(0 <= outcome["rougeL"] <= 1 for outcome in report["outcome"].values())
    assert report["speedup"] == pytest.approx(report["seconds"]["original"][0]
                                              / report["seconds"]["cappy"][0])
    assert "| original |" in result.stdout and "| cappy |" in result.stdout

    # Scoring a PromptSource file: every row's score is the original's (the figure the
    # README quotes from this report).
    out = tmp_path / "promptsource.json"
    result = run_script("scripts/benchmark_processes.py", "--workload", "promptsource",
                        "--model_size", "micro", "--max_length", 64, "--repeats", 1,
                        "--paths", "original,pytorch,cappy_score", "--python", original_python,
                        "--work_dir", tmp_path / "work", "--output_file", out)
    assert result.returncode == 0, result.stderr[-2000:]
    differences = json.loads(out.read_text())["max_abs_score_difference_from_original"]
    assert set(differences) == {"pytorch", "cappy_score"}
    assert all(value < 1e-5 for value in differences.values()), differences
