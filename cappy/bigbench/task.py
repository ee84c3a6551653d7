"""One BIG-Bench task, one generator: finetune Cappy on the training split's
candidates, rerank the validation split's candidates, and score the choices.

Outputs, both written atomically once the run has finished (never a
placeholder): `{results_dir}/{gen_model}/{task}.json` with `rougeL` and the
run's settings, counts and timings, and `{task}.predictions.jsonl` beside it
with each validation instruction's chosen candidate and its score.
"""

import contextlib
import dataclasses
import os
import platform
import time

import numpy as np

from cappy.bigbench.candidates import all_candidates, candidate_path, read_candidate_file
from cappy.bigbench.examples import build_finetune_examples
from cappy.bigbench.results import read_result, result_paths
from cappy.engine.weights.cappy_checkpoint import DTYPES
from cappy.engine.config import MIN_MAX_LENGTH, check_config, setting, settings_of
from cappy.engine.runtime.process import job_command
from cappy.engine.runtime.hosts import HostSettings, join
from cappy.engine.runtime.leader import writes_outputs
from cappy.engine.errors import device_memory_guard
from cappy.engine.io import atomic_files, check_output_folder, dump_json, dump_jsonl, run_lock
from cappy.engine.ranking import best_index
from cappy.engine.recipes import LR_SCHEDULES
from cappy.engine.rouge import rouge_l


def run_task(config, log=print, rerun_hint="use --overwrite to run again"):
    """Run one task as configured by `config` (a TaskConfig); return the result (None when it
    exists already: `rerun_hint` tells how to redo it)."""
    check_config(config)
    import jax

    from cappy.engine.jobs.session import Cappy
    from cappy.engine.jobs.training import n_optimizer_updates

    result_path, predictions_path = result_paths(config.results_dir, config.bigbench_gen_model,
                                                 config.bigbench_subset_name)
    state, value = read_result(result_path)
    if state == "done" and not config.overwrite:
        log(f"skip: {result_path} exists ({rerun_hint})")
        return None
    if state == "unfinished":  # as the batch runner treats it: run the task again
        log(f"{result_path} holds no finished result ({value}); running the task again")
    check_output_folder(os.path.dirname(result_path), "--results_dir")
    start = time.time()
    keys = dict(src_key=config.src_key, tgt_key=config.tgt_key, refs_key=config.refs_key)
    paths = {split: candidate_path(config.bigbench_gen_dir, config.bigbench_gen_model,
                                   config.bigbench_subset_name, split)
             for split in ("train", "validation")}
    train_rows = read_candidate_file(paths["train"], **keys)
    validation_rows = read_candidate_file(paths["validation"], **keys)

    join(config)  # which process is 0 is known once the processes have joined
    # One run of this (generator, task) at a time; process 0 writes, so it holds the lock.
    lock = (run_lock(result_path, result_path) if writes_outputs()
            else contextlib.nullcontext())
    with lock, device_memory_guard(
            f"lower --per_device_batch_size ({config.per_device_batch_size}, finetuning; raise "
            f"--accumulate_grad_batches as much to keep each update's examples), "
            f"--eval_per_device_batch_size ({config.eval_per_device_batch_size}, scoring) or "
            f"--max_length ({config.max_length}), or split the model over more devices with "
            f"--n_model_shards", lambda: f"{result_path} was left as it was"):
        cappy = Cappy.from_pretrained(config.model_name_or_path, dtype=config.dtype,
                                      max_length=config.max_length,
                                      batch_size=config.eval_per_device_batch_size,
                                      n_model_shards=config.n_model_shards, hosts=config,
                                      seed=config.seed, progress=config.verbose)
        examples, n_distinct = build_finetune_examples(
            train_rows, config.train_size, config.seed, src_key=config.src_key,
            tgt_key=config.tgt_key,
            refs_key=config.refs_key, label_key=config.label_key)
        encoded = cappy.encode(examples, config.src_key, config.tgt_key, config.label_key)
        built = time.time()

        if config.learning_rate > 0:
            cappy.finetune(
                examples=encoded, seed=config.seed,
                per_device_batch_size=config.per_device_batch_size,
                accumulate_grad_batches=config.accumulate_grad_batches,
                learning_rate=config.learning_rate, warmup_rate=config.warmup_rate,
                weight_decay=config.weight_decay, lr_schedule=config.lr_schedule,
                label_key=config.label_key,
                desc=f"{config.bigbench_gen_model}/{config.bigbench_subset_name}")
            n_updates = n_optimizer_updates(
                config.train_size, cappy.global_micro_batch_size(config.per_device_batch_size),
                config.accumulate_grad_batches)
        else:  # zero-shot: score with the initial model
            n_updates = 0
        trained = time.time()

        # Every candidate of every row; the scorer scores each distinct pair once.
        pairs = [(row[config.src_key], cand[config.tgt_key]) for row in validation_rows
                 for cand in all_candidates(row, config.tgt_key)]
        scores = cappy.score([p[0] for p in pairs], [p[1] for p in pairs],
                             desc="scoring validation candidates")
        score_of = dict(zip(pairs, scores.tolist()))
        choices = rerank_rows(validation_rows, score_of, config.src_key, config.tgt_key)
        per_row = [rouge_l(choice, row[config.refs_key])
                   for (choice, _), row in zip(choices, validation_rows)]
        scored = time.time()

        result = {
            "rougeL": float(np.mean(per_row)),
            "task": config.bigbench_subset_name,
            "gen_model": config.bigbench_gen_model,
            "counts": {"train_rows": len(train_rows), "validation_rows": len(validation_rows),
                       "distinct_train_examples": n_distinct, "train_examples": len(examples),
                       "optimizer_updates": n_updates,
                       "validation_candidates": sum(len(all_candidates(r, config.tgt_key))
                                                    for r in validation_rows),
                       "distinct_pairs_scored": len(score_of)},
            "truncation": cappy.truncation,
            "timings_s": {"build": round(built - start, 2), "train": round(trained - built, 2),
                          "score": round(scored - trained, 2), "total": round(scored - start, 2)},
            "settings": settings_of(config),
            "environment": {"devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
                            "processes": jax.process_count(), "python": platform.python_version(),
                            "jax": jax.__version__},
        }
        if writes_outputs():
            # Both or neither: a full disk never pairs new predictions with an old result.
            with atomic_files() as files:
                dump_jsonl(files.open(predictions_path), [
                    {"example_idx": row.get("example_idx", i),
                     config.src_key: row[config.src_key], config.refs_key: row[config.refs_key],
                     "choice": choice, "score": score, "rougeL": value}
                    for i, (row, (choice, score), value) in enumerate(
                        zip(validation_rows, choices, per_row))])
                dump_json(files.open(result_path), result)  # last: its presence means done
        log(f"Cappy + {config.bigbench_gen_model} on {config.bigbench_subset_name}: "
            f"ROUGE-L {100 * result['rougeL']:.2f} ({result['timings_s']['total']:.0f} s)")
        return result


def rerank_rows(rows, score_of, src_key="instruction", tgt_key="response"):
    """Each row's best candidate by score; ties go to the earliest in file order."""
    choices = []
    for row in rows:
        texts = [cand[tgt_key] for cand in all_candidates(row, tgt_key)]
        scores = [score_of[(row[src_key], text)] for text in texts]
        best = best_index(scores)
        choices.append((texts[best], float(scores[best])))
    return choices


# --- the command: cappy_bigbench.py, python -m cappy.bigbench.task (the batch runner's child) ---

COMMAND_DOC = """Boost a generator LLM with Cappy on one BIG-Bench task (the paper's Table 2).

    XLA_PYTHON_CLIENT_MEM_FRACTION=.95 python cappy_bigbench.py \
        --model_name_or_path btan2/cappy-large --bigbench_gen_model flan-t5-xxl \
        --bigbench_subset_name auto_categorization --train_size 102400

Finetunes Cappy on the task's training instructions with ROUGE-L-labelled
candidates (gold references 1.0, a mismatched reference 0.0), then picks Cappy's
best of the 17 candidates for each validation instruction and reports ROUGE-L.
Writes `{results_dir}/{gen_model}/{task}.json` and `{task}.predictions.jsonl`.
The original reports 40 minutes per task on one A10G GPU; expected ROUGE-L
per task is in cappy/data/paper_results.json (mean over 45 tasks: 37.17 with
FLAN-T5-XXL candidates). `--learning_rate 0` skips finetuning and reranks with
the initial model. `--lr_schedule paper` (default) reproduces the published
schedule; `--lr_schedule corrected` counts warm-up and decay in optimizer
updates (see cappy/engine/jobs/training.py and the README).
"""


@dataclasses.dataclass
class TaskConfig(HostSettings):
    """One BIG-Bench task's run: its flags, and the `settings` saved in its result file."""
    bigbench_gen_dir: str = setting("bigbench_flan_gens",
                                    "folder of candidate folders, one per generator")
    bigbench_gen_model: str = setting(
        "flan-t5-xxl", "the generator whose candidates to rerank (a folder in "
                       "--bigbench_gen_dir)")
    bigbench_subset_name: str = setting("auto_categorization", "the BIG-Bench task")
    src_key: str = setting("instruction", "the instruction's field in the candidate rows")
    tgt_key: str = setting("response", "the response's field in the training examples")
    refs_key: str = setting("references", "the references' field in the candidate rows")
    label_key: str = setting("label", "the label's field in the training examples")
    model_name_or_path: str = setting("btan2/cappy-large",
                                      "the Cappy to finetune: a hub id or a folder")
    n_model_shards: int = setting(1, "devices each model copy is split over", at_least=1)
    max_length: int = setting(512, "tokens per pair; longer pairs are cut by the checkpoint's "
                                   "truncation policy", at_least=MIN_MAX_LENGTH)
    dtype: str = setting("float32", "compute dtype (parameters, optimizer state and scores "
                                    "stay float32)", choices=DTYPES)
    train_size: int = setting(102400, "training examples after repeating or cutting the "
                                      "built set", at_least=1)
    per_device_batch_size: int = setting(
        8, "examples per device per micro-batch, as in the original: with "
           "--accumulate_grad_batches it fixes which examples form each optimizer update; "
           "they are packed into rows, and a device step holds up to this many x max_length "
           "tokens", at_least=1)
    eval_per_device_batch_size: int = setting(
        32, "scoring: pairs per device per batch, counted at max_length tokens each (pairs "
            "are packed into rows up to that many tokens)", at_least=1)
    accumulate_grad_batches: int = setting(16, "micro-batches per optimizer update", at_least=1)
    learning_rate: float = setting(2e-5, "peak rate; 0 skips finetuning (zero-shot reranking)",
                                   at_least=0)
    warmup_rate: float = setting(0.1, "share of the schedule spent warming up", at_least=0,
                                 at_most=1)
    weight_decay: float = setting(0.0, "AdamW's weight decay", at_least=0)
    lr_schedule: str = setting(
        "paper", "paper: as published (sized in micro-batches, advanced per update); "
                 "corrected: warm-up and decay counted in optimizer updates",
        choices=LR_SCHEDULES)
    results_dir: str = setting("bigbench_cappy_results",
                               "where <generator>/<task>.json is written")
    seed: int = setting(11111, "seed of the example order and the dropout draws")
    overwrite: bool = setting(False, "run even if the result exists")
    verbose: bool = setting(True, "no Redco logs or progress bars", flag="--quiet")

parse_args, main = job_command(TaskConfig, COMMAND_DOC, run_task)


if __name__ == "__main__":
    import sys

    sys.exit(main())
