"""The original release's paths of scripts/benchmark.py, timed in the original's stack (a
process of its own: transformers 4's Flax classes need transformers<5).

    .venv-original/bin/python scripts/baselines/original_benchmark.py WORK.json RESULT.json

WORK.json: {"model_dir", "max_length", "batch_size", "datasets": {name: [[instruction,
response], ...]}, "examples": [{"instruction", "response", "label"}, ...] (one epoch, in
the order cappy's recipe built them), "per_device_batch_size", "accumulate_grad_batches",
"learning_rate", "params_dir"}. Writes RESULT.json: per dataset the scores of every pair
(Redco's Predictor, each pair padded to max_length, batches in input order, repeats
scored again) and the seconds of a first call (which compiles) and a second (compiled);
per finetuning path ("original": every micro-batch padded to max_length; "buckets": to
its power-of-two bucket, this project's path before packing) the seconds of two epochs
of Redco's Trainer and an .npz of the parameters after the first (`original_release`).
"""

import json
import sys
import time


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def main(argv=None):
    work_file, result_file = (argv or sys.argv[1:])[:2]
    import os

    import jax
    from redco import Deployer

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import original_release as original

    with open(work_file, encoding="utf-8") as file:
        work = json.load(file)
    tokenizer, module, params = original.load(work["model_dir"])
    length = work["max_length"]
    result = {"jax": jax.__version__, "scoring": {}, "finetuning": {}}
    collate = original.pair_collate(tokenizer, length)
    for name, pairs in work["datasets"].items():
        examples = [{"instruction": a, "response": b} for a, b in pairs]
        deployer = Deployer(jax_seed=0, verbose=False)

        def score():
            return original.predict_scores(deployer, module, params, collate, examples,
                                           work["batch_size"])

        scores, first = timed(score)
        _, second = timed(score)
        result["scoring"][name] = {"scores": scores, "first_call_seconds": first,
                                   "seconds": second}
    examples = work["examples"]
    per_device, accumulate = work["per_device_batch_size"], work["accumulate_grad_batches"]
    for path, bucketed in (("original", False), ("buckets", True)):
        deployer = Deployer(jax_seed=work["seed"], verbose=False)
        trainer = original.original_trainer(
            deployer, module, params,
            original.pair_collate(tokenizer, length, label_key="label", bucketed=bucketed),
            2 * len(examples), per_device, accumulate, work["learning_rate"], 0.1, 0.0)

        def epoch():
            trainer.train(examples=examples, per_device_batch_size=per_device)
            jax.block_until_ready(trainer.params)

        seconds = []
        for index in range(2):
            seconds.append(timed(epoch)[1])
            if index == 0:  # the second epoch's order is Redco's own reshuffle
                params_file = os.path.join(work["params_dir"], f"{path}.npz")
                original.save_params(original.trained_params(trainer), params_file)
        result["finetuning"][path] = {"first_epoch_seconds": seconds[0], "seconds": seconds[1],
                                      "params_file": params_file}
    with open(result_file, "w", encoding="utf-8") as file:
        json.dump(result, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
