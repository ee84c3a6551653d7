"""Whole processes, as a user runs them: one BIG-Bench task, finetune + rerank,
with the original release's script and with cappy_bigbench.py, timed one after
the other.

    python scripts/benchmark_processes.py                   # 4-layer, 256-wide Cappy
    python scripts/benchmark_processes.py --repeats 3 --output_file processes.json

Builds once, in --work_dir, a random RoBERTa Cappy of the benchmark's shape
(written as the project writes checkpoints, so both scripts load it) and a task's
candidate files (the shipped BIG-Bench sample's instructions, 17 candidates each
drawn from the task's references); then runs, alternately and --repeats times,
`scripts/baselines/original_cappy_bigbench.py` (the release's computation) and
`cappy_bigbench.py` with the same flags (--train_size 512, max length 512, the
paper's batch and accumulation). Wall-clock seconds of each whole process,
imports and model loading included, are printed with the commands.
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

from cappy.engine.errors import exit_on_error  # noqa: E402

TASK, GENERATOR = "auto_categorization", "random-generator"


def parse_args(argv=None):
    from benchmarks.harness import MODEL_SHAPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_size", default="tiny", choices=list(MODEL_SHAPES),
                   help="the random Cappy's shape")
    p.add_argument("--train_size", type=int, default=512, help="training examples of the task")
    p.add_argument("--max_length", type=int, default=512, help="tokens per pair")
    p.add_argument("--repeats", type=int, default=2, help="runs of each script, alternating")
    p.add_argument("--work_dir", default=os.path.join("cache", "benchmark_processes"),
                   help="where the model, the candidates and the results are written")
    p.add_argument("--python", default=os.environ.get("CAPPY_ORIGINAL_PYTHON", sys.executable),
                   help="the interpreter for the original script, which needs transformers<5: "
                        "a venv of scripts/baselines/requirements-original.txt (default "
                        "$CAPPY_ORIGINAL_PYTHON, else this one)")
    p.add_argument("--output_file", default=None, help="also write the figures as JSON")
    return p.parse_args(argv)


def prepare(work_dir, model_size):
    """The random Cappy and the candidate files, built once; their paths."""
    from benchmarks import harness as benchmark
    from cappy.engine.checkpoints import save_cappy
    from cappy.engine.io import write_jsonl
    from cappy.engine.tiny_models import make_scorer_tokenizer, sample_texts

    model_dir = os.path.join(work_dir, f"cappy-{model_size}")
    gens_dir = os.path.join(work_dir, "gens")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        tokenizer = make_scorer_tokenizer(sample_texts())
        model = benchmark.make_model(model_size, tokenizer)
        save_cappy(model, tokenizer, model.params, model_dir, overwrite=True)
    for split in ("train", "validation"):
        path = os.path.join(gens_dir, GENERATOR, f"{TASK}_{split}.jsonl")
        if not os.path.isfile(path):
            write_jsonl(path, benchmark.bigbench_candidate_rows(TASK, split))
    return model_dir, gens_dir


def commands(args, model_dir, gens_dir):
    common = ["--model_name_or_path", model_dir, "--bigbench_gen_dir", gens_dir,
              "--bigbench_gen_model", GENERATOR, "--bigbench_subset_name", TASK,
              "--train_size", str(args.train_size), "--max_length", str(args.max_length)]
    results = os.path.join(args.work_dir, "results")
    return {
        "original": [args.python, os.path.join(ROOT, "scripts", "baselines",
                                               "original_cappy_bigbench.py"), *common,
                     "--results_dir", os.path.join(results, "original")],
        "cappy": [sys.executable, os.path.join(ROOT, "cappy_bigbench.py"), *common,
                  "--results_dir", os.path.join(results, "cappy"), "--overwrite", "--quiet"],
    }


def run_once(command):
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


@exit_on_error
def main(argv=None):
    import shutil

    args = parse_args(argv)
    model_dir, gens_dir = prepare(args.work_dir, args.model_size)
    runs = commands(args, model_dir, gens_dir)
    report = {"command": "python " + shlex.join(sys.argv), "model_size": args.model_size,
              "train_size": args.train_size, "max_length": args.max_length,
              "commands": {name: shlex.join(command) for name, command in runs.items()},
              "seconds": {name: [] for name in runs}, "rougeL": {}}
    print(f"command: {report['command']}", flush=True)
    for repeat in range(args.repeats):
        for name, command in runs.items():
            shutil.rmtree(os.path.join(args.work_dir, "results", name), ignore_errors=True)
            seconds = run_once(command)
            report["seconds"][name].append(round(seconds, 2))
            print(f"run {repeat + 1}/{args.repeats}: {name} {seconds:.1f} s", file=sys.stderr,
                  flush=True)
    for name in runs:
        with open(os.path.join(args.work_dir, "results", name, GENERATOR, f"{TASK}.json"),
                  encoding="utf-8") as file:
            report["rougeL"][name] = json.load(file)["rougeL"]
    best = {name: min(times) for name, times in report["seconds"].items()}
    report["speedup"] = best["original"] / best["cappy"]
    for name, command in report["commands"].items():
        print(f"{name}: {command}")
    print("\n| script | wall s, each run | ROUGE-L (random model) |\n|---|---|---:|")
    for name in runs:
        print(f"| {name} | {', '.join(f'{s:.1f}' for s in report['seconds'][name])} | "
              f"{100 * report['rougeL'][name]:.2f} |")
    print(f"\ncappy is {report['speedup']:.2f}x the original (fastest run of each)")
    if args.output_file:
        from cappy.engine.io import write_json

        write_json(args.output_file, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
