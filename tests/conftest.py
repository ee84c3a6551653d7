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

# A suite started in the background of a non-interactive shell (`bash .ci/run &`, nohup)
# inherits SIGINT ignored, and so would every process a test starts, which the Ctrl-C
# tests send it to. Caught here, it is back to the default in each child.
import signal  # noqa: E402

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Compile time dominates tiny models on a CPU.
jax.config.update("jax_disable_most_optimizations", True)

from cappy.engine.weights import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory):
    return tiny_models.make_tiny_seq2seq(str(tmp_path_factory.mktemp("models") / "tiny-t5"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    return tiny_models.make_tiny_causal_lm(str(tmp_path_factory.mktemp("models") / "tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_scorer(tmp_path_factory):
    return tiny_models.make_tiny_scorer(str(tmp_path_factory.mktemp("models") / "tiny-cappy"))


@pytest.fixture(scope="session")
def original_python():
    """The interpreter of the original release's stack (transformers 4.57.6's Flax classes,
    Redco 0.4.13; scripts/setup_original.sh): what the references are computed with.
    Missing, the tests that need it skip (and fail in CI: `pytest_runtest_makereport`)."""
    from benchmarks.harness import original_python as find

    path, problem = find()
    if problem:
        pytest.skip(problem)
    return path


# The reason a test skips for what this machine cannot give (see pytest_runtest_makereport).
ENVIRONMENT = "environment: "


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With CAPPY_NO_SKIPS=1 (.ci/run sets it, having installed every reference: PyTorch,
    the original release's stack, the BIG-Bench sdist) a skipped test fails, saying what
    was missing: in CI no claim goes quietly unchecked. The one exception is what the
    machine itself cannot give and CI cannot install (a skip whose reason starts with
    ENVIRONMENT: mounting a small file system needs root), which stays a skip, shown in
    the summary."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CAPPY_NO_SKIPS") == "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        if str(reason).startswith(("Skipped: " + ENVIRONMENT, ENVIRONMENT)):
            return
        report.outcome = "failed"
        report.longrepr = f"skipped where CAPPY_NO_SKIPS=1: {reason}"


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


def assert_close(actual, expected, rel=1e-5, floor=1.0, err_msg=""):
    """`actual` equals `expected` within `rel` times their scale: the largest |expected|,
    or `floor` where that is smaller.

    Two float32 computations of the same values (another library's kernels, another
    summation order: packing, batching, devices) differ by float32 rounding, which
    grows with the magnitude of what is compared: about 1e-7 relative per operation
    (float32's epsilon is 1.2e-7), 1e-6 after a few layers. An absolute tolerance fixed
    in advance is either loose on small values or flaky on large ones (a logit of 12
    off by 1.0e-5 failed an atol of 1e-5 once). The default, 1e-5 of the scale, is about
    ten times the rounding seen; a real bug (a dropped bias, a wrong mask) moves values
    by a percent or more of their scale. `floor` is the magnitude of what the values are
    computed from (normalised activations are about 1): a score of 0.005 made from
    them carries their rounding, not 0.005's."""
    import numpy as np

    expected = np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, floor)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=0,
                               atol=rel * scale, err_msg=err_msg)
