"""Tables over many tasks: averages per generator, with the paper's figures beside ours."""

import os

from cappy.candidates import (BASELINE_LABELS, BASELINE_ROWS, candidate_path,
                              read_candidate_file, task_baselines)
from cappy.errors import CappyError
from cappy.io import read_json
from cappy.paper import bigbench_mean, model_order


def _generator_folders(gen_dir):
    if not os.path.isdir(gen_dir):
        raise CappyError(f"{gen_dir}: candidate folder not found "
                         f"(run scripts/bigbench_flan_generate.py or download the released files)")
    models = [name for name in os.listdir(gen_dir) if os.path.isdir(os.path.join(gen_dir, name))]
    if not models:
        raise CappyError(f"{gen_dir}: no generator folders inside")
    return model_order(models)


def baseline_report(data_dir, gen_dir, models=None, tgt_key="response", refs_key="references"):
    """{model: {"per_task", "mean", "missing", "n_tasks"}} with ROUGE-L as fractions."""
    tasks = read_json(os.path.join(data_dir, "subset_names.json"))
    report = {}
    for model in model_order(models) if models else _generator_folders(gen_dir):
        per_task, missing = {}, []
        for task in tasks:
            path = candidate_path(gen_dir, model, task, "validation")
            if not os.path.exists(path):
                missing.append(task)
                continue
            rows = read_candidate_file(path, tgt_key=tgt_key, refs_key=refs_key,
                                       need_log_likelihood=True)
            per_task[task] = task_baselines(rows, tgt_key, refs_key)
        mean = {row: sum(t[row] for t in per_task.values()) / len(per_task)
                for row in BASELINE_ROWS} if per_task else {}
        report[model] = {"per_task": per_task, "mean": mean, "missing": missing,
                         "n_tasks": len(tasks)}
    return report


def _cell(value, paper):
    ours = "-" if value is None else f"{100 * value:.2f}"
    return ours if paper is None else f"{ours} ({paper:.2f})"


def format_baseline_table(report):
    """Markdown: ROUGE-L x100 per baseline and generator, the paper's figure in brackets."""
    models = list(report)
    lines = ["| ROUGE-L, ours (paper) | " + " | ".join(models) + " |",
             "|---|" + "---|" * len(models)]
    for row in BASELINE_ROWS:
        cells = [_cell(report[m]["mean"].get(row), bigbench_mean(row, m)) for m in models]
        lines.append(f"| {BASELINE_LABELS[row]} | " + " | ".join(cells) + " |")
    lines.append("| tasks averaged | " + " | ".join(
        f"{len(report[m]['per_task'])}/{report[m]['n_tasks']}" for m in models) + " |")
    for model in models:
        if report[model]["missing"]:
            lines.append(f"\n{model}: missing {len(report[model]['missing'])} task(s), "
                         f"not averaged: {', '.join(report[model]['missing'])}")
    return "\n".join(lines)
