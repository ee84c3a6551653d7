"""Checkpoints without transformers' Flax classes: every weights format read, what
the project writes loads in transformers' PyTorch model, what transformers
writes loads here, the truncation policy travels with the checkpoint."""

import json
import os
import shutil

import numpy as np
import pytest

from cappy.engine.weights.cappy_checkpoint import load_cappy, save_cappy
from cappy.engine.weights.files import flatten, read_state, torch_state, unflatten
from cappy.engine.errors import CappyError
from cappy.engine.weights.tiny_models import make_scorer_tokenizer, sample_texts, tiny_scorer_config
from conftest import assert_close

INSTRUCTIONS = ["Name a fruit.", "Is the sky blue? " * 30, "Sort: banana apple",
                "Add two and three, then tell me how you did it. " * 4]
RESPONSES = ["apple", "yes", "apple banana", "Five: I counted three on from two. " * 4]


def scores_of(path, **kwargs):
    from cappy import Cappy

    return Cappy.from_pretrained(str(path), max_length=64, **kwargs).score(INSTRUCTIONS,
                                                                           RESPONSES)


def same_params(a, b):
    fa, fb = flatten(a), flatten(b)
    return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tokenizer():
    return make_scorer_tokenizer(sample_texts())


def pytorch_scores(module, tokenizer, torch):
    with torch.no_grad():
        return [float(module(**tokenizer(i, r, max_length=64, truncation=True,
                                         return_tensors="pt")).logits[0, 0])
                for i, r in zip(INSTRUCTIONS, RESPONSES)]


def loaded_in_pytorch(folder):
    """transformers' PyTorch model from a folder, every parameter read from the file."""
    from transformers import AutoModelForSequenceClassification

    module, info = AutoModelForSequenceClassification.from_pretrained(
        str(folder), output_loading_info=True)
    assert {key: value for key, value in info.items() if value} == {}  # nothing missing,
    return module.eval()  # unexpected, mismatched or left to a fresh initialisation


def test_our_checkpoint_loads_in_transformers_pytorch(tiny_scorer, torch):
    from transformers import AutoTokenizer

    assert {"model.safetensors", "flax_model.msgpack", "config.json"} <= set(
        os.listdir(tiny_scorer))
    module = loaded_in_pytorch(tiny_scorer)
    expected = pytorch_scores(module, AutoTokenizer.from_pretrained(tiny_scorer), torch)
    ours = scores_of(tiny_scorer)
    assert np.ptp(ours) > 1e-3
    assert_close(ours, expected)
    # every bias and LayerNorm parameter is off its initial 0 or 1, so each one read matters
    for name, value in module.state_dict().items():
        if name.endswith("bias") or "LayerNorm" in name:
            initial = 1.0 if "LayerNorm.weight" in name else 0.0
            assert np.min(np.abs(value.numpy() - initial)) > 0 and \
                np.max(np.abs(value.numpy() - initial)) > 0.01, name


def test_a_trained_checkpoint_round_trips_through_pytorch_both_ways(tiny_scorer, tmp_path,
                                                                    torch):
    """A Cappy moved by training, saved here, loads in transformers' PyTorch model with
    every parameter (1e-5 of the scores); PyTorch's save_pretrained of that model loads
    back here with the trained parameters exactly."""
    from transformers import AutoTokenizer

    from cappy.engine.jobs import training
    from cappy.engine.runtime.mesh import Devices
    from test_training import labelled_examples

    model, tokenizer = load_cappy(tiny_scorer)
    trainer = training.finetune(model, tokenizer, Devices(),
                                labelled_examples(tokenizer, 32, 64), seed=0,
                                per_device_batch_size=4, accumulate_grad_batches=2,
                                learning_rate=1e-2, lr_schedule="corrected", max_length=64,
                                progress=False)
    trained, initial = flatten(trainer.host_params()), flatten(model.params)
    assert max(float(np.max(np.abs(trained[key] - initial[key]))) for key in initial) > 1e-3
    trained = trainer.host_params()
    ours = save_cappy(model, tokenizer, trained, str(tmp_path / "trained"))
    module = loaded_in_pytorch(ours)
    expected = pytorch_scores(module, AutoTokenizer.from_pretrained(ours), torch)
    assert np.max(np.abs(np.array(expected) - scores_of(tiny_scorer))) > 1e-2  # it moved
    assert_close(scores_of(ours), expected)

    module.save_pretrained(str(tmp_path / "resaved"))
    tokenizer.save_pretrained(str(tmp_path / "resaved"))
    again, _ = load_cappy(str(tmp_path / "resaved"))
    assert same_params(again.params, trained)


def test_both_written_formats_hold_the_same_parameters(tiny_scorer, tmp_path):
    from_safetensors = load_cappy(tiny_scorer)[0]
    assert from_safetensors.source.endswith("(model.safetensors)")
    msgpack_only = tmp_path / "msgpack"
    shutil.copytree(tiny_scorer, msgpack_only)
    (msgpack_only / "model.safetensors").unlink()
    from_msgpack = load_cappy(str(msgpack_only))[0]
    assert from_msgpack.source.endswith("(flax_model.msgpack)")
    assert same_params(from_safetensors.params, from_msgpack.params)
    np.testing.assert_allclose(scores_of(msgpack_only), scores_of(tiny_scorer), atol=0)


def write_pytorch_bin(module, folder, sharded):
    """`pytorch_model.bin`, or two shards and `pytorch_model.bin.index.json`, as
    transformers 4's save_pretrained(safe_serialization=False) wrote them."""
    import torch

    folder.mkdir(parents=True)
    module.config.save_pretrained(str(folder))
    state = {name: value.contiguous() for name, value in module.state_dict().items()}
    if not sharded:
        torch.save(state, folder / "pytorch_model.bin")
        return
    names = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[::2],
              "pytorch_model-00002-of-00002.bin": names[1::2]}
    weight_map = {}
    for file_name, shard in shards.items():
        torch.save({name: state[name] for name in shard}, folder / file_name)
        weight_map.update({name: file_name for name in shard})
    (folder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("how", ["safetensors", "bin", "sharded safetensors", "sharded bin"])
def test_checkpoints_transformers_writes_load_here(how, tmp_path, tokenizer, torch):
    from transformers import RobertaForSequenceClassification

    config = tiny_scorer_config(tokenizer, initializer_range=0.2)
    torch.manual_seed(0)
    module = RobertaForSequenceClassification(config).eval()
    with torch.no_grad():  # as trained: no bias left at 0, no LayerNorm scale at 1
        for name, value in module.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                value.add_(0.1 * torch.randn_like(value))
    folder = tmp_path / how.replace(" ", "-")
    if "safetensors" in how:
        module.save_pretrained(str(folder), max_shard_size="100KB" if "sharded" in how else "5GB")
    else:  # transformers 5 writes only safetensors: the files transformers 4 wrote
        write_pytorch_bin(module, folder, sharded="sharded" in how)
    tokenizer.save_pretrained(str(folder))
    index = {"sharded safetensors": "model.safetensors.index.json",
             "sharded bin": "pytorch_model.bin.index.json"}.get(how)
    assert index is None or (folder / index).exists()
    encoded = tokenizer(INSTRUCTIONS, RESPONSES, max_length=64, truncation=True,
                        padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = module(**encoded).logits[:, 0].numpy()
    assert_close(scores_of(folder), expected)
    model, _ = load_cappy(str(folder))
    assert model.truncation == "longest_first"  # nothing recorded: the original release's


def test_sharded_and_flax_named_files_load(tiny_scorer, tmp_path):
    """transformers' sharded Flax layout (an index of `/`-joined names) and a
    safetensors file in Flax names (`format: flax`, `.`-joined) read as the rest."""
    from flax.serialization import msgpack_serialize
    from safetensors.numpy import save_file

    flat = flatten(load_cappy(tiny_scorer)[0].params)
    expected = scores_of(tiny_scorer)
    sharded = tmp_path / "sharded-msgpack"
    shutil.copytree(tiny_scorer, sharded)
    for name in ("model.safetensors", "flax_model.msgpack"):
        (sharded / name).unlink()
    keys = sorted(flat)
    weight_map = {}
    for index, part in enumerate((keys[:len(keys) // 2], keys[len(keys) // 2:])):
        file_name = f"flax_model-0000{index + 1}-of-00002.msgpack"
        (sharded / file_name).write_bytes(msgpack_serialize(unflatten({k: flat[k] for k in part})))
        weight_map.update({"/".join(k): file_name for k in part})
    (sharded / "flax_model.msgpack.index.json").write_text(json.dumps({"weight_map": weight_map}))
    np.testing.assert_allclose(scores_of(sharded), expected, atol=0)

    flax_named = tmp_path / "flax-safetensors"
    shutil.copytree(tiny_scorer, flax_named)
    (flax_named / "flax_model.msgpack").unlink()
    save_file({".".join(k): v for k, v in flat.items()},
              str(flax_named / "model.safetensors"), metadata={"format": "flax"})
    np.testing.assert_allclose(scores_of(flax_named), expected, atol=0)

    (sharded / "flax_model-00002-of-00002.msgpack").unlink()
    with pytest.raises(CappyError, match="lists flax_model-00002-of-00002.msgpack"):
        read_state(str(sharded))


def test_truncation_policy_is_saved_and_used_again(tiny_scorer, tmp_path):
    model, tokenizer = load_cappy(tiny_scorer)
    assert model.truncation == "longest_first"
    assert load_cappy(tiny_scorer, truncation="instruction_first")[0].truncation == \
        "instruction_first"
    model.truncation = "instruction_first"
    saved = save_cappy(model, tokenizer, model.params, str(tmp_path / "trained"))
    assert json.loads(open(os.path.join(saved, "config.json")).read())[
        "cappy_truncation"] == "instruction_first"
    again, _ = load_cappy(saved)
    assert again.truncation == "instruction_first"
    assert same_params(again.params, model.params)
    # The recorded policy changes the scores of the pair whose response is long too.
    a, b = scores_of(saved), scores_of(saved, truncation="longest_first")
    assert [len(tokenizer(i, r)["input_ids"]) > 64
            for i, r in zip(INSTRUCTIONS, RESPONSES)] == [False, True, False, True]
    assert [abs(x - y) > 1e-6 for x, y in zip(a, b)] == [False, False, False, True]
    with pytest.raises(CappyError, match="truncation must be one of"):
        load_cappy(saved, truncation="middle_out")


def test_writing_is_atomic_and_never_overwrites(tiny_scorer, tmp_path, monkeypatch):
    from cappy.engine.weights import cappy_checkpoint as checkpoints

    model, tokenizer = load_cappy(tiny_scorer)
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(CappyError, match="exists and is not empty"):
        save_cappy(model, tokenizer, model.params, str(target))
    assert os.listdir(target) == ["notes.txt"]

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(checkpoints, "write_weights", broken)
    with pytest.raises(RuntimeError):
        save_cappy(model, tokenizer, model.params, str(tmp_path / "fresh"))
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing half-written left behind


def test_bad_checkpoints_stop_with_one_clear_error(tiny_scorer, tmp_path, tokenizer):
    mismatched = tmp_path / "other-tokenizer"
    shutil.copytree(tiny_scorer, mismatched)
    bigger = make_scorer_tokenizer(sample_texts(), vocab_size=800)
    bigger.save_pretrained(str(mismatched))
    with pytest.raises(CappyError, match="tokens; the model's embedding table holds"):
        load_cappy(str(mismatched))

    with pytest.raises(CappyError, match="folder not found"):
        load_cappy(str(tmp_path / "missing"))
    empty = tmp_path / "no-weights"
    shutil.copytree(tiny_scorer, empty)
    for name in ("model.safetensors", "flax_model.msgpack"):
        (empty / name).unlink()
    with pytest.raises(CappyError, match="no weights"):
        load_cappy(str(empty))

    wrong = tmp_path / "wrong-shapes"
    shutil.copytree(tiny_scorer, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["intermediate_size"] = 64
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(CappyError, match="do not fit its config.json"):
        load_cappy(str(wrong))

    two_labels = tmp_path / "two-labels"
    shutil.copytree(tiny_scorer, two_labels)
    config = json.loads((two_labels / "config.json").read_text())
    config["id2label"] = {"0": "no", "1": "yes"}
    (two_labels / "config.json").write_text(json.dumps(config))
    with pytest.raises(CappyError, match="one output"):
        load_cappy(str(two_labels))
    model, _ = load_cappy(str(two_labels), new_head_seed=0)  # as a backbone: a new head
    assert model.new_head

    bert = tmp_path / "bert"
    shutil.copytree(tiny_scorer, bert)
    config = json.loads((bert / "config.json").read_text())
    config.update(model_type="bert", architectures=["BertForSequenceClassification"])
    (bert / "config.json").write_text(json.dumps(config))
    with pytest.raises(CappyError, match="RoBERTa and XLM-RoBERTa"):
        load_cappy(str(bert))


def test_a_masked_lm_that_transformers_wrote_is_a_backbone(tmp_path, tokenizer, torch):
    from transformers import RobertaForMaskedLM

    config = tiny_scorer_config(tokenizer, architectures=["RobertaForMaskedLM"], num_labels=2)
    torch.manual_seed(1)
    module = RobertaForMaskedLM(config)
    module.save_pretrained(str(tmp_path / "mlm"))
    tokenizer.save_pretrained(str(tmp_path / "mlm"))
    model, _ = load_cappy(str(tmp_path / "mlm"), new_head_seed=3)
    assert model.new_head and model.config.num_labels == 1
    ours = torch_state({"roberta": model.params["roberta"]})
    theirs = {name: value.numpy() for name, value in module.state_dict().items()}
    for name, value in ours.items():
        np.testing.assert_array_equal(value, theirs[name], err_msg=name)
    head = model.params["classifier"]
    assert head["dense"]["kernel"].shape == (32, 32) and not head["out_proj"]["bias"].any()


def test_written_config_describes_a_float32_regression_scorer(tiny_scorer):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_scorer)
    assert config.num_labels == 1 and config.problem_type == "regression"
    assert config.architectures == ["RobertaForSequenceClassification"]
    with open(os.path.join(tiny_scorer, "config.json"), encoding="utf-8") as file:
        raw = json.load(file)
    assert raw.get("dtype", raw.get("torch_dtype")) == "float32"
    assert raw["cappy_truncation"] == "longest_first"
