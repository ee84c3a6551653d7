"""The paper's published figures (percentages), shipped with the package."""

import functools
import json
import os

PAPER_RESULTS = os.path.join(os.path.dirname(__file__), "data", "paper_results.json")
FLAN_T5_MODELS = ["flan-t5-small", "flan-t5-base", "flan-t5-large", "flan-t5-xl", "flan-t5-xxl"]


@functools.lru_cache(maxsize=1)
def paper_results():
    with open(PAPER_RESULTS, encoding="utf-8") as file:
        return json.load(file)


def bigbench_tasks():
    """The 45 generative BIG-Bench tasks of the paper."""
    return list(paper_results()["bigbench_45_tasks"])


def bigbench_mean(row, model):
    """Published mean ROUGE-L (x100) over 45 tasks for a table row and generator, or None."""
    table = paper_results()["bigbench_rougeL_mean_over_45_tasks"]
    if row not in table["rows"] or model not in table["columns"]:
        return None
    return table["rows"][row][table["columns"].index(model)]


def model_order(models):
    """FLAN-T5 sizes in size order first, then any other generator alphabetically."""
    known = [m for m in FLAN_T5_MODELS if m in models]
    return known + sorted(m for m in models if m not in FLAN_T5_MODELS)
