"""Cappy as a library: score, rank and classify with either backend.

    from cappy import Cappy
    cappy = Cappy.from_pretrained("btan2/cappy-large")            # JAX
    cappy = Cappy.from_pretrained("btan2/cappy-large", backend="torch")
    cappy.score(["Is the sky blue?"] * 2, ["yes", "no"])           # float32, input order
    cappy.rank("Is the sky blue?", ["no", "yes"])                  # [(candidate, score), ...] best first
    cappy.classify("Is the sky blue?", ["no", "yes"])              # the best choice

Both backends read the checkpoint through one loader (`cappy.engine.checkpoints`); the
torch backend hands the same parameters to transformers' PyTorch model.
Truncation (inputs longer than `max_length` tokens) follows the checkpoint's
recorded policy, else the original release's `longest_first` (the longer side
gives way first); `truncation="instruction_first"` cuts the instruction's end
first and the response only once nothing of the instruction is left. Scores are
the raw regression output (no sigmoid).
"""

import numpy as np

from cappy.engine.checkpoints import check_dtype
from cappy.engine.errors import CappyError
from cappy.engine.ranking import ranked_order

BACKENDS = ("flax", "torch")


class Cappy:
    """A Cappy scorer; build it with `Cappy.from_pretrained`."""

    def __init__(self, scorer, backend, params=None):
        self._scorer, self.backend, self._params = scorer, backend, params

    @classmethod
    def from_pretrained(cls, name_or_path="btan2/cappy-large", backend="flax", dtype="float32",
                        max_length=None, batch_size=32, truncation=None):
        """Load a checkpoint (hub id or folder; safetensors, Flax or PyTorch weights).

        `dtype` is the compute dtype; the JAX backend keeps parameters in float32.
        Scores always come back as float32. `batch_size` counts pairs per device:
        the torch backend pads that many pairs together; the JAX backend packs
        pairs into batches of up to `batch_size * max_length` tokens (2,048 on
        CPUs). `max_length` defaults to 512 tokens, or fewer when the model's
        position table holds fewer. `truncation` overrides the checkpoint's policy.
        """
        from cappy.engine.checkpoints import load_cappy

        if backend not in BACKENDS:
            raise CappyError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        check_dtype(dtype)
        if backend == "torch":
            try:
                import torch  # noqa: F401
            except ImportError:
                raise CappyError("the torch backend needs PyTorch: pip install -r "
                                 "requirements-torch.txt") from None
        model, tokenizer = load_cappy(name_or_path, dtype=dtype, truncation=truncation)
        if max_length is None:
            from cappy.engine.roberta import longest_pair

            max_length = min(512, longest_pair(model.config))
        if backend == "torch":
            from cappy.engine.checkpoints import torch_model
            from cappy.engine.scoring import TorchPairScorer

            return cls(TorchPairScorer(torch_model(model), tokenizer, model.truncation,
                                       max_length=max_length, batch_size=batch_size), backend)
        from cappy.engine.redco_adapter import make_scoring_deployer
        from cappy.engine.scoring import PairScorer

        scorer = PairScorer(model, tokenizer, make_scoring_deployer(), max_length=max_length,
                            per_device_batch_size=batch_size)
        return cls(scorer, backend, params=model.params)

    @property
    def tokenizer(self):
        return self._scorer.tokenizer

    def score(self, instructions, responses, batch_size=None, progress=False):
        """float32 scores of (instruction, response) pairs, in input order."""
        if isinstance(instructions, str) or isinstance(responses, str):
            raise TypeError("score() takes lists of instructions and responses")
        instructions, responses = list(instructions), list(responses)
        if len(instructions) != len(responses):
            raise ValueError(f"{len(instructions)} instructions but {len(responses)} responses")
        if not instructions:
            return np.zeros((0,), np.float32)
        if batch_size is not None:
            self._set_batch_size(batch_size)
        if self.backend == "torch":
            return self._scorer.score(instructions, responses, progress=progress)
        from cappy.engine.redco_adapter import show_progress

        show_progress(self._scorer.deployer, progress)
        return self._scorer.score(instructions, responses, self._params)

    def _set_batch_size(self, batch_size):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if self.backend == "torch":
            self._scorer.batch_size = batch_size
        else:
            self._scorer.per_device_batch_size = batch_size

    def rank(self, instruction, candidates, batch_size=None):
        """[(candidate, score)] best first; equal scores keep the candidates' order."""
        candidates = list(candidates)
        scores = self.score([instruction] * len(candidates), candidates, batch_size)
        order = ranked_order(scores)
        return [(candidates[i], float(scores[i])) for i in order]

    def classify(self, instruction, choices, batch_size=None):
        """The choice Cappy scores highest (the earliest one on a tie)."""
        if not choices:
            raise ValueError("classify() needs at least one choice")
        return self.rank(instruction, choices, batch_size)[0][0]
