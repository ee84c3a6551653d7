"""Remake tests/data/original_references.json: what the original release's own code
computes on the tests' tiny Cappy, for the tests that compare with it on stacks where the
original's cannot run (Python 3.12 and 3.13, tests/test_reference_files.py).

Run with cappy's interpreter, once scripts/setup_original.sh has built .venv-original:

    .venv/bin/python scripts/baselines/make_original_references.py

It builds the tiny Cappy as the tests' fixture does, writes one BIG-Bench task's
candidates, runs scripts/baselines/original_cappy_bigbench.py at learning rate 0 (the
pretrained Cappy reranking all 17 candidates) in the original's stack, and records every
instruction's choice and score, the task's ROUGE-L, and the tiny Cappy's fingerprint.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from benchmarks.harness import (REFERENCE_GENERATOR, REFERENCE_TASK,  # noqa: E402
                                bigbench_task_flags, original_python)
from cappy.engine.weights import tiny_models  # noqa: E402

OUTPUT = os.path.join(REPO, "tests", "data", "original_references.json")
LEARNING_RATE_0_FLAGS = ("--learning_rate", 0, "--train_size", 128)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args()
    python, problem = original_python()
    if problem:
        sys.exit(problem)
    with tempfile.TemporaryDirectory() as work:
        scorer = tiny_models.make_tiny_scorer(os.path.join(work, "tiny-cappy"))
        flags = bigbench_task_flags(scorer, work, *LEARNING_RATE_0_FLAGS)
        predictions = os.path.join(work, "original.jsonl")
        subprocess.run([python, os.path.join(REPO, "scripts", "baselines",
                                             "original_cappy_bigbench.py"), *map(str, flags),
                        "--results_dir", os.path.join(work, "results"),
                        "--predictions_file", predictions],
                       check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        rows = [json.loads(line) for line in open(predictions, encoding="utf-8")]
        with open(os.path.join(work, "results", REFERENCE_GENERATOR,
                               f"{REFERENCE_TASK}.json"), encoding="utf-8") as f:
            rouge = json.load(f)["rougeL"]
        reference = {
            "made_by": "scripts/baselines/make_original_references.py",
            "tiny_cappy_fingerprint": tiny_models.fingerprint(scorer),
            "bigbench_learning_rate_0": {
                "task": REFERENCE_TASK, "generator": REFERENCE_GENERATOR,
                "flags": [str(flag) for flag in LEARNING_RATE_0_FLAGS],
                "choices": [row["choice"] for row in rows],
                "scores": [row["score"] for row in rows],
                "rougeL": rouge}}
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(reference, out, indent=1)
        out.write("\n")
    os.replace(tmp, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
