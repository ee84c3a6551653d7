"""Cappy as a library: score, rank, classify, finetune and save, with either backend.

    from cappy import Cappy
    cappy = Cappy.from_pretrained("btan2/cappy-large")            # JAX
    cappy = Cappy.from_pretrained("btan2/cappy-large", backend="torch")
    cappy.score(["Is the sky blue?"] * 2, ["yes", "no"])           # float32, input order
    cappy.rank("Is the sky blue?", ["no", "yes"])                  # [(candidate, score), ...] best first
    cappy.classify("Is the sky blue?", ["no", "yes"])              # the best choice
    cappy.finetune(rows); cappy.save("my-cappy")                   # JAX only

The class is the engine's front door (`cappy.engine.jobs.session`), which every command is
built on; see it for the settings.
"""

from cappy.engine.jobs.session import BACKENDS, Cappy  # noqa: F401
