"""The README's main command: the offline demo runs the whole chain and re-runs cheaply."""

import json
import os

from cappy.bigbench import demo


def test_demo_runs_every_step_and_skips_finished_work(tmp_path, monkeypatch):
    # One task and fewer samples keep this test short; the code path is the demo's own.
    monkeypatch.setattr(demo, "DEMO_GENERATION", {**demo.DEMO_GENERATION, "n_sample_gens": 1})
    monkeypatch.setattr(demo, "DEMO_CAPPY_SETTINGS", {**demo.DEMO_CAPPY_SETTINGS,
                                                      "train_size": 64})
    out = tmp_path / "demo"
    lines = []
    report = demo.run_demo(str(out), log=lines.append, tasks=["tense"])
    text = "\n".join(lines)
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in text
    assert "| Beam Search (beam=4) |" in text and "| tense |" in text
    assert report["tiny-t5"]["n_tasks"] == 1
    result = json.loads((out / "bigbench_cappy_results" / "tiny-t5" / "tense.json").read_text())
    assert result["counts"]["train_examples"] == 64
    assert (out / "cappy_vs_baselines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = os.path.getmtime(out / "bigbench_flan_gens" / "tiny-t5" / "tense_train.jsonl")
    again = []
    demo.run_demo(str(out), log=again.append, tasks=["tense"])
    assert "wrote" not in "\n".join(again)  # candidates were kept
    skipped = [line for line in again if "skip:" in line]  # and the Cappy result too
    assert skipped and all(f"delete {out} to run the demo again" in line
                           and "--overwrite" not in line for line in skipped)
    assert os.path.getmtime(out / "bigbench_flan_gens" / "tiny-t5" / "tense_train.jsonl") == before

    quiet = []
    demo.run_demo(str(out), log=quiet.append, tasks=["tense"], quiet=True)
    assert len(quiet) == 2  # the two tables, no step lines
    assert "| Beam Search (beam=4) |" in quiet[0] and "| tense |" in quiet[1]
