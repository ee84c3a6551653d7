"""Pretraining Cappy: MSE regression of a RoBERTa-style encoder on a stream of
(instruction, response, label) pairs, as the paper did on about 160 million
PromptSource pairs (never released), with cappy's packed trainer
(`cappy.engine.jobs.training`) on one device, several, or several hosts. The backbone is any
RoBERTa-style checkpoint (a fresh one-output head, initialised from the seed) or
a Cappy (its head kept).

Data: the shards `cappy pretraining-data` writes (`cappy.pretraining.shards` holds their
contract: the manifest, each shard checked against its row count and checksum before
any of its rows is trained on).

The training stream is a function of the seed alone: each pass over the data
queues the train shards in a seeded order, rows are drawn at random from
`interleave_shards` open shards at a time (the builder writes one dataset per
shard) and then pass through a shuffle buffer of `shuffle_buffer` rows. Rows are
parsed and tokenized only when a batch needs them. Step `n` (an optimizer
update) always sees the same examples and dropout keys, so a resumed run
follows an uninterrupted one exactly. Evaluation scores `eval_size` validation
rows sampled (seeded) across all validation shards.

Output folder: `checkpoints/step-{N}/` (parameters and optimizer state as an
orbax checkpoint with no pickled JAX objects, restored against the model's own
parameters; `info.json` with the step, data position and settings; written
beside and renamed into place; the last `keep_checkpoints` kept), `log.jsonl` (training loss, learning rate,
throughput, evaluation), and `final/`, a Hugging Face folder that
`Cappy.from_pretrained` and `cappy_bigbench.py --model_name_or_path` load.
Starting again with the same command resumes from the last checkpoint.
"""

import dataclasses
import itertools
import json
import os
import re
import shutil
import time

import numpy as np

from cappy.engine.config import MIN_MAX_LENGTH, REQUIRED, changed_settings, setting
from cappy.engine.config import check_config as check_bounds
from cappy.engine.errors import CappyError
from cappy.engine.io import remove_stale_staging
from cappy.engine.runtime.hosts import HostSettings, join
from cappy.engine.runtime.leader import progress_bar, writes_outputs
from cappy.engine.runtime.process import job_command
from cappy.engine.weights.cappy_checkpoint import DTYPES
from cappy.pretraining.shards import find_shards, parse_pair, shard_rows

CHECKPOINT_PATTERN = re.compile(r"^step-(\d+)$")
LOG_NAME = "log.jsonl"
# Settings that fix which examples and updates step N makes: resuming with others
# would silently give another run.
TRAJECTORY_SETTINGS = ("seed", "shuffle_buffer", "interleave_shards", "max_length",
                       "global_batch_size", "max_steps", "learning_rate", "warmup_steps",
                       "weight_decay")


# ---- data -----------------------------------------------------------------------


def sample_pairs(shards, size, seed):
    """`size` rows drawn evenly from all the shards (all when fewer), in file order, validated.

    The builder writes one dataset per shard, so the first rows would all come
    from one dataset.
    """
    total = sum(shard[1] for shard in shards)
    chosen = np.arange(total)
    if size < total:
        chosen = np.sort(np.random.default_rng([seed, 3]).choice(total, size, replace=False))
    wanted, position, pairs = iter(chosen.tolist()), 0, []
    target = next(wanted, None)
    for path, rows, *checksum in shards:
        for _, line_number, text in shard_rows(path, rows, *checksum):
            if position == target:
                pairs.append(parse_pair(path, line_number, text))
                target = next(wanted, None)
            position += 1
            if target is None:
                return pairs
    return pairs


def _uniform_draws(rng, block=4096):
    while True:
        yield from rng.random(block).tolist()


class PairStream:
    """The training pairs in an endless order fixed by `seed`.

    Shards are queued pass after pass, each pass in the order of a permutation
    seeded by (seed, pass). `interleave` of them are open at a time and each row
    comes from one of them drawn at random, so a batch mixes many datasets (the
    builder writes one dataset per shard); a shuffle buffer of `buffer_size`
    rows then breaks up what stays together within a shard (an example's
    templates). `pairs(start)` skips the first `start` rows without parsing
    them, which is how a resumed run finds its place.
    """

    def __init__(self, shards, seed, buffer_size, interleave=32):
        self.shards = [shard for shard in shards if shard[1]]
        self.seed = seed
        self.n_rows = sum(shard[1] for shard in self.shards)
        if not self.n_rows:
            raise CappyError("no training rows")
        # A buffer larger than the data would hold rows of several passes at once.
        self.buffer_size = max(1, min(buffer_size, self.n_rows))
        self.interleave = max(1, min(interleave, len(self.shards)))

    def _shard_queue(self):
        for data_pass in itertools.count():
            yield from np.random.default_rng([self.seed, 0, data_pass]).permutation(
                len(self.shards)).tolist()

    def _interleaved_lines(self):
        queue = self._shard_queue()
        draws = _uniform_draws(np.random.default_rng([self.seed, 2]))
        readers = [shard_rows(*self.shards[next(queue)]) for _ in range(self.interleave)]
        while True:
            reader = int(next(draws) * len(readers))
            line = next(readers[reader], None)
            if line is None:  # the shard is done: the next one in the queue takes its place
                readers[reader] = shard_rows(*self.shards[next(queue)])
                continue
            yield line

    def lines(self, start=0):
        """(path, line_number, text) of each row from position `start` on, unparsed."""
        slots = (int(u * self.buffer_size)
                 for u in _uniform_draws(np.random.default_rng([self.seed, 1])))
        buffer, position = [], 0
        for line in self._interleaved_lines():
            if len(buffer) < self.buffer_size:
                buffer.append(line)
                continue
            slot = next(slots)
            if position >= start:
                yield buffer[slot]
            position += 1
            buffer[slot] = line

    def pairs(self, start=0):
        """Validated {"instruction", "response", "label"} from position `start` on."""
        for path, line_number, text in self.lines(start):
            yield parse_pair(path, line_number, text)


# ---- checkpoints and log ------------------------------------------------------------

def checkpoints_dir(output_dir):
    return os.path.join(output_dir, "checkpoints")


def list_checkpoints(output_dir):
    """[(step, folder)] of complete checkpoints, oldest first."""
    folder = checkpoints_dir(output_dir)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = CHECKPOINT_PATTERN.match(name)
        path = os.path.join(folder, name)
        if match and os.path.isfile(os.path.join(path, "info.json")):
            found.append((int(match.group(1)), path))
    return sorted(found)


def read_checkpoint_info(path):
    from cappy.engine.io import read_json

    return read_json(os.path.join(path, "info.json"))


def _sync(name):
    import jax

    if jax.process_count() > 1:
        from jax.experimental.multihost_utils import sync_global_devices

        sync_global_devices(name)


def last_checkpoint_kept(output_dir, advice="free space, then run the same command"):
    """What a run that stops now leaves to resume from, for its error line."""
    found = list_checkpoints(output_dir)
    if not found:
        return f"no checkpoint had been written: {advice} to start again"
    step, path = found[-1]
    return f"the last checkpoint, step {step} ({path}), is intact: {advice} to resume from it"


def save_training_checkpoint(trainer, output_dir, step, info, keep):
    """Write `checkpoints/step-{step}` beside, rename it into place, then drop old ones: a
    write that fails (a full disk: one line) never costs the checkpoint before it."""
    from cappy.engine.io import check_room_to_write, dump_json, staged_folder
    from cappy.engine.jobs.training import checkpoint_bytes, save_state

    final = os.path.join(checkpoints_dir(output_dir), f"step-{step}")
    leader = writes_outputs()
    kept, needed = last_checkpoint_kept(output_dir), checkpoint_bytes(trainer.params)
    # Before orbax starts: a write it cannot finish leaves work in flight behind it.
    check_room_to_write(final, needed, kept)
    # Every process writes its shards into one staging folder; process 0 makes and renames it.
    with staged_folder(final, needed, kept, shared=True, leader=leader) as staging:
        _sync(f"checkpoint {step} staged")
        save_state(trainer, os.path.join(staging, "state"))
        _sync(f"checkpoint {step} written")
        if leader:
            # last: marks it complete (a plain write: the folder is renamed into place)
            with open(os.path.join(staging, "info.json"), "w", encoding="utf-8") as file:
                dump_json(file, info)
    if leader:
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _sync(f"checkpoint {step} in place")
    return final


def check_room(config, params, tokenizer, start_step, stop_step, n_existing):
    """The disk of the output folder holds the checkpoints and model this run will write."""
    from cappy.engine.io import check_free_space, human_bytes
    from cappy.engine.jobs.training import checkpoint_bytes

    check_free_space(
        config.output_dir, disk_needed(config, params, tokenizer, start_step, stop_step,
                                       n_existing),
        f"this run's checkpoints (about {human_bytes(checkpoint_bytes(params))} each, "
        f"--keep_checkpoints {config.keep_checkpoints} and one being written) and final model",
        "free space, lower --keep_checkpoints, or choose another --output_dir")


def disk_needed(config, params, tokenizer, start_step, stop_step, n_existing):
    """Bytes this run adds to its output folder at its fullest: the checkpoints on disk at
    once (those kept and the one being written), or those kept and the final model."""
    from cappy.engine.jobs.training import checkpoint_bytes
    from cappy.engine.weights.cappy_checkpoint import saved_model_bytes

    each = checkpoint_bytes(params)
    saves = set()
    if stop_step > start_step:
        saves = {stop_step} | (set(range((start_step // config.save_every + 1) * config.save_every,
                                         stop_step + 1, config.save_every))
                               if config.save_every else set())
    total = n_existing + len(saves)
    peak = min(config.keep_checkpoints + 1, total) * each
    if stop_step == config.max_steps:
        peak = max(peak, min(config.keep_checkpoints, total) * each
                   + saved_model_bytes(params, tokenizer))
    return max(0, peak - n_existing * each)


def append_log(path, row):
    """One JSON line, flushed: a crash loses at most the line being written (a torn line
    is dropped on resume, `trim_log`)."""
    from cappy.engine.io import disk_full_as_error

    size = os.path.getsize(path) if os.path.exists(path) else 0
    try:
        with disk_full_as_error(path, kept=last_checkpoint_kept(os.path.dirname(path))), \
                open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(row) + "\n")
            file.flush()
    except CappyError:
        os.truncate(path, size)  # no torn line
        raise


def trim_log(path, last_step):
    """Keep the log rows up to `last_step` (None: none); drop a torn last line."""
    from cappy.engine.io import write_jsonl

    if not os.path.isfile(path):
        return
    rows = []
    with open(path, encoding="utf-8") as file:
        for text in file:
            try:
                row = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and last_step is not None and row.get("step", 0) <= last_step:
                rows.append(row)
    write_jsonl(path, rows)


def _check_output_dir(output_dir, checkpoints):
    from cappy.engine.io import check_output_folder

    check_output_folder(output_dir, "--output_dir")
    if not os.path.isdir(output_dir):
        return
    ours = {"checkpoints", LOG_NAME, "final"}
    foreign = sorted(name for name in os.listdir(output_dir) if name not in ours
                     and not name.startswith((".", "final.partial-")))
    if foreign:
        raise CappyError(f"{output_dir}: not a pretraining folder (holds {', '.join(foreign[:3])})"
                         f"; choose another --output_dir")
    if not checkpoints and os.path.isdir(os.path.join(output_dir, "final")):
        raise CappyError(f"{output_dir}: holds a final model but no checkpoint to resume from; "
                         f"choose another --output_dir")


# ---- the run -----------------------------------------------------------------------

def check_config(config):
    """The bounds each setting declares, then the ones between settings."""
    check_bounds(config)
    if config.eval_every and config.eval_size < 1:
        raise CappyError(f"--eval_size must be at least 1 with --eval_every, "
                         f"got {config.eval_size}")
    if config.warmup_steps is not None and not 0 <= config.warmup_steps <= config.max_steps:
        raise CappyError(f"--warmup_steps must be in [0, --max_steps={config.max_steps}], "
                         f"got {config.warmup_steps}")
    if config.stop_after_steps is not None and not 1 <= config.stop_after_steps <= config.max_steps:
        raise CappyError(f"--stop_after_steps must be in [1, --max_steps={config.max_steps}], "
                         f"got {config.stop_after_steps}")


def _next_boundary(step, end, periods):
    """The first step after `step` that is a multiple of a period, or `end`."""
    candidates = [end] + [(step // p + 1) * p for p in periods if p]
    return min(candidates)


def _eval_metrics(scores, labels):
    positive, negative = labels >= 0.5, labels < 0.5
    return {"eval_mse": float(np.mean((scores - labels) ** 2)),
            "eval_mean_score_positive": float(scores[positive].mean()) if positive.any() else None,
            "eval_mean_score_negative": float(scores[negative].mean()) if negative.any() else None,
            "eval_rows": int(len(labels))}


def _resume_point(config, checkpoints, settings, train_shards):
    """(step, checkpoint folder) to continue from, or (0, None); refuse another run's."""
    if not checkpoints:
        return 0, None
    step, folder = checkpoints[-1]
    info = read_checkpoint_info(folder)
    changed = changed_settings(info["settings"], settings, TRAJECTORY_SETTINGS)
    if changed:
        raise CappyError(f"{folder}: made with other settings ({'; '.join(changed)}); "
                         f"use the same flags to resume, or another --output_dir")
    if info.get("train_shards") != train_shards:
        raise CappyError(f"{folder}: made on other training shards than {config.data_dir} lists "
                         f"now; resume on the same data, or use another --output_dir")
    return step, folder


def pretrain(config, log=print):
    """Pretrain as configured by cappy_pretrain.py's flags; return the run's summary. A device
    out of memory ends in one line naming the settings to lower; the last checkpoint stays."""
    from cappy.engine.errors import device_memory_guard

    with device_memory_guard(
            f"lower --per_device_batch_size ({config.per_device_batch_size}), or split the "
            f"model over more devices with --n_model_shards ({config.n_model_shards}), raising "
            f"--accumulate_grad_batches ({config.accumulate_grad_batches}) as much (the same "
            f"steps), or lower --eval_per_device_batch_size "
            f"({config.eval_per_device_batch_size})",
            lambda: last_checkpoint_kept(config.output_dir, "run again with those settings")):
        return _pretrain(config, log)


def _pretrain(config, log):
    check_config(config)
    shards = find_shards(config.data_dir)
    checkpoints = list_checkpoints(config.output_dir)
    _check_output_dir(config.output_dir, checkpoints)
    if checkpoints and config.no_resume:
        raise CappyError(f"{config.output_dir}: has checkpoints (last: step {checkpoints[-1][0]}); "
                         f"drop --no_resume to continue from it, or choose another --output_dir")
    validation = []
    if config.eval_every:
        validation = sample_pairs(shards["validation"], config.eval_size, config.seed)
        if not validation:
            raise CappyError(f"{config.data_dir}: no validation rows to evaluate on "
                             f"(use --eval_every 0 to train without evaluation)")


    from cappy.engine.jobs.session import Cappy
    from cappy.engine.jobs.training import (
        make_optimizer,
        restore_state,
        warmup_then_linear_decay,
    )
    from cappy.engine.runtime.mesh import data_parallel_size

    join(config)  # the devices of every process, before the settings are checked
    leader = writes_outputs()
    say = log if leader else (lambda *_: None)
    global_micro = config.per_device_batch_size * data_parallel_size(config.n_model_shards)
    accumulate = config.accumulate_grad_batches
    global_batch = global_micro * accumulate
    warmup_steps = (config.warmup_steps if config.warmup_steps is not None
                    else config.max_steps // 10)
    train_shards = [[os.path.relpath(path, config.data_dir), rows]
                    for path, rows, _ in shards["train"]]
    settings = {"seed": config.seed, "shuffle_buffer": config.shuffle_buffer,
                "interleave_shards": config.interleave_shards, "max_length": config.max_length,
                "global_batch_size": global_batch, "max_steps": config.max_steps,
                "learning_rate": config.learning_rate, "warmup_steps": warmup_steps,
                "weight_decay": config.weight_decay}
    start_step, resume_from = _resume_point(config, checkpoints, settings, train_shards)
    stop_step = min(config.stop_after_steps or config.max_steps, config.max_steps)
    final_dir = os.path.join(config.output_dir, "final")
    if start_step >= config.max_steps and os.path.isfile(os.path.join(final_dir, "config.json")):
        say(f"{config.output_dir}: already finished ({config.max_steps} steps); final model in "
            f"{final_dir}")
        return {"step": start_step, "final": final_dir, "finished": True}

    started = time.time()
    cappy = Cappy.from_pretrained(config.model_name_or_path, dtype=config.dtype,
                                  max_length=config.max_length,
                                  batch_size=config.eval_per_device_batch_size,
                                  n_model_shards=config.n_model_shards, hosts=config,
                                  seed=config.seed, new_head_seed=config.seed)
    model = cappy.model
    # Before any step (every process, as every process writes checkpoints).
    check_room(config, model.params, cappy.tokenizer, start_step, stop_step, len(checkpoints))
    # steps are optimizer updates: warm-up and decay counted in updates
    schedule = warmup_then_linear_decay(config.learning_rate, warmup_steps, config.max_steps)
    optimizer = make_optimizer(schedule, config.weight_decay)
    if resume_from:
        say(f"resuming from {resume_from} (step {start_step} of {config.max_steps}; skipping the "
            f"{start_step * global_batch} examples seen)")
    else:
        say(f"starting from {config.model_name_or_path}"
            + (f" with a new regression head (seed {config.seed})" if model.new_head
               else " (a Cappy checkpoint: pretraining continues)"))
    # On the backbone's parameters, or on a checkpoint's with its optimizer state.
    params = opt_state = None
    if resume_from:
        params, opt_state = restore_state(os.path.join(resume_from, "state"), model.params,
                                          optimizer)
    trainer = cappy.make_trainer(optimizer, config.per_device_batch_size, config.seed,
                                 params=params, opt_state=opt_state)
    labels = np.array([pair["label"] for pair in validation], np.float32)

    def evaluate():
        cappy.use_trainer(trainer)  # its parameters now
        scores = cappy.score([p["instruction"] for p in validation],
                             [p["response"] for p in validation], desc="evaluating")
        return _eval_metrics(scores, labels)

    def checkpoint(step):
        save_training_checkpoint(
            trainer, config.output_dir, step,
            {"step": step, "examples_seen": step * global_batch, "settings": settings,
             "train_shards": train_shards, "model_name_or_path": config.model_name_or_path},
            config.keep_checkpoints)

    log_path = os.path.join(config.output_dir, LOG_NAME)
    if leader:
        os.makedirs(checkpoints_dir(config.output_dir), exist_ok=True)
        # the checkpoints a crash left unfinished (this run holds the output folder)
        remove_stale_staging(checkpoints_dir(config.output_dir), locked=True)
        trim_log(log_path, start_step if resume_from else None)
    _sync("output folder ready")

    last_eval = None
    if validation and not resume_from:  # a baseline, and an early check that evaluation works
        last_eval = evaluate()
        if leader:
            append_log(log_path, {"step": 0, "examples_seen": 0, **last_eval})
        say(f"step 0: eval MSE {last_eval['eval_mse']:.4f}")

    stream = PairStream(shards["train"], config.seed, config.shuffle_buffer,
                        config.interleave_shards)
    pairs = stream.pairs(start=start_step * global_batch)
    step, losses, train_seconds, n_logged = start_step, [], 0.0, 0
    progress = progress_bar(total=stop_step, initial=start_step, desc="pretraining",
                            unit="step", shown=config.verbose)
    while step < stop_step:
        # Train up to the next log, evaluation or checkpoint: bounded memory, one sync.
        end = _next_boundary(step, stop_step,
                             (config.log_every, config.eval_every, config.save_every))
        tic = time.time()
        chunk_losses = []
        done = step
        try:
            for update in range(step, end):
                rows = list(itertools.islice(pairs, global_batch))  # tokenized only now
                encoded = cappy.encode(rows)
                chunk_losses.append(trainer.update(encoded, update))
                done = update + 1
        except CappyError as error:  # a bad shard, found when the stream opened it
            if done == start_step:
                raise
            checkpoint(done)  # keep the work done: the fixed data resumes from here
            raise CappyError(f"{error}; the run stopped after a checkpoint at step {done}: "
                             f"then run the same command to resume") from None
        losses += [float(loss) for loss in chunk_losses]
        train_seconds += time.time() - tic
        n_logged += end - step
        progress.update(end - step)
        progress.set_postfix(loss=f"{losses[-1]:.4f}")
        step = end

        evaluating = bool(config.eval_every) and step % config.eval_every == 0
        if step % config.log_every == 0 or evaluating or step == stop_step:
            row = {"step": step, "examples_seen": step * global_batch,
                   "train_loss": float(np.mean(losses)),
                   "learning_rate": float(schedule(step - 1)),  # of the last update
                   "examples_per_s": round(n_logged * global_batch / max(train_seconds, 1e-9), 2)}
            if evaluating:
                last_eval = evaluate()
                row.update(last_eval)
                progress.clear()  # the line goes above the bar, not into it
                say(f"step {step}: train loss {row['train_loss']:.4f}, "
                    f"eval MSE {last_eval['eval_mse']:.4f}")
                progress.refresh()
            if leader:
                append_log(log_path, row)
            losses, train_seconds, n_logged = [], 0.0, 0
        if (config.save_every and step % config.save_every == 0) or step == stop_step:
            checkpoint(step)
    progress.close()

    summary = {"step": step, "max_steps": config.max_steps, "examples_seen": step * global_batch,
               "train_rows": stream.n_rows, "passes": round(step * global_batch / stream.n_rows, 4),
               "last_eval": last_eval, "seconds": round(time.time() - started, 2)}
    if step < config.max_steps:
        say(f"stopped at step {step} of {config.max_steps}; run the same command without "
            f"--stop_after_steps to resume")
        return summary
    cappy.use_trainer(trainer)
    cappy.save(final_dir, {**summary, "settings": {k: v for k, v in sorted(vars(config).items())}},
               "cappy_pretrain.json",  # every process gathers; process 0 writes
               kept=last_checkpoint_kept(config.output_dir))
    _sync("final model written")
    say(f"finished {config.max_steps} steps; final model in {final_dir}")
    return {**summary, "final": final_dir}


# --- the command: cappy_pretrain.py ---

@dataclasses.dataclass(kw_only=True)
class PretrainConfig(HostSettings):
    """A pretraining run: its flags (cappy_pretrain.py)."""
    data_dir: str = setting(REQUIRED, "folder with manifest.json and shards/")
    output_dir: str = setting(REQUIRED, "where checkpoints, log.jsonl and the final Cappy are "
                                        "written")
    model_name_or_path: str = setting(
        "roberta-large", "a RoBERTa-style checkpoint (new regression head) or a Cappy "
                         "(continued)")
    dtype: str = setting("float32", "compute dtype; parameters and optimizer state stay "
                                    "float32", choices=DTYPES)
    max_steps: int = setting(REQUIRED, "optimizer updates in all", type=int, at_least=1)
    per_device_batch_size: int = setting(32, "examples per device per micro-batch", at_least=1)
    accumulate_grad_batches: int = setting(1, "micro-batches per optimizer update", at_least=1)
    learning_rate: float = setting(1e-5, "peak rate", at_least=0)
    warmup_steps: int | None = setting(
        None, "linear warm-up from 0 (default: 10%% of --max_steps), then linear decay to 0 "
              "at --max_steps", type=int)
    weight_decay: float = setting(0.01, "AdamW decay, not on biases or LayerNorm", at_least=0)
    max_length: int = setting(512, "tokens per pair; longer pairs lose tokens from the longer "
                                   "side first", at_least=MIN_MAX_LENGTH)
    interleave_shards: int = setting(32, "shards read at once, each row from one of them at "
                                         "random", at_least=1)
    shuffle_buffer: int = setting(100000, "rows shuffled together after interleaving", at_least=1)
    seed: int = setting(11111, "data order, dropout and the new head's initialisation")
    save_every: int = setting(1000, "steps between checkpoints (0: only at the end or stop)",
                              at_least=0)
    keep_checkpoints: int = setting(2, "checkpoints kept on disk, newest first", at_least=1)
    eval_every: int = setting(1000, "steps between evaluations on validation pairs (0: none)",
                              at_least=0)
    eval_size: int = setting(2000, "validation rows evaluated, sampled across all validation "
                                   "shards")
    eval_per_device_batch_size: int = setting(64, "validation pairs per device per batch",
                                              at_least=1)
    log_every: int = setting(50, "steps between log.jsonl rows", at_least=1)
    stop_after_steps: int | None = setting(
        None, "checkpoint and exit after this step (the schedule still runs to --max_steps); "
              "run again without it to continue", type=int)
    no_resume: bool = setting(False, "stop with an error if --output_dir already has "
                                     "checkpoints")
    n_model_shards: int = setting(1, "devices each model copy is split over", at_least=1)
    verbose: bool = setting(True, "no progress bar", flag="--quiet")


COMMAND_DOC = """Pretrain Cappy from a RoBERTa checkpoint on (instruction, response, label) shards.

Paper scale (RoBERTa-large, pairs from scripts/build_pretraining_data.py), one host
with 8 accelerators: one pass over 160M pairs at 8 x 32 pairs per step is 625,000 steps.

    XLA_PYTHON_CLIENT_MEM_FRACTION=.95 python cappy_pretrain.py \
        --data_dir pretraining_data --output_dir cappy-pretrain \
        --model_name_or_path roberta-large --dtype bfloat16 \
        --per_device_batch_size 32 --accumulate_grad_batches 1 \
        --max_steps 625000 --learning_rate 1e-5 --warmup_steps 10000

Several hosts: run the same command on each, adding `--n_processes N
--host0_address ADDR --process_id I` (the output folder must be on a shared
filesystem). Tiny offline run (a random model, a few hand-made shards):

    python scripts/make_tiny_models.py --output_dir demo_run/models --models tiny-cappy
    python cappy_pretrain.py --data_dir my_shards --output_dir demo_run/pretrain \
        --model_name_or_path demo_run/models/tiny-cappy --max_steps 20 \
        --per_device_batch_size 4 --save_every 10 --eval_every 10 --log_every 5

Steps are optimizer updates, each of `per_device_batch_size x devices x
accumulate_grad_batches` pairs. Checkpoints go to `{output_dir}/checkpoints`
every --save_every steps; running the same command again resumes from the last
one and follows the uninterrupted run exactly (--no_resume refuses instead).
`{output_dir}/log.jsonl` has the training loss, learning rate, throughput and
the evaluation on held-out pairs; `{output_dir}/final` is the pretrained Cappy
(`Cappy.from_pretrained`, `cappy_bigbench.py --model_name_or_path`). The
paper's own hyperparameters and timings were not published; the defaults here
are ours, and no full-scale run has been timed with this script.
"""

parse_args, main = job_command(PretrainConfig, COMMAND_DOC, pretrain)
