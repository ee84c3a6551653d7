"""Reading candidate files and the baselines computed from them.

A candidate file (`bigbench_flan_gens/{model}/{task}_{split}.jsonl`) holds the
data row plus `flan_samples` = {decoding: [{"response", "log_likelihood_sum",
"log_likelihood_mean"}, ...]}. Baselines on the validation split (docs/DESIGN.md
section 3): each decoding's first sample, and "self-score": the candidate with
the highest log-likelihood sum (or mean) under the generator, over all
candidates in decoding order (the first maximum wins).
"""

import dataclasses
import math
import os

from cappy.engine.config import setting
from cappy.engine.errors import located
from cappy.engine.io import iter_jsonl, read_jsonl, write_jsonl
from cappy.engine.recipes import DECODINGS, DETERMINISTIC_DECODINGS, LOG_LIKELIHOOD_KEYS
from cappy.engine.rouge import mean_rouge_l

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


@dataclasses.dataclass(kw_only=True)
class CandidateFolders:
    """The folders a command over every task's candidates reads: the tasks and the
    candidate folders, one per generator."""
    bigbench_data_dir: str = setting("bigbench_data", "folder of the BIG-Bench task files "
                                     "and subset_names.json")
    bigbench_gen_dir: str = setting("bigbench_flan_gens", "folder of candidate folders, one "
                                    "per generator")


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


# --- writing candidate files (scripts/bigbench_flan_generate.py, the demo) ---


def plan_bigbench_generation(data_dir, output_dir, tasks, splits, src_key="instruction"):
    """Check every input up front (before a model is loaded) and list the work.

    Returns [(task, split, rows, out_path)] for the files still to write and the
    list of (task, split, out_path) already finished (skipped on a re-run).
    """
    todo, done = [], []
    for task in tasks:
        for split in splits:
            in_path = os.path.join(data_dir, f"{task}_{split}.jsonl")
            out_path = os.path.join(output_dir, f"{task}_{split}.jsonl")
            if os.path.exists(out_path):
                done.append((task, split, out_path))
                continue
            rows = read_jsonl(in_path, schema={src_key: str})
            todo.append((task, split, rows, out_path))
    return todo, done


def candidate_file_bytes(rows, n_sample_gens, max_tgt_len):
    """About the size of the candidate file of `rows`: each row, plus per candidate its
    JSON (about 100 bytes with the two log-likelihoods) and a response of about 2 bytes a
    token of `max_tgt_len` (candidates often end early)."""
    import json

    n_candidates = sum(1 if name in DETERMINISTIC_DECODINGS else n_sample_gens
                       for name in DECODINGS)
    return sum(len(json.dumps(row, ensure_ascii=False)) + 100 for row in rows) + \
        len(rows) * n_candidates * (100 + 2 * max_tgt_len)


def write_candidates(generator, rows, out_path, seed, src_key="instruction",
                     tgt_key="response", desc=None):
    """Generate candidates for `rows` and write rows + `flan_samples` atomically (process 0
    writes; in a run of several processes every process generates)."""
    from cappy.engine.runtime.leader import writes_outputs

    generator.reseed(seed, os.path.basename(out_path))
    candidates = generator.generate([row[src_key] for row in rows],
                                    desc=desc or os.path.basename(out_path))
    out_rows = []
    for row, by_decoding in zip(rows, candidates):
        samples = {name: [{tgt_key: c["response"],
                           **{key: c[key] for key in LOG_LIKELIHOOD_KEYS}} for c in cands]
                   for name, cands in by_decoding.items()}
        out_rows.append({**row, SAMPLES_KEY: samples})
    if writes_outputs():
        write_jsonl(out_path, out_rows)
