"""Checks of user-supplied jsonl rows: each returns None, or (field, problem) for
a one-line `file:line: field 'x': problem` error (`cappy.engine.errors.located`)."""


def _is_text(value):
    return isinstance(value, str)


def check_pair_row(row):
    for field in ("instruction", "response"):
        if not _is_text(row.get(field)):
            return field, "missing or not a string"
    return None


def check_candidates_row(row):
    if not _is_text(row.get("instruction")):
        return "instruction", "missing or not a string"
    cands = row.get("candidates")
    if not isinstance(cands, list) or not cands or not all(_is_text(c) for c in cands):
        return "candidates", "must be a non-empty list of strings"
    refs = row.get("references")
    if refs is not None and (not isinstance(refs, list) or not refs
                             or not all(_is_text(r) for r in refs)):
        return "references", "must be a non-empty list of strings when present"
    return None


def check_labelled_row(row):
    problem = check_pair_row(row)
    if problem:
        return problem
    label = row.get("label")
    if isinstance(label, bool) or not isinstance(label, (int, float)) or not 0 <= label <= 1:
        return "label", "must be a number in [0, 1]"
    return None
