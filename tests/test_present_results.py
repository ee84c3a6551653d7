"""Cappy's per-task table against the paper, on fixture result files: numbers,
missing and unfinished tasks, JSON output, the comparison plot, and bad input.

Fixture (tests/data/cappy_results_fixture), 4 tasks in data/subset_names.json:
  flan-t5-small: auto_categorization 0.2531 (released-file style), codenames 0.1975
                 (ours, with counts/timings/settings), gem `running...`, object_counting absent
  flan-t5-xl:    0.6 / 0.5 / 0.3, object_counting has a non-numeric rougeL
  my-llm:        codenames 0.5 only (no paper figures)
"""

import json
import os

import pytest
from conftest import REPO, run_script

PRESENTER = "scripts/present_cappy_bigbench_results.py"
FIXTURE = os.path.join(REPO, "tests", "data", "cappy_results_fixture")
RESULTS = os.path.join(FIXTURE, "results")
DATA = os.path.join(FIXTURE, "data")
BASELINES = os.path.join(FIXTURE, "baselines.json")


def present(*args):
    return run_script(PRESENTER, "--results_dir", RESULTS, *args, timeout=120)


def row(stdout, label):
    return next(line for line in stdout.splitlines() if line.startswith(f"| {label} |"))


def test_table_numbers(tmp_path):
    out = present("--bigbench_data_dir", DATA)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == ("| task | flan-t5-small ours | flan-t5-small A10G | flan-t5-small diff"
                        " | flan-t5-xl ours | flan-t5-xl A10G | flan-t5-xl diff"
                        " | my-llm ours | my-llm A10G | my-llm diff |")
    # By hand: 25.31 - 24.96 = +0.35 (small); 60.00 - 56.71 = +3.29 (xl).
    assert row(out.stdout, "auto_categorization") == (
        "| auto_categorization | 25.31 | 24.96 | +0.35 | 60.00 | 56.71 | +3.29 | - | - | - |")
    assert row(out.stdout, "codenames") == (
        "| codenames | 19.75 | 20.38 | -0.63 | 50.00 | 47.45 | +2.55 | 50.00 | - | - |")
    # Unfinished (gem on small) and missing results show '-'; the A10G figure stays.
    assert row(out.stdout, "gem") == (
        "| gem | - | 23.29 | - | 30.00 | 28.59 | +1.41 | - | - | - |")
    assert row(out.stdout, "object_counting") == (
        "| object_counting | - | 39.95 | - | - | 62.23 | - | - | - | - |")
    # Means over finished tasks only: small (25.31 + 19.75) / 2 = 22.53 against the
    # published 23.6543; xl (60 + 50 + 30) / 3 = 46.67 against 33.2775.
    assert row(out.stdout, "Mean") == (
        "| Mean | 22.53 | 23.65 | -1.12 | 46.67 | 33.28 | +13.39 | 50.00 | - | - |")
    # The A10G per-task figures (full precision) over the same tasks: small
    # (24.9566 + 20.3832) / 2 = 22.67; xl (56.7131 + 47.4510 + 28.5911) / 3 = 44.2517,
    # so 46.6667 - 44.2517 = +2.41 (the rounded figures would give +2.42).
    assert row(out.stdout, "Mean, same tasks") == (
        "| Mean, same tasks | 22.53 | 22.67 | -0.14 | 46.67 | 44.25 | +2.41 | 50.00 | - | - |")
    assert row(out.stdout, "tasks averaged") == (
        "| tasks averaged | 2/4 tasks |  |  | 3/4 tasks |  |  | 1/4 tasks |  |  |")


def test_missing_and_unfinished_listed(tmp_path):
    out = present("--bigbench_data_dir", DATA)
    text = out.stdout
    assert "flan-t5-small: 2/4 tasks\n" \
           "  missing 1 (no result file, not averaged): object_counting\n" \
           "  unfinished 1 (invalid result file, not averaged): gem [not JSON ('running...')]" \
           in text
    assert "flan-t5-xl: 3/4 tasks\n  unfinished 1 (invalid result file, not averaged): " \
           "object_counting ['rougeL' is not a number ('n/a')]" in text
    assert "my-llm: 1/4 tasks\n  missing 3 (no result file, not averaged): " \
           "auto_categorization, gem, object_counting" in text


def test_json_output_and_model_selection(tmp_path):
    out_file = tmp_path / "report.json"
    out = present("--bigbench_data_dir", DATA, "--gen_models", "flan-t5-xl,flan-t5-small",
                  "--output_file", out_file)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("| task | flan-t5-small ours |")  # size order
    report = json.loads(out_file.read_text())
    assert list(report) == ["flan-t5-small", "flan-t5-xl"]
    small = report["flan-t5-small"]
    assert small["per_task"] == {"auto_categorization": 0.2531, "codenames": 0.1975}
    assert small["mean"] == pytest.approx(0.2253)
    assert small["n_tasks"] == 2 and small["total_tasks"] == 4
    assert small["missing"] == ["gem", "object_counting"] and small["unfinished"] == ["gem"]
    assert small["paper_mean"] == pytest.approx(23.6543)
    assert report["flan-t5-xl"]["mean"] == pytest.approx(1.4 / 3)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_original_spellings_result_dir_and_gen_model_name(tmp_path):
    """The original README's `--gen_model_name flan-t5-xxl` and `--result_dir` mean ours."""
    out = run_script(PRESENTER, "--result_dir", RESULTS, "--gen_model_name", "flan-t5-xl",
                     "--bigbench_data_dir", DATA, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == (
        "| task | flan-t5-xl ours | flan-t5-xl A10G | flan-t5-xl diff |")
    assert row(out.stdout, "Mean") == "| Mean | 46.67 | 33.28 | +13.39 |"


def test_paper_task_list_when_no_subset_file(tmp_path):
    out_file = tmp_path / "report.json"
    out = present("--bigbench_data_dir", tmp_path / "absent", "--gen_models", "my-llm",
                  "--output_file", out_file)
    assert out.returncode == 0, out.stderr
    assert row(out.stdout, "tasks averaged") == "| tasks averaged | 1/45 tasks |  |  |"
    report = json.loads(out_file.read_text())["my-llm"]
    assert report["n_tasks"] == 1 and len(report["missing"]) == 44
    assert report["mean"] == 0.5 and report["paper_mean"] is None
    # A model with no finished task has no mean, and is not an error.
    out = present("--bigbench_data_dir", DATA, "--gen_models", "flan-t5-xxl",
                  "--output_file", out_file)
    assert out.returncode == 0, out.stderr
    assert json.loads(out_file.read_text())["flan-t5-xxl"]["mean"] is None
    assert row(out.stdout, "Mean") == "| Mean | - | 37.17 | - |"


def test_original_a10g_figures_are_the_published_means():
    """The shipped A10G files, averaged over the 45 tasks, give the original README's table."""
    from cappy.paper import FLAN_T5_MODELS, bigbench_mean, bigbench_tasks, original_a10g_rougel

    for model in FLAN_T5_MODELS:
        values = [original_a10g_rougel(task, model) for task in bigbench_tasks()]
        assert None not in values
        assert sum(values) / len(values) == pytest.approx(bigbench_mean("cappy", model), abs=5e-5)
    assert original_a10g_rougel("codenames", "my-llm") is None


@pytest.mark.parametrize("with_baselines", [False, True])
def test_plot_is_a_png(tmp_path, with_baselines):
    plot = tmp_path / "figs" / "cappy.png"
    extra = ("--baselines_file", BASELINES) if with_baselines else ()
    out = present("--bigbench_data_dir", DATA, "--plot", plot, *extra)
    assert out.returncode == 0, out.stderr
    assert f"wrote {plot}" in out.stdout
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a real figure, not an empty canvas
    assert os.listdir(plot.parent) == ["cappy.png"]  # no temporary file left behind


@pytest.mark.parametrize("args, message", [
    (("--results_dir", "/nonexistent/results"), "results folder not found"),
    (("--plot", "figure.jpg"), "--plot figure.jpg: file name must end in .png, .pdf, .svg"),
    (("--baselines_file", os.path.join(DATA, "subset_names.json")), "expected {model:"),
    (("--baselines_file", "/nonexistent/b.json"), "file not found"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    out = run_script(PRESENTER, "--results_dir", RESULTS, "--bigbench_data_dir", DATA, *args,
                     timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_empty_results_folder(tmp_path):
    out = run_script(PRESENTER, "--results_dir", tmp_path, "--bigbench_data_dir", DATA)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {tmp_path}: no generator folders inside"
