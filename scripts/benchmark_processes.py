"""Whole processes, as a user runs them, timed one after the other: the original release's
script, a plain PyTorch loop where there is one, and cappy's commands, each a fresh
process (imports, model loading and compilation included).

    python scripts/benchmark_processes.py                          # one BIG-Bench task
    python scripts/benchmark_processes.py --workload promptsource  # 1,440 PromptSource-like pairs
    python scripts/benchmark_processes.py --repeats 3 --output_file processes.json

Builds once, in --work_dir, a random RoBERTa Cappy of the benchmark's shape (written as
the project writes checkpoints, so every script loads it) and the workload's data, then
runs each path --repeats times, alternating, and prints each run's wall-clock seconds,
the commands, and the speed-ups of the fastest runs.

- `bigbench`: finetune + rerank on one task (the shipped BIG-Bench sample's instructions,
  17 candidates each drawn from the task's references; --train_size 512, max length 512,
  the paper's batch and accumulation): `scripts/baselines/original_cappy_bigbench.py`
  (the release's computation) against `cappy_bigbench.py`.
- `promptsource`: zero-shot scoring of a PromptSource-format file of 360 prompts x 4
  choices (instructions of 16-550 tokens, 131 on average with the answers), batches of
  32, max length 512: `scripts/baselines/original_cappy_promptsource.py`,
  `scripts/baselines/torch_promptsource_loop.py` (transformers' PyTorch model, sorted
  dynamic padding), `cappy_promptsource.py` and `cappy score` on the same file.

The original's scripts run in the original release's stack (transformers 4's Flax
classes, Redco 0.4.13): scripts/setup_original.sh builds .venv-original, which is the
default; --python (or $CAPPY_ORIGINAL_PYTHON) names another.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cappy.engine.errors import CappyError
from cappy.engine.runtime.process import exit_on_error  # noqa: E402

TASK, GENERATOR = "auto_categorization", "random-generator"
WORKLOADS = ("bigbench", "promptsource")


def parse_args(argv=None):
    from benchmarks.harness import MODEL_SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workload", default="bigbench", choices=WORKLOADS,
                   help="what each process does (see the module docstring)")
    p.add_argument("--model_size", default="tiny", choices=list(MODEL_SHAPES),
                   help="the random Cappy's shape")
    p.add_argument("--train_size", type=int, default=512,
                   help="training examples of the task (bigbench)")
    p.add_argument("--max_length", type=int, default=512, help="tokens per pair")
    p.add_argument("--repeats", type=int, default=2, help="runs of each path, alternating")
    p.add_argument("--work_dir", default=os.path.join("cache", "benchmark_processes"),
                   help="where the model, the data and the results are written")
    p.add_argument("--python", default=None,
                   help="the interpreter of the original's scripts, the original release's "
                        "stack (default: $CAPPY_ORIGINAL_PYTHON, else .venv-original, which "
                        "scripts/setup_original.sh builds)")
    p.add_argument("--paths", default=None,
                   help="comma-separated paths to run (default: all of the workload's)")
    p.add_argument("--output_file", default=None, help="also write the figures as JSON")
    return p.parse_args(argv)


def prepare_model(work_dir, model_size):
    """The random Cappy, built once; its folder."""
    from benchmarks import harness as benchmark
    from cappy.engine.weights.cappy_checkpoint import save_cappy
    from cappy.engine.weights.tiny_models import make_scorer_tokenizer, sample_texts

    model_dir = os.path.join(work_dir, f"cappy-{model_size}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        tokenizer = make_scorer_tokenizer(sample_texts())
        model = benchmark.make_model(model_size, tokenizer)
        save_cappy(model, tokenizer, model.params, model_dir, overwrite=True)
    return model_dir


def prepare_bigbench(work_dir):
    from benchmarks import harness as benchmark
    from cappy.engine.io import write_jsonl

    gens_dir = os.path.join(work_dir, "gens")
    for split in ("train", "validation"):
        path = os.path.join(gens_dir, GENERATOR, f"{TASK}_{split}.jsonl")
        if not os.path.isfile(path):
            write_jsonl(path, benchmark.bigbench_candidate_rows(TASK, split))
    return gens_dir


PROMPTSOURCE_DATASETS = ("super_glue/cb", "super_glue/rte", "anli", "winogrande")


def prepare_promptsource(work_dir, model_dir):
    """A PromptSource-format test file of the benchmark's PromptSource-like pairs: 360
    prompts of 4 choices (fewer where a choice repeats), the first choice correct."""
    from benchmarks import harness as benchmark
    from transformers import AutoTokenizer

    from cappy.engine.io import write_jsonl

    path = os.path.join(work_dir, "promptsource_test.jsonl")
    if not os.path.isfile(path):
        pairs = benchmark.promptsource_like_pairs(AutoTokenizer.from_pretrained(model_dir))
        prompt_of, rows = {}, []
        for instruction, response in pairs:
            index = prompt_of.setdefault(instruction, len(prompt_of))
            first = sum(1 for row in rows if row["instruction"] == instruction) == 0
            rows.append({"dataset_name": PROMPTSOURCE_DATASETS[index % 4], "template_name": "t",
                         "example_idx": index, "instruction": instruction,
                         "response": response, "label": int(first)})
        write_jsonl(path, rows)
    return path


def commands(args, model_dir):
    results = os.path.join(args.work_dir, "results")
    baselines = os.path.join(ROOT, "scripts", "baselines")
    if args.workload == "bigbench":
        gens_dir = prepare_bigbench(args.work_dir)
        common = ["--model_name_or_path", model_dir, "--bigbench_gen_dir", gens_dir,
                  "--bigbench_gen_model", GENERATOR, "--bigbench_subset_name", TASK,
                  "--train_size", str(args.train_size), "--max_length", str(args.max_length)]
        return {
            "original": [args.python, os.path.join(baselines, "original_cappy_bigbench.py"),
                         *common, "--results_dir", os.path.join(results, "original")],
            "cappy": [sys.executable, os.path.join(ROOT, "cappy_bigbench.py"), *common,
                      "--results_dir", os.path.join(results, "cappy"), "--overwrite",
                      "--quiet"],
        }
    data = prepare_promptsource(args.work_dir, model_dir)
    common = ["--model_name_or_path", model_dir, "--data_file", data,
              "--max_length", str(args.max_length)]
    return {
        "original": [args.python, os.path.join(baselines, "original_cappy_promptsource.py"),
                     *common, "--per_device_batch_size", "32",
                     "--output_file", os.path.join(results, "original.json"),
                     "--scores_file", os.path.join(results, "original_scores.jsonl")],
        "pytorch": [sys.executable, os.path.join(baselines, "torch_promptsource_loop.py"),
                    *common, "--batch_size", "32",
                    "--output_file", os.path.join(results, "pytorch.json"),
                    "--scores_file", os.path.join(results, "pytorch_scores.jsonl")],
        "cappy_promptsource": [sys.executable, os.path.join(ROOT, "cappy_promptsource.py"),
                               *common, "--per_device_batch_size", "32", "--quiet",
                               "--output_file", os.path.join(results, "cappy_promptsource.json")],
        "cappy_score": [sys.executable, "-m", "cappy", "score", "--model_name_or_path",
                        model_dir, "--input", data, "--max_length", str(args.max_length),
                        "--batch_size", "32", "--quiet",
                        "--output", os.path.join(results, "cappy_score.jsonl")],
    }


def outcome(args, name):
    """The path's result: ROUGE-L of the task, or the PromptSource accuracy (Average)."""
    results = os.path.join(args.work_dir, "results")
    if args.workload == "bigbench":
        path = os.path.join(results, name, GENERATOR, f"{TASK}.json")
        with open(path, encoding="utf-8") as file:
            return {"rougeL": json.load(file)["rougeL"]}
    if name == "cappy_score":
        return {}
    with open(os.path.join(results, f"{name}.json"), encoding="utf-8") as file:
        return {"accuracy": json.load(file)["accuracy"]["Average"]}


SCORE_FILES = {"original": "original_scores.jsonl", "pytorch": "pytorch_scores.jsonl",
               "cappy_score": "cappy_score.jsonl"}


def score_differences(args, names):
    """The largest |score - the original's score| of each path that writes every row's
    score (the promptsource workload), over the same rows."""
    from cappy.engine.io import read_jsonl

    results = os.path.join(args.work_dir, "results")
    if args.workload != "promptsource" or "original" not in names:
        return {}
    scores = {name: [row["score"] for row in read_jsonl(os.path.join(results, file))]
              for name, file in SCORE_FILES.items() if name in names}
    return {name: max(abs(a - b) for a, b in zip(values, scores["original"]))
            for name, values in scores.items() if name != "original"}


def run_once(command, env=None):
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


@exit_on_error
def main(argv=None):
    import shutil

    args = parse_args(argv)
    if args.python is None and (args.paths is None or "original" in args.paths):
        from benchmarks.harness import original_python

        args.python, problem = original_python()
        if problem:
            raise CappyError(f"{problem}; or leave the original out with --paths")
    model_dir = prepare_model(args.work_dir, args.model_size)
    runs = commands(args, model_dir)
    if args.paths:
        from cappy.engine.flags import comma_list

        chosen = comma_list(args.paths, "--paths")
        unknown = sorted(set(chosen) - set(runs))
        if unknown:
            raise CappyError(f"--paths: unknown {', '.join(unknown)}; the {args.workload} "
                             f"workload has {', '.join(runs)}")
        runs = {name: runs[name] for name in chosen}
    report = {"command": "python " + shlex.join(sys.argv), "workload": args.workload,
              "model_size": args.model_size, "max_length": args.max_length,
              "commands": {name: shlex.join(command) for name, command in runs.items()},
              "seconds": {name: [] for name in runs}, "outcome": {}}
    if args.workload == "bigbench":
        report["train_size"] = args.train_size
    print(f"command: {report['command']}", flush=True)
    # cappy's compilation cache starts empty: its first run of each command compiles
    # everything, later runs load what the first compiled, as a user's runs do.
    cache = os.path.join(args.work_dir, "compilation_cache")
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "CAPPY_CACHE_DIR": cache, "CAPPY_COMPILATION_CACHE": "1"}
    report["compilation_cache"] = "empty before the first run of each path, then kept"
    total = len(runs) * args.repeats
    for repeat in range(args.repeats):
        for name, command in runs.items():
            shutil.rmtree(os.path.join(args.work_dir, "results", name), ignore_errors=True)
            seconds = run_once(command, env)
            report["seconds"][name].append(round(seconds, 2))
            done = repeat * len(runs) + list(runs).index(name) + 1
            print(f"[{done}/{total}] run {repeat + 1}/{args.repeats}: {name} {seconds:.1f} s",
                  file=sys.stderr, flush=True)
    for name in runs:
        report["outcome"][name] = outcome(args, name)
    report["max_abs_score_difference_from_original"] = score_differences(args, runs)
    for name, value in report["max_abs_score_difference_from_original"].items():
        print(f"{name}: every row's score within {value:.1e} of the original's")
    best = {name: min(times) for name, times in report["seconds"].items()}
    report["fastest_s"] = best
    for name, command in report["commands"].items():
        print(f"{name}: {command}")
    print("\n| path | wall s, each run | fastest | result (random model) |\n|---|---|---:|---|")
    for name in runs:
        shown = ", ".join(f"{key} {value:.4f}" for key, value in report["outcome"][name].items())
        print(f"| {name} | {', '.join(f'{s:.1f}' for s in report['seconds'][name])} | "
              f"{best[name]:.1f} | {shown} |")
    ours = [name for name in runs if name.startswith("cappy")]
    for baseline in ("original", "pytorch"):
        if baseline in best:
            for name in ours:
                print(f"{name} is {best[baseline] / best[name]:.2f}x {baseline} (fastest runs)")
    if "original" in best and "cappy" in best:
        report["speedup"] = best["original"] / best["cappy"]
    if args.output_file:
        from cappy.engine.io import write_json

        write_json(args.output_file, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
