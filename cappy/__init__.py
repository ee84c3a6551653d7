"""Cappy: a small scorer that rates how correct a response is for an instruction.

    from cappy import Cappy
    scores = Cappy.from_pretrained("btan2/cappy-large").score(instructions, responses)

The package holds everything the entry scripts share: data reading and
validation, BIG-Bench task building, candidate generation, ROUGE-L, scoring and
training. Entry scripts (``cappy_*.py``, ``scripts/``, ``python -m cappy``) only
parse flags and wire these pieces together.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Imported lazily: `import cappy` stays light for scripts that never score.
    if name == "Cappy":
        from cappy.api import Cappy

        return Cappy
    raise AttributeError(f"module 'cappy' has no attribute {name!r}")
