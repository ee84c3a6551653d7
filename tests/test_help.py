"""Every command's --help answers without importing the heavy libraries (JAX,
transformers, PyTorch, datasets, nltk, Redco, Flax), so it comes back at once."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = {"jax", "transformers", "torch", "datasets", "nltk", "redco", "flax"}
COMMANDS = [["-m", "cappy"], ["-m", "cappy", "score"], ["-m", "cappy", "rerank"],
            ["-m", "cappy", "finetune"], ["cappy_bigbench.py"], ["cappy_promptsource.py"],
            ["cappy_pretrain.py"]] + [
    [os.path.join("scripts", name)] for name in sorted(os.listdir(os.path.join(REPO, "scripts")))
    if name.endswith(".py")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_imports_nothing_heavy(command):
    done = subprocess.run([sys.executable, "-X", "importtime", *command, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & HEAVY, sorted(imported & HEAVY)
