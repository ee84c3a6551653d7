"""Finetuning Cappy: MSE regression on (instruction, response, label) examples
through Redco's data-parallel Trainer (one device, several, or several hosts).

The learning-rate schedule comes in two modes (DESIGN section 4):

- `paper` (default) reproduces the published runs: the linear warm-up/decay is
  sized in micro-batches (train_size / global batch, 10% warm-up) but
  `optax.MultiSteps` advances it once per optimizer update, i.e. once every
  `accumulate_grad_batches` micro-batches. With the paper's settings it climbs
  for all 800 updates to 62.5% of the peak rate and never decays.
- `corrected` sizes warm-up and decay in optimizer updates, so the rate peaks
  after 10% of the updates and decays linearly to zero at the last one.
"""

import jax
import jax.numpy as jnp
import optax

from cappy.errors import CappyError
from cappy.scoring import collate_pairs

LR_SCHEDULES = ("paper", "corrected")


def n_optimizer_updates(train_size, global_micro_batch_size, accumulate_grad_batches):
    return (train_size // global_micro_batch_size) // accumulate_grad_batches


def learning_rate_schedule(learning_rate, warmup_rate, train_size, global_micro_batch_size,
                           accumulate_grad_batches, mode="paper"):
    """The schedule as a function of the optimizer-update count."""
    if mode not in LR_SCHEDULES:
        raise CappyError(f"--lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {mode!r}")
    n_micro_batches = train_size // global_micro_batch_size
    total = n_micro_batches if mode == "paper" else n_micro_batches // accumulate_grad_batches
    return warmup_then_linear_decay(learning_rate, int(total * warmup_rate), total)


def warmup_then_linear_decay(learning_rate, warmup, total):
    """From 0 up to `learning_rate` over `warmup` counts, then linearly to 0 at `total`."""
    return optax.join_schedules(
        schedules=[optax.linear_schedule(0.0, learning_rate, warmup),
                   optax.linear_schedule(learning_rate, 0.0, max(total - warmup, 1))],
        boundaries=[warmup])


def make_optimizer(schedule, weight_decay, accumulate_grad_batches):
    """AdamW (no decay on biases or LayerNorm) stepping once per accumulated update."""
    return optax.MultiSteps(
        optax.adamw(learning_rate=schedule, weight_decay=weight_decay, mask=decay_mask),
        every_k_schedule=accumulate_grad_batches)


def decay_mask(params):
    """Weight decay on weights only: not on biases or LayerNorm parameters."""
    def keep(path, _):
        names = [str(getattr(key, "key", key)) for key in path]
        return not (names[-1] == "bias" or any("layernorm" in n.lower() or "layer_norm" in n.lower()
                                               for n in names))
    return jax.tree_util.tree_map_with_path(keep, params)


def mse_loss(rng, state, params, batch, is_training):
    """Cappy's regression loss: mean((logits[..., 0] - labels) ** 2)."""
    labels = batch.pop("labels")
    logits = state.apply_fn(**batch, params=params, dropout_rng=rng, train=is_training).logits
    return jnp.mean(jnp.square(logits[..., 0].astype(jnp.float32) - labels))


def make_trainer(model, tokenizer, deployer, train_size, per_device_batch_size=8,
                 accumulate_grad_batches=16, learning_rate=2e-5, warmup_rate=0.1,
                 weight_decay=0.0, lr_schedule="paper", max_length=512,
                 params_sharding_rules=None, label_key="label", bucketed=True):
    """A Redco Trainer for Cappy regression on encoded examples (`encode_pairs`).

    Parameters and optimizer state stay in float32; the forward and backward
    passes run in the model's dtype (`load_cappy(dtype=...)`). Batches are
    padded to their bucket width (`bucketed=False`: to max_length, the
    original's padding). Batch composition is the same either way, so the
    padding changes nothing but speed.
    """
    _, global_micro = deployer.get_local_global_micro_batch_size(per_device_batch_size)
    if train_size < global_micro * accumulate_grad_batches:
        raise CappyError(f"--train_size {train_size} is smaller than one optimizer update "
                         f"({global_micro} x {accumulate_grad_batches} examples)")
    schedule = learning_rate_schedule(learning_rate, warmup_rate, train_size, global_micro,
                                      accumulate_grad_batches, lr_schedule)
    optimizer = make_optimizer(schedule, weight_decay, accumulate_grad_batches)
    pad_id = tokenizer.pad_token_id
    return trainer_class()(
        deployer=deployer,
        collate_fn=lambda examples: collate_pairs(examples, pad_id, max_length, label_key,
                                                  bucketed),
        apply_fn=model, loss_fn=mse_loss, params=model.params, optimizer=optimizer,
        # Redco logs lr_schedule_fn(micro-step): show the rate actually applied.
        lr_schedule_fn=lambda step: schedule(step // accumulate_grad_batches),
        accumulate_grad_batches=accumulate_grad_batches,
        params_sharding_rules=params_sharding_rules)


def host_params(trainer):
    """The trained parameters as host arrays, one full copy on every process
    (a collective when the model is sharded over several hosts)."""
    import numpy as np
    from flax.core import unfreeze

    params = trainer.state.params
    if trainer.mesh is None:  # pmap keeps one replica per local device
        return unfreeze(jax.tree.map(lambda x: np.asarray(x[0]), params))
    if jax.process_count() == 1:
        return unfreeze(jax.device_get(params))
    from jax.experimental.multihost_utils import process_allgather

    return unfreeze(jax.tree.map(np.asarray, process_allgather(params, tiled=True)))


def trainer_class():
    """Redco's Trainer with the replicated state placed where the train step puts it.

    Under jax 0.9, Redco's data-parallel (pmap) path hands the first step a state
    placed differently from the step's outputs, so the step compiled twice per
    run; placing it once at the start saves one full compilation.
    """
    from redco import Trainer

    class CappyTrainer(Trainer):
        def set_train_state(self, *args, **kwargs):
            super().set_train_state(*args, **kwargs)
            if self.mesh is None:
                self._state = jax.pmap(lambda state: state, axis_name="dp",
                                       donate_argnums=0)(self._state)

    return CappyTrainer
