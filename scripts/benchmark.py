"""Speed of scoring and finetuning: the project's paths against the original's.

    python scripts/benchmark.py                         # 4-layer, 256-wide RoBERTa, CPU
    python scripts/benchmark.py --model_size large --dtype bfloat16   # on a GPU

Runs on the same random weights and data the original release's scoring (every pair
padded to 512, duplicates scored again), the project's scoring
(cappy.engine.jobs.scoring.PairScorer), and optionally transformers' PyTorch model with
length-sorted dynamic padding; then the paper's finetuning recipe three ways: the
original's loop with fixed padding, the same loop with bucketed padding (this project
before packing), and the packed trainer. The original's paths are its own code in its own
stack (transformers 4's Flax RoBERTa, Redco 0.4.13: scripts/setup_original.sh builds
.venv-original; --original_python or $CAPPY_ORIGINAL_PYTHON names another), run as a
process of their own; --no_original leaves them out (where that stack cannot be
installed, such as a GPU machine without a network). Prints pairs (examples) per second,
the speed-up over the original, achieved FLOP/s on real tokens as a fraction of this
machine's measured matrix-product peak, the share of computed positions that are real
tokens, the largest score difference from the original path, and how far finetuning
moved the scores. See benchmarks/harness.py for what each path does. For whole
processes, see scripts/benchmark_processes.py.
"""

import argparse
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cappy.engine.errors import CappyError
from cappy.engine.runtime.process import exit_on_error  # noqa: E402


def parse_args(argv=None):
    from benchmarks.harness import GENERATOR_SHAPES, MODEL_SHAPES
    from cappy.engine.weights.cappy_checkpoint import DTYPES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_size", default="tiny", choices=list(MODEL_SHAPES),
                   help="the random RoBERTa's shape (large: RoBERTa-large, Cappy's)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="compute dtype of the cappy path and the PyTorch peer "
                        "(the original path runs in float32, as released)")
    p.add_argument("--batch_size", type=int, default=32, help="scoring batch size")
    p.add_argument("--max_length", type=int, default=512, help="tokens per pair")
    p.add_argument("--n_prompts", type=int, default=360,
                   help="PromptSource-like prompts (4 answer choices each)")
    p.add_argument("--train_size", type=int, default=256,
                   help="finetuning examples per path (the paper: 102,400)")
    p.add_argument("--per_device_train_batch_size", type=int, default=8,
                   help="finetuning examples per device per micro-batch")
    p.add_argument("--accumulate_grad_batches", type=int, default=16,
                   help="micro-batches per optimizer update")
    p.add_argument("--learning_rate", type=float, default=2e-5,
                   help="finetuning's peak rate (the paper's; tests raise it so that a few "
                        "updates move the scores)")
    p.add_argument("--original_python", default=None,
                   help="the original release's interpreter (default: $CAPPY_ORIGINAL_PYTHON, "
                        "else .venv-original/bin/python)")
    p.add_argument("--no_original", action="store_true",
                   help="leave out the original's paths (and the speed-ups over them)")
    p.add_argument("--dropout", type=float, default=0.1,
                   help="the model's dropout (RoBERTa's 0.1); 0 makes the two finetuning "
                        "paths compute the same updates")
    p.add_argument("--no_torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--generation_size", default="tiny", choices=["none", *GENERATOR_SHAPES],
                   help="the FLAN-T5-shaped generator of the generation benchmark (none: skip)")
    p.add_argument("--generation_instructions", type=int, default=24,
                   help="BIG-Bench instructions the generation benchmark generates for")
    p.add_argument("--generation_only", action="store_true",
                   help="only the generation benchmark (a few minutes instead of ten)")
    p.add_argument("--output_file", default=None, help="also write the figures as JSON")
    p.add_argument("--quiet", action="store_true",
                   help="no progress lines, only the command and the report")
    return p.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    from benchmarks import harness as benchmark
    from cappy.engine.io import write_json
    from cappy.engine.runtime.transformers_setup import quiet_transformers

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"command: {command}", flush=True)
    start = time.monotonic()

    def log(message):  # each step with the time spent so far
        if not args.quiet:
            elapsed = int(time.monotonic() - start)
            print(f"[{elapsed // 60:d}:{elapsed % 60:02d}] {message}", file=sys.stderr,
                  flush=True)

    log("about 11 minutes on a 2-core CPU with the tiny model (a few with "
        "--generation_only); the larger shapes are meant for a GPU")
    if args.generation_only and args.generation_size == "none":
        raise CappyError("--generation_only needs a --generation_size")
    original_python = None
    if not (args.no_original or args.generation_only):
        if args.original_python:
            os.environ["CAPPY_ORIGINAL_PYTHON"] = args.original_python
        original_python, problem = benchmark.original_python()
        if problem:
            raise CappyError(f"{problem}; or pass --no_original")
    with quiet_transformers():
        report = (benchmark.machine_report(args.dtype) if args.generation_only else
                  benchmark.run_benchmark(
                      model_size=args.model_size, dtype=args.dtype, batch_size=args.batch_size,
                      max_length=args.max_length, train_size=args.train_size,
                      per_device_train_batch=args.per_device_train_batch_size,
                      accumulate=args.accumulate_grad_batches, with_torch=not args.no_torch,
                      n_prompts=args.n_prompts, dropout=args.dropout,
                      learning_rate=args.learning_rate, original_python=original_python,
                      log=log))
        if args.generation_size != "none":
            report["generation"] = benchmark.run_generation_benchmark(
                args.generation_size, args.generation_instructions, dtype=args.dtype,
                max_tgt_len=min(64, args.max_length), with_torch=not args.no_torch, log=log)
    report["command"] = command
    print(benchmark.format_report(report))
    if args.output_file:
        write_json(args.output_file, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
