"""Cappy's finetuning examples for one BIG-Bench task (docs/DESIGN.md section 3).

From the training split's candidate rows, in this order:
1. every gold reference of every instruction, label 1.0;
2. for each of those, one reference of the task drawn at random, label 0.0,
   unless that (instruction, response) pair was already used;
3. every candidate not yet used for its instruction, labelled with its ROUGE-L
   F-measure against the instruction's references.
Then shuffle and repeat (or cut) to `train_size`. Python's `random`, seeded
once, drives both the negatives and the shuffle, as in the original release,
so the same seed gives the same examples.
"""

import random

from cappy.bigbench.candidates import SAMPLES_KEY, all_candidates
from cappy.engine.rouge import rouge_l


def build_finetune_examples(rows, train_size, seed, src_key="instruction", tgt_key="response",
                            refs_key="references", label_key="label"):
    """Return (examples, n_distinct): `train_size` labelled pairs and how many were distinct."""
    rng = random.Random(seed)
    seen = set()
    positives = []
    all_references = set()
    for row in rows:
        for ref in row[refs_key]:
            positives.append({src_key: row[src_key], tgt_key: ref, label_key: 1.0})
            seen.add((row[src_key], ref))
            all_references.add(ref)

    pool = sorted(all_references)
    negatives = []
    for example in positives:
        pair = (example[src_key], rng.choice(pool))
        if pair not in seen:
            negatives.append({src_key: pair[0], tgt_key: pair[1], label_key: 0.0})
            seen.add(pair)

    labelled = []
    for row in rows:
        if SAMPLES_KEY not in row:
            continue
        for cand in all_candidates(row, tgt_key):
            pair = (row[src_key], cand[tgt_key])
            if pair in seen:
                continue
            seen.add(pair)
            labelled.append({src_key: pair[0], tgt_key: pair[1],
                             label_key: rouge_l(pair[1], row[refs_key])})

    examples = positives + negatives + labelled
    if not examples:
        raise ValueError("no training examples: the training split is empty")
    n_distinct = len(examples)
    rng.shuffle(examples)
    repeats = train_size // n_distinct + 1
    return (examples * repeats)[:train_size], n_distinct
