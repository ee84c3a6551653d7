"""The two one-command reproductions, end to end on tiny models, offline, in a fresh
folder: scripts/reproduce_table1.sh (test file already downloaded, then evaluated) and
scripts/reproduce_table2.sh (BIG-Bench data already built, the candidates' zip already
downloaded, baselines, every task through the batch runner, the tables and the plot; the
generate path is scripts/bigbench_flan_generate.py, tested on its own). A second run of
each skips every finished step."""

import json
import os
import subprocess
import sys
import zipfile

from conftest import promptsource_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "toy"


def run(script, cwd, env, *args):
    full_env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu",
                "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=600)


def test_table1(tmp_path, tiny_scorer):
    test_file = tmp_path / "promptsource_test.jsonl"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in promptsource_rows()))
    env = {"MODEL": tiny_scorer, "RESULTS_FILE": str(tmp_path / "results.json")}
    first = run("reproduce_table1.sh", tmp_path, env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "[1/2] the test file: promptsource_test.jsonl\n      present; skipped" in first.stdout
    result = json.loads((tmp_path / "results.json").read_text())
    assert set(result["accuracy"]) == {"super_glue/cb", "super_glue/rte", "Average"}
    assert (tmp_path / "results.predictions.jsonl").is_file()
    table = first.stdout[first.stdout.index("| Dataset | Ours |"):].strip()
    assert "| CB |" in table and "| RTE |" in table

    again = run("reproduce_table1.sh", tmp_path, env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "finished before; its table" in again.stdout
    assert again.stdout.strip().endswith(table)  # the same table, from the saved results

    bad = run("reproduce_table1.sh", tmp_path, {**env, "TEST_DATA": "drive"})
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: TEST_DATA=drive: expected build or download"


def test_table2(tmp_path, tiny_scorer):
    """Data already built, the authors' candidate zip already downloaded (here: small
    hand-made candidate files), then baselines, the task, the tables and the plot."""
    from test_cappy_bigbench import write_candidates

    generator = "flan-t5-small"
    write_candidates(tmp_path / "bigbench_data", TASK)
    (tmp_path / "bigbench_data" / "subset_names.json").write_text(json.dumps([TASK]))
    write_candidates(tmp_path / "made" / generator, TASK)
    with zipfile.ZipFile(tmp_path / "bigbench_flan_gens.zip", "w") as archive:
        for name in os.listdir(tmp_path / "made" / generator):
            archive.write(tmp_path / "made" / generator / name,
                          f"bigbench_flan_gens/{generator}/{name}")
    env = {"MODEL": tiny_scorer}
    task_flags = ["--", "--train_size", "32", "--per_device_batch_size", "4",
                  "--accumulate_grad_batches", "2", "--max_length", "64", "--quiet"]
    first = run("reproduce_table2.sh", tmp_path, env, generator, *task_flags)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[1/5] BIG-Bench data -> bigbench_data\n      complete (1 tasks); skipped" in first.stdout
    assert "bigbench_flan_gens.zip already present" in first.stdout  # the download step
    results = tmp_path / "bigbench_cappy_results"
    for split in ("train", "validation"):
        assert (tmp_path / "bigbench_flan_gens" / generator / f"{TASK}_{split}.jsonl").is_file()
    result = json.loads((results / generator / f"{TASK}.json").read_text())
    assert 0 <= result["rougeL"] <= 1 and result["settings"]["train_size"] == 32
    baselines = json.loads((results / "baselines.json").read_text())
    assert set(baselines[generator]) >= {"beam4", "self_score_sum"}
    report = json.loads((results / "cappy_bigbench.json").read_text())
    assert report[generator]["n_tasks"] == 1
    assert (results / "cappy_bigbench.png").read_bytes()[:4] == b"\x89PNG"
    assert f"| task | {generator} ours | {generator} A10G | {generator} diff |" in first.stdout

    again = run("reproduce_table2.sh", tmp_path, env, generator, *task_flags)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"      {generator}: complete; skipped" in again.stdout
    assert "baselines.json\n      present; skipped" in again.stdout
    assert "0 to run, 1 already finished (skipped)" in again.stdout

    bad = run("reproduce_table2.sh", tmp_path, {"CANDIDATES": "download"}, "my-llm")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: my-llm: the authors' candidates are FLAN-T5's only")
    bad = run("reproduce_table2.sh", tmp_path, {"CANDIDATES": "later"})
    assert bad.returncode == 2 and "expected download or generate" in bad.stderr
