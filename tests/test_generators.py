"""Loading generators (`cappy.engine.weights.generator_loading.load_generator`): every weights layout a hub
generator ships in reads to the same parameters, cast to the asked dtype; what cappy
cannot compute stops with one line naming what it can."""

import json
import shutil

import numpy as np
import pytest

from cappy.engine.weights.files import flatten, torch_state
from cappy.engine.errors import CappyError
from cappy.engine.models.families import SUPPORTED_MODEL_TYPES
from cappy.engine.weights.generator_loading import load_generator
from conftest import assert_close


def same_tree(a, b):
    fa, fb = flatten(a), flatten(b)
    return set(fa) == set(fb) and all(np.array_equal(fa[k], fb[k]) for k in fa)


def weights_only(source, target, keep=()):
    shutil.copytree(source, target)
    for name in ("model.safetensors", "flax_model.msgpack"):
        if name not in keep:
            (target / name).unlink()
    return target


@pytest.mark.parametrize("fixture", ["tiny_t5", "tiny_gpt2"])
def test_sharded_safetensors_and_msgpack_read_the_same_parameters(fixture, request, tmp_path):
    """As google/flan-t5-xxl ships: model.safetensors shards and their index (PyTorch
    names); and transformers 4's sharded flax_model.msgpack with its index."""
    from flax.serialization import msgpack_serialize
    from safetensors.numpy import save_file

    from cappy.engine.weights.files import unflatten

    source = request.getfixturevalue(fixture)
    reference = load_generator(source)
    assert reference.source.endswith("(model.safetensors)")
    state = torch_state(reference.params)
    names = sorted(state)
    folder = weights_only(source, tmp_path / "sharded-safetensors")
    weight_map = {}
    for index, part in enumerate((names[::2], names[1::2])):
        file_name = f"model-0000{index + 1}-of-00002.safetensors"
        save_file({name: state[name] for name in part}, str(folder / file_name),
                  metadata={"format": "pt"})
        weight_map.update({name: file_name for name in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    sharded = load_generator(str(folder))
    assert sharded.source.endswith("(model.safetensors.index.json)")
    assert same_tree(sharded.params, reference.params)

    flat = flatten(reference.params)
    keys = sorted(flat)
    folder = weights_only(source, tmp_path / "sharded-msgpack")
    weight_map = {}
    for index, part in enumerate((keys[::2], keys[1::2])):
        file_name = f"flax_model-0000{index + 1}-of-00002.msgpack"
        (folder / file_name).write_bytes(msgpack_serialize(unflatten({k: flat[k] for k in part})))
        weight_map.update({"/".join(k): file_name for k in part})
    (folder / "flax_model.msgpack.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert same_tree(load_generator(str(folder)).params, reference.params)


def test_weights_are_cast_to_the_asked_dtype(tiny_t5):
    import ml_dtypes

    full = load_generator(tiny_t5)
    half = load_generator(tiny_t5, dtype="bfloat16")
    leaves_full, leaves_half = flatten(full.params), flatten(half.params)
    assert {v.dtype for v in leaves_half.values()} == {np.dtype(ml_dtypes.bfloat16)}
    for key, value in leaves_full.items():
        # bfloat16 keeps 8 bits of mantissa: each weight within 2**-8 of itself
        np.testing.assert_allclose(leaves_half[key].astype(np.float32), value, rtol=1e-2,
                                   atol=1e-6)
    with pytest.raises(CappyError, match="--dtype must be one of"):
        load_generator(tiny_t5, dtype="float8")


def test_unsupported_generators_stop_with_one_line_naming_the_supported(tiny_t5, tmp_path):
    folder = tmp_path / "pegasus"
    shutil.copytree(tiny_t5, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "pegasus"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CappyError) as error:
        load_generator(str(folder))
    message = str(error.value)
    assert "\n" not in message and "'pegasus'" in message
    assert all(name in message for name in SUPPORTED_MODEL_TYPES)


def test_a_missing_shard_or_weight_is_named(tiny_t5, tmp_path):
    from safetensors.numpy import save_file

    state = torch_state(load_generator(tiny_t5).params)
    folder = weights_only(tiny_t5, tmp_path / "missing")
    dropped = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != dropped}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    assert dropped == "decoder.block.0.layer.0.SelfAttention.k.weight"
    with pytest.raises(CappyError, match="1 problem: missing decoder/block/0/layer/0/"
                                         "SelfAttention/k/kernel"):
        load_generator(str(folder))
    with pytest.raises(CappyError, match="nowhere: folder not found"):
        load_generator(str(tmp_path / "nowhere"))


def test_a_flan_t5_that_transformers_5_saved_loads_with_its_logits(tmp_path):
    """transformers 5 writes every T5 config with tie_word_embeddings true (v1.1 marked by
    scale_decoder_outputs false) and keeps v1.1's own head in model.safetensors."""
    torch = pytest.importorskip("torch")
    from transformers import T5Config, T5ForConditionalGeneration

    from cappy.engine.models import t5
    from cappy.engine.weights.tiny_models import make_generator_tokenizer

    tokenizer = make_generator_tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                      num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    module = T5ForConditionalGeneration(config).eval()
    module.lm_head.weight = torch.nn.Parameter(torch.randn_like(module.shared.weight))
    module.save_pretrained(str(tmp_path / "flan"))
    tokenizer.save_pretrained(str(tmp_path / "flan"))
    generator = load_generator(str(tmp_path / "flan"))
    assert not t5.is_v1_0(generator.config)
    ids = np.array([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
    mask = (np.arange(5) < np.array([[5], [3]])).astype(np.int64)
    decoder = np.array([[0, 11, 12], [0, 13, 14]])
    with torch.no_grad():
        expected = module(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                          decoder_input_ids=torch.as_tensor(decoder)).logits.numpy()
    params = generator.params
    got = np.asarray(t5.decode(params, generator.config, decoder,
                               t5.encode(params, generator.config, ids, mask), mask))
    assert_close(got, expected)
