"""`cappy generate` (= scripts/bigbench_flan_generate.py): the candidate responses that
Cappy reranks, for BIG-Bench tasks.

    cappy generate --model_name_or_path google/flan-t5-xl --n_model_shards 4

For each task of `{data_dir}/subset_names.json` (or `--tasks`) and each split, writes
`{output_dir}/{model}/{task}_{split}.jsonl`: the data row plus `flan_samples` =
{decoding: [{"response", "log_likelihood_sum", "log_likelihood_mean"}]} with 1
beam-search (4 beams) and 4 samples each of plain, temperature-0.9, top-k-40 and
top-p-0.95 sampling (17 candidates). Files are written atomically and a re-run skips
finished ones, so a crash loses at most the file in progress; each file has its own
random stream, so resuming gives the same candidates as an uninterrupted run.

Generators: T5 / FLAN-T5 / mT5, BART (BART0) and mBART, GPT-2 and the Llama family (Llama
2 and 3, Mistral, Qwen2), computed by cappy's own code (`cappy.engine.weights.generator_loading`).
Weights are cast to `--dtype` (float16 in the paper; use float32 on a CPU). Every input
is checked before the generator loads; one run at a time writes a generator's folder.
"""

import contextlib
import dataclasses
import os

from cappy.engine.config import setting
from cappy.engine.runtime.process import job_command
from cappy.engine.errors import CappyError
from cappy.engine.runtime.hosts import HostSettings

COMMAND_DOC = __doc__
SPLITS = ("train", "validation")


@dataclasses.dataclass(kw_only=True)
class GenerateConfig(HostSettings):
    """The generator's settings (the original release's flags and defaults)."""
    model_name_or_path: str = setting("google/flan-t5-small", "the generator: a hub id or a "
                                      "folder (T5, BART, GPT-2 or Llama-family)")
    data_dir: str = setting("bigbench_data", "the BIG-Bench task files "
                            "(scripts/get_bigbench_data.py writes them)")
    output_dir: str = setting("bigbench_flan_gens", "candidates go to OUTPUT_DIR/{model folder "
                              "name}/")
    tasks: str | None = setting(None, "comma-separated task names (default: subset_names.json)",
                                type=str)
    splits: str = setting(",".join(SPLITS), "comma-separated splits to generate for")
    src_key: str = setting("instruction", "the instruction's field")
    tgt_key: str = setting("response", "the response's field in the written candidates")
    n_model_shards: int = setting(1, "split the model over this many devices", at_least=1)
    n_sample_gens: int = setting(4, "samples per sampling decoding (beam search runs once)",
                                 at_least=1)
    per_device_batch_size: int = setting(8, "instructions per device per batch", at_least=1)
    max_src_len: int = setting(512, "instruction tokens kept", at_least=1)
    max_tgt_len: int = setting(64, "most tokens a candidate has", at_least=1)
    dtype: str = setting("float16", "generator weights' dtype (float16 as in the paper)",
                         choices=["float16", "bfloat16", "float32"])
    jax_seed: int = setting(42, "seed of every file's random stream")
    verbose: bool = setting(True, "no progress bars or per-file lines", flag="--quiet")


def run(config):
    """Check the inputs, join the processes, then generate under the folder's lock."""
    from cappy.bigbench.candidates import plan_bigbench_generation
    from cappy.bigbench.data import read_task_names
    from cappy.engine.flags import comma_list
    from cappy.engine.jobs.candidate_generation import generator_name
    from cappy.engine.runtime.hosts import join
    from cappy.engine.runtime.leader import writes_outputs
    from cappy.engine.io import check_output_folder, run_lock

    tasks = (comma_list(config.tasks, "--tasks") if config.tasks
             else read_task_names(config.data_dir))
    splits = comma_list(config.splits, "--splits")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise CappyError(f"--splits: unknown split(s) {', '.join(unknown)}")
    output_dir = os.path.join(config.output_dir, generator_name(config.model_name_or_path))
    check_output_folder(output_dir, "--output_dir")
    plan_bigbench_generation(config.data_dir, output_dir, tasks, splits, src_key=config.src_key)
    # Inputs are good. One run at a time writes a generator's folder: process 0 writes, so
    # it holds the lock, and which process is 0 is known once they have joined. The plan is
    # made again under the lock.
    join(config)
    with (run_lock(output_dir, f"--output_dir {output_dir}") if writes_outputs()
          else contextlib.nullcontext()):
        generate(config, tasks, splits, output_dir)


def generate(config, tasks, splits, output_dir):
    """Write the candidate files still missing from `output_dir`."""
    from cappy.bigbench.candidates import (candidate_file_bytes, plan_bigbench_generation,
                                           write_candidates)
    from cappy.engine.errors import device_memory_guard
    from cappy.engine.jobs.candidate_generation import CandidateGenerator
    from cappy.engine.runtime.leader import writes_outputs
    from cappy.engine.io import check_free_space

    todo, done = plan_bigbench_generation(config.data_dir, output_dir, tasks, splits,
                                          src_key=config.src_key)
    say = print if config.verbose and writes_outputs() else (lambda *_: None)
    for task, split, path in done:
        say(f"skip {task} {split}: {path} exists")
    if not todo:
        print("nothing to do")
        return
    if writes_outputs():  # before the generator loads: the disk can hold what it will write
        check_free_space(output_dir, sum(candidate_file_bytes(rows, config.n_sample_gens,
                                                              config.max_tgt_len)
                                         for _, _, rows, _ in todo),
                         f"{len(todo)} candidate file{'s' if len(todo) > 1 else ''}")
    finished = []
    with device_memory_guard(
            f"lower --per_device_batch_size ({config.per_device_batch_size}), --max_src_len "
            f"({config.max_src_len}) or --max_tgt_len ({config.max_tgt_len}), or split the "
            f"model over more devices with --n_model_shards ({config.n_model_shards})",
            lambda: f"{len(finished)} of the {len(todo)} candidate files to write were "
                    f"finished and are kept (a re-run skips them)"):
        generator = CandidateGenerator(
            config.model_name_or_path, n_model_shards=config.n_model_shards,
            n_sample_gens=config.n_sample_gens,
            per_device_batch_size=config.per_device_batch_size,
            max_src_len=config.max_src_len, max_tgt_len=config.max_tgt_len, dtype=config.dtype,
            jax_seed=config.jax_seed, verbose=config.verbose, hosts=config)
        for index, (task, split, rows, out_path) in enumerate(todo, start=1):
            write_candidates(generator, rows, out_path, seed=config.jax_seed,
                             src_key=config.src_key, tgt_key=config.tgt_key,
                             desc=f"[{index}/{len(todo)}] {task} {split}")
            finished.append(out_path)
            say(f"wrote {out_path} ({len(rows)} rows)")


parse_args, main = job_command(GenerateConfig, COMMAND_DOC, run)
