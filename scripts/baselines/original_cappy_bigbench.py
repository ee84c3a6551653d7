"""The original release's cappy_bigbench.py computation for one task: the baseline for
timing and the reference tests compare cappy's finetuning and choices with.

    .venv-original/bin/python scripts/baselines/original_cappy_bigbench.py \
        --model_name_or_path M --bigbench_gen_dir G --bigbench_gen_model gen \
        --bigbench_subset_name TASK --train_size 512 --results_dir R

What the release ran (`original_release.py`: transformers 4's Flax RoBERTa, Redco 0.4.13):
Redco's Trainer with every training pair padded to max_length, micro-batches of 8
accumulated 16 at a time by optax.MultiSteps under Redco's schedule sized in micro-batches
(the published one), then every validation candidate (17 per instruction, repeats
included, in the file's decoding order) scored in batches of 32 padded to max_length;
the best-scored candidate of each instruction (the first on a tie) and its ROUGE-L
(rouge-score, stemming, best over the references), averaged. `--learning_rate 0` leaves
the parameters as loaded. The training examples are the project's reproduction of the
release's recipe (`cappy.bigbench.examples`: the one piece taken from cappy, since the
release never shipped its data builder); they are what is trained on, not what is
compared. Writes `{results_dir}/{gen_model}/{task}.json` ({"rougeL", "seconds"}) and, with
`--predictions_file`, each instruction's choice and score. Needs `.venv-original`.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(os.path.dirname(HERE)))  # cappy, for the example builder


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
    p.add_argument("--predictions_file", default=None,
                   help="jsonl: each validation instruction's choice and score")
    return p.parse_args(argv)


def candidates_of(row):
    return [sample["response"] for samples in row["flan_samples"].values()
            for sample in samples]


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    from redco import Deployer

    import original_release as original
    from cappy.bigbench.examples import build_finetune_examples

    start = time.time()
    deployer = Deployer(n_model_shards=args.n_model_shards, jax_seed=args.seed, verbose=False)
    rows = {split: original.read_jsonl(os.path.join(
        args.bigbench_gen_dir, args.bigbench_gen_model,
        f"{args.bigbench_subset_name}_{split}.jsonl")) for split in ("train", "validation")}
    tokenizer, module, params = original.load(args.model_name_or_path)
    if args.learning_rate > 0:
        trainer = original.original_trainer(
            deployer, module, params,
            original.pair_collate(tokenizer, args.max_length, label_key="label"),
            args.train_size, args.per_device_batch_size, args.accumulate_grad_batches,
            args.learning_rate, args.warmup_rate, args.weight_decay)
        examples, _ = build_finetune_examples(rows["train"], args.train_size, args.seed)
        trainer.train(examples=examples, per_device_batch_size=args.per_device_batch_size)
        params = trainer.params

    candidates = [(index, text) for index, row in enumerate(rows["validation"])
                  for text in candidates_of(row)]
    scores = original.predict_scores(
        deployer, module, params, original.pair_collate(tokenizer, args.max_length),
        [{"instruction": rows["validation"][i]["instruction"], "response": text}
         for i, text in candidates], args.eval_per_device_batch_size)
    best = {}
    for (index, text), score in zip(candidates, scores):
        if index not in best or score > best[index][0]:
            best[index] = (score, text)
    values = [original.rouge_l(best[i][1], row["references"])
              for i, row in enumerate(rows["validation"])]
    result = {"rougeL": float(np.mean(values)), "seconds": round(time.time() - start, 2)}
    if args.predictions_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.predictions_file)), exist_ok=True)
        with open(args.predictions_file, "w", encoding="utf-8") as file:
            for index, row in enumerate(rows["validation"]):
                file.write(json.dumps({"example_idx": row.get("example_idx", index),
                                       "choice": best[index][1], "score": best[index][0],
                                       "rougeL": values[index]}) + "\n")
    original.write_json(os.path.join(args.results_dir, args.bigbench_gen_model,
                                     f"{args.bigbench_subset_name}.json"), result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
