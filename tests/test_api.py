"""Cappy as a library and a command: backends, order, truncation, rerank, finetune, bad rows."""

import json
import os

import numpy as np
import pytest

from cappy import Cappy, cli
from cappy.engine.rouge import rouge_l
from cappy.engine.jobs.scoring import encode_pairs

from conftest import assert_close

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INSTRUCTIONS = ["Is the sky blue? " * k for k in range(1, 12)] + [
    "Name a fruit.", "Sort: banana apple", "Q: How many legs does a spider have?\nA:"]
RESPONSES = ["yes", "no", "maybe so", "a much longer response here, with more words in it",
             "x", "eight", "the sea", "apple banana", "8", "red", "blue sky today",
             "apple", "apple banana", "eight"]


@pytest.fixture(scope="module")
def flax_cappy(tiny_scorer):
    return Cappy.from_pretrained(tiny_scorer, max_length=48, batch_size=4)


@pytest.fixture(scope="module")
def torch_cappy(tiny_scorer):
    pytest.importorskip("torch", reason="the torch backend needs PyTorch (pip install "
                                          "'.[torch]')")
    return Cappy.from_pretrained(tiny_scorer, backend="torch", max_length=48, batch_size=4)


def test_backends_agree_on_the_same_weights(flax_cappy, torch_cappy):
    a = flax_cappy.score(INSTRUCTIONS, RESPONSES)
    b = torch_cappy.score(INSTRUCTIONS, RESPONSES)
    assert a.dtype == np.float32 and b.dtype == np.float32
    assert np.ptp(a) > 1e-3  # the tiny model's scores really differ between pairs
    assert_close(a, b)


def test_scores_keep_input_order_whatever_the_batch_size(flax_cappy, torch_cappy):
    for cappy in (flax_cappy, torch_cappy):
        base = cappy.score(INSTRUCTIONS, RESPONSES, batch_size=1)
        assert_close(cappy.score(INSTRUCTIONS, RESPONSES, batch_size=5), base)
        perm = np.random.RandomState(1).permutation(len(INSTRUCTIONS))
        shuffled = cappy.score([INSTRUCTIONS[i] for i in perm], [RESPONSES[i] for i in perm],
                               batch_size=3)
        assert_close(shuffled, base[perm])


def test_truncation_cuts_the_instruction_before_the_response(flax_cappy):
    tok = flax_cappy.tokenizer
    long_instruction = "word " * 200
    response = "the answer is five apples"
    (enc,) = encode_pairs(tok, [long_instruction], [response], 32, "instruction_first")
    resp_ids = tok(response, add_special_tokens=False)["input_ids"]
    assert len(enc["input_ids"]) == 32
    assert enc["input_ids"][-len(resp_ids) - 1:-1] == resp_ids  # response whole, before </s>
    # The instruction kept its beginning.
    instr_ids = tok(long_instruction, add_special_tokens=False)["input_ids"]
    kept = 32 - len(resp_ids) - tok.num_special_tokens_to_add(pair=True)
    assert enc["input_ids"][1:1 + kept] == instr_ids[:kept]
    # A response longer than the budget: nothing of the instruction is left, the response is cut.
    (enc,) = encode_pairs(tok, ["short question"], ["word " * 100], 16, "instruction_first")
    body = enc["input_ids"]
    assert len(body) == 16 and body[1] == tok.sep_token_id and body[2] == tok.sep_token_id
    # Short pairs are encoded exactly like the tokenizer's own pair encoding.
    (short,) = encode_pairs(tok, ["Name a fruit."], ["apple"], 48, "instruction_first")
    assert short["input_ids"] == tok("Name a fruit.", "apple")["input_ids"]
    # Scores of over-long inputs are those of the truncated text.
    s = flax_cappy.score([long_instruction, long_instruction], [response, response + " indeed"])
    assert np.all(np.isfinite(s)) and s[0] != s[1]


def test_rank_and_classify_ties_keep_candidate_order(flax_cappy):
    candidates = ["no", "yes", "no", "maybe"]
    ranked = flax_cappy.rank("Is the sky blue?", candidates)
    scores = flax_cappy.score(["Is the sky blue?"] * 4, candidates)
    assert [c for c, _ in ranked] == [candidates[i] for i in np.argsort(-scores, kind="stable")]
    assert [s for _, s in ranked] == sorted(scores.tolist(), reverse=True)
    positions = [i for i, (c, _) in enumerate(ranked) if c == "no"]
    assert positions == sorted(positions)
    assert flax_cappy.classify("Is the sky blue?", candidates) == ranked[0][0]
    assert flax_cappy.classify("q", ["same", "same"]) == "same"


def write_rows(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def run_cli(*args):
    try:
        return cli.main([str(a) for a in args])
    except SystemExit as stop:
        return stop.code


def test_rerank_command_hand_checked(tiny_scorer, tmp_path, flax_cappy):
    rows = [{"instruction": "Name a fruit.", "candidates": ["dog", "apple", "dog"],
             "references": ["apple", "pear"]},
            {"instruction": "Sort: banana apple", "candidates": ["apple banana", "banana"]}]
    src, out = write_rows(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert run_cli("rerank", "--model_name_or_path", tiny_scorer, "--input", src,
                   "--output", out, "--max_length", 48) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    for row, result in zip(rows, got):
        expected = flax_cappy.score([row["instruction"]] * len(row["candidates"]),
                                    row["candidates"])
        assert_close(result["scores"], expected)
        assert result["best"] == row["candidates"][int(np.argmax(expected))]
        assert result["candidates"] == row["candidates"]
    # Duplicated candidates score alike; ROUGE-L of the choice and of the first candidate.
    assert got[0]["scores"][0] == got[0]["scores"][2]
    assert got[0]["rougeL_first"] == 0.0
    assert got[0]["rougeL_best"] == pytest.approx(rouge_l(got[0]["best"], ["apple", "pear"]))
    assert "rougeL_best" not in got[1]


def test_bad_rows_stop_with_one_line_or_are_skipped(tiny_scorer, tmp_path, capsys):
    src = write_rows(tmp_path / "in.jsonl", [
        {"instruction": "a", "response": "b"}, {"instruction": "a"}, "{not json",
        {"instruction": "c", "response": "d"}])
    out = tmp_path / "out.jsonl"
    assert run_cli("score", "--model_name_or_path", tiny_scorer, "--input", src,
                   "--output", out) == 2
    err = capsys.readouterr().err.strip().splitlines()  # a progress bar may come first
    assert [line for line in err if "error" in line] == [
        f"error: {src}:2: field 'response': missing or not a string"]
    assert err[-1].startswith("error:")
    assert not out.exists() and list(tmp_path.iterdir()) == [src]

    assert run_cli("score", "--model_name_or_path", tiny_scorer, "--input", src,
                   "--output", out, "--skip_bad_rows") == 0
    assert "2 rows, skipped 2 bad rows" in capsys.readouterr().out
    assert [json.loads(x)["instruction"] for x in out.read_text().splitlines()] == ["a", "c"]

    bad_label = write_rows(tmp_path / "train.jsonl", [
        {"instruction": "a", "response": "b", "label": 1.5}])
    assert run_cli("finetune", "--model_name_or_path", tiny_scorer, "--train_file", bad_label,
                   "--output_dir", tmp_path / "ft") == 2
    assert "train.jsonl:1: field 'label': must be a number in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()

    # Finetuning has one backend; asking for the other is refused, not ignored.
    assert run_cli("finetune", "--model_name_or_path", tiny_scorer, "--train_file", bad_label,
                   "--output_dir", tmp_path / "ft", "--backend", "torch") == 2
    assert "cappy finetune trains with JAX only" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize("command", ["score", "rerank"])
def test_bad_input_is_reported_before_the_model_loads(command, tmp_path):
    """A bad row at the end of the file, a missing input or an output that cannot be
    written (under a file) stop the command before JAX or the model is even imported."""
    import subprocess
    import sys

    rows = [{"instruction": "a", "response": "b", "candidates": ["b"]}] * 3 + [{"x": 1}]
    src = write_rows(tmp_path / "in.jsonl", rows)
    cases = {(str(src), str(tmp_path / "out.jsonl")): f"error: {src}:4: field ",
             (str(tmp_path / "missing.jsonl"), str(tmp_path / "out.jsonl")):
                 f"error: {tmp_path / 'missing.jsonl'}: file not found",
             (str(src), str(src / "out.jsonl")):
                 f"error: --output {src / 'out.jsonl'}: {src} is a file, so nothing can be "
                 "written under it"}
    for (input_file, output_file), message in cases.items():
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "cappy", command, "--model_name_or_path",
             str(tmp_path / "no-model-needed"), "--input", input_file, "--output", output_file],
            capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == 2
        lines = [line for line in done.stderr.splitlines() if not line.startswith("import time")]
        assert len(lines) == 1 and lines[0].startswith(message), lines
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "jax" not in imported
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl"]


def test_finetune_then_reload_in_both_backends(tiny_scorer, tmp_path):
    import shutil

    pytest.importorskip("torch", reason="the torch backend needs PyTorch")
    # Without dropout, whose noise on this tiny wide-initialised model (a score's std
    # under dropout is 0.5) would blur whether 8 updates learned anything.
    calm = tmp_path / "calm-cappy"
    shutil.copytree(tiny_scorer, calm)
    config = json.loads((calm / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (calm / "config.json").write_text(json.dumps(config))
    tiny_scorer = str(calm)
    rng = np.random.RandomState(0)
    rows = [{"instruction": f"Name a thing number {i % 5}.", "response": r,
             "label": float(r in ("apple", "pear"))}
            for i, r in enumerate(rng.choice(["apple", "pear", "dog", "sky"], size=32))]
    train = write_rows(tmp_path / "train.jsonl", rows)
    out = tmp_path / "my-cappy"
    assert run_cli("finetune", "--model_name_or_path", tiny_scorer, "--train_file", train,
                   "--validation_file", train, "--output_dir", out, "--batch_size", 8,
                   "--learning_rate", "1e-3", "--max_length", 48, "--n_epochs", 2) == 0
    summary = json.loads((out / "cappy_finetune.json").read_text())
    assert summary["train_rows"] == 32 and summary["validation_rows"] == 32

    tuned_flax = Cappy.from_pretrained(str(out), max_length=48)
    tuned_torch = Cappy.from_pretrained(str(out), backend="torch", max_length=48)
    ins, resp = [r["instruction"] for r in rows], [r["response"] for r in rows]
    a, b = tuned_flax.score(ins, resp), tuned_torch.score(ins, resp)
    assert_close(a, b)
    labels = np.array([r["label"] for r in rows])
    assert summary["validation_mse"] == pytest.approx(float(np.mean((a - labels) ** 2)), abs=1e-5)
    before = Cappy.from_pretrained(tiny_scorer, max_length=48).score(ins, resp)
    assert np.mean((a - labels) ** 2) < np.mean((before - labels) ** 2)  # it learned
    assert run_cli("finetune", "--model_name_or_path", tiny_scorer, "--train_file", train,
                   "--output_dir", out) == 2  # never overwrites silently
    assert summary["settings"]["lr_schedule"] == "corrected"  # counted in optimizer updates

    # --lr_schedule paper, cappy_bigbench.py's: sized in micro-batches, so with
    # accumulation it decays more slowly over the same updates and trains differently.
    tuned = {}
    for schedule in ("corrected", "paper"):
        folder = tmp_path / f"{schedule}-cappy"
        assert run_cli("finetune", "--model_name_or_path", tiny_scorer, "--train_file", train,
                       "--output_dir", folder, "--batch_size", 4, "--learning_rate", "1e-3",
                       "--max_length", 48, "--accumulate_grad_batches", 2,
                       "--lr_schedule", schedule, "--quiet") == 0
        saved = json.loads((folder / "cappy_finetune.json").read_text())["settings"]
        assert saved["lr_schedule"] == schedule
        tuned[schedule] = Cappy.from_pretrained(str(folder), max_length=48).score(ins, resp)
    assert np.abs(tuned["paper"] - tuned["corrected"]).max() > 1e-4


def test_jax_backend_loads_weights_transformers_wrote(tiny_scorer, tmp_path, flax_cappy):
    """A folder holding only a `pytorch_model.bin` (transformers 4's PyTorch format)
    scores the same."""
    import shutil

    torch = pytest.importorskip("torch", reason="writing pytorch_model.bin needs PyTorch")

    from cappy.engine.weights.cappy_checkpoint import load_cappy, torch_model

    pt_only = tmp_path / "pt-only"
    shutil.copytree(tiny_scorer, pt_only)
    for name in ("model.safetensors", "flax_model.msgpack"):
        (pt_only / name).unlink()
    state = torch_model(load_cappy(tiny_scorer)[0]).state_dict()
    torch.save({name: value.contiguous() for name, value in state.items()},
               pt_only / "pytorch_model.bin")
    assert (pt_only / "pytorch_model.bin").exists()
    converted = Cappy.from_pretrained(str(pt_only), max_length=48)
    # the same parameters read from another format (scored in other batches: rounding)
    assert_close(converted.score(INSTRUCTIONS, RESPONSES),
                 flax_cappy.score(INSTRUCTIONS, RESPONSES))


def test_the_torch_backend_out_of_memory_is_one_line(tiny_scorer, tmp_path, monkeypatch,
                                                     capsys):
    """PyTorch's CUDA out-of-memory error (injected in the model's forward: this machine has
    no GPU) ends `cappy score --backend torch` in the same one line as XLA's, and the output
    file is left as it was."""
    torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch")
    import transformers

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "79.11 GiB of which 1.19 GiB is free.\nIf reserved but unallocated memory is "
            "large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")

    monkeypatch.setattr(transformers.RobertaForSequenceClassification, "forward", exhausted)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"instruction": "2 + 2?", "response": "4"}) + "\n")
    output = tmp_path / "scored.jsonl"
    output.write_text("earlier\n")
    with pytest.raises(SystemExit) as stop:
        cli.main(["score", "--model_name_or_path", tiny_scorer, "--input", str(pairs),
                  "--output", str(output), "--backend", "torch", "--batch_size", "16",
                  "--quiet"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: the device ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB. "
        f"GPU 0 has a total capacity of 79.11 GiB of which 1.19 GiB is free.): lower "
        f"--batch_size (16) or --max_length; --output {output} was left as it was")
    assert output.read_text() == "earlier\n"
    assert sorted(os.listdir(tmp_path)) == ["pairs.jsonl", "scored.jsonl"]
