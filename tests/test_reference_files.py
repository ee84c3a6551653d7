"""cappy against reference files that the original release's own code wrote
(tests/data/original_references.json, scripts/baselines/make_original_references.py):
the same check as tests/test_original.py's at learning rate 0, for stacks on which the
original's own stack cannot run beside cappy's (the Python 3.12 and 3.13 legs of CI,
scripts/test_leg.sh). The tiny Cappy is rebuilt here; its fingerprint must be the one the
file was made on, so that a stack that builds other weights fails as that, not as
different choices."""

import json
import os

import pytest

from benchmarks.harness import bigbench_task_flags
from cappy.engine.weights import tiny_models
from conftest import REPO, assert_close, run_script

REFERENCES = os.path.join(REPO, "tests", "data", "original_references.json")


@pytest.fixture(scope="module")
def references():
    with open(REFERENCES, encoding="utf-8") as f:
        return json.load(f)


def test_the_tiny_cappy_is_the_one_the_references_were_made_on(tiny_scorer, references):
    assert tiny_models.fingerprint(tiny_scorer) == references["tiny_cappy_fingerprint"], (
        "this stack builds another tiny Cappy than the one tests/data/original_references.json "
        "was made on (scripts/baselines/make_original_references.py)")


def test_bigbench_choices_at_learning_rate_0_are_the_recorded_originals(tiny_scorer,
                                                                        references, tmp_path):
    """Every instruction's choice among its 17 candidates, its score and the task's
    ROUGE-L, as the original's own scoring recorded them."""
    recorded = references["bigbench_learning_rate_0"]
    flags = bigbench_task_flags(tiny_scorer, tmp_path, *recorded["flags"])
    done = run_script("cappy_bigbench.py", *flags, "--results_dir", tmp_path / "cappy", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "cappy" / recorded["generator"]
    ours = [json.loads(line) for line in open(folder / f"{recorded['task']}.predictions.jsonl",
                                              encoding="utf-8")]
    assert [p["choice"] for p in ours] == recorded["choices"]
    assert_close([p["score"] for p in ours], recorded["scores"])
    rouge = json.loads((folder / f"{recorded['task']}.json").read_text())["rougeL"]
    assert rouge == pytest.approx(recorded["rougeL"], abs=1e-12)  # the same choices: one value
