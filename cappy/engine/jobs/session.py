"""Cappy, the one front door (`from cappy import Cappy`): a checkpoint on its devices, ready
to score and to train.

    from cappy import Cappy
    cappy = Cappy.from_pretrained("btan2/cappy-large")            # JAX
    cappy = Cappy.from_pretrained("btan2/cappy-large", backend="torch")
    cappy.score(["Is the sky blue?"] * 2, ["yes", "no"])           # float32, input order
    cappy.rank("Is the sky blue?", ["no", "yes"])                  # [(candidate, score), ...] best first
    cappy.classify("Is the sky blue?", ["no", "yes"])              # the best choice
    cappy.finetune(rows)                                           # rows {"instruction", "response", "label"}
    cappy.save("my-cappy")

`Cappy.from_pretrained` alone loads the checkpoint, joins the processes of a run of
several hosts, builds the device mesh (every device data-parallel, or `n_model_shards`
devices per model copy) and the parameters' shardings, and the scorer; every command
(`cappy score|rerank|finetune|serve`, the BIG-Bench task, the PromptSource evaluation,
pretraining) is built on it. It lives in the engine so that the experiments above it can
use it; `cappy.api` is its public name. Both backends read the checkpoint through one loader
(`cappy.engine.weights.cappy_checkpoint`); the torch backend hands the same parameters to transformers'
PyTorch model and only scores. Truncation (inputs longer than `max_length` tokens)
follows the checkpoint's recorded policy, else the original release's `longest_first`
(the longer side gives way first); `truncation="instruction_first"` cuts the
instruction's end first and the response only once nothing of the instruction is left.
Scores are the raw regression output (no sigmoid).
"""

import numpy as np

from cappy.engine.errors import CappyError
from cappy.engine.ranking import ranked_order
from cappy.engine.weights.cappy_checkpoint import check_dtype

BACKENDS = ("flax", "torch")


class Cappy:
    """A Cappy on its devices; build it with `Cappy.from_pretrained`.

    `params` are the parameters it scores with: the checkpoint's, then the trained ones
    after `finetune` (or those handed to `use_params`)."""

    def __init__(self, model, tokenizer, backend, max_length, batch_size, scorer, devices=None,
                 rules=None, seed=0, progress=False):
        self.model, self.tokenizer, self.backend = model, tokenizer, backend
        self.max_length, self.batch_size = max_length, batch_size
        self._scorer, self.devices, self._rules = scorer, devices, rules
        self.seed, self.progress = seed, progress
        self._params, self._placement = (model.params, {}) if backend == "flax" else (None, {})
        self.trainer = None

    @classmethod
    def from_pretrained(cls, name_or_path="btan2/cappy-large", backend="flax", dtype="float32",
                        max_length=None, batch_size=32, truncation=None, n_model_shards=1,
                        hosts=None, seed=0, progress=False, new_head_seed=None):
        """Load a checkpoint (hub id or folder; safetensors, Flax or PyTorch weights).

        `dtype` is the compute dtype; the JAX backend keeps parameters in float32.
        Scores always come back as float32. `batch_size` counts pairs per device:
        the torch backend pads that many pairs together; the JAX backend packs
        pairs into batches of up to `batch_size * max_length` tokens (2,048 on
        CPUs). `max_length` defaults to 512 tokens, or fewer when the model's
        position table holds fewer. `truncation` overrides the checkpoint's policy.
        `n_model_shards` splits each model copy over that many devices; `hosts` (a
        configuration with the `cappy.engine.runtime.hosts.HostSettings` fields) joins a run of
        several processes first. `seed` seeds the devices' random stream
        (`cappy.engine.runtime.mesh.Devices`); `progress` shows progress bars; `new_head_seed` gives a backbone without a one-output head a
        new head (`cappy.engine.weights.cappy_checkpoint.load_cappy`).
        """
        from cappy.engine.weights.cappy_checkpoint import load_cappy

        if backend not in BACKENDS:
            raise CappyError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        check_dtype(dtype)
        if backend == "torch":
            if _several_processes(hosts):
                raise CappyError("several processes (--n_processes, --detect_cluster) need "
                                 "--backend flax")
            if n_model_shards > 1:
                raise CappyError("model shards (--n_model_shards) need --backend flax")
            try:
                import torch  # noqa: F401
            except ImportError:
                raise CappyError("the torch backend needs PyTorch: pip install -r "
                                 "requirements-torch.txt") from None
        devices = None
        if backend == "flax":  # joined and meshed before the model loads onto a device
            from cappy.engine.runtime.mesh import devices_for

            devices = devices_for(n_model_shards, seed, progress, hosts=hosts)
        model, tokenizer = load_cappy(name_or_path, dtype=dtype, truncation=truncation,
                                      new_head_seed=new_head_seed)
        if max_length is None:
            from cappy.engine.models.roberta import longest_pair

            max_length = min(512, longest_pair(model.config))
        if backend == "torch":
            from cappy.engine.jobs.scoring import TorchPairScorer
            from cappy.engine.weights.cappy_checkpoint import torch_model

            scorer = TorchPairScorer(torch_model(model), tokenizer, model.truncation,
                                     max_length=max_length, batch_size=batch_size)
            return cls(model, tokenizer, backend, max_length, batch_size, scorer, seed=seed,
                       progress=progress)
        from cappy.engine.jobs.scoring import PairScorer

        rules = devices.sharding_rules(model.params)
        scorer = PairScorer(model, tokenizer, devices, max_length=max_length,
                            per_device_batch_size=batch_size, params_sharding_rules=rules)
        return cls(model, tokenizer, backend, max_length, batch_size, scorer, devices, rules,
                   seed, progress)

    @property
    def truncation(self):
        return self._scorer.truncation

    @property
    def params(self):
        return self._params

    # ---- scoring

    def score(self, instructions, responses, batch_size=None, progress=None, desc="scoring"):
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
        progress = self.progress if progress is None else bool(progress)
        if self.backend == "torch":
            return self._scorer.score(instructions, responses, desc=desc, progress=progress)
        self.devices.progress = progress
        return self._scorer.score(instructions, responses, self._params, desc=desc,
                                  **self._placement)

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

    # ---- training

    def _training_devices(self):
        """The devices training runs on: those it scores on (JAX only)."""
        self._require_flax("training")
        return self.devices

    def global_micro_batch_size(self, per_device_batch_size):
        """Examples in one micro-batch over every data-parallel device."""
        return self._training_devices().micro_batch_size(per_device_batch_size)

    def make_trainer(self, optimizer, per_device_batch_size, seed, params=None, opt_state=None,
                     label_key="label"):
        """A `cappy.engine.jobs.training.Trainer` on this Cappy's devices and shardings, from its
        parameters (or `params` and `opt_state`, a checkpoint's)."""
        from cappy.engine.jobs.training import Trainer, tokens_per_step

        return Trainer(self.model, self._training_devices(), optimizer, self.max_length,
                       tokens_per_step(per_device_batch_size, self.max_length),
                       self.tokenizer.pad_token_id, seed, params=params, opt_state=opt_state,
                       params_sharding_rules=self._rules, label_key=label_key)

    def encode(self, rows, src_key="instruction", tgt_key="response", label_key="label"):
        """Labelled rows as encoded training examples (the model's truncation policy)."""
        from cappy.engine.jobs.scoring import encode_examples

        return encode_examples(self.tokenizer, rows, self.max_length, self.truncation,
                               src_key, tgt_key, label_key)

    def finetune(self, rows=None, *, examples=None, seed=11111, per_device_batch_size=8,
                 accumulate_grad_batches=16, learning_rate=2e-5, warmup_rate=0.1,
                 weight_decay=0.0, lr_schedule="corrected", label_key="label",
                 desc="finetuning", progress=None):
        """One pass over labelled `rows` ({"instruction", "response", "label" in [0, 1]}),
        or over `examples` already encoded (`encode`), with the paper's recipe: the
        original's shuffle and optimizer updates (`per_device_batch_size` x devices x
        `accumulate_grad_batches` examples each), AdamW, MSE, packed rows. Afterwards this
        Cappy scores and saves with the trained parameters. Returns the Trainer."""
        from cappy.engine.jobs.training import finetune

        if (rows is None) == (examples is None):
            raise ValueError("finetune() takes rows or examples")
        if examples is None:
            examples = self.encode(rows, label_key=label_key)
        self.trainer = finetune(
            self.model, self.tokenizer, self._training_devices(), examples, seed,
            per_device_batch_size=per_device_batch_size,
            accumulate_grad_batches=accumulate_grad_batches, learning_rate=learning_rate,
            warmup_rate=warmup_rate, weight_decay=weight_decay, lr_schedule=lr_schedule,
            max_length=self.max_length, params_sharding_rules=self._rules,
            label_key=label_key, desc=desc,
            progress=self.progress if progress is None else progress)
        self.use_trainer(self.trainer)
        return self.trainer

    def use_trainer(self, trainer):
        """Score with a Trainer's current parameters, where they lie."""
        self._params, placement = trainer.scoring_params()
        self._placement = placement
        self.trainer = trainer

    def host_params(self):
        """The parameters as host arrays, one full copy on every process (every process
        must call it when a model is sharded over several hosts)."""
        if self.trainer is not None:
            return self.trainer.host_params()
        return self.model.params

    def save(self, output_dir, summary=None, summary_name=None, overwrite=False, kept=None):
        """Write the Cappy (its current parameters, its truncation policy) as a folder both
        backends load; every process calls it, process 0 writes. Returns the folder. On a
        full disk, `kept` says what remains (`cappy.engine.weights.cappy_checkpoint.save_cappy`)."""
        from cappy.engine.runtime.leader import writes_outputs
        from cappy.engine.weights.cappy_checkpoint import save_cappy

        params = self.host_params()
        if writes_outputs():
            save_cappy(self.model, self.tokenizer, params, output_dir, summary, summary_name,
                       overwrite, kept)
        return output_dir

    def _require_flax(self, what):
        if self.backend != "flax":
            raise CappyError(f"{what} runs with JAX only: load with backend='flax' (the "
                             f"folder it saves loads in both backends)")


def _several_processes(hosts):
    return hosts is not None and (getattr(hosts, "detect_cluster", False)
                                  or (getattr(hosts, "n_processes", None) or 1) > 1)
