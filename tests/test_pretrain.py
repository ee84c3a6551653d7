"""Pretraining from scratch: the data stream, the backbone, a run, resuming exactly, errors."""

import itertools
import json
import os
import shutil

import numpy as np
import pytest
from conftest import run_script

import cappy_pretrain
from cappy.engine.weights import tiny_models
from cappy.engine.errors import CappyError
from cappy.engine.weights.cappy_checkpoint import load_cappy
from cappy.pretraining.train import PairStream, find_shards, list_checkpoints, sample_pairs, trim_log

# Short pairs: every batch pads to the same bucket, so each run compiles few shapes.
FACTS = [("2 plus 3", "5", "6"), ("4 plus 1", "5", "3"), ("1 plus 1", "2", "7"),
         ("3 plus 3", "6", "2"), ("5 plus 2", "7", "1"), ("0 plus 4", "4", "9")]


def pair_rows(start, n):
    rows = []
    for i in range(start, start + n):
        question, right, wrong = FACTS[i % len(FACTS)]
        rows.append({"instruction": f"Q{i}: {question}?", "response": right, "label": 1.0,
                     "source": "toy"})
        rows.append({"instruction": f"Q{i}: {question}?", "response": wrong,
                     "label": round(0.1 * (i % 3), 1), "source": "toy"})
    return rows


def write_data(folder, train=(12, 12), validation=8):
    shards = {"train": [], "validation": []}
    os.makedirs(os.path.join(folder, "shards"), exist_ok=True)
    offset = 0
    for split, sizes in (("train", train), ("validation", (validation,))):
        for index, n in enumerate(sizes):
            name = f"shards/{split}-{index:05d}.jsonl"
            rows = pair_rows(offset + (100 if split == "validation" else 0), n // 2)
            offset += n // 2
            with open(os.path.join(folder, name), "w", encoding="utf-8") as file:
                file.writelines(json.dumps(row) + "\n" for row in rows)
            shards[split].append({"file": name, "rows": len(rows)})
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as file:
        json.dump({"shards": shards, "rows": {"train": sum(train)}}, file)
    return str(folder)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("pretraining_data"))


def save_masked_lm(path, config, tokenizer, seed=0):
    """A random RoBERTa masked LM as transformers writes one: PyTorch names, an
    `lm_head` and no regression head, `model.safetensors`."""
    from safetensors.numpy import save_file

    from cappy.engine.models import roberta
    from cappy.engine.weights.files import torch_state

    params = roberta.init_params(config, seed)
    del params["classifier"]
    state = torch_state(params)
    hidden = config.hidden_size
    state.update({"lm_head.dense.weight": np.eye(hidden, dtype=np.float32),
                  "lm_head.bias": np.zeros(config.vocab_size, np.float32)})
    os.makedirs(path, exist_ok=True)
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return make_backbone(str(tmp_path_factory.mktemp("models") / "tiny-mlm"))


def make_backbone(path):
    """A tiny random RoBERTa masked LM: a backbone without a regression head."""
    from transformers import RobertaConfig

    tokenizer = tiny_models.make_scorer_tokenizer(
        [f"{r['instruction']} {r['response']}" for r in pair_rows(0, 120)])
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=66, type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, architectures=["RobertaForMaskedLM"])
    return save_masked_lm(path, config, tokenizer)


def flags(data_dir, output_dir, backbone, *extra):
    return ["--data_dir", data_dir, "--output_dir", output_dir, "--model_name_or_path", backbone,
            "--max_steps", "6", "--per_device_batch_size", "4", "--accumulate_grad_batches", "2",
            "--max_length", "32", "--learning_rate", "1e-3", "--warmup_steps", "2",
            "--shuffle_buffer", "8", "--save_every", "2", "--eval_every", "3", "--log_every", "1",
            "--eval_size", "6", "--eval_per_device_batch_size", "8", "--quiet", *map(str, extra)]


@pytest.fixture(scope="module")
def full_run(data_dir, backbone, tmp_path_factory):
    """Six uninterrupted steps through the command line."""
    output_dir = str(tmp_path_factory.mktemp("runs") / "full")
    done = run_script("cappy_pretrain.py", *flags(data_dir, output_dir, backbone))
    assert done.returncode == 0, done.stderr[-3000:]
    return output_dir


def read_log(output_dir):
    with open(os.path.join(output_dir, "log.jsonl"), encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def final_params(output_dir):
    from flax.serialization import msgpack_restore
    from flax.traverse_util import flatten_dict

    with open(os.path.join(output_dir, "final", "flax_model.msgpack"), "rb") as file:
        return flatten_dict(msgpack_restore(file.read()))


# ---- data ------------------------------------------------------------------------

def test_stream_order_is_a_function_of_the_seed_and_skips_exactly(data_dir):
    shards = find_shards(data_dir)
    assert [rows for _, rows, _ in shards["train"]] == [12, 12]
    stream = PairStream(shards["train"], seed=3, buffer_size=5)
    first = [(os.path.basename(p), n) for p, n, _ in itertools.islice(stream.lines(), 60)]
    again = [(os.path.basename(p), n) for p, n, _ in itertools.islice(stream.lines(), 60)]
    assert first == again  # 60 rows: two and a half passes over 24
    skipped = [(os.path.basename(p), n) for p, n, _ in itertools.islice(stream.lines(17), 43)]
    assert skipped == first[17:]
    other = PairStream(shards["train"], seed=4, buffer_size=5).lines()
    assert [(os.path.basename(p), n) for p, n, _ in itertools.islice(other, 60)] != first
    file_order = [(os.path.basename(p), n) for p, _, _ in shards["train"] for n in range(1, 13)]
    assert first[:24] != file_order  # shuffled...
    assert set(first) == set(file_order)  # ...over every row
    pair = next(stream.pairs(5))
    assert set(pair) == {"instruction", "response", "label"} and isinstance(pair["label"], float)


def test_interleaving_mixes_shards_and_evaluation_samples_all_of_them(data_dir):
    shards = find_shards(data_dir)

    def shards_in_first_rows(interleave):  # no shuffle buffer: interleaving alone
        stream = PairStream(shards["train"], seed=0, buffer_size=1, interleave=interleave)
        return {os.path.basename(p) for p, _, _ in itertools.islice(stream.lines(), 12)}

    assert len(shards_in_first_rows(1)) == 1  # one shard after the other
    assert len(shards_in_first_rows(2)) == 2
    both = shards["train"]  # 12 + 12 rows, one "dataset" each
    sample = sample_pairs(both, 8, seed=0)
    assert len(sample) == 8 and sample == sample_pairs(both, 8, seed=0)
    assert {p["instruction"].split(":")[0] for p in sample} & {f"Q{i}" for i in range(6)}
    assert {p["instruction"].split(":")[0] for p in sample} & {f"Q{i}" for i in range(6, 12)}
    assert len(sample_pairs(both, 100, seed=0)) == 24  # all of them when asked for more


def test_bad_rows_and_shards_are_located(tmp_path):
    folder = write_data(tmp_path / "bad")
    path = os.path.join(folder, "shards", "train-00000.jsonl")
    with open(path, encoding="utf-8") as file:
        lines = file.readlines()
    lines[2] = json.dumps({"instruction": "x", "response": "y", "label": 1.5}) + "\n"
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(lines)
    stream = PairStream(find_shards(folder)["train"], seed=0, buffer_size=1)
    with pytest.raises(CappyError, match=r"train-00000.jsonl:3: field 'label'"):
        list(itertools.islice(stream.pairs(), 24))
    lines[2] = lines[1]
    with open(path, "w", encoding="utf-8") as file:  # more rows than the manifest lists
        file.writelines(lines + lines[:1])
    with pytest.raises(CappyError, match="expected 12 rows"):
        list(itertools.islice(stream.lines(), 30))
    os.remove(os.path.join(folder, "manifest.json"))  # no manifest: the shards are counted
    assert [rows for _, rows, _ in find_shards(folder)["train"]] == [13, 12]
    with pytest.raises(CappyError, match="data folder not found"):
        find_shards(str(tmp_path / "missing"))
    with pytest.raises(CappyError, match="no training rows"):
        find_shards(str(tmp_path))


def test_log_keeps_rows_up_to_the_resumed_checkpoint(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"step": s, "train_loss": 1.0}) + "\n" for s in range(6))
                    + '{"step": 6, "train_lo')  # a line a crash cut short
    trim_log(str(path), 3)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]
    trim_log(str(path), None)  # a fresh start keeps nothing
    assert path.read_text() == ""


# ---- backbone ---------------------------------------------------------------------

def test_backbone_gets_a_seeded_head(backbone):
    model, _ = load_cappy(backbone, new_head_seed=1)
    other, _ = load_cappy(backbone, new_head_seed=2)
    assert model.new_head and model.config.num_labels == 1
    assert model.config.architectures == ["RobertaForSequenceClassification"]
    head = model.params["classifier"]["out_proj"]
    assert head["kernel"].shape == (16, 1) and head["kernel"].dtype == np.float32
    assert not np.allclose(head["kernel"], other.params["classifier"]["out_proj"]["kernel"])
    assert not head["bias"].any()  # RoBERTa's initialisation: zero bias...
    std = np.std(model.params["classifier"]["dense"]["kernel"])
    assert std == pytest.approx(model.config.initializer_range, rel=0.2)  # ...normal weights
    embeddings = [m.params["roberta"]["embeddings"]["word_embeddings"]["embedding"]
                  for m in (model, other)]
    np.testing.assert_array_equal(*embeddings)  # the backbone's own weights, whatever the seed
    with pytest.raises(CappyError, match="no one-output regression head|num_labels"):
        load_cappy(backbone)  # a backbone is not a scorer
    with pytest.raises(CappyError, match="folder not found"):
        load_cappy(os.path.join(os.path.dirname(backbone), "missing"), new_head_seed=0)


# ---- runs -------------------------------------------------------------------------

def test_uninterrupted_run_logs_checkpoints_and_a_loadable_cappy(full_run):
    from cappy import Cappy

    assert [step for step, _ in list_checkpoints(full_run)] == [4, 6]  # the last two kept
    written = [name for _, folder in list_checkpoints(full_run)
               for _, _, files in os.walk(folder) for name in files]
    assert "info.json" in written and not [name for name in written if name.endswith(".pkl")]
    log = read_log(full_run)
    assert [row["step"] for row in log] == [0, 1, 2, 3, 4, 5, 6]
    evals = [row for row in log if "eval_mse" in row]
    assert [row["step"] for row in evals] == [0, 3, 6]
    assert all(np.isfinite(row["eval_mse"]) and row["eval_rows"] == 6 for row in evals)
    assert evals[-1]["eval_mse"] != evals[0]["eval_mse"]  # the model changed
    assert [row["examples_seen"] for row in log[1:]] == [8 * s for s in range(1, 7)]
    rates = [row["learning_rate"] for row in log[1:]]
    assert rates[:3] == pytest.approx([0, 5e-4, 1e-3])  # warm-up from 0 over 2 updates...
    assert np.all(np.diff(rates[2:]) < 0)  # ...then linear decay
    model, _ = load_cappy(os.path.join(full_run, "final"))
    assert model.config.num_labels == 1
    continued, _ = load_cappy(os.path.join(full_run, "final"), new_head_seed=9)  # a Cappy: kept
    assert not continued.new_head
    np.testing.assert_array_equal(continued.params["classifier"]["out_proj"]["kernel"],
                                  model.params["classifier"]["out_proj"]["kernel"])
    scores = Cappy.from_pretrained(os.path.join(full_run, "final")).score(
        ["Q1: 2 plus 3?"] * 2, ["5", "6"])
    assert scores.dtype == np.float32 and np.all(np.isfinite(scores))


def test_stopped_and_resumed_run_ends_where_the_uninterrupted_one_does(
        data_dir, backbone, full_run, tmp_path, capsys):
    output_dir = str(tmp_path / "resumed")
    assert cappy_pretrain.main(flags(data_dir, output_dir, backbone,
                                     "--stop_after_steps", "4")) == 0
    assert [step for step, _ in list_checkpoints(output_dir)] == [2, 4]
    assert not os.path.exists(os.path.join(output_dir, "final"))
    assert cappy_pretrain.main(flags(data_dir, output_dir, backbone)) == 0
    assert "resuming from" in capsys.readouterr().out
    infos = [json.load(open(os.path.join(path, "info.json")))
             for _, path in list_checkpoints(output_dir) + list_checkpoints(full_run)]
    assert [(i["step"], i["examples_seen"]) for i in infos] == [(4, 32), (6, 48)] * 2
    # The same batches in the same order, the same dropout: exactly the same training
    # losses, step by step...
    resumed_log, full_log = read_log(output_dir), read_log(full_run)
    assert [r["step"] for r in resumed_log] == [r["step"] for r in full_log]
    assert ([r.get("train_loss", 0) for r in resumed_log]
            == [r.get("train_loss", 0) for r in full_log])
    # ...and exactly the same parameters at the end, bit for bit.
    resumed, full = final_params(output_dir), final_params(full_run)
    assert resumed.keys() == full.keys()
    for key in full:
        np.testing.assert_array_equal(resumed[key], full[key], err_msg=str(key))
    # Run once more: nothing to do, nothing overwritten.
    assert cappy_pretrain.main(flags(data_dir, output_dir, backbone)) == 0
    assert "already finished" in capsys.readouterr().out


def test_bad_input_stops_with_one_line(data_dir, backbone, full_run, tmp_path, capsys):
    done = run_script("cappy_pretrain.py",
                      *flags(str(tmp_path / "nothing"), str(tmp_path / "out"), backbone))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nothing'}: data folder not found"]

    def error_of(*argv):
        with pytest.raises(SystemExit) as stop:
            cappy_pretrain.main(list(argv))
        assert stop.value.code == 2
        return capsys.readouterr().err

    copy = str(tmp_path / "copy")
    shutil.copytree(full_run, copy)
    assert "has checkpoints (last: step 6)" in error_of(
        *flags(data_dir, copy, backbone, "--no_resume"))
    assert "made with other settings (seed 11111 -> 5)" in error_of(
        *flags(data_dir, copy, backbone, "--seed", "5"))
    assert "--max_steps must be at least 1" in error_of(
        *flags(data_dir, str(tmp_path / "x"), backbone, "--max_steps", "0"))
    assert "--warmup_steps must be in [0, --max_steps=6]" in error_of(
        *flags(data_dir, str(tmp_path / "x"), backbone, "--warmup_steps", "7"))
    os.makedirs(tmp_path / "busy")
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert "not a pretraining folder" in error_of(*flags(data_dir, str(tmp_path / "busy"),
                                                         backbone))
    assert list(os.listdir(copy)) and [s for s, _ in list_checkpoints(copy)] == [4, 6]


def test_a_bad_shard_stops_the_run_after_a_checkpoint_and_says_how_to_rebuild(
        backbone, tmp_path, capsys):
    """A shard is read whole when the stream opens it, before any of it is trained on; a
    bad one stops the run in one line, after a checkpoint of the updates done so far."""
    folder = write_data(tmp_path / "data")
    shards = find_shards(folder)["train"]
    # One shard at a time, unshuffled: the second in the stream's order is opened during the
    # second update (8 pairs each, 12 rows a shard).
    first_path = next(PairStream(shards, seed=11111, buffer_size=1, interleave=1).lines())[0]
    (path,) = [shard[0] for shard in shards if shard[0] != first_path]
    with open(path, "rb") as file:
        lines = file.read().split(b"\n")
    lines[4] = lines[4].replace(b"Q", b"\xff", 1)  # line 5 is not UTF-8
    with open(path, "wb") as file:
        file.write(b"\n".join(lines))
    output_dir = str(tmp_path / "out")
    with pytest.raises(SystemExit) as stop:
        cappy_pretrain.main(flags(folder, output_dir, backbone, "--shuffle_buffer", "1",
                                  "--interleave_shards", "1", "--eval_every", "0"))
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{path}:5: not valid UTF-8" in line
    assert "delete it and run scripts/build_pretraining_data.py again" in line
    assert line.endswith("the run stopped after a checkpoint at step 1: then run the same "
                         "command to resume")
    assert [step for step, _ in list_checkpoints(output_dir)] == [1]


def test_a_shard_whose_bytes_are_not_the_manifests_is_refused(tmp_path):
    import hashlib

    folder = write_data(tmp_path / "data")
    manifest_path = os.path.join(folder, "manifest.json")
    with open(manifest_path, encoding="utf-8") as file:
        manifest = json.load(file)
    entry = manifest["shards"]["train"][0]
    path = os.path.join(folder, entry["file"])
    with open(path, "rb") as file:
        entry["sha256"] = hashlib.sha256(file.read()).hexdigest()
    with open(manifest_path, "w", encoding="utf-8") as file:
        json.dump(manifest, file)
    stream = PairStream(find_shards(folder)["train"], seed=0, buffer_size=1, interleave=1)
    assert len(list(itertools.islice(stream.lines(), 30))) == 30  # intact: read as before
    text = open(path, encoding="utf-8").read()
    with open(path, "w", encoding="utf-8") as file:  # same rows, other bytes
        file.write(text.replace("Q0", "Q9", 1))
    stream = PairStream(find_shards(folder)["train"], seed=0, buffer_size=1, interleave=1)
    with pytest.raises(CappyError, match="its checksum is not the manifest's"):
        list(itertools.islice(stream.lines(), 5))


@pytest.mark.slow  # 40-60 s each here: two fresh processes on two devices
@pytest.mark.parametrize("n_model_shards", [1, 2])
def test_two_devices_resume_exactly(data_dir, backbone, tmp_path, n_model_shards):
    """Data-parallel (pmap) and model-sharded (pjit) runs on two CPU devices."""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    output_dir = str(tmp_path / "two")
    argv = flags(data_dir, output_dir, backbone, "--max_steps", "4", "--eval_every", "4",
                 "--n_model_shards", n_model_shards, "--accumulate_grad_batches", n_model_shards)
    done = run_script("cappy_pretrain.py", *argv, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    uninterrupted = final_params(output_dir)
    shutil.rmtree(os.path.join(output_dir, "final"))  # as if it stopped after step 2
    shutil.rmtree(os.path.join(output_dir, "checkpoints", "step-4"))
    done = run_script("cappy_pretrain.py", *argv, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout and "step-2" in done.stdout
    assert [row["step"] for row in read_log(output_dir)] == [0, 1, 2, 3, 4]
    resumed = final_params(output_dir)
    for key in uninterrupted:  # the same devices: bit for bit
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=str(key))
