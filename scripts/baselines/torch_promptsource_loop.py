"""A plain PyTorch scoring loop over a PromptSource test file, as a baseline for timing:
what a user writes in twenty lines with transformers' PyTorch model.

    python scripts/baselines/torch_promptsource_loop.py --model_name_or_path M \
        --data_file promptsource_test.jsonl

Every row (repeats included) tokenized in one call, pairs sorted by length, batches of
32 padded to their longest pair, no gradients; the best row of each prompt and the
accuracy per dataset, as cappy_promptsource.py counts them.
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
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--output_file", default=None)
    p.add_argument("--scores_file", default=None, help="jsonl: every row plus its score")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cappy.engine.io import write_json
    from cappy.promptsource.evaluate import accuracy_report, group_prompts, predict

    start = time.time()
    with open(args.data_file, encoding="utf-8") as file:
        rows = [json.loads(line) for line in file if line.strip()]
    prompts, _ = group_prompts(rows, list(range(1, len(rows) + 1)), args.data_file)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path).eval()
    encoded = tokenizer([row["instruction"] for row in rows], [row["response"] for row in rows],
                        max_length=args.max_length, truncation=True)["input_ids"]
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i]))
    scores = [0.0] * len(rows)
    with torch.inference_mode():
        for begin in range(0, len(order), args.batch_size):
            index = order[begin:begin + args.batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in index]},
                                  return_tensors="pt")
            for i, score in zip(index, model(**batch).logits[:, 0].tolist()):
                scores[i] = score
    accuracy, _, _ = accuracy_report(prompts, predict(prompts, rows, scores))
    result = {"accuracy": accuracy, "seconds": round(time.time() - start, 2)}
    if args.scores_file:
        from cappy.engine.io import write_jsonl

        write_jsonl(args.scores_file, [{**row, "score": score} for row, score in zip(rows,
                                                                                     scores)])
    if args.output_file:
        write_json(args.output_file, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
