"""Cappy's own RoBERTa (`cappy.engine.models.roberta`) computes transformers' RoBERTa sequence
classifier: pinned scores, and logits and gradients against transformers'
PyTorch model on the same parameters."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cappy.engine.models import packing, roberta
from cappy.engine.weights.cappy_checkpoint import CappyModel
from cappy.engine.weights.files import flatten, torch_name
from cappy.engine.weights.tiny_models import as_trained
from conftest import assert_close


def trained_like(config, seed):
    """RoBERTa's initialisation with every bias and LayerNorm parameter drawn
    (`as_trained`): a comparison on these fails when code drops one of them."""
    return as_trained(roberta.init_params(config, seed), seed)


def small_config(model_type="roberta", **overrides):
    import transformers

    config_class = {"roberta": transformers.RobertaConfig,
                    "xlm-roberta": transformers.XLMRobertaConfig}[model_type]
    settings = dict(vocab_size=300, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                    intermediate_size=256, max_position_embeddings=130, num_labels=1,
                    type_vocab_size=1, initializer_range=0.05, pad_token_id=1,
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    settings.update(overrides)
    return config_class(**settings)


def padded_scores(config, dtype=jnp.float32):
    """`roberta.padded_scores` for this config, compiled whole (op by op is slower)."""
    return jax.jit(lambda params, ids, mask: roberta.padded_scores(params, config, ids, mask,
                                                                   dtype=dtype))


def packed_scores(config):
    return jax.jit(lambda params, batch: roberta.packed_scores(params, config, batch))


def random_batch(rng, batch, width, pad_id=1, vocab=300):
    lengths = rng.integers(2, width + 1, batch)
    lengths[0] = width  # one full row: no padding at all
    ids = np.full((batch, width), pad_id, np.int32)
    mask = np.zeros((batch, width), np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(3, vocab, length)
        ids[row, 0] = 0
        mask[row, :length] = 1
    return ids, mask


# ---- pinned scores (no reference library needed) --------------------------------------

GOLDEN_IDS = [[0, 22, 36, 11, 2], [0, 48, 41, 11, 16, 29, 35, 62, 2],
              [0, 44, 8, 13, 24, 41, 24, 22, 52, 3, 22, 55, 18, 2],
              [0, 61, 48, 45, 35, 44, 58, 44, 6, 12, 54, 29, 61, 12, 52, 43, 28, 57, 33, 2]]
# transformers 4.57.6's FlaxRobertaForSequenceClassification on these parameters and ids.
GOLDEN_SCORES = [0.4990445375442505, 0.5103461742401123, 0.49887359142303467,
                 0.4965755343437195]


def golden_parameters(config):
    """Every parameter drawn in sorted-name order from one seeded generator."""
    rng = np.random.default_rng(20261201)
    flat = {}
    for path, shape in sorted(flatten(roberta.parameter_shapes(config)).items()):
        flat[path] = (rng.normal(0.0, 0.2, shape).astype(np.float32)
                      + (1.0 if path[-1] == "scale" else 0.0))
    from cappy.engine.weights.files import unflatten

    return unflatten(flat)


def test_scores_match_pinned_reference_values():
    from transformers import RobertaConfig

    config = RobertaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=32,
                           max_position_embeddings=40, type_vocab_size=1, num_labels=1,
                           pad_token_id=1)
    params = golden_parameters(config)
    ids = np.full((4, 20), 1, np.int32)
    mask = np.zeros((4, 20), np.int32)
    for row, sequence in enumerate(GOLDEN_IDS):
        ids[row, :len(sequence)] = sequence
        mask[row, :len(sequence)] = 1
    padded = np.asarray(padded_scores(config)(params, ids, mask))
    assert_close(padded, GOLDEN_SCORES, rel=2e-6)  # scores near 0.5: 4e-6 relative
    # The same pairs packed into one row of 64 score the same.
    pairs = [{"input_ids": sequence} for sequence in GOLDEN_IDS]
    batch = packing.collate_packed_rows([pairs], 64, 1)
    packed = np.asarray(packed_scores(config)(params, batch))[0, :4]
    assert_close(packed, GOLDEN_SCORES, rel=2e-6)


# ---- against transformers' PyTorch model ----------------------------------------------

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def reference(config, params, torch):
    from cappy.engine.weights.cappy_checkpoint import torch_model

    return torch_model(CappyModel(config=config, params=params))


@pytest.mark.parametrize("width,model_type", [(5, "roberta"), (16, "roberta"), (64, "roberta"),
                                              (128, "roberta"), (48, "xlm-roberta")])
def test_logits_match_transformers_pytorch(width, model_type, torch):
    config = small_config(model_type)
    assert config.model_type == model_type and roberta.supports(config)
    params = trained_like(config, seed=width)
    ids, mask = random_batch(np.random.default_rng(width), 6, width)
    with torch.no_grad():
        expected = reference(config, params, torch)(
            input_ids=torch.as_tensor(ids).long(),
            attention_mask=torch.as_tensor(mask).long()).logits[:, 0].numpy()
    got = np.asarray(padded_scores(config)(params, ids, mask))
    assert got.dtype == np.float32
    assert_close(got, expected)
    assert np.std(expected) > 1e-3  # the scores differ, so agreement means something


def test_gradients_match_transformers_pytorch(torch):
    """The regression loss's gradient, parameter by parameter (dropout off)."""
    config = small_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    params = trained_like(config, seed=3)
    ids, mask = random_batch(np.random.default_rng(3), 6, 40)
    labels = np.linspace(0, 1, 6).astype(np.float32)
    module = reference(config, params, torch).train()  # train mode, but no dropout to draw
    logits = module(input_ids=torch.as_tensor(ids).long(),
                    attention_mask=torch.as_tensor(mask).long()).logits[:, 0]
    torch.mean((logits - torch.as_tensor(labels)) ** 2).backward()
    expected = {name: p.grad.numpy() for name, p in module.named_parameters()
                if p.grad is not None}

    def loss(p):
        return jnp.mean(jnp.square(roberta.padded_scores(p, config, ids, mask) - labels))

    ours = flatten(jax.jit(jax.grad(loss))(params))
    scale = max(float(np.max(np.abs(g))) for g in expected.values())
    assert scale > 1e-3
    for path, grad in ours.items():
        grad = np.asarray(grad)
        theirs = expected[torch_name(path)]
        theirs = theirs.T if path[-1] == "kernel" else theirs
        np.testing.assert_allclose(grad, theirs, atol=1e-5 * scale, rtol=1e-3,
                                   err_msg="/".join(path))


@pytest.mark.parametrize("widths", [(32, 64), (64,)])
def test_packed_pairs_score_what_each_scores_alone(widths, torch):
    """Pairs sharing a row score what each scores alone in transformers' model."""
    config = small_config()
    params = trained_like(config, seed=len(widths))
    rng = np.random.default_rng(len(widths))
    lengths = list(rng.integers(3, 65, 30)) + list(rng.integers(3, 7, 10))  # some rows fill up
    pairs = [{"input_ids": [0] + list(rng.integers(3, 300, n - 1))} for n in lengths]
    from cappy.engine.models.padding import pad_batch

    ids, mask = pad_batch([p["input_ids"] for p in pairs], 64, 1)
    with torch.no_grad():
        expected = reference(config, params, torch)(
            input_ids=torch.as_tensor(ids).long(),
            attention_mask=torch.as_tensor(mask).long()).logits[:, 0].numpy()
    assert np.std(expected) > 1e-3
    rows = packing.pack_rows(lengths, widths)
    assert any(len(row) > 2 for _, row in rows) and any(len(row) == 1 for _, row in rows)
    got = np.full(len(pairs), np.nan, np.float32)
    for width in widths:
        batch_rows = [row for w, row in rows if w == width] + [[]]  # and an empty row
        batch = packing.collate_packed_rows([[pairs[i] for i in row] for row in batch_rows],
                                            width, 1)
        scores = np.asarray(packed_scores(config)(params, batch))
        assert scores.dtype == np.float32 and np.all(np.isfinite(scores))
        for row, row_scores in zip(batch_rows, scores):
            got[row] = row_scores[:len(row)]
    assert_close(got, expected)


# ---- the forward pass on its own -----------------------------------------------------

def test_scores_ignore_the_padding_width():
    """A row scores the same whatever padding follows it (the bucket boundary)."""
    config = small_config()
    params = trained_like(config, seed=0)
    ids, mask = random_batch(np.random.default_rng(0), 4, 20)
    score = padded_scores(config)
    narrow = score(params, ids, mask)
    wide = score(params, np.pad(ids, ((0, 0), (0, 108)), constant_values=1),
                 np.pad(mask, ((0, 0), (0, 108))))
    assert_close(wide, narrow)


def test_only_models_computed_exactly_are_accepted():
    config = small_config()
    assert roberta.supports(config)
    for name, value in (("hidden_act", "gelu_new"), ("num_labels", 2),
                        ("position_embedding_type", "relative_key"), ("model_type", "bert"),
                        ("is_decoder", True)):
        changed = copy.deepcopy(config)
        setattr(changed, name, value)
        assert not roberta.supports(changed), name
        assert repr(value) in roberta.unsupported_reason(changed) or name == "is_decoder", name


def test_bfloat16_compute_gives_float32_scores_close_to_float32():
    config = small_config(initializer_range=0.2)  # scores spread far beyond bf16's noise
    params = trained_like(config, seed=1)
    ids, mask = random_batch(np.random.default_rng(1), 6, 32)
    full = np.asarray(padded_scores(config)(params, ids, mask))
    half = padded_scores(config, jnp.bfloat16)(params, ids, mask)
    assert half.dtype == jnp.float32
    # bfloat16 keeps 8 bits of mantissa: agreement to a few percent of the spread.
    assert np.ptp(full) > 0.1
    np.testing.assert_allclose(np.asarray(half), full, atol=0.05 * np.ptp(full))


def test_initialisation_is_robertas():
    config = small_config()
    params = roberta.init_params(config, seed=0)
    again = roberta.init_params(config, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                    jax.tree.leaves(again)))
    flat = flatten(params)
    for path, value in flat.items():
        assert value.dtype == np.float32
        if path[-1] == "bias":
            assert not value.any(), path
        elif path[-1] == "scale":
            assert np.all(value == 1), path
        elif value.size > 1000:
            assert np.std(value) == pytest.approx(config.initializer_range, rel=0.1), path
    words = params["roberta"]["embeddings"]["word_embeddings"]["embedding"]
    assert not words[config.pad_token_id].any()  # the padding row, as PyTorch's RoBERTa
    head = roberta.init_head(config, seed=4)
    assert head["out_proj"]["kernel"].shape == (64, 1)
    assert not np.allclose(head["dense"]["kernel"], params["classifier"]["dense"]["kernel"])
