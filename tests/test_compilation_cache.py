"""JAX's persistent compilation cache in cappy's commands: kept per machine, reused by a
later process with the same results, off on request."""

import json
import os

from conftest import run_script

from cappy.engine.runtime import compilation_cache


def test_the_folder_is_per_machine_and_the_switches_are_read(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPPY_COMPILATION_CACHE", "1")
    monkeypatch.setenv("CAPPY_CACHE_DIR", str(tmp_path))
    fingerprint = compilation_cache.machine_fingerprint()
    assert len(fingerprint) == 16 and fingerprint == compilation_cache.machine_fingerprint()
    assert compilation_cache.cache_folder() == str(tmp_path / "jax" / fingerprint)
    monkeypatch.setenv("CAPPY_COMPILATION_CACHE", "off")
    assert compilation_cache.cache_folder() is None
    monkeypatch.setenv("CAPPY_COMPILATION_CACHE", "1")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "users"))
    assert compilation_cache.enable_compilation_cache() is None  # the user's own, for JAX


def test_a_later_process_reuses_the_programs_with_the_same_scores(tiny_scorer, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"instruction": f"question {i}", "response":
                                         "an answer " * (1 + i % 4)}) + "\n" for i in range(9)))
    cache = tmp_path / "cache"
    on = {"CAPPY_COMPILATION_CACHE": "1", "CAPPY_CACHE_DIR": str(cache),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}

    def score(name, env):
        done = run_script("-m cappy", "score", "--model_name_or_path", tiny_scorer, "--input",
                          pairs, "--output", tmp_path / name, "--quiet", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return (tmp_path / name).read_bytes(), done.stderr

    without, _ = score("off.jsonl", {"CAPPY_COMPILATION_CACHE": "0"})
    assert not cache.exists()
    first, _ = score("first.jsonl", on)
    folder = cache / "jax" / compilation_cache.machine_fingerprint()
    programs = sorted(os.listdir(folder))
    assert any(name.startswith("jit_") for name in programs)
    second, stderr = score("second.jsonl", {**on, "JAX_LOG_COMPILES": "1"})
    assert sorted(os.listdir(folder)) == programs
    assert "Persistent compilation cache hit" in stderr
    assert first == second == without
    assert " error" not in stderr.lower() and "\nE1" not in stderr  # no XLA error lines
