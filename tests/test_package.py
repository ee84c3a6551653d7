"""The package installs: `pip install` of a copy of the repository into a folder of its
own, then the installed `cappy` command, run from another folder, scores a file with the
installed copy (not this checkout) and finds its package data."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEFT_OUT = shutil.ignore_patterns(".git", ".venv*", "tests", "__pycache__", "demo_run", "cache",
                                  "bigbench_data", "bigbench_flan_gens", "bigbench_cappy_results",
                                  "build", "*.egg-info")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, cappy command): a plain (not editable) install from a copy of the repo.

    No network: no build isolation (the venv's setuptools builds it) and no dependencies
    (the venv has them)."""
    pytest.importorskip("setuptools")
    root = tmp_path_factory.mktemp("install")
    source, site = root / "source", root / "site"
    shutil.copytree(REPO, source, ignore=LEFT_OUT)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--no-build-isolation", "--quiet", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return site, site / "bin" / "cappy"


def run_installed(site, command, cwd):
    env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_package_data_and_modules_are_installed(installed, tmp_path):
    site, _ = installed
    for path in ("cappy/data/paper_results.json", "cappy/data/original_a10g_results.json",
                 "cappy/data/promptsource_templates/anli/templates.yaml",
                 "cappy/data/bigbench_sample/subset_names.json",
                 "cappy/engine/models/roberta.py", "cappy/bigbench/task.py",
                 "cappy/promptsource/evaluate.py", "cappy/pretraining/train.py"):
        assert (site / path).is_file(), path
    assert not (site / "benchmarks").exists() and not (site / "tests").exists()
    probe = ("import cappy; from cappy.paper import bigbench_tasks; "
             "from cappy.promptsource.templates import load_templates; "
             "print(cappy.__file__); print(len(bigbench_tasks()))")
    done = run_installed(site, [sys.executable, "-c", probe], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    where, n_tasks = done.stdout.split()
    assert where.startswith(str(site)) and n_tasks == "45"


def test_installed_command_scores_from_another_folder(installed, tiny_scorer, tmp_path):
    site, command = installed
    assert command.is_file()
    rows = [{"instruction": "What is 2 + 2?", "response": answer} for answer in ("4", "five")]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = run_installed(site, [command, "--help"], cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("usage: cappy ")
    done = run_installed(site, [command, "score", "--model_name_or_path", tiny_scorer,
                                "--input", "pairs.jsonl", "--output", "scored.jsonl"],
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [r["response"] for r in scored] == ["4", "five"]

    from cappy import Cappy

    expected = Cappy.from_pretrained(tiny_scorer).score([r["instruction"] for r in rows],
                                                        [r["response"] for r in rows])
    assert [r["score"] for r in scored] == pytest.approx([float(s) for s in expected], abs=1e-5)
