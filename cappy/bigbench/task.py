"""One BIG-Bench task, one generator: finetune Cappy on the training split's
candidates, rerank the validation split's candidates, and score the choices.

Outputs, both written atomically once the run has finished (never a
placeholder): `{results_dir}/{gen_model}/{task}.json` with `rougeL` and the
run's settings, counts and timings, and `{task}.predictions.jsonl` beside it
with each validation instruction's chosen candidate and its score.
"""

import argparse
import os
import platform
import time

import numpy as np

from cappy.bigbench.candidates import all_candidates, candidate_path, read_candidate_file
from cappy.bigbench.examples import build_finetune_examples
from cappy.bigbench.results import result_paths
from cappy.engine.checkpoints import DTYPES, keep_torch_out_of_transformers
from cappy.engine.errors import exit_on_error
from cappy.engine.hosts import add_multihost_arguments, multihost_kwargs
from cappy.engine.io import write_json, write_jsonl
from cappy.engine.ranking import best_index
from cappy.engine.recipes import LR_SCHEDULES
from cappy.engine.rouge import rouge_l


def run_task(args, log=print, rerun_hint="use --overwrite to run again"):
    """Run one task as configured by `args` (cappy_bigbench.py's flags); return the result
    (None when it exists already: `rerun_hint` tells how to redo it)."""
    import jax

    from cappy.engine.checkpoints import load_cappy
    from cappy.engine.redco_adapter import make_deployer
    from cappy.engine.scoring import PairScorer, encode_examples
    from cappy.engine.training import finetune, n_optimizer_updates

    result_path, predictions_path = result_paths(args.results_dir, args.bigbench_gen_model,
                                                 args.bigbench_subset_name)
    if os.path.exists(result_path) and not args.overwrite:
        log(f"skip: {result_path} exists ({rerun_hint})")
        return None
    start = time.time()
    keys = dict(src_key=args.src_key, tgt_key=args.tgt_key, refs_key=args.refs_key)
    paths = {split: candidate_path(args.bigbench_gen_dir, args.bigbench_gen_model,
                                   args.bigbench_subset_name, split)
             for split in ("train", "validation")}
    train_rows = read_candidate_file(paths["train"], **keys)
    validation_rows = read_candidate_file(paths["validation"], **keys)

    deployer = make_deployer(args.seed, args.n_model_shards, args.verbose,
                             **multihost_kwargs(args))
    model, tokenizer = load_cappy(args.model_name_or_path, dtype=getattr(args, "dtype", "float32"))
    rules = deployer.get_sharding_rules(model.params)

    examples, n_distinct = build_finetune_examples(
        train_rows, args.train_size, args.seed, src_key=args.src_key, tgt_key=args.tgt_key,
        refs_key=args.refs_key, label_key=args.label_key)
    encoded = encode_examples(tokenizer, examples, args.max_length, model.truncation,
                              args.src_key, args.tgt_key, args.label_key)
    built = time.time()

    _, global_micro = deployer.get_local_global_micro_batch_size(args.per_device_batch_size)
    if args.learning_rate > 0:
        trainer = finetune(
            model, tokenizer, deployer, encoded, args.seed,
            per_device_batch_size=args.per_device_batch_size,
            accumulate_grad_batches=args.accumulate_grad_batches,
            learning_rate=args.learning_rate, warmup_rate=args.warmup_rate,
            weight_decay=args.weight_decay, lr_schedule=args.lr_schedule,
            max_length=args.max_length, params_sharding_rules=rules, label_key=args.label_key,
            desc=f"{args.bigbench_gen_model}/{args.bigbench_subset_name}",
            progress=args.verbose)
        params, placement = trainer.scoring_params()
        n_updates = n_optimizer_updates(args.train_size, global_micro,
                                        args.accumulate_grad_batches)
    else:  # zero-shot: score with the initial model
        params, placement, n_updates = model.params, {}, 0
    trained = time.time()

    scorer = PairScorer(model, tokenizer, deployer, max_length=args.max_length,
                        per_device_batch_size=args.eval_per_device_batch_size,
                        params_sharding_rules=rules)
    # Every candidate of every row; the scorer scores each distinct pair once.
    pairs = [(row[args.src_key], cand[args.tgt_key]) for row in validation_rows
             for cand in all_candidates(row, args.tgt_key)]
    scores = scorer.score([p[0] for p in pairs], [p[1] for p in pairs], params,
                          desc="scoring validation candidates", **placement)
    score_of = dict(zip(pairs, scores.tolist()))
    choices = rerank_rows(validation_rows, score_of, args.src_key, args.tgt_key)
    per_row = [rouge_l(choice, row[args.refs_key])
               for (choice, _), row in zip(choices, validation_rows)]
    scored = time.time()

    result = {
        "rougeL": float(np.mean(per_row)),
        "task": args.bigbench_subset_name,
        "gen_model": args.bigbench_gen_model,
        "counts": {"train_rows": len(train_rows), "validation_rows": len(validation_rows),
                   "distinct_train_examples": n_distinct, "train_examples": len(examples),
                   "optimizer_updates": n_updates,
                   "validation_candidates": sum(len(all_candidates(r, args.tgt_key))
                                                for r in validation_rows),
                   "distinct_pairs_scored": len(score_of)},
        "truncation": model.truncation,
        "timings_s": {"build": round(built - start, 2), "train": round(trained - built, 2),
                      "score": round(scored - trained, 2), "total": round(scored - start, 2)},
        "settings": {key: value for key, value in sorted(vars(args).items())},
        "environment": {"devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
                        "processes": jax.process_count(), "python": platform.python_version(),
                        "jax": jax.__version__},
    }
    if jax.process_index() == 0:
        write_jsonl(predictions_path, [
            {"example_idx": row.get("example_idx", i), args.src_key: row[args.src_key],
             args.refs_key: row[args.refs_key], "choice": choice, "score": score,
             "rougeL": value}
            for i, (row, (choice, score), value) in enumerate(
                zip(validation_rows, choices, per_row))])
        write_json(result_path, result)  # last: its presence means the task is done
    log(f"Cappy + {args.bigbench_gen_model} on {args.bigbench_subset_name}: "
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
updates (see cappy/engine/training.py and the README).
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=COMMAND_DOC.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bigbench_gen_dir", default="bigbench_flan_gens",
                   help="folder of candidate folders, one per generator")
    p.add_argument("--bigbench_gen_model", default="flan-t5-xxl",
                   help="the generator whose candidates to rerank (a folder in "
                        "--bigbench_gen_dir)")
    p.add_argument("--bigbench_subset_name", default="auto_categorization",
                   help="the BIG-Bench task")
    p.add_argument("--src_key", default="instruction",
                   help="the instruction's field in the candidate rows")
    p.add_argument("--tgt_key", default="response",
                   help="the response's field in the training examples")
    p.add_argument("--refs_key", default="references",
                   help="the references' field in the candidate rows")
    p.add_argument("--label_key", default="label",
                   help="the label's field in the training examples")
    p.add_argument("--model_name_or_path", default="btan2/cappy-large",
                   help="the Cappy to finetune: a hub id or a folder")
    p.add_argument("--n_model_shards", type=int, default=1,
                   help="devices each model copy is split over")
    p.add_argument("--max_length", type=int, default=512,
                   help="tokens per pair; longer pairs are cut by the checkpoint's truncation "
                        "policy")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="compute dtype (parameters, optimizer state and scores stay float32)")
    p.add_argument("--train_size", type=int, default=102400,
                   help="training examples after repeating or cutting the built set")
    p.add_argument("--per_device_batch_size", type=int, default=8,
                   help="examples per device per micro-batch, as in the original: with "
                        "--accumulate_grad_batches it fixes which examples form each "
                        "optimizer update; they are packed into rows, and a device step "
                        "holds up to this many x max_length tokens")
    p.add_argument("--eval_per_device_batch_size", type=int, default=32,
                   help="scoring: pairs per device per batch, counted at max_length tokens "
                        "each (pairs are packed into rows up to that many tokens)")
    p.add_argument("--accumulate_grad_batches", type=int, default=16,
                   help="micro-batches per optimizer update")
    p.add_argument("--learning_rate", type=float, default=2e-5,
                   help="peak rate; 0 skips finetuning (zero-shot reranking)")
    p.add_argument("--warmup_rate", type=float, default=0.1,
                   help="share of the schedule spent warming up")
    p.add_argument("--weight_decay", type=float, default=0.0, help="AdamW's weight decay")
    p.add_argument("--lr_schedule", default="paper", choices=LR_SCHEDULES,
                   help="paper: as published (sized in micro-batches, advanced per update); "
                        "corrected: warm-up and decay counted in optimizer updates")
    p.add_argument("--results_dir", default="bigbench_cappy_results",
                   help="where <generator>/<task>.json is written")
    p.add_argument("--seed", type=int, default=11111,
                   help="seed of the example order and the dropout draws")
    p.add_argument("--overwrite", action="store_true", help="run even if the result exists")
    p.add_argument("--quiet", dest="verbose", action="store_false",
                   help="no Redco logs or progress bars")
    add_multihost_arguments(p)
    return p.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    if argv is None:  # a process of its own, computing with JAX only: seconds less start-up
        keep_torch_out_of_transformers()
    run_task(args)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
