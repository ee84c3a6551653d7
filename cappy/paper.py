"""Published figures shipped with the package: the paper's (percentages) and the original
release's own per-task BIG-Bench results on one A10G GPU (fractions)."""

import functools
import json
import os
import re

PAPER_RESULTS = os.path.join(os.path.dirname(__file__), "data", "paper_results.json")
ORIGINAL_A10G_RESULTS = os.path.join(os.path.dirname(__file__), "data",
                                     "original_a10g_results.json")
FLAN_T5_MODELS = ["flan-t5-small", "flan-t5-base", "flan-t5-large", "flan-t5-xl", "flan-t5-xxl"]


@functools.lru_cache(maxsize=1)
def paper_results():
    with open(PAPER_RESULTS, encoding="utf-8") as file:
        return json.load(file)


@functools.lru_cache(maxsize=1)
def _original_a10g_results():
    with open(ORIGINAL_A10G_RESULTS, encoding="utf-8") as file:
        return json.load(file)["rougeL"]


def original_a10g_rougel(task, model):
    """The original release's Cappy ROUGE-L (x100) on one A10G for a task and generator, or None.

    These are its `bigbench_cappy_results/{model}/{task}.json` files at full precision; their
    mean over the 45 tasks is the README table's (and `bigbench_mean("cappy", model)`).
    """
    value = _original_a10g_results().get(model, {}).get(task)
    return None if value is None else 100 * value


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


def promptsource_table():
    """Table 1 (zero-shot accuracy, %): {"columns": [...], "rows": {row name: [...]}}."""
    return paper_results()["promptsource_zero_shot_accuracy"]


def _name_key(name):
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return key[len("superglue"):] if key.startswith("superglue") and key != "superglue" else key


# Spellings of a test file's dataset_name (ours, PromptSource's, T0's) -> Table 1 row
_PROMPTSOURCE_ALIASES = {
    "anlir1": "ANLI R1", "anlir2": "ANLI R2", "anlir3": "ANLI R3", "cb": "CB", "rte": "RTE",
    "storycloze": "StoryCloze", "storycloze2016": "StoryCloze", "wsc": "WSC",
    "wscfixed": "WSC", "wic": "WiC", "winogrande": "Winogrande",
    "winograndexl": "Winogrande", "winograndewinograndexl": "Winogrande",
    "winogender": "WinoGender", "axg": "WinoGender", "crowspairs": "Crows-Pairs",
}


def promptsource_row(dataset_name):
    """The Table 1 row of a test file's dataset_name ("anli_r1", "super_glue/cb", "CB"...), or None."""
    return _PROMPTSOURCE_ALIASES.get(_name_key(dataset_name))
