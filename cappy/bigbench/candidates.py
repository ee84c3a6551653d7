"""Reading candidate files and the baselines computed from them.

A candidate file (`bigbench_flan_gens/{model}/{task}_{split}.jsonl`) holds the
data row plus `flan_samples` = {decoding: [{"response", "log_likelihood_sum",
"log_likelihood_mean"}, ...]}. Baselines on the validation split (DESIGN
section 3): each decoding's first sample, and "self-score": the candidate with
the highest log-likelihood sum (or mean) under the generator, over all
candidates in decoding order (the first maximum wins).
"""

import math
import os

from cappy.engine.errors import located
from cappy.engine.io import iter_jsonl
from cappy.engine.rouge import mean_rouge_l

# Decoding name -> generate() arguments. Unset arguments keep transformers'
# defaults, as in the original release (so plain "sampling" keeps the default
# top_k of 50 from the generation config).
DECODINGS = {
    "beam4": {"num_beams": 4},
    "sampling": {"do_sample": True},
    "temp0.9": {"do_sample": True, "temperature": 0.9},
    "topk40": {"do_sample": True, "top_k": 40},
    "topp0.95": {"do_sample": True, "top_p": 0.95},
}
DETERMINISTIC_DECODINGS = ("beam4",)  # generated once, not n_sample_gens times
LOG_LIKELIHOOD_KEYS = ("log_likelihood_sum", "log_likelihood_mean")
SAMPLES_KEY = "flan_samples"
SELF_SCORE_ROWS = {"self_score_sum": "log_likelihood_sum",
                   "self_score_mean": "log_likelihood_mean"}
BASELINE_ROWS = list(DECODINGS) + list(SELF_SCORE_ROWS)
BASELINE_LABELS = {
    "beam4": "Beam Search (beam=4)", "sampling": "Sampling",
    "temp0.9": "Temperature (t=0.9)", "topk40": "Top-k (k=40)",
    "topp0.95": "Nucleus (p=0.95)", "self_score_sum": "Self-Score (sum)",
    "self_score_mean": "Self-Score (mean)",
}


def _check_candidate_row(path, line, row, src_key, tgt_key, refs_key, need_log_likelihood):
    if not isinstance(row.get(src_key), str):
        raise located(path, line, src_key, "missing or not a string")
    refs = row.get(refs_key)
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise located(path, line, refs_key, "must be a non-empty list of strings")
    samples = row.get(SAMPLES_KEY)
    if not isinstance(samples, dict):
        raise located(path, line, SAMPLES_KEY, "missing or not an object")
    for decoding in DECODINGS:
        cands = samples.get(decoding)
        if not isinstance(cands, list) or not cands:
            raise located(path, line, f"{SAMPLES_KEY}.{decoding}",
                          "missing or not a non-empty list")
        for index, cand in enumerate(cands):
            field = f"{SAMPLES_KEY}.{decoding}[{index}]"
            if not isinstance(cand, dict) or not isinstance(cand.get(tgt_key), str):
                raise located(path, line, f"{field}.{tgt_key}", "missing or not a string")
            if need_log_likelihood:
                for key in LOG_LIKELIHOOD_KEYS:
                    value = cand.get(key)
                    if (not isinstance(value, (int, float)) or isinstance(value, bool)
                            or math.isnan(value)):
                        raise located(path, line, f"{field}.{key}", "missing or not a number")


def read_candidate_file(path, src_key="instruction", tgt_key="response", refs_key="references",
                        need_log_likelihood=False):
    """Read and validate a candidate file; every bad row is reported by file and line."""
    rows = []
    for line, row in iter_jsonl(path):
        _check_candidate_row(path, line, row, src_key, tgt_key, refs_key, need_log_likelihood)
        rows.append(row)
    if not rows:
        raise located(path, None, None, "file is empty")
    return rows


def all_candidates(row, tgt_key="response"):
    """Every candidate of a row, in decoding order then sample order."""
    return [cand for decoding in DECODINGS for cand in row[SAMPLES_KEY][decoding]]


def baseline_choice(row, baseline, tgt_key="response"):
    """The response a baseline picks for one row."""
    if baseline in DECODINGS:
        return row[SAMPLES_KEY][baseline][0][tgt_key]
    key = SELF_SCORE_ROWS[baseline]
    best, choice = -math.inf, None
    for cand in all_candidates(row, tgt_key):
        if cand[key] > best:
            best, choice = cand[key], cand[tgt_key]
    return choice


def task_baselines(rows, tgt_key="response", refs_key="references"):
    """{baseline: mean ROUGE-L over rows (fraction)} for one task's validation rows."""
    return {baseline: mean_rouge_l([baseline_choice(row, baseline, tgt_key) for row in rows],
                                   [row[refs_key] for row in rows])
            for baseline in BASELINE_ROWS}


def candidate_path(gen_dir, model, task, split):
    return os.path.join(gen_dir, model, f"{task}_{split}.jsonl")
