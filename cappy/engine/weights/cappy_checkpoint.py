"""Cappy checkpoints: one loader for scoring, finetuning, pretraining and the API,
and one writer, with no model class of transformers in between.

A checkpoint is a Hugging Face folder or hub id: `config.json`, a tokenizer, and
weights in any of these files (the first one present is read):

- `model.safetensors` in PyTorch's names (or in Flax's, when its metadata says
  `format: flax`), single or sharded (`model.safetensors.index.json`);
- `flax_model.msgpack` (what every Flax Cappy on the hub has, `btan2/cappy-large`
  included), single or sharded (`flax_model.msgpack.index.json`);
- `pytorch_model.bin`, single or sharded (needs torch).

Parameters are kept in the names of `flax_model.msgpack` (`cappy.engine.models.roberta`), in
float32 on the host. A folder the project writes holds `model.safetensors` in
PyTorch's names (transformers' `AutoModelForSequenceClassification` loads it),
`flax_model.msgpack` (transformers 4's Flax classes load it), `config.json` and
the tokenizer. The config records the truncation policy the model was trained
with (`cappy_truncation`), used by default when it is loaded again; a
checkpoint without one (every published Cappy) was trained with the original
release's `longest_first`.
"""

import dataclasses
import os

import numpy as np

from cappy.engine.errors import CappyError
from cappy.engine.weights.files import (check_shapes, flatten, parameter_bytes, read_parameters,
                                        torch_state, unflatten, write_weights)
from cappy.engine.weights.model_hub import check_model_source, load_error
from cappy.engine.runtime.transformers_setup import quiet_transformers

TRUNCATIONS = ("longest_first", "instruction_first")
DEFAULT_TRUNCATION = "longest_first"  # the original release's: every published Cappy's
TRUNCATION_KEY = "cappy_truncation"
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass
class CappyModel:
    """A loaded scorer: its config, float32 host parameters (Flax names), the
    compute dtype, and the truncation policy its pairs are encoded with."""

    config: object
    params: dict
    dtype: str = "float32"
    truncation: str = DEFAULT_TRUNCATION
    new_head: bool = False  # the regression head was freshly initialised
    source: str = "the model"

    @property
    def compute_dtype(self):
        import jax.numpy as jnp

        return getattr(jnp, self.dtype)


def check_dtype(dtype, name="dtype"):
    if dtype not in DTYPES:
        raise CappyError(f"{name} must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def check_truncation(truncation):
    if truncation not in TRUNCATIONS:
        raise CappyError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    return truncation


# ---- parameter names: Flax <-> PyTorch -------------------------------------------------


# ---- reading weight files --------------------------------------------------------------
# A reader returns ("flax", {path tuple: array}) or ("torch", {state-dict name: array});
# `lookup` then finds each parameter a model expects in either.


# ---- loading ---------------------------------------------------------------------------

def _fit_parameters(name_or_path, config, new_head_seed, read_head):
    """(parameter tree, the file read, whether the head is new) of a scorer, checked
    against its config; a missing or mismatched head is initialised only with
    `new_head_seed` (and never read when `read_head` is False)."""
    from cappy.engine.models import roberta

    shapes = roberta.parameter_shapes(config)
    found, weights_file = read_parameters(name_or_path, shapes)
    source = f"{name_or_path} ({weights_file})"
    is_head = lambda path: path[0] == "classifier"  # noqa: E731
    check_shapes({p: v for p, v in found.items() if not is_head(p)}, shapes, source,
                 optional=is_head)
    expected = flatten(shapes)
    head = {p: found[p] for p in expected if is_head(p) and read_head and p in found
            and tuple(np.shape(found[p])) == tuple(expected[p])}
    new_head = len(head) < sum(map(is_head, expected))
    if new_head:
        if new_head_seed is None:
            raise CappyError(f"{name_or_path}: no one-output regression head (classifier/"
                             f"out_proj of shape [{config.hidden_size}, 1]); it is a backbone, "
                             f"not a Cappy (cappy_pretrain.py turns a backbone into one)")
        fresh = flatten({"classifier": roberta.init_head(config, new_head_seed)})
        head = {path: head.get(path, fresh[path]) for path in fresh}
    params = {path: np.asarray(found[path], np.float32) for path in expected
              if not is_head(path)}
    params.update({path: np.asarray(value, np.float32) for path, value in head.items()})
    return unflatten(params), weights_file, new_head


def _as_regression_config(config):
    """The config of a one-output regression head on this encoder (for a backbone)."""
    config.num_labels = 1
    config.problem_type = "regression"
    config.architectures = [{"xlm-roberta": "XLMRobertaForSequenceClassification"}.get(
        config.model_type, "RobertaForSequenceClassification")]
    return config


def load_cappy(name_or_path, dtype="float32", truncation=None, new_head_seed=None):
    """(CappyModel, tokenizer) of a checkpoint (folder or hub id).

    `dtype` is the compute dtype (parameters stay float32). `truncation`
    defaults to the policy recorded in the checkpoint's config, else the
    original release's `longest_first`. With `new_head_seed`, a backbone (an
    MLM checkpoint such as `roberta-large`, or a classifier with another number
    of outputs) gets a fresh one-output head initialised from that seed; a
    Cappy keeps its own.
    """
    from transformers import AutoConfig, AutoTokenizer

    from cappy.engine.models import roberta

    check_dtype(dtype)
    unreachable = check_model_source(name_or_path, "Cappy model")
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(name_or_path)
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        head_is_ours = config.num_labels == 1 and any(
            name.endswith("ForSequenceClassification") for name in config.architectures or [])
        if new_head_seed is None and not head_is_ours:
            raise CappyError(f"{name_or_path}: a Cappy scorer has one output (num_labels=1, a "
                             f"sequence classifier); this checkpoint has num_labels="
                             f"{config.num_labels} and architectures {config.architectures}")
        problem = roberta.unsupported_reason(_as_regression_config(config))
        if problem:
            raise CappyError(f"{name_or_path}: cappy computes RoBERTa and XLM-RoBERTa scorers; "
                             f"this checkpoint has {problem}")
        if len(tokenizer) > config.vocab_size:  # ids past the table would score as NaN
            raise CappyError(f"{name_or_path}: its tokenizer has {len(tokenizer)} tokens; the "
                             f"model's embedding table holds {config.vocab_size}")
        # Another task's head is replaced, never read.
        params, weights_file, new_head = _fit_parameters(name_or_path, config, new_head_seed,
                                                         read_head=head_is_ours)
    except CappyError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise CappyError(load_error("Cappy model", name_or_path, error, unreachable)) from None
    recorded = getattr(config, TRUNCATION_KEY, None)
    model = CappyModel(config=config, params=params, dtype=dtype,
                       truncation=check_truncation(truncation or recorded or DEFAULT_TRUNCATION),
                       new_head=new_head, source=f"{name_or_path} ({weights_file})")
    return model, tokenizer


def _copy(config):
    import copy

    return copy.deepcopy(config)


# ---- writing ---------------------------------------------------------------------------

def check_output_dir(output_dir, overwrite):
    """A model can be saved in `output_dir`: a writable folder (or one can be made there),
    empty unless `overwrite`."""
    from cappy.engine.io import check_output_folder

    check_output_folder(output_dir, "--output_dir")
    if os.path.isdir(output_dir) and os.listdir(output_dir) and not overwrite:
        raise CappyError(f"{output_dir}: exists and is not empty (use --overwrite)")


def saved_model_bytes(params, tokenizer):
    """About what `save_cappy` writes: the weights twice (safetensors and msgpack), the
    tokenizer's files (about 64 bytes a token) and the config."""
    return 2 * parameter_bytes(params) + 64 * len(tokenizer) + (64 << 10)


def check_room_for_model(output_dir, params, tokenizer):
    """Before training: the disk of `output_dir` can hold the model it will save."""
    from cappy.engine.io import check_free_space

    check_free_space(output_dir, saved_model_bytes(params, tokenizer), "the saved model")


def save_cappy(model, tokenizer, params, output_dir, summary=None, summary_name=None,
               overwrite=False, kept=None):
    """Write a checkpoint folder atomically: built beside, then renamed into place.

    Holds the weights in both formats, `config.json` (with the truncation policy
    the model was trained with), the tokenizer and, when given, `summary` (how
    the model was made) as `summary_name`. A full disk is one line (`kept`: what remains,
    as `cappy.engine.io.disk_full_line` takes it); a folder already there stays as it was.
    """
    from cappy.engine.io import check_room_to_write, remove_stale_staging, staged_folder

    check_output_dir(output_dir, overwrite)
    remove_stale_staging(os.path.dirname(os.path.abspath(output_dir)))
    needed = saved_model_bytes(params, tokenizer)
    check_room_to_write(output_dir, needed, kept)
    with staged_folder(output_dir, needed, kept) as staging:
        _write_model_folder(model, tokenizer, params, staging, summary, summary_name)
    return output_dir


def _write_model_folder(model, tokenizer, params, folder, summary, summary_name):
    from cappy.engine.io import dump_json

    write_weights(params, folder)
    config = _copy(model.config)
    setattr(config, TRUNCATION_KEY, model.truncation)
    config.dtype = "float32"  # the weights' dtype, whatever the compute dtype was
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if summary is not None:  # a plain write: the folder is renamed into place when complete
        with open(os.path.join(folder, summary_name), "w", encoding="utf-8") as file:
            dump_json(file, summary)


# ---- PyTorch ---------------------------------------------------------------------------

def torch_model(model, dtype=None):
    """transformers' PyTorch sequence classifier holding this model's parameters."""
    import torch
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers():
        module = AutoModelForSequenceClassification.from_config(model.config)
    state = {name: torch.from_numpy(value) for name, value in torch_state(model.params).items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [name for name in missing if not name.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise CappyError(f"{model.source}: PyTorch's model does not take these weights "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return module.to(getattr(torch, dtype or model.dtype)).eval()
