"""Baseline rows on a hand-checked example, the table, and bad candidate files."""

import json

import pytest
from conftest import run_script

from cappy.bigbench.candidates import task_baselines


def cand(response, ll_sum, ll_mean):
    return {"response": response, "log_likelihood_sum": ll_sum, "log_likelihood_mean": ll_mean}


ROWS = [
    {"dataset": "toy", "example_idx": 0, "instruction": "q1", "references": ["the cat sat"],
     "flan_samples": {
         "beam4": [cand("the cat sat", -5.0, -1.0)],
         "sampling": [cand("a dog", -1.0, -0.5), cand("the cat", -9.0, -3.0)],
         "temp0.9": [cand("cats sat", -2.0, -0.1)],
         "topk40": [cand("mat", -3.0, -2.0)],
         # Ties with "a dog" on the sum: the first maximum in decoding order wins.
         "topp0.95": [cand("the cat sat", -1.0, -0.2)]}},
    {"dataset": "toy", "example_idx": 1, "instruction": "q2",
     "references": ["red apple", "green pear"],
     "flan_samples": {
         "beam4": [cand("green pear", -4.0, -2.0)],
         "sampling": [cand("red", -6.0, -3.0)],
         "temp0.9": [cand("blue sky", -0.5, -0.5)],
         "topk40": [cand("apple", -7.0, -7.0)],
         "topp0.95": [cand("pear green", -8.0, -0.4)]}},
]
# By hand, ROUGE-L F with stemming, best over references:
#   row 1: "the cat sat" 1, "a dog" 0, "cats sat" 0.8 (LCS "cat sat"), "mat" 0
#   row 2: "green pear" 1, "red" 2/3, "blue sky" 0, "apple" 2/3, "pear green" 1/2
EXPECTED = {"beam4": 1.0, "sampling": 1 / 3, "temp0.9": 0.4, "topk40": 1 / 3,
            "topp0.95": 0.75, "self_score_sum": 0.0, "self_score_mean": 0.65}


def test_baselines_hand_checked():
    got = task_baselines(ROWS)
    assert list(got) == list(EXPECTED)
    for row, value in EXPECTED.items():
        assert got[row] == pytest.approx(value, abs=1e-9), row


def write_gens(tmp_path, rows_by_file):
    for rel, rows in rows_by_file.items():
        path = tmp_path / "gens" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = tmp_path / "data"
    data.mkdir()
    (data / "subset_names.json").write_text(json.dumps(["toy", "absent"]))
    return data, tmp_path / "gens"


def test_script_table_and_json(tmp_path):
    data, gens = write_gens(tmp_path, {"flan-t5-small/toy_validation.jsonl": ROWS,
                                       "my-llm/toy_validation.jsonl": ROWS[:1]})
    out = tmp_path / "baselines.json"
    result = run_script("scripts/present_bigbench_baselines.py", "--bigbench_data_dir", data,
                        "--bigbench_gen_dir", gens, "--output_file", out)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "| ROUGE-L, ours (paper) | flan-t5-small | my-llm |"
    beam = next(line for line in lines if line.startswith("| Beam Search"))
    assert beam == "| Beam Search (beam=4) | 100.00 (16.40) | 100.00 |"
    assert "| Self-Score (mean) | 65.00 (16.42) | 80.00 |" in lines
    assert "| tasks averaged | 1/2 | 1/2 |" in lines
    assert "flan-t5-small: missing 1 task(s), not averaged: absent" in result.stdout
    saved = json.loads(out.read_text())
    assert set(saved) == {"flan-t5-small", "my-llm"}
    assert saved["flan-t5-small"]["temp0.9"] == pytest.approx(0.4)
    assert saved["my-llm"]["self_score_sum"] == pytest.approx(0.0)


def test_script_bad_candidate_row(tmp_path):
    bad = json.loads(json.dumps(ROWS))
    del bad[1]["flan_samples"]["topk40"][0]["log_likelihood_mean"]
    data, gens = write_gens(tmp_path, {"flan-t5-small/toy_validation.jsonl": bad})
    out = tmp_path / "baselines.json"
    result = run_script("scripts/present_bigbench_baselines.py", "--bigbench_data_dir", data,
                        "--bigbench_gen_dir", gens, "--output_file", out)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {gens}/flan-t5-small/toy_validation.jsonl:2: field "
        "'flan_samples.topk40[0].log_likelihood_mean': missing or not a number"]
    assert not out.exists()


def test_script_missing_folder(tmp_path):
    (tmp_path / "subset_names.json").write_text("[]")
    result = run_script("scripts/present_bigbench_baselines.py", "--bigbench_data_dir", tmp_path,
                        "--bigbench_gen_dir", tmp_path / "nope")
    assert result.returncode == 2
    assert "candidate folder not found" in result.stderr
