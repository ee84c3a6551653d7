"""The original release's cappy_promptsource.py computation, as a baseline for timing.

    python scripts/baselines/original_cappy_promptsource.py --model_name_or_path M \
        --data_file promptsource_test.jsonl

What the release ran: transformers 4's Flax RoBERTa under Redco's Deployer and
Predictor, every row of the test file (repeated pairs included) padded to max_length
and scored in file order, then the best row of each prompt and the accuracy per
dataset. The prompts are grouped and counted by the project's own rules
(`cappy.promptsource.evaluate`), which cost milliseconds. scripts/benchmark_processes.py
times it against cappy_promptsource.py; it needs transformers<5, whose Flax classes it
uses (a venv of scripts/baselines/requirements-original.txt).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_file", default="./promptsource_test.jsonl")
    p.add_argument("--model_name_or_path", default="btan2/cappy-large")
    p.add_argument("--n_model_shards", type=int, default=1)
    p.add_argument("--per_device_batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--jax_seed", type=int, default=42)
    p.add_argument("--output_file", default=None)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import jax
    from redco import Deployer, Predictor
    from transformers import AutoTokenizer, FlaxAutoModelForSequenceClassification

    from cappy.engine.io import write_json
    from cappy.promptsource.evaluate import (accuracy_report, group_prompts, predict,
                                             read_test_file)

    start = time.time()
    deployer = Deployer(n_model_shards=args.n_model_shards, jax_seed=args.jax_seed)
    rows, lines = read_test_file(args.data_file)
    prompts, _ = group_prompts(rows, lines, args.data_file)
    with jax.default_device(jax.devices("cpu")[0]):
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
        model = FlaxAutoModelForSequenceClassification.from_pretrained(args.model_name_or_path)

    def collate(examples):
        batch = tokenizer([(e["instruction"], e["response"]) for e in examples],
                          max_length=args.max_length, padding="max_length", truncation=True,
                          return_tensors="np")
        return {key: batch[key] for key in ("input_ids", "attention_mask")}

    predictor = Predictor(
        deployer=deployer, collate_fn=collate,
        pred_fn=lambda rng, params, batch: model(**batch, params=params,
                                                 train=False).logits[..., 0],
        params_sharding_rules=deployer.get_sharding_rules(model.params))
    scores = predictor.predict(examples=rows, per_device_batch_size=args.per_device_batch_size,
                               params=model.params)
    accuracy, _, _ = accuracy_report(prompts, predict(prompts, rows,
                                                      [float(s) for s in scores]))
    result = {"accuracy": accuracy, "seconds": round(time.time() - start, 2)}
    if args.output_file:
        write_json(args.output_file, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
