"""Tables over many tasks: averages per generator, with the paper's figures beside ours."""

import os

from cappy.bigbench.data import read_task_names
from cappy.bigbench.candidates import (BASELINE_LABELS, BASELINE_ROWS, candidate_path,
                              read_candidate_file, task_baselines)
from cappy.engine.errors import CappyError
from cappy.engine.io import read_json
from cappy.paper import bigbench_mean, model_order, original_a10g_rougel


def _generator_folders(gen_dir):
    if not os.path.isdir(gen_dir):
        raise CappyError(f"{gen_dir}: candidate folder not found "
                         f"(run scripts/bigbench_flan_generate.py or download the released files)")
    models = [name for name in os.listdir(gen_dir) if os.path.isdir(os.path.join(gen_dir, name))]
    if not models:
        raise CappyError(f"{gen_dir}: no generator folders inside")
    return model_order(models)


def baseline_report(data_dir, gen_dir, models=None, tgt_key="response", refs_key="references",
                    tasks=None):
    """{model: {"per_task", "mean", "missing", "n_tasks"}} with ROUGE-L as fractions.

    Tasks are `tasks`, or those of `{data_dir}/subset_names.json`.
    """
    tasks = tasks or read_task_names(data_dir)
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


# --- Cappy's results over many tasks (scripts/present_cappy_bigbench_results.py) ---


def cappy_task_list(data_dir):
    """Tasks of `{data_dir}/subset_names.json`, or the paper's 45 when that file is absent."""
    from cappy.paper import bigbench_tasks

    if data_dir and os.path.exists(os.path.join(data_dir, "subset_names.json")):
        return read_task_names(data_dir)
    return bigbench_tasks()


def _result_folders(results_dir):
    if not os.path.isdir(results_dir):
        raise CappyError(f"{results_dir}: results folder not found "
                         f"(run scripts/run_cappy_bigbench.py first)")
    models = [name for name in os.listdir(results_dir)
              if not name.startswith(".") and os.path.isdir(os.path.join(results_dir, name))]
    if not models:
        raise CappyError(f"{results_dir}: no generator folders inside")
    return model_order(models)


def cappy_report(results_dir, tasks, models=None):
    """{model: {"per_task", "mean", "n_tasks", "total_tasks", "missing", "unfinished",
    "paper_mean"}}.

    ROUGE-L of ours as fractions, `paper_mean` in percent (None for non-FLAN
    generators). `missing` lists every task not averaged in (no result file, or an
    unfinished/invalid one); `unfinished` is the part of it whose file exists.
    `n_tasks` is the number of tasks averaged.
    """
    from cappy.bigbench.results import read_result, result_file

    report = {}
    for model in model_order(models) if models else _result_folders(results_dir):
        per_task, missing, unfinished = {}, [], {}
        for task in tasks:
            state, value = read_result(result_file(results_dir, model, task))
            if state == "done":
                per_task[task] = value
            else:
                missing.append(task)
                if state == "unfinished":
                    unfinished[task] = value
        report[model] = {
            "per_task": per_task,
            "mean": sum(per_task.values()) / len(per_task) if per_task else None,
            "n_tasks": len(per_task), "total_tasks": len(tasks),
            "missing": missing, "unfinished": unfinished,
            "paper_mean": bigbench_mean("cappy", model)}
    return report


def _pct(value):
    return "-" if value is None else f"{value:.2f}"


def _diff(ours, paper):
    return "-" if ours is None or paper is None else f"{ours - paper:+.2f}"


def format_cappy_table(report, tasks):
    """Markdown: per task and generator, ours / the original release's A10G run / diff
    (ROUGE-L x100), then means."""
    models = list(report)
    header = "| task | " + " | ".join(f"{m} ours | {m} A10G | {m} diff" for m in models) + " |"
    lines = [header, "|---|" + "---:|" * (3 * len(models))]
    for task in tasks:
        cells = []
        for model in models:
            value = report[model]["per_task"].get(task)
            ours = None if value is None else 100 * value
            paper = original_a10g_rougel(task, model)
            cells += [_pct(ours), _pct(paper), _diff(ours, paper)]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")

    def mean_row(label, paper_of):
        cells = []
        for model in models:
            entry = report[model]
            ours = None if entry["mean"] is None else 100 * entry["mean"]
            paper = paper_of(model)
            cells += [_pct(ours), _pct(paper), _diff(ours, paper)]
        return f"| {label} | " + " | ".join(cells) + " |"

    def same_tasks_paper_mean(model):
        values = [original_a10g_rougel(t, model) for t in report[model]["per_task"]]
        if not values or any(v is None for v in values):
            return None
        return sum(values) / len(values)

    lines.append(mean_row("Mean", lambda m: report[m]["paper_mean"]))
    lines.append(mean_row("Mean, same tasks", same_tasks_paper_mean))
    count_cells = []
    for model in models:
        count_cells += [f"{report[model]['n_tasks']}/{report[model]['total_tasks']} tasks", "", ""]
    lines.append("| tasks averaged | " + " | ".join(count_cells) + " |")
    lines.append("\nA10G: the original release's own run on one A10G GPU (its "
                 "bigbench_cappy_results files); its mean over 45 tasks is the original "
                 "README's table. The paper's own figures came from TPUs and, by that README, "
                 "differ from these by at most 0.8. Mean: ours over the finished tasks. Mean, "
                 "same tasks: the A10G figures averaged over the tasks we finished (the fair "
                 "comparison while tasks are missing).")
    for model in models:
        entry = report[model]
        lines.append(f"\n{model}: {entry['n_tasks']}/{entry['total_tasks']} tasks")
        absent = [t for t in entry["missing"] if t not in entry["unfinished"]]
        if absent:
            lines.append(f"  missing {len(absent)} (no result file, not averaged): "
                         f"{', '.join(absent)}")
        if entry["unfinished"]:
            lines.append(f"  unfinished {len(entry['unfinished'])} (invalid result file, "
                         f"not averaged): " + ", ".join(
                             f"{t} [{why}]" for t, why in entry["unfinished"].items()))
    return "\n".join(lines)


def cappy_report_json(report):
    """What --output_file writes: fractions for ours, percent for `paper_mean`."""
    return {model: {"per_task": e["per_task"], "mean": e["mean"], "n_tasks": e["n_tasks"],
                    "total_tasks": e["total_tasks"], "missing": e["missing"],
                    "unfinished": sorted(e["unfinished"]), "paper_mean": e["paper_mean"]}
            for model, e in report.items()}


def read_baselines_file(path):
    """{model: {row: fraction}} as written by present_bigbench_baselines.py --output_file."""
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CappyError(f"{path}: expected {{model: {{row: value}}}} as written by "
                         f"scripts/present_bigbench_baselines.py --output_file")
    clean = {}
    for model, rows in data.items():
        clean[model] = {}
        for row, value in rows.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CappyError(f"{path}: {model}.{row}: must be a number, got {value!r}")
            clean[model][row] = float(value)
    return clean


def plot_cappy_comparison(report, path, baselines=None):
    """The paper's comparison figure: mean ROUGE-L (x100) per generator, one line per method.

    Ours: Cappy solid with markers, each baseline row thin. Paper: Cappy and beam
    search dashed (FLAN-T5 generators only). Points averaged over fewer tasks
    than the full list are labelled `k/n`. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cappy.engine.io import atomic_open
    from cappy.paper import FLAN_T5_MODELS

    baselines = baselines or {}
    others = model_order([m for m in set(report) | set(baselines) if m not in FLAN_T5_MODELS])
    models = FLAN_T5_MODELS + others
    xs = {m: i for i, m in enumerate(models)}

    def line(points, **style):
        # FLAN-T5 sizes are joined by a line; any other generator is a lone point.
        flan = [(xs[m], v) for m, v in points if v is not None and m in FLAN_T5_MODELS]
        rest = [(xs[m], v) for m, v in points if v is not None and m not in FLAN_T5_MODELS]
        if flan:
            ax.plot([p[0] for p in flan], [p[1] for p in flan], **style)
        if rest:
            lone = dict(style, linestyle="none", label=None if flan else style.get("label"))
            lone.setdefault("marker", "o")
            ax.plot([p[0] for p in rest], [p[1] for p in rest], **lone)

    fig, ax = plt.subplots(figsize=(11, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    line([(m, None if report[m]["mean"] is None else 100 * report[m]["mean"])
          for m in models if m in report],
         color=colors[0], marker="o", linewidth=2.2, label="Cappy (ours)")
    for m in models:
        entry = report.get(m)
        if entry and entry["mean"] is not None and entry["n_tasks"] < entry["total_tasks"]:
            ax.annotate(f"{entry['n_tasks']}/{entry['total_tasks']}",
                        (xs[m], 100 * entry["mean"]), textcoords="offset points",
                        xytext=(6, -14), fontsize=8, color=colors[0])
    line([(m, bigbench_mean("cappy", m)) for m in FLAN_T5_MODELS],
         color=colors[0], linestyle="--", marker="s", markerfacecolor="none",
         label="Cappy (paper)")
    for i, row in enumerate(BASELINE_ROWS):
        color = colors[(i + 1) % len(colors)]
        line([(m, 100 * baselines[m][row] if row in baselines.get(m, {}) else None)
              for m in models], color=color, linewidth=1, marker=".",
             label=f"{BASELINE_LABELS[row]} (ours)")
        if row == "beam4" and baselines:
            line([(m, bigbench_mean("beam4", m)) for m in FLAN_T5_MODELS], color=color,
                 linewidth=1, linestyle="--", label=f"{BASELINE_LABELS[row]} (paper)")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=20 if len(models) > 5 else 0)
    ax.set_xlim(-0.3, len(models) - 0.7)
    ax.set_xlabel("generator")
    ax.set_ylabel("mean ROUGE-L (x100) over BIG-Bench tasks")
    n_tasks = max((entry["total_tasks"] for entry in report.values()), default=0)
    ax.set_title(f"Cappy on BIG-Bench generative tasks, ours ({n_tasks} tasks) against the "
                 f"paper (45)\nlabel k/n: ours averaged over only k of the tasks", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    try:
        with atomic_open(path, "wb") as file:
            fig.savefig(file, format=fmt, dpi=120)
    finally:
        plt.close(fig)
