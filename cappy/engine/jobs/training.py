"""Training Cappy: MSE regression on (instruction, response, label) examples, packed
into rows, one optimizer update at a time, on one device, several, or several hosts.

An optimizer update takes a set of examples (the original's 8 per device x 16
accumulation steps). They are packed into rows (`cappy.engine.models.packing`: each pair attends
only to its own tokens, with its own positions), the rows are spread over the
devices and computed in as few device steps as their token budget allows, and
the gradient of the update's mean squared error is accumulated over those steps
before AdamW applies it once. The mean is over the update's examples, exactly as
the original's mean of its micro-batches' means, so with dropout off packed
training gives the parameters fixed-width training gives (tests check 1e-5
after 20 updates). A device step holds at most `per_device_batch_size x
max_length` tokens per device, the original's micro-batch of padded pairs (on
CPUs at most CPU_TOKENS_PER_STEP, which keeps a step's activations in cache).
JAX compiles one program per step shape: finetuning, which knows all its
updates in advance, uses one row count per row width for the whole run
(`rows_per_step_for`); pretraining rounds each update's steps to quarter
buckets, so at most four shapes per width.

The learning-rate schedule comes in two modes (docs/DESIGN.md section 4):

- `paper` (default) reproduces the published runs: the linear warm-up/decay is
  sized in micro-batches (train_size / global batch, 10% warm-up) but the
  optimizer advanced it once per update, i.e. once every
  `accumulate_grad_batches` micro-batches. With the paper's settings it climbs
  for all 800 updates to 62.5% of the peak rate and never decays.
- `corrected` sizes warm-up and decay in optimizer updates, so the rate peaks
  after 10% of the updates and decays linearly to zero at the last one.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cappy.engine.errors import CappyError
from cappy.engine.models import packing, roberta
from cappy.engine.recipes import LR_SCHEDULES
from cappy.engine.runtime.leader import progress_bar
from cappy.engine.runtime.mesh import place, record_placed

CPU_TOKENS_PER_STEP = 2048


# ---- schedule and optimizer ------------------------------------------------------------

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


def make_optimizer(schedule, weight_decay):
    """AdamW (no decay on biases or LayerNorm), applied once per optimizer update to
    the update's whole gradient; `schedule` is read at the update count."""
    return optax.adamw(learning_rate=schedule, weight_decay=weight_decay, mask=decay_mask)


def decay_mask(params):
    """Weight decay on weights only: not on biases or LayerNorm parameters."""
    def keep(path, _):
        names = [str(getattr(key, "key", key)) for key in path]
        return not (names[-1] == "bias" or any("layernorm" in n.lower() or "layer_norm" in n.lower()
                                               for n in names))
    return jax.tree_util.tree_map_with_path(keep, params)


def tokens_per_step(per_device_batch_size, max_length):
    """Tokens one device computes in one training step (see the module docstring)."""
    tokens = per_device_batch_size * max_length
    if jax.default_backend() == "cpu":
        tokens = min(tokens, CPU_TOKENS_PER_STEP)
    return max(tokens, max_length)


# ---- splitting an update into device steps ----------------------------------------------

def _ceil_div(a, b):
    return -(-a // b)


def pack_update(lengths, max_length):
    """The rows of one update's examples: {width: [row, ...]}, a row a list of indices."""
    packed = {}
    for width, row in packing.pack_rows(lengths, packing.row_widths(max_length)):
        packed.setdefault(width, []).append(row)
    return packed


def quarter_bucket(rows, most):
    """`rows` rounded up to a quarter of `most` (at least 1): at most four step shapes."""
    granule = max(1, most // 4)
    return min(most, _ceil_div(rows, granule) * granule)


def rows_per_step_for(updates, n_devices, step_tokens):
    """One rows-per-device count per row width for a whole run (one step shape per
    width, so one compilation), chosen to compute the fewest rows over all the
    updates (`pack_update`'s), larger steps winning ties."""
    chosen = {}
    for width in sorted({width for packed in updates for width in packed}):
        counts = [_ceil_div(len(packed.get(width, [])), n_devices) for packed in updates]
        counts = [n for n in counts if n]
        most = packing.rows_per_batch(width, step_tokens)

        def cost(size):  # rows computed, a step's fixed work counted as one more row
            return sum(_ceil_div(n, size) * (size + 1) for n in counts)

        chosen[width] = min(range(most, 0, -1), key=cost)
    return chosen


def plan_steps(packed, n_devices, step_tokens, rows_per_step=None):
    """The device steps of one update: [(width, rows per device, [row, ...])]; a step
    holds n_devices x rows-per-device rows, empty ones padding the last.

    Without `rows_per_step` ({width: rows}), an update's rows of a width take as
    few equal steps as the token budget allows, each rounded up to a quarter
    bucket (`quarter_bucket`).
    """
    steps = []
    for width in sorted(packed):
        rows = packed[width]
        per_device = _ceil_div(len(rows), n_devices)
        most = packing.rows_per_batch(width, step_tokens)
        if rows_per_step and width in rows_per_step:
            size = rows_per_step[width]
        else:
            size = quarter_bucket(_ceil_div(per_device, _ceil_div(per_device, most)), most)
        capacity = size * n_devices
        for start in range(0, len(rows), capacity):
            steps.append((width, size, rows[start:start + capacity]))
    return steps


def training_batch(examples, rows, width, pad_id, weight, label_key="label"):
    """Model inputs of packed rows plus each slot's label and weight (0 when empty)."""
    batch = packing.collate_packed_rows([[examples[i] for i in row] for row in rows], width,
                                        pad_id)
    slots = batch["first_tokens"].shape[1]
    labels = np.zeros((len(rows), slots), np.float32)
    weights = np.zeros((len(rows), slots), np.float32)
    for r, row in enumerate(rows):
        labels[r, :len(row)] = [examples[i][label_key] for i in row]
        weights[r, :len(row)] = weight
    batch["labels"], batch["weights"] = labels, weights
    return batch


# ---- the trainer ------------------------------------------------------------------------

class Trainer:
    """Parameters and AdamW state on `devices` (`cappy.engine.runtime.mesh.Devices`), trained update
    by update.

    One compiled path over a device mesh: without model shards, a 1-D mesh of every
    device of every host, parameters replicated; with `n_model_shards`, the
    `(dp, mp)` mesh, parameters and optimizer state sharded by Redco's
    rules. Rows are spread over the data-parallel axis and XLA sums the gradients
    across it. Parameters and optimizer state are float32; the forward and backward
    passes run in the model's compute dtype.
    """

    def __init__(self, model, devices, optimizer, max_length, step_tokens, pad_id, seed,
                 params=None, opt_state=None, params_sharding_rules=None, label_key="label"):
        from jax.sharding import NamedSharding, PartitionSpec

        roberta.check_max_length(model.config, max_length, model.source)
        self.model, self.devices, self.optimizer = model, devices, optimizer
        self.max_length, self.step_tokens, self.pad_id = max_length, step_tokens, pad_id
        self.seed, self.label_key = seed, label_key
        from flax.core import unfreeze

        params = unfreeze(model.params if params is None else params)
        self.mesh = devices.mesh
        params_sharding = devices.parameter_shardings(params, params_sharding_rules)
        self.n_devices = self.mesh.shape["dp"]
        replicated = NamedSharding(self.mesh, PartitionSpec())
        # AdamW's moments lie like the parameters; its step counts on every device.
        opt_sharding = optax.tree_utils.tree_map_params(
            optimizer, lambda _, sharding: sharding, jax.eval_shape(optimizer.init, params),
            params_sharding, transform_non_params=lambda _: replicated)
        accumulator = {"grads": params_sharding, "loss": replicated}
        self._rows_sharding = NamedSharding(self.mesh, PartitionSpec("dp"))
        self.params = place(params, params_sharding)
        self.opt_state = (jax.jit(optimizer.init, out_shardings=opt_sharding)(self.params)
                          if opt_state is None else place(opt_state, opt_sharding))
        loss = functools.partial(roberta.weighted_squared_error, config=model.config,
                                 dtype=model.compute_dtype)

        def grad_step(params, accumulated, batch, update_index, step_index):
            # The dropout key of (seed, update, step), derived here rather than by small
            # programs of its own on the host.
            key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), update_index),
                                     step_index)
            value, grads = jax.value_and_grad(lambda p: loss(p, batch=batch, dropout_rng=key))(
                params)
            return {"grads": jax.tree.map(jnp.add, accumulated["grads"], grads),
                    "loss": accumulated["loss"] + value}

        def apply_step(params, opt_state, accumulated):
            updates, opt_state = optimizer.update(accumulated["grads"], opt_state, params)
            return (optax.apply_updates(params, updates), opt_state,
                    _zero_accumulator(params), accumulated["loss"])

        self._grad_step = jax.jit(grad_step, out_shardings=accumulator, donate_argnums=(1,))
        self._apply_step = jax.jit(
            apply_step, out_shardings=(params_sharding, opt_sharding, accumulator, None),
            donate_argnums=(0, 1, 2))
        self._zeros = jax.jit(_zero_accumulator, out_shardings=accumulator)
        self.update_count = 0
        self._accumulated = None  # the gradient accumulator, reused from update to update

    def _device_batch(self, batch):
        """One step's host arrays, [n_devices * rows, ...], split over the devices."""
        placed = place(batch, self._rows_sharding)
        record_placed("training", placed["input_ids"])
        return placed

    # -- training

    def update(self, examples, update_index=None, rows_per_step=None, packed=None):
        """One optimizer update on `examples` (all of the update's, on every host: encoded
        pairs with their labels); returns the update's mean loss (on the device).

        `packed` is `pack_update` of their lengths when already computed;
        `rows_per_step` fixes the step shapes (`rows_per_step_for`).
        """
        update_index = self.update_count if update_index is None else update_index
        if packed is None:
            packed = pack_update([len(example["input_ids"]) for example in examples],
                                 self.max_length)
        if self._accumulated is None:
            self._accumulated = self._zeros(self.params)
        accumulated, weight = self._accumulated, 1.0 / len(examples)
        for index, (width, size, rows) in enumerate(
                plan_steps(packed, self.n_devices, self.step_tokens, rows_per_step)):
            rows = rows + [[]] * (size * self.n_devices - len(rows))
            batch = training_batch(examples, rows, width, self.pad_id, weight, self.label_key)
            accumulated = self._grad_step(self.params, accumulated, self._device_batch(batch),
                                          np.int32(update_index), np.int32(index))
        self.params, self.opt_state, self._accumulated, loss = self._apply_step(
            self.params, self.opt_state, accumulated)
        self.update_count = update_index + 1
        return loss

    def host_params(self):
        """The parameters as host arrays, one full copy on every process (a collective
        when the model is sharded over several hosts)."""
        return _gather(self.params)

    def host_opt_state(self):
        return _gather(self.opt_state)

    def scoring_params(self):
        """(params, placement) to hand to `cappy.engine.jobs.scoring.PairScorer.score`: on a model-
        sharded mesh the parameters as they lie; else a host copy, which the scorer places
        replicated (once, while it scores with the same)."""
        if not self.devices.model_sharded:
            return self.host_params(), {}
        return self.params, {"params_sharded": True}


# ---- training checkpoints (orbax, nothing pickled) ---------------------------------------

def save_state(trainer, path):
    """The trainer's parameters and optimizer state as an orbax checkpoint at `path`
    (every process calls it; each writes the shards it holds)."""
    import logging
    import os

    import orbax.checkpoint as ocp

    from cappy.engine.io import after_a_failed_write, drop_late_write_reports

    # Orbax's writer threads log a failure (a full disk) with its traceback, then the save
    # raises it here: the caller reports it once.
    drop_late_write_reports()
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        ocp.PyTreeCheckpointer().save(os.path.abspath(path),
                                      {"params": trainer.params, "opt_state": trainer.opt_state})
    except BaseException:
        # its writes in flight go on: let them end before the caller removes the folder
        after_a_failed_write(os.path.dirname(os.path.abspath(path)))
        raise
    finally:
        logger.setLevel(level)


def checkpoint_bytes(params):
    """About what `save_state` writes: parameters and AdamW's two moments in float32, and
    orbax's metadata."""
    from cappy.engine.weights.files import parameter_bytes

    return 3 * parameter_bytes(params) + (256 << 10)


def restore_state(path, params, optimizer):
    """(params, opt_state) as host arrays from a `save_state` checkpoint.

    The checkpoint is read against the structure of `params` and
    `optimizer.init(params)`, built here: nothing pickled is read, so a
    checkpoint outlives the JAX version that wrote it.
    """
    import os

    import orbax.checkpoint as ocp

    target = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.float32),
                                     params),
              "opt_state": jax.eval_shape(optimizer.init, params)}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    restored = ocp.PyTreeCheckpointer().restore(
        os.path.abspath(path), args=ocp.args.PyTreeRestore(item=target,
                                                           restore_args=restore_args))
    return restored["params"], restored["opt_state"]


def _zero_accumulator(params):
    return {"grads": jax.tree.map(jnp.zeros_like, params), "loss": jnp.zeros((), jnp.float32)}


def _gather(tree):
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental.multihost_utils import process_allgather

    return jax.tree.map(np.asarray, process_allgather(tree, tiled=True))


# ---- finetuning on a fixed set of examples ------------------------------------------------

def original_updates(examples, seed, per_update):
    """The examples of each optimizer update, as the original release formed them: in its
    seeded order (`cappy.engine.runtime.redco_adapter.original_example_order`), `per_update` at a time;
    a last, incomplete update is left out, as the original's accumulation never
    applied it."""
    from cappy.engine.runtime.redco_adapter import original_example_order

    order = original_example_order(seed, len(examples))
    return [[examples[i] for i in order[start:start + per_update]]
            for start in range(0, len(examples) - per_update + 1, per_update)]


def finetune_trainer(model, tokenizer, devices, train_size, seed, per_device_batch_size=8,
                     accumulate_grad_batches=16, learning_rate=2e-5, warmup_rate=0.1,
                     weight_decay=0.0, lr_schedule="paper", max_length=512,
                     params_sharding_rules=None, label_key="label"):
    """A Trainer with the finetuning recipe's optimizer and schedule for `train_size`
    examples, and the number of examples in each of its updates."""
    global_micro = devices.micro_batch_size(per_device_batch_size)
    if n_optimizer_updates(train_size, global_micro, accumulate_grad_batches) < 1:
        # Said for both callers: cappy_bigbench.py (--train_size) and cappy finetune (rows).
        raise CappyError(f"{train_size} training examples are smaller than one optimizer "
                         f"update ({global_micro} x {accumulate_grad_batches} examples): raise "
                         f"--train_size (a BIG-Bench task) or give more rows or --n_epochs "
                         f"(cappy finetune), or lower the batch size or accumulation")
    schedule = learning_rate_schedule(learning_rate, warmup_rate, train_size, global_micro,
                                      accumulate_grad_batches, lr_schedule)
    trainer = Trainer(model, devices, make_optimizer(schedule, weight_decay), max_length,
                      tokens_per_step(per_device_batch_size, max_length), tokenizer.pad_token_id,
                      seed, params_sharding_rules=params_sharding_rules, label_key=label_key)
    return trainer, global_micro * accumulate_grad_batches


def train_updates(trainer, updates, desc="finetuning", progress=True):
    """Run the updates (lists of encoded examples) in order, one step shape per row width
    (`rows_per_step_for`); returns the last update's loss."""
    packed = [pack_update([len(example["input_ids"]) for example in examples],
                          trainer.max_length) for examples in updates]
    rows_per_step = rows_per_step_for(packed, trainer.n_devices, trainer.step_tokens)
    bar = progress_bar(range(len(updates)), desc=desc, unit="update", shown=progress)
    previous = None
    for index in bar:
        loss = trainer.update(updates[index], index, rows_per_step, packed[index])
        if previous is not None:  # the previous update's: fetching it never stalls this one
            bar.set_postfix(loss=f"{float(previous):.4f}")
        previous = loss
    return None if previous is None else float(previous)


def finetune(model, tokenizer, devices, examples, seed, per_device_batch_size=8,
             accumulate_grad_batches=16, learning_rate=2e-5, warmup_rate=0.1, weight_decay=0.0,
             lr_schedule="paper", max_length=512, params_sharding_rules=None, label_key="label",
             desc="finetuning", progress=True):
    """One pass over encoded examples as the original release made it (the same
    examples in each optimizer update, the same schedule); returns the Trainer."""
    trainer, per_update = finetune_trainer(
        model, tokenizer, devices, len(examples), seed, per_device_batch_size,
        accumulate_grad_batches, learning_rate, warmup_rate, weight_decay, lr_schedule,
        max_length, params_sharding_rules, label_key)
    trainer.last_loss = train_updates(trainer, original_updates(examples, seed, per_update),
                                      desc, progress)
    return trainer
