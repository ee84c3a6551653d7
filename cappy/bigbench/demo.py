"""`cappy demo` (= scripts/demo_offline.py): the whole BIG-Bench chain on tiny random models,
offline, on a CPU (about 45 s on 2 cores).

    cappy demo [--output_dir demo_run] [--quiet]

Steps, each skipped when its output already exists (so a second run is quick):
1. tiny models: a random Cappy (RoBERTa) and a random T5 generator;
2. candidates for the shipped 3-task BIG-Bench sample (17 per instruction);
3. the baseline table; 4. finetune Cappy and rerank, per task;
5. the Cappy table and the comparison plot.
The models are random, so the numbers mean nothing: the demo shows that every
step runs and what each writes.
"""

import dataclasses
import os
import time

from cappy.engine.config import setting
from cappy.engine.runtime.process import job_command
from cappy.engine.weights.tiny_models import SAMPLE_DIR, build_tiny_models

GENERATOR = "tiny-t5"
# Small enough for two CPU cores; same code paths as the paper's settings.
DEMO_GENERATION = dict(n_sample_gens=4, per_device_batch_size=8, max_src_len=128,
                       max_tgt_len=16, dtype="float32")
DEMO_CAPPY_SETTINGS = {"train_size": 512, "per_device_batch_size": 8,
                       "accumulate_grad_batches": 2, "learning_rate": 1e-4,
                       "max_length": 160, "lr_schedule": "corrected"}


def run_demo(output_dir="demo_run", log=print, tasks=None, quiet=False):
    """The demo's five steps; `quiet` logs only the two tables."""
    from cappy.bigbench.task import TaskConfig, run_task
    from cappy.bigbench.candidates import plan_bigbench_generation, write_candidates
    from cappy.engine.jobs.candidate_generation import CandidateGenerator
    from cappy.bigbench.data import read_task_names
    from cappy.engine.io import write_json
    from cappy.bigbench.tables import (baseline_report, cappy_report, format_baseline_table,
                               format_cappy_table, plot_cappy_comparison)

    start = time.time()
    table = log
    if quiet:
        log = lambda *_: None  # noqa: E731
    tasks = tasks or read_task_names(SAMPLE_DIR)
    gen_dir = os.path.join(output_dir, "bigbench_flan_gens")
    results_dir = os.path.join(output_dir, "bigbench_cappy_results")

    log(f"[1/5] tiny random models -> {output_dir}/models")
    models = build_tiny_models(os.path.join(output_dir, "models"), ("tiny-cappy", GENERATOR))

    log(f"[2/5] candidates from {GENERATOR} for {', '.join(tasks)} -> {gen_dir}")
    todo, _ = plan_bigbench_generation(SAMPLE_DIR, os.path.join(gen_dir, GENERATOR), tasks,
                                       ["train", "validation"])
    if todo:
        generator = CandidateGenerator(models[GENERATOR], verbose=False, **DEMO_GENERATION)
        for task, split, rows, path in todo:
            write_candidates(generator, rows, path, seed=42)
            log(f"      wrote {path}")

    log("[3/5] baselines (ROUGE-L x100; the paper's FLAN-T5 figures do not apply here)")
    baselines = baseline_report(SAMPLE_DIR, gen_dir, [GENERATOR], tasks=tasks)
    table(format_baseline_table(baselines))
    baselines_file = os.path.join(output_dir, "baselines.json")
    write_json(baselines_file, {m: entry["mean"] for m, entry in baselines.items()})

    log("[4/5] finetune the tiny Cappy on each task, rerank the validation candidates")
    for task in tasks:
        config = TaskConfig(
            model_name_or_path=models["tiny-cappy"], bigbench_gen_dir=gen_dir,
            bigbench_gen_model=GENERATOR, bigbench_subset_name=task, results_dir=results_dir,
            verbose=False, **DEMO_CAPPY_SETTINGS)
        run_task(config, log=lambda message: log(f"      {message}"),
                 rerun_hint=f"delete {output_dir} to run the demo again")

    log("[5/5] Cappy against the baselines")
    report = cappy_report(results_dir, tasks, [GENERATOR])
    table(format_cappy_table(report, tasks))
    plot_path = os.path.join(output_dir, "cappy_vs_baselines.png")
    plot_cappy_comparison(report, plot_path,
                          baselines={m: entry["mean"] for m, entry in baselines.items()})
    log(f"plot: {plot_path}")
    log(f"done in {time.time() - start:.0f} s. Random tiny models: the numbers mean nothing.")
    return report


@dataclasses.dataclass(kw_only=True)
class DemoConfig:
    """The demo's flags."""
    output_dir: str = setting("demo_run", "where the demo's models, data and results go")
    verbose: bool = setting(True, "print only the two tables, not each step", flag="--quiet")


def run(config):
    run_demo(config.output_dir, quiet=not config.verbose)


# Everything the demo reads is local: the hub is never asked.
parse_args, main = job_command(DemoConfig, __doc__, run, environment={"HF_HUB_OFFLINE": "1"})
