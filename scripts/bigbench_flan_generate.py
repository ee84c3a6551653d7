"""Generate the candidate responses that Cappy reranks, for BIG-Bench tasks.

    python scripts/bigbench_flan_generate.py --model_name_or_path google/flan-t5-xl \
        --n_model_shards 4

For each task of `{data_dir}/subset_names.json` (or `--tasks`) and each split,
writes `{output_dir}/{model}/{task}_{split}.jsonl`: the data row plus
`flan_samples` = {decoding: [{"response", "log_likelihood_sum",
"log_likelihood_mean"}]} with 1 beam-search (4 beams) and 4 samples each of
plain, temperature-0.9, top-k-40 and top-p-0.95 sampling (17 candidates).
Files are written atomically and a re-run skips finished ones, so a crash loses
at most the file in progress; each file has its own random stream, so resuming
gives the same candidates as an uninterrupted run.

Generators: T5 / FLAN-T5 / mT5, GPT-2 and the Llama family (Llama 2 and 3, Mistral,
Qwen2), computed by cappy's own code (cappy/engine/t5.py, cappy/engine/causal_lm.py). Weights are
cast to `--dtype` (float16 in the paper; use float32 on a CPU).
"""

import argparse
import contextlib
import os
import sys

from cappy.engine.errors import CappyError, exit_on_error
from cappy.engine.flags import comma_list
from cappy.engine.hosts import add_multihost_arguments, join, writes_outputs
from cappy.bigbench.data import read_task_names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_name_or_path", default="google/flan-t5-small",
                        help="the generator: a hub id or a folder (T5, GPT-2 or Llama-family)")
    parser.add_argument("--data_dir", default="bigbench_data",
                        help="the BIG-Bench task files (scripts/get_bigbench_data.py writes them)")
    parser.add_argument("--output_dir", default="bigbench_flan_gens",
                        help="candidates go to OUTPUT_DIR/{model folder name}/")
    parser.add_argument("--tasks", default=None,
                        help="comma-separated task names (default: subset_names.json)")
    parser.add_argument("--splits", default="train,validation",
                        help="comma-separated splits to generate for")
    parser.add_argument("--src_key", default="instruction", help="the instruction's field")
    parser.add_argument("--tgt_key", default="response",
                        help="the response's field in the written candidates")
    parser.add_argument("--n_model_shards", type=int, default=1,
                        help="split the model over this many devices")
    parser.add_argument("--n_sample_gens", type=int, default=4,
                        help="samples per sampling decoding (beam search runs once)")
    parser.add_argument("--per_device_batch_size", type=int, default=8,
                        help="instructions per device per batch")
    parser.add_argument("--max_src_len", type=int, default=512, help="instruction tokens kept")
    parser.add_argument("--max_tgt_len", type=int, default=64, help="most tokens a candidate has")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                        help="generator weights' dtype (float16 as in the paper)")
    parser.add_argument("--jax_seed", type=int, default=42,
                        help="seed of every file's random stream")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars, Redco logs or per-file lines")
    add_multihost_arguments(parser)
    return parser.parse_args(argv)


@exit_on_error
def main(argv=None):
    args = parse_args(argv)
    from cappy.engine.config import check_number
    from cappy.engine.generation import generator_name
    from cappy.engine.io import check_output_folder, run_lock

    if args.tasks:
        tasks = comma_list(args.tasks, "--tasks")
    else:
        tasks = read_task_names(args.data_dir)
    splits = comma_list(args.splits, "--splits")
    unknown = sorted(set(splits) - {"train", "validation"})
    if unknown:
        raise CappyError(f"--splits: unknown split(s) {', '.join(unknown)}")
    for flag in ("n_model_shards", "n_sample_gens", "per_device_batch_size", "max_src_len",
                 "max_tgt_len"):
        check_number(f"--{flag}", getattr(args, flag), at_least=1)
    output_dir = os.path.join(args.output_dir, generator_name(args.model_name_or_path))
    check_output_folder(output_dir, "--output_dir")
    from cappy.bigbench.candidates import plan_bigbench_generation

    plan_bigbench_generation(args.data_dir, output_dir, tasks, splits, src_key=args.src_key)
    # Inputs are good. One run at a time writes a generator's folder: process 0 writes, so
    # it holds the lock, and which process is 0 is known once they have joined. The plan is
    # made again under the lock.
    join(args)
    with (run_lock(output_dir, f"--output_dir {output_dir}") if writes_outputs()
          else contextlib.nullcontext()):
        return generate(args, tasks, splits, output_dir, own_process=argv is None)


def generate(args, tasks, splits, output_dir, own_process):
    from cappy.bigbench.candidates import (candidate_file_bytes, plan_bigbench_generation,
                                           write_candidates)
    from cappy.engine.errors import device_memory_guard
    from cappy.engine.generation import CandidateGenerator
    from cappy.engine.io import check_free_space

    todo, done = plan_bigbench_generation(args.data_dir, output_dir, tasks, splits,
                                          src_key=args.src_key)
    say = (lambda *_: None) if args.quiet else print
    for task, split, path in done:
        say(f"skip {task} {split}: {path} exists")
    if not todo:
        print("nothing to do")
        return 0
    if writes_outputs():  # before the generator loads: the disk can hold what it will write
        check_free_space(output_dir, sum(candidate_file_bytes(rows, args.n_sample_gens,
                                                              args.max_tgt_len)
                                         for _, _, rows, _ in todo),
                         f"{len(todo)} candidate file{'s' if len(todo) > 1 else ''}")
    if own_process:  # the programs an earlier run compiled
        from cappy.engine.compilation_cache import enable_compilation_cache

        enable_compilation_cache()
    finished = []
    with device_memory_guard(
            f"lower --per_device_batch_size ({args.per_device_batch_size}), --max_src_len "
            f"({args.max_src_len}) or --max_tgt_len ({args.max_tgt_len}), or split the model "
            f"over more devices with --n_model_shards ({args.n_model_shards})",
            lambda: f"{len(finished)} of the {len(todo)} candidate files to write were "
                    f"finished and are kept (a re-run skips them)"):
        generator = CandidateGenerator(
            args.model_name_or_path, n_model_shards=args.n_model_shards,
            n_sample_gens=args.n_sample_gens, per_device_batch_size=args.per_device_batch_size,
            max_src_len=args.max_src_len, max_tgt_len=args.max_tgt_len, dtype=args.dtype,
            jax_seed=args.jax_seed, verbose=not args.quiet, hosts=args)
        if not writes_outputs():  # process 0 writes, and says so
            say = lambda *_: None  # noqa: E731
        for index, (task, split, rows, out_path) in enumerate(todo, start=1):
            write_candidates(generator, rows, out_path, seed=args.jax_seed, src_key=args.src_key,
                             tgt_key=args.tgt_key, desc=f"[{index}/{len(todo)}] {task} {split}")
            finished.append(out_path)
            say(f"wrote {out_path} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
