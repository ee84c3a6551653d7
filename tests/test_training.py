"""Training on packed rows: the same parameters as the original's fixed-width
training, dropout where RoBERTa has it, and the step plan."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cappy.engine.jobs import training
from cappy.engine.models import packing, roberta
from cappy.engine.weights.cappy_checkpoint import load_cappy
from cappy.engine.runtime.mesh import Devices
from cappy.engine.runtime.redco_adapter import original_example_order
from cappy.engine.jobs.scoring import PairScorer, encode_examples
from cappy.engine.weights.tiny_models import sample_texts
from conftest import assert_close


def labelled_examples(tokenizer, n, max_length, truncation="longest_first"):
    texts = sample_texts()
    rng = np.random.default_rng(0)
    rows = [{"instruction": texts[i % len(texts)][:int(rng.integers(5, 200))],
             "response": texts[(7 * i + 3) % len(texts)][:int(rng.integers(2, 60))],
             "label": float(rng.random())} for i in range(n)]
    return encode_examples(tokenizer, rows, max_length, truncation)


def fixed_width_training(model, examples, seed, per_device_batch_size, accumulate,
                         learning_rate, max_length, schedule_mode):
    """The original release's loop shape (Redco's Trainer shuffling with the deployer's
    key, every micro-batch padded to max_length, AdamW inside optax.MultiSteps) on cappy's
    forward pass: against the packed trainer it checks the packing, the splitting into
    device steps and the accumulation (tests/test_original.py checks the whole against the
    release's own model). Its final parameters."""
    import optax
    from redco import Deployer, Trainer

    from cappy.engine.jobs.scoring import collate_pairs

    deployer = Deployer(jax_seed=seed, verbose=False)
    _, global_micro = deployer.get_local_global_micro_batch_size(per_device_batch_size)
    schedule = training.learning_rate_schedule(learning_rate, 0.1, len(examples), global_micro,
                                               accumulate, schedule_mode)
    optimizer = optax.MultiSteps(optax.adamw(learning_rate=schedule, weight_decay=0.0),
                                 every_k_schedule=accumulate)

    def loss_fn(rng, state, params, batch, is_training):
        labels = batch.pop("labels")
        scores = roberta.padded_scores(params, model.config, batch["input_ids"],
                                       batch["attention_mask"])
        return jnp.mean(jnp.square(scores - labels))

    trainer = Trainer(deployer=deployer, apply_fn=None, loss_fn=loss_fn, params=model.params,
                      optimizer=optimizer, accumulate_grad_batches=accumulate,
                      collate_fn=lambda examples: collate_pairs(examples, 1, max_length,
                                                                "label", bucketed=False))
    trainer.train(examples=examples, per_device_batch_size=per_device_batch_size)
    return jax.tree.map(lambda x: np.asarray(x[0]), trainer.state.params)


def largest_difference(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_packed_training_equals_fixed_width_training(tiny_scorer):
    """22 optimizer updates (and a last, incomplete one that the original never
    applied) give the same parameters, within 1e-5, as the original's loop."""
    model, tokenizer = load_cappy(tiny_scorer)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    max_length, per_device, accumulate = 64, 4, 2
    examples = labelled_examples(tokenizer, 22 * 8 + 5, max_length)
    lengths = [len(e["input_ids"]) for e in examples]
    assert max(lengths) > max_length // 2  # rows of both widths
    reference = fixed_width_training(model, examples, 5, per_device, accumulate, 1e-3,
                                     max_length, "corrected")
    trainer = training.finetune(model, tokenizer, Devices(), examples, seed=5,
                                per_device_batch_size=per_device,
                                accumulate_grad_batches=accumulate, learning_rate=1e-3,
                                lr_schedule="corrected", max_length=max_length, progress=False)
    assert trainer.update_count == 22
    ours = trainer.host_params()
    assert largest_difference(reference, model.params) > 1e-3  # training moved the weights
    assert largest_difference(ours, reference) < 1e-5
    scorer = PairScorer(model, tokenizer, Devices(), max_length=max_length)
    texts = sample_texts()
    scores = [scorer.score(texts[40:56], texts[60:76], params) for params in (ours, reference)]
    assert np.std(scores[0]) > 1e-3
    assert_close(scores[0], scores[1])


def test_training_order_is_the_original_shuffle():
    from redco import Deployer

    from redco.deployers.data_utils import get_host_examples

    deployer = Deployer(jax_seed=11111, verbose=False)
    redco_order = get_host_examples(list(range(50)), 8, True, deployer.gen_rng(), None)
    assert list(original_example_order(11111, 50)[:48]) == redco_order


def test_dropout_draws_its_own_mask_for_every_pair(tiny_scorer):
    model, _ = load_cappy(tiny_scorer)
    assert model.config.hidden_dropout_prob > 0
    pair = {"input_ids": [0] + list(range(5, 14)) + [2]}
    batch = packing.collate_packed_rows([[pair] * 4, [pair] * 4], 64, 1)
    score = jax.jit(lambda params, batch, key: roberta.packed_scores(
        params, model.config, batch, dropout_rng=key))
    train = np.asarray(score(model.params, batch, jax.random.PRNGKey(0)))[:, :4]
    evaluation = np.asarray(jax.jit(lambda params, batch: roberta.packed_scores(
        params, model.config, batch))(model.params, batch))[:, :4]
    assert np.ptp(evaluation) < 1e-6  # the same pair scores the same in every slot...
    assert len(set(train.ravel().round(6).tolist())) == 8  # ...and trains under 8 masks
    again = score(model.params, batch, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(again)[:, :4], train)  # a function of the key


def dropout_trainer(tiny_scorer, seed, learning_rate):
    """A Trainer of the tiny Cappy (dropout 0.1) with a constant learning rate, and 16
    examples of one update."""
    model, tokenizer = load_cappy(tiny_scorer)
    assert model.config.hidden_dropout_prob > 0
    optimizer = training.make_optimizer(optax.constant_schedule(learning_rate), 0.0)
    trainer = training.Trainer(model, Devices(), optimizer, 64,
                               training.tokens_per_step(8, 64), tokenizer.pad_token_id, seed)
    return trainer, labelled_examples(tokenizer, 16, 64)


def test_the_train_step_draws_new_dropout_masks_for_every_update_and_step(tiny_scorer):
    """At learning rate 0 the parameters stay, so a loss differs only by its masks: each
    (seed, update, step) has its own, and the same triple the same."""
    trainer, examples = dropout_trainer(tiny_scorer, seed=5, learning_rate=0.0)
    before = trainer.host_params()
    losses = [float(trainer.update(examples, update_index=index)) for index in (0, 1, 0)]
    assert largest_difference(trainer.host_params(), before) == 0.0
    assert losses[0] == losses[2]  # a function of the update's index
    assert abs(losses[0] - losses[1]) > 1e-6 * losses[0]
    # One step's rows computed as step 0 and as step 1 of an update: other masks.
    packed = training.pack_update([len(e["input_ids"]) for e in examples], 64)
    width, size, rows = training.plan_steps(packed, 1, trainer.step_tokens)[0]
    rows = rows + [[]] * (size - len(rows))
    batch = trainer._device_batch(training.training_batch(examples, rows, width, 1, 1 / 16))
    step_losses = [float(trainer._grad_step(trainer.params, trainer._zeros(trainer.params),
                                            batch, np.int32(0), np.int32(step))["loss"])
                   for step in (0, 1, 0)]
    assert step_losses[0] == step_losses[2]
    assert abs(step_losses[0] - step_losses[1]) > 1e-6 * step_losses[0]


def test_the_same_seed_trains_the_same_parameters_and_another_seed_others(tiny_scorer):
    """With dropout on, the seed alone decides the masks: two runs of one seed end with
    the same parameters bit for bit; another seed, with the same examples in the same
    updates, ends elsewhere."""
    ends = []
    for seed in (5, 5, 6):
        trainer, examples = dropout_trainer(tiny_scorer, seed, learning_rate=1e-3)
        for index in range(3):
            trainer.update(examples, update_index=index)
        ends.append(trainer.host_params())
    assert largest_difference(ends[0], ends[1]) == 0.0
    assert largest_difference(ends[0], ends[2]) > 1e-4


def test_dropout_masks_keep_the_expected_rate():
    shapes = [(40, 64), (4, 1, 32, 32)]
    dropout = roberta._Dropout(jax.random.PRNGKey(1), shapes)
    kept = [float(jnp.mean(dropout(jnp.ones(shape), 0.1, shape) > 0)) for shape in shapes]
    assert kept == pytest.approx([0.9, 0.9], abs=0.01)
    scaled = roberta._Dropout(jax.random.PRNGKey(2), [(1000, 100)])(jnp.ones((1000, 100)), 0.25)
    assert float(jnp.max(scaled)) == pytest.approx(1 / 0.75)
    assert float(jnp.mean(scaled)) == pytest.approx(1.0, abs=0.01)  # unbiased


def test_step_plans_cover_every_row_once():
    rng = np.random.default_rng(0)
    updates = [training.pack_update(np.clip(rng.lognormal(np.log(51), 0.5, 128), 5, 512)
                                    .astype(int), 512) for _ in range(6)]
    fixed = training.rows_per_step_for(updates, n_devices=2, step_tokens=2048)
    assert set(fixed) <= {256, 512} and fixed[256] <= 8
    for packed in updates:
        for rows_per_step in (None, fixed):
            steps = training.plan_steps(packed, 2, 2048, rows_per_step)
            for width, size, rows in steps:
                assert len(rows) <= 2 * size and size * width <= 2048
            placed = sorted(tuple(row) for _, _, rows in steps for row in rows)
            assert placed == sorted(tuple(row) for rows in packed.values() for row in rows)
    shapes = {(width, size) for packed in updates
              for width, size, _ in training.plan_steps(packed, 2, 2048, fixed)}
    assert len(shapes) == len(fixed)  # one compiled step shape per row width
    assert training.quarter_bucket(7, 8) == 8 and training.quarter_bucket(3, 16) == 4


def test_bfloat16_training_keeps_float32_parameters(tiny_scorer):
    model, tokenizer = load_cappy(tiny_scorer, dtype="bfloat16")
    examples = labelled_examples(tokenizer, 16, 64)
    trainer = training.finetune(model, tokenizer, Devices(), examples, seed=0,
                                per_device_batch_size=4, accumulate_grad_batches=1,
                                learning_rate=1e-3, lr_schedule="corrected", max_length=64,
                                progress=False)
    params = trainer.host_params()
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype("float32")}
    assert {leaf.dtype for leaf in jax.tree.leaves(trainer.host_opt_state())
            if getattr(leaf, "ndim", 0) > 1} == {np.dtype("float32")}
    assert 0 < largest_difference(params, model.params) < 1  # a finite, real update


def test_too_few_examples_for_one_update(tiny_scorer):
    from cappy.engine.errors import CappyError

    model, tokenizer = load_cappy(tiny_scorer)
    with pytest.raises(CappyError, match="smaller than one optimizer update"):
        training.finetune(model, tokenizer, Devices(), labelled_examples(tokenizer, 7, 64),
                          seed=0, per_device_batch_size=4, accumulate_grad_batches=2,
                          max_length=64, progress=False)


def test_truncation_policy_changes_the_encoding(tiny_scorer):
    model, tokenizer = load_cappy(tiny_scorer)
    config = copy.deepcopy(model.config)
    assert config.num_labels == 1
    a = labelled_examples(tokenizer, 12, 24, "longest_first")
    b = labelled_examples(tokenizer, 12, 24, "instruction_first")
    assert [e["input_ids"] for e in a] != [e["input_ids"] for e in b]
    assert max(len(e["input_ids"]) for e in a + b) == 24


TRAIN_ON_DEVICES = """
import json, sys
import jax, numpy as np
sys.path.insert(0, sys.argv[3])
from test_training import labelled_examples
from cappy.engine.jobs import training
from cappy.engine.weights.cappy_checkpoint import load_cappy
from cappy.engine.weights.files import flatten
from cappy.engine.runtime.mesh import Devices
model, tokenizer = load_cappy(sys.argv[1])
model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
devices = Devices(int(sys.argv[2]))
trainer = training.finetune(model, tokenizer, devices, labelled_examples(tokenizer, 48, 64),
                            seed=5, per_device_batch_size=int(sys.argv[4]),
                            accumulate_grad_batches=4,
                            learning_rate=1e-3, lr_schedule="corrected", max_length=64,
                            progress=False)
flat = flatten(trainer.host_params())
print(json.dumps([trainer.n_devices, jax.device_count(),
                  {"/".join(k): np.asarray(v).ravel()[:64].tolist() for k, v in flat.items()}]))
"""


@pytest.mark.slow  # three fresh processes, 15-30 s each here
def test_training_on_two_devices_matches_one_device(tiny_scorer):
    """Rows split over two devices (data parallel), or the parameters sharded over
    them, train the parameters one device trains (dropout off, 1e-5). The global
    micro-batch stays 4 examples, so every run makes the same optimizer updates."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    results = {}
    for name, devices, shards, per_device in (("one", 1, 1, 4), ("data", 2, 1, 2),
                                              ("model", 2, 2, 4)):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        done = subprocess.run([sys.executable, "-c", TRAIN_ON_DEVICES, tiny_scorer,
                               str(shards), os.path.join(REPO, "tests"), str(per_device)],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert [results[n][:2] for n in ("one", "data", "model")] == [[1, 1], [2, 2], [1, 2]]
    base = results["one"][2]
    for name in ("data", "model"):
        for key, values in base.items():
            assert_close(results[name][2][key], values, err_msg=key)
