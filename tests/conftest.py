"""Shared fixtures: tiny random models built from configs, never downloaded."""

import os
import sys

# Tests never touch the network: fail fast instead of waiting on a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Each test's commands compile afresh (tests/test_compilation_cache.py checks the cache).
os.environ.setdefault("CAPPY_COMPILATION_CACHE", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Compile time dominates tiny models on a CPU.
jax.config.update("jax_disable_most_optimizations", True)

from cappy.engine import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    return tiny_models.make_tiny_seq2seq(str(tmp_path_factory.mktemp("models") / "tiny-t5"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    return tiny_models.make_tiny_causal_lm(str(tmp_path_factory.mktemp("models") / "tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_scorer(tmp_path_factory):
    return tiny_models.make_tiny_scorer(str(tmp_path_factory.mktemp("models") / "tiny-cappy"))


def run_script(script, *args, env=None, timeout=600, python_flags=()):
    """Run a repo script (or "-m module") in a subprocess; return CompletedProcess (text)."""
    import subprocess

    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
                **(env or {})}
    target = (["-m", script[len("-m "):]] if script.startswith("-m ")
              else [os.path.join(REPO, script)])
    return subprocess.run([sys.executable, *python_flags, *target, *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=full_env,
                          timeout=timeout)


def promptsource_rows(n_examples=3):
    """A tiny PromptSource test file's rows: CB (3 choices) and RTE (2), one template."""
    rows = []
    for dataset, n_choices in (("super_glue/cb", 3), ("super_glue/rte", 2)):
        for example_idx in range(n_examples):
            for choice in range(n_choices):
                rows.append({"dataset_name": dataset, "template_name": "t", "example_idx":
                             example_idx, "instruction": f"Premise {example_idx}. True?",
                             "response": ["yes", "no", "maybe"][choice],
                             "label": int(choice == example_idx % n_choices)})
    return rows
