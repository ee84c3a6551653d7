"""ROUGE-L as the paper measures it: rouge-score's `rougeL` F-measure with
stemming, the best over a row's references."""

import functools


@functools.lru_cache(maxsize=1)
def _scorer():
    # Imported here: rouge-score brings nltk, about a second, which --help need not pay.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction, references):
    """ROUGE-L F-measure of `prediction` against the best of `references`."""
    if isinstance(references, str):
        references = [references]
    if not references:
        raise ValueError("rouge_l needs at least one reference")
    return _scorer().score_multi(targets=references, prediction=prediction)["rougeL"].fmeasure


def mean_rouge_l(predictions, references_per_row):
    """Mean ROUGE-L over rows (a fraction in [0, 1])."""
    scores = [rouge_l(p, refs) for p, refs in zip(predictions, references_per_row, strict=True)]
    if not scores:
        raise ValueError("mean_rouge_l needs at least one row")
    return sum(scores) / len(scores)
