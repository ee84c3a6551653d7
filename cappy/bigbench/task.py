"""One BIG-Bench task, one generator: finetune Cappy on the training split's
candidates, rerank the validation split's candidates, and score the choices.

Outputs, both written atomically once the run has finished (never a
placeholder): `{results_dir}/{gen_model}/{task}.json` with `rougeL` and the
run's settings, counts and timings, and `{task}.predictions.jsonl` beside it
with each validation instruction's chosen candidate and its score.
"""

import os
import platform
import time

import numpy as np

from cappy.bigbench.candidates import all_candidates, candidate_path, read_candidate_file
from cappy.bigbench.examples import build_finetune_examples
from cappy.engine.io import write_json, write_jsonl
from cappy.engine.hosts import multihost_kwargs
from cappy.engine.rouge import rouge_l


def result_paths(results_dir, gen_model, task):
    folder = os.path.join(results_dir, gen_model)
    return os.path.join(folder, f"{task}.json"), os.path.join(folder, f"{task}.predictions.jsonl")


def distinct_pairs(rows, src_key="instruction", tgt_key="response"):
    """Every distinct (instruction, candidate) pair of the rows, in first-seen order."""
    seen = {}
    for row in rows:
        for cand in all_candidates(row, tgt_key):
            seen.setdefault((row[src_key], cand[tgt_key]), None)
    return list(seen)


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
    pairs = distinct_pairs(validation_rows, args.src_key, args.tgt_key)
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
                   "distinct_pairs_scored": len(pairs)},
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
        best = int(np.argmax(scores))  # the first maximum
        choices.append((texts[best], float(scores[best])))
    return choices
