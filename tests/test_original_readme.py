"""The original release's README commands, as written, against tiny local models.

The original README's commands run one after another in a fresh folder laid out as
its reader's would be: the repository's scripts, a tiny random Cappy at
`btan2/cappy-large` and a tiny random T5 at `google/flan-t5-xl` (local folders take the
place of hub ids), and Google Drive's files already downloaded. Two things differ from
the original README, and only these: `--train_size 102400` becomes 128 (one optimizer
update, on a CPU), and the BIG-Bench data is the shipped sample rather than
`python scripts/get_bigbench_data.py`, whose default source is the hub (its offline
`--source pypi` and the hub path are tested in test_bigbench_data.py).
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile

from conftest import promptsource_rows

from cappy.engine.weights.tiny_models import SAMPLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = "auto_categorization"

# In the original README's order (its multi-line commands joined).
PROMPTSOURCE = [
    "bash scripts/download_promptsource_test_data.sh",
    "python cappy_promptsource.py --model_name_or_path btan2/cappy-large",
]
BIGBENCH = [
    "bash scripts/download_bigbench_flan_gens.sh",
    "python scripts/bigbench_flan_generate.py --model_name_or_path google/flan-t5-xl "
    "--n_model_shards 4",
    "XLA_PYTHON_CLIENT_MEM_FRACTION=.95 python cappy_bigbench.py --model_name_or_path "
    "btan2/cappy-large --bigbench_subset_name auto_categorization --bigbench_gen_model "
    "flan-t5-xxl --train_size 102400",
    "python scripts/run_cappy_bigbench.py --cuda_idx 0",
    "python scripts/present_bigbench_baselines.py",
    "python scripts/present_cappy_bigbench_results.py --gen_model_name flan-t5-xxl",
]


def run(command, cwd, n_devices=1):
    """One README line in `cwd`, through bash, with the project's interpreter as `python`
    and `n_devices` CPU devices."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
           "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_original_readme_commands_run_as_written(tmp_path, tiny_scorer, tiny_t5):
    work = tmp_path / "cappy"
    work.mkdir()
    for name in ("scripts", "cappy_promptsource.py", "cappy_bigbench.py"):
        os.symlink(os.path.join(REPO, name), work / name)
    (work / "btan2").mkdir()
    os.symlink(tiny_scorer, work / "btan2" / "cappy-large")
    (work / "google").mkdir()
    os.symlink(tiny_t5, work / "google" / "flan-t5-xl")

    # Table 1: the test file is "downloaded" (already there), then evaluated.
    rows = promptsource_rows(n_examples=2)
    (work / "promptsource_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "already present" in run(PROMPTSOURCE[0], work)
    out = run(PROMPTSOURCE[1], work)
    assert "CB" in out and "RTE" in out and "Average" in out

    # Table 2. Data: the shipped sample, one task.
    data = work / "bigbench_data"
    data.mkdir()
    for split in ("train", "validation"):
        shutil.copy(os.path.join(SAMPLE_DIR, f"{TASK}_{split}.jsonl"), data)
    (data / "subset_names.json").write_text(json.dumps([TASK]))

    # Candidates generated with the model split over 4 devices ...
    run(BIGBENCH[1], work, n_devices=4)
    gens = work / "bigbench_flan_gens"
    assert sorted(os.listdir(gens / "flan-t5-xl")) == [f"{TASK}_train.jsonl",
                                                       f"{TASK}_validation.jsonl"]
    # ... and the authors' zip "downloaded" (here: those files, named as flan-t5-xxl's).
    with zipfile.ZipFile(work / "bigbench_flan_gens.zip", "w") as archive:
        for name in os.listdir(gens / "flan-t5-xl"):
            archive.write(gens / "flan-t5-xl" / name, f"bigbench_flan_gens/flan-t5-xxl/{name}")
    shutil.rmtree(gens / "flan-t5-xl")
    run(BIGBENCH[0], work)
    assert sorted(os.listdir(gens)) == ["flan-t5-xxl"]

    # One task, as written but for the training size.
    command = BIGBENCH[2].replace("--train_size 102400", "--train_size 128")
    out = run(command, work)
    result = json.loads((work / "bigbench_cappy_results" / "flan-t5-xxl" / f"{TASK}.json")
                        .read_text())
    assert 0.0 <= result["rougeL"] <= 1.0 and result["settings"]["train_size"] == 128

    # The batch runner finds that task done; the tables read what the steps wrote.
    out = run(BIGBENCH[3], work)
    assert "1 already finished (skipped)" in out and "summary: 0 done, 1 skipped" in out
    out = run(BIGBENCH[4], work)
    assert "flan-t5-xxl" in out and "Self-Score (sum)" in out
    out = run(BIGBENCH[5], work)
    assert out.splitlines()[0] == "| task | flan-t5-xxl ours | flan-t5-xxl A10G | flan-t5-xxl diff |"
    assert f"| {TASK} | {100 * result['rougeL']:.2f} | 61.21 |" in out
