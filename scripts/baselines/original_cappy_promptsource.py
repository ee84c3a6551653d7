"""The original release's cappy_promptsource.py computation: the baseline for timing and the
reference tests compare cappy's scores and choices with.

    .venv-original/bin/python scripts/baselines/original_cappy_promptsource.py \
        --model_name_or_path M --data_file promptsource_test.jsonl [--scores_file S]

What the release ran (`original_release.py`: transformers 4's Flax RoBERTa under Redco
0.4.13's Deployer and Predictor): every row of the test file, repeated pairs included,
padded to max_length and scored in file order; within each (dataset_name, template_name,
example_idx) prompt the highest-scored row is the prediction (the first on a tie), right
when its response is the correct row's; accuracy per dataset over all its templates, and
"Average" the mean over datasets. `--scores_file` writes each row with its "score",
`--predictions_file` each prompt's prediction. scripts/benchmark_processes.py times it
against cappy_promptsource.py; needs `.venv-original` (scripts/setup_original.sh).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_file", default="./promptsource_test.jsonl")
    p.add_argument("--model_name_or_path", default="btan2/cappy-large")
    p.add_argument("--n_model_shards", type=int, default=1)
    p.add_argument("--per_device_batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--jax_seed", type=int, default=42)
    p.add_argument("--output_file", default=None, help="the accuracy as JSON")
    p.add_argument("--scores_file", default=None, help="jsonl: every row plus its score")
    p.add_argument("--predictions_file", default=None,
                   help="jsonl: each prompt's key, prediction, score and correctness")
    return p.parse_args(argv)


def predictions(rows, scores):
    """[(prompt key, index of its best row, correct or None)] in first-seen order."""
    prompts = {}
    for index, row in enumerate(rows):
        key = (row["dataset_name"], row["template_name"], str(row["example_idx"]))
        prompts.setdefault(key, []).append(index)
    found = []
    for key, members in prompts.items():
        best = members[0]
        for index in members[1:]:
            if scores[index] > scores[best]:
                best = index
        correct = [i for i in members if rows[i]["label"] == 1]
        found.append((key, best, rows[best]["response"] == rows[correct[0]]["response"]
                      if correct else None))
    return found


def accuracy(found):
    total, right = {}, {}
    for key, _, is_correct in found:
        if is_correct is not None:
            total[key[0]] = total.get(key[0], 0) + 1
            right[key[0]] = right.get(key[0], 0) + int(is_correct)
    result = {dataset: right[dataset] / total[dataset] for dataset in total}
    result["Average"] = sum(result.values()) / len(result)
    return result


def main(argv=None):
    args = parse_args(argv)
    import jax
    from redco import Deployer

    import original_release as original

    start = time.time()
    deployer = Deployer(n_model_shards=args.n_model_shards, jax_seed=args.jax_seed,
                        verbose=False)
    rows = original.read_jsonl(args.data_file)
    tokenizer, module, params = original.load(args.model_name_or_path)
    scores = original.predict_scores(
        deployer, module, params, original.pair_collate(tokenizer, args.max_length),
        [{"instruction": row["instruction"], "response": row["response"]} for row in rows],
        args.per_device_batch_size)
    found = predictions(rows, scores)
    result = {"accuracy": accuracy(found), "seconds": round(time.time() - start, 2),
              "jax": jax.__version__}
    for path in (args.scores_file, args.predictions_file):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if args.scores_file:
        with open(args.scores_file, "w", encoding="utf-8") as file:
            for row, score in zip(rows, scores):
                file.write(json.dumps({**row, "score": score}) + "\n")
    if args.predictions_file:
        with open(args.predictions_file, "w", encoding="utf-8") as file:
            for key, best, is_correct in found:
                file.write(json.dumps({"dataset_name": key[0], "template_name": key[1],
                                       "example_idx": rows[best]["example_idx"],
                                       "prediction": rows[best]["response"],
                                       "score": scores[best], "correct": is_correct}) + "\n")
    if args.output_file:
        original.write_json(args.output_file, result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
