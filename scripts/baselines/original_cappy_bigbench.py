"""The original release's cappy_bigbench.py computation, as a baseline for timing.

    python scripts/baselines/original_cappy_bigbench.py --model_name_or_path M \
        --bigbench_gen_dir G --bigbench_gen_model gen --bigbench_subset_name TASK \
        --train_size 512 --results_dir R

What the release ran for one task, ported only as far as Redco 0.4.23 requires
(its `get_default_predictor` is gone and `warmup_rate` became `warmup_ratio`):
transformers 4's Flax RoBERTa, Redco's Trainer with every training pair padded
to max_length in micro-batches of 8 accumulated 16 at a time by optax.MultiSteps
under the release's schedule, then every validation candidate (17 per
instruction, repeats included) scored in batches of 32 padded to max_length,
and the best one's ROUGE-L. The training examples are built by the project's
reproduction of the release's recipe (`cappy.bigbench.examples`), which costs
milliseconds. scripts/benchmark_processes.py times it against cappy_bigbench.py;
it needs transformers<5, whose Flax classes it uses.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bigbench_gen_dir", default="bigbench_flan_gens")
    p.add_argument("--bigbench_gen_model", default="flan-t5-xxl")
    p.add_argument("--bigbench_subset_name", default="auto_categorization")
    p.add_argument("--model_name_or_path", default="btan2/cappy-large")
    p.add_argument("--n_model_shards", type=int, default=1)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--train_size", type=int, default=102400)
    p.add_argument("--per_device_batch_size", type=int, default=8)
    p.add_argument("--eval_per_device_batch_size", type=int, default=32)
    p.add_argument("--accumulate_grad_batches", type=int, default=16)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--warmup_rate", type=float, default=0.1)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--results_dir", default="bigbench_cappy_results")
    p.add_argument("--seed", type=int, default=11111)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from redco import Deployer, Predictor, Trainer
    from transformers import AutoTokenizer, FlaxAutoModelForSequenceClassification

    from cappy.bigbench.candidates import all_candidates, candidate_path, read_candidate_file
    from cappy.bigbench.examples import build_finetune_examples
    from cappy.engine.io import write_json
    from cappy.engine.rouge import rouge_l

    start = time.time()
    deployer = Deployer(n_model_shards=args.n_model_shards, jax_seed=args.seed)
    rows = {split: read_candidate_file(candidate_path(
        args.bigbench_gen_dir, args.bigbench_gen_model, args.bigbench_subset_name, split))
        for split in ("train", "validation")}
    with jax.default_device(jax.devices("cpu")[0]):
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
        model = FlaxAutoModelForSequenceClassification.from_pretrained(args.model_name_or_path)
        model.params = model.to_fp32(model.params)

    def collate(examples):
        batch = tokenizer([(e["instruction"], e["response"]) for e in examples],
                          max_length=args.max_length, padding="max_length", truncation=True,
                          return_tensors="np")
        batch = {key: batch[key] for key in ("input_ids", "attention_mask")}
        if "label" in examples[0]:
            batch["labels"] = np.array([e["label"] for e in examples], np.float32)
        return batch

    def loss_fn(rng, state, params, batch, is_training):
        labels = batch.pop("labels")
        logits = state.apply_fn(**batch, params=params, dropout_rng=rng,
                                train=is_training).logits
        return jnp.mean(jnp.square(logits[..., 0] - labels))

    schedule = deployer.get_lr_schedule_fn(
        train_size=args.train_size, per_device_batch_size=args.per_device_batch_size,
        n_epochs=1, learning_rate=args.learning_rate, schedule_type="linear",
        warmup_ratio=args.warmup_rate)
    optimizer = optax.MultiSteps(optax.adamw(learning_rate=schedule,
                                             weight_decay=args.weight_decay),
                                 every_k_schedule=args.accumulate_grad_batches)
    trainer = Trainer(deployer=deployer, collate_fn=collate, apply_fn=model, loss_fn=loss_fn,
                      params=model.params, optimizer=optimizer, lr_schedule_fn=schedule,
                      accumulate_grad_batches=args.accumulate_grad_batches,
                      params_sharding_rules=deployer.get_sharding_rules(model.params))
    examples, _ = build_finetune_examples(rows["train"], args.train_size, args.seed)
    trainer.train(examples=examples, per_device_batch_size=args.per_device_batch_size)

    predictor = Predictor(
        deployer=deployer, collate_fn=collate,
        pred_fn=lambda rng, params, batch: model(**batch, params=params,
                                                 train=False).logits[..., 0],
        params_sharding_rules=deployer.get_sharding_rules(model.params))
    candidates = [(i, row["instruction"], cand["response"])
                  for i, row in enumerate(rows["validation"]) for cand in all_candidates(row)]
    scores = predictor.predict(
        examples=[{"instruction": text, "response": cand} for _, text, cand in candidates],
        per_device_batch_size=args.eval_per_device_batch_size, params=trainer.state.params,
        params_replicated=deployer.mesh is None, params_sharded=deployer.mesh is not None)
    best = {}
    for (i, _, cand), score in zip(candidates, scores):
        if i not in best or float(score) > best[i][0]:
            best[i] = (float(score), cand)
    values = [rouge_l(best[i][1], row["references"]) for i, row in enumerate(rows["validation"])]
    result = {"rougeL": float(np.mean(values)), "seconds": round(time.time() - start, 2)}
    write_json(os.path.join(args.results_dir, args.bigbench_gen_model,
                            f"{args.bigbench_subset_name}.json"), result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
