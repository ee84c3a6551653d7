"""Cappy: a small scorer that rates how correct a response is for an instruction.

The package holds everything the entry scripts share: data reading and
validation, BIG-Bench task building, candidate generation, ROUGE-L, scoring and
training. Entry scripts (``cappy_*.py`` and ``scripts/``) only parse flags and
wire these pieces together.
"""

__version__ = "0.1.0"
