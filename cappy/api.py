"""Cappy as a library: score, rank and classify with either backend.

    from cappy import Cappy
    cappy = Cappy.from_pretrained("btan2/cappy-large")            # Flax (JAX)
    cappy = Cappy.from_pretrained("btan2/cappy-large", backend="torch")
    cappy.score(["Is the sky blue?"] * 2, ["yes", "no"])           # float32, input order
    cappy.rank("Is the sky blue?", ["no", "yes"])                  # [(candidate, score), ...] best first
    cappy.classify("Is the sky blue?", ["no", "yes"])              # the best choice

Truncation (inputs longer than `max_length` tokens): the instruction gives way
first, cut from its end; the response is cut only once nothing of the
instruction is left. Scores are the raw regression output (no sigmoid).
"""

import numpy as np

from cappy.errors import CappyError
from cappy.scoring import DTYPES, quiet_transformers

BACKENDS = ("flax", "torch")


def _load_torch(name_or_path, dtype):
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        raise CappyError("the torch backend needs PyTorch: pip install -r "
                         "requirements-torch.txt") from None
    with quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            try:
                model = AutoModelForSequenceClassification.from_pretrained(name_or_path)
            except OSError as error:
                if "from_flax" not in str(error):
                    raise
                model = torch_model_from_flax(name_or_path)
            model = model.to(getattr(torch, dtype))
        except (OSError, ValueError) as error:
            raise CappyError(f"cannot load Cappy model {name_or_path!r}: "
                             f"{str(error).splitlines()[0]}") from None
    return model, tokenizer


def torch_model_from_flax(name_or_path, params=None):
    """A PyTorch Cappy from Flax-only weights (or from Flax `params` already in memory).

    transformers 4.57's `from_pretrained(from_flax=True)` leaves the weights on
    the meta device, so the conversion is done here with its own helper.
    """
    import jax
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

    from cappy.scoring import load_cappy

    if params is None:
        params = load_cappy(name_or_path)[0].params
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(name_or_path))
    # Writable copies: torch warns about (and must not share) read-only buffers.
    params = jax.tree.map(np.array, params)
    return load_flax_weights_in_pytorch_model(model, params).eval()


class Cappy:
    """A Cappy scorer; build it with `Cappy.from_pretrained`."""

    def __init__(self, scorer, backend, params=None):
        self._scorer, self.backend, self._params = scorer, backend, params

    @classmethod
    def from_pretrained(cls, name_or_path="btan2/cappy-large", backend="flax", dtype="float32",
                        max_length=512, batch_size=32):
        """Load a checkpoint (hub id or folder; Flax or PyTorch weights) for scoring.

        `dtype` is the compute dtype; Flax keeps parameters in float32. Scores
        always come back as float32. `batch_size` counts pairs per device: the
        torch backend pads that many pairs together; the Flax backend packs
        pairs into batches of up to `batch_size * max_length` tokens (2,048 on CPUs).
        """
        if backend not in BACKENDS:
            raise CappyError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if dtype not in DTYPES:
            raise CappyError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if backend == "torch":
            from cappy.scoring import TorchPairScorer

            model, tokenizer = _load_torch(name_or_path, dtype)
            return cls(TorchPairScorer(model, tokenizer, max_length=max_length,
                                       batch_size=batch_size), backend)
        from redco import Deployer

        from cappy.scoring import PairScorer, load_cappy

        model, tokenizer = load_cappy(name_or_path, dtype=dtype)
        scorer = PairScorer(model, tokenizer, Deployer(jax_seed=0, verbose=False),
                            max_length=max_length, per_device_batch_size=batch_size,
                            truncation="instruction_first")
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
        self._scorer.deployer._verbose = progress  # Redco's progress bars
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
        order = np.argsort(-scores, kind="stable")
        return [(candidates[i], float(scores[i])) for i in order]

    def classify(self, instruction, choices, batch_size=None):
        """The choice Cappy scores highest (the earliest one on a tie)."""
        if not choices:
            raise ValueError("classify() needs at least one choice")
        return self.rank(instruction, choices, batch_size)[0][0]
