"""Cappy checkpoints: one loader for scoring, finetuning, pretraining and the API,
and one writer, with no model class of transformers in between.

A checkpoint is a Hugging Face folder or hub id: `config.json`, a tokenizer, and
weights in any of these files (the first one present is read):

- `model.safetensors` in PyTorch's names (or in Flax's, when its metadata says
  `format: flax`), single or sharded (`model.safetensors.index.json`);
- `flax_model.msgpack` (what every Flax Cappy on the hub has, `btan2/cappy-large`
  included), single or sharded (`flax_model.msgpack.index.json`);
- `pytorch_model.bin`, single or sharded (needs torch).

Parameters are kept in the names of `flax_model.msgpack` (`cappy.engine.roberta`), in
float32 on the host. A folder the project writes holds `model.safetensors` in
PyTorch's names (transformers' `AutoModelForSequenceClassification` loads it),
`flax_model.msgpack` (transformers 4's Flax classes load it), `config.json` and
the tokenizer. The config records the truncation policy the model was trained
with (`cappy_truncation`), used by default when it is loaded again; a
checkpoint without one (every published Cappy) was trained with the original
release's `longest_first`.
"""

import contextlib
import dataclasses
import io
import json
import logging
import os
import shutil
import sys

import numpy as np

from cappy.engine.errors import CappyError

TRUNCATIONS = ("longest_first", "instruction_first")
DEFAULT_TRUNCATION = "longest_first"  # the original release's: every published Cappy's
TRUNCATION_KEY = "cappy_truncation"
DTYPES = ("float32", "bfloat16", "float16")
SAFETENSORS, FLAX_MSGPACK, TORCH_BIN = "model.safetensors", "flax_model.msgpack", "pytorch_model.bin"
WEIGHT_FILES = (SAFETENSORS, FLAX_MSGPACK, TORCH_BIN)  # in order of preference


def keep_torch_out_of_transformers():
    """In a process that computes with JAX only: keep transformers from importing PyTorch,
    which it does whenever torch is installed (about 1 s of start-up on a 2-core CPU).
    Call before transformers is first imported. transformers 4 reads USE_TORCH (an
    explicit value in the environment is kept). transformers 5 has no switch: while the
    modules cappy uses are imported, torch is marked absent (`sys.modules["torch"] =
    None`, which its availability check reads as not installed), then the mark is lifted,
    so that other libraries and `pytorch_model.bin` weights find torch as usual."""
    os.environ.setdefault("USE_TORCH", "0")
    if (os.environ["USE_TORCH"] != "0" or "torch" in sys.modules
            or "transformers" in sys.modules):
        return
    sys.modules["torch"] = None
    advice = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"  # not its "PyTorch was not found"
    try:
        import transformers  # noqa: F401
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig  # noqa: F401
        import transformers.modeling_rope_utils  # noqa: F401
        import transformers.tokenization_utils_tokenizers  # noqa: F401
    except ImportError:  # another transformers: its own imports decide
        pass
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
        if advice is None:
            del os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"]
        else:
            os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = advice


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' notices while loading (its Flax deprecation banner, the
    loading report); real errors still raise."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


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

def flatten(tree, path=()):
    """{path tuple: leaf} of a nested dict."""
    if isinstance(tree, dict) or hasattr(tree, "items"):
        flat = {}
        for name, value in tree.items():
            flat.update(flatten(value, path + (str(name),)))
        return flat
    return {path: tree}


def unflatten(flat):
    tree = {}
    for path, value in flat.items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return tree


def torch_name(path):
    """The PyTorch state-dict name of a Flax parameter path."""
    last = {"kernel": "weight", "embedding": "weight", "scale": "weight"}.get(path[-1], path[-1])
    return ".".join(path[:-1] + (last,))


def torch_state(params):
    """{PyTorch name: float32 array} of the parameters (dense kernels transposed)."""
    return {torch_name(path): np.ascontiguousarray(value.T if path[-1] == "kernel" else value,
                                                   dtype=np.float32)
            for path, value in flatten(params).items()}


# ---- reading weight files --------------------------------------------------------------
# A reader returns ("flax", {path tuple: array}) or ("torch", {state-dict name: array});
# `lookup` then finds each parameter a model expects in either.

def _read_safetensors(path):
    from safetensors import safe_open

    with safe_open(path, framework="np") as file:
        metadata = file.metadata() or {}
        state = {name: file.get_tensor(name) for name in file.keys()}
    if metadata.get("format") == "flax":  # Flax names joined by dots
        return "flax", {tuple(name.split(".")): value for name, value in state.items()}
    return "torch", state


def _read_msgpack(path):
    from flax.serialization import msgpack_restore

    with open(path, "rb") as file:
        tree = msgpack_restore(file.read())
    if set(tree) == {"params"}:
        tree = tree["params"]
    return "flax", flatten(tree)


def _read_torch_bin(path):
    try:
        import torch
    except ImportError:
        raise CappyError(f"{path}: reading PyTorch weights needs torch "
                         f"(pip install \".[torch]\" or -r requirements-torch.txt)") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return "torch", {name: tensor.float().numpy() for name, tensor in state.items()
                     if hasattr(tensor, "numpy")}


READERS = {SAFETENSORS: _read_safetensors, FLAX_MSGPACK: _read_msgpack,
           TORCH_BIN: _read_torch_bin}


def _torch_names(path):
    """The state-dict names a Flax parameter may have in PyTorch checkpoints."""
    names = [torch_name(path)]
    if path[-1] in ("scale", "bias") and len(path) > 1 and "norm" in path[-2].lower():
        names.append(".".join(path[:-1] + ({"scale": "gamma", "bias": "beta"}[path[-1]],)))
    return names


def lookup(expected, kind, entries, aliases=None):
    """{path: array} of the `expected` parameter paths found in a checkpoint's entries
    (those not found are left out). A path is also looked for without its base-model
    prefix (a checkpoint of the bare encoder or decoder) and, in PyTorch names, under
    the old LayerNorm names and the `aliases` given ({path: [names]}); PyTorch's dense
    weights are transposed into kernels."""
    found = {}
    for path in expected:
        candidates = [path, path[1:]] if len(path) > 1 else [path]  # no prefix to drop
        for candidate in candidates:
            if kind == "flax":
                if candidate in entries:
                    found[path] = entries[candidate]
                    break
                continue
            names = _torch_names(candidate) + list((aliases or {}).get(candidate, ()))
            name = next((n for n in names if n in entries), None)
            if name is not None:
                value = entries[name]
                found[path] = np.ascontiguousarray(value.T) if path[-1] == "kernel" else value
                break
    return found


def read_state(name_or_path):
    """(kind, entries, the file read) of the first weights file present (see READERS)."""
    for filename in WEIGHT_FILES:
        index = _resolve(name_or_path, f"{filename}.index.json")
        if index is not None:  # sharded: an index names the files
            with open(index, encoding="utf-8") as file:
                shards = sorted(set(json.load(file)["weight_map"].values()))
            kind, entries = None, {}
            for shard in shards:
                shard_path = _resolve(name_or_path, shard)
                if shard_path is None:
                    raise CappyError(f"{name_or_path}: {filename}.index.json lists {shard}, "
                                     f"which is missing")
                kind, part = READERS[filename](shard_path)
                entries.update(part)
            return kind, entries, f"{filename}.index.json"
        path = _resolve(name_or_path, filename)
        if path is not None:
            return (*READERS[filename](path), filename)
    raise CappyError(f"{name_or_path}: no weights ({', '.join(WEIGHT_FILES)}, single or sharded)")


def read_parameters(name_or_path, shapes, aliases=None):
    """({path: array} of the parameters `shapes` describes that the checkpoint holds,
    the file read); shapes are not checked here (`check_shapes`)."""
    kind, entries, source = read_state(name_or_path)
    return lookup(flatten(shapes), kind, entries, aliases), source


def check_shapes(found, shapes, source, optional=lambda path: False):
    """One error listing what is missing or of another shape than the config says."""
    problems = []
    for path, shape in flatten(shapes).items():
        value = found.get(path)
        if value is None:
            if not optional(path):
                problems.append(f"missing {'/'.join(path)}")
        elif tuple(np.shape(value)) != tuple(shape):
            problems.append(f"{'/'.join(path)} has shape {list(np.shape(value))}, "
                            f"the config says {list(shape)}")
    if problems:
        raise CappyError(f"{source}: the weights do not fit its config.json "
                         f"({len(problems)} problem{'s' if len(problems) > 1 else ''}: "
                         f"{'; '.join(problems[:3])})")


def _looks_local(name_or_path):
    """A path rather than a hub id ("name" or "owner/name")."""
    return (os.path.isabs(name_or_path) or name_or_path.startswith((".", "~"))
            or name_or_path.count("/") > 1 or os.path.exists(name_or_path))


_WENT_OFFLINE = []  # the hub endpoint this process found unreachable, once it has
# A saved tokenizer has at least one of these; without any, transformers 5 builds an empty
# one (special tokens only) and every text would score as the same few ids.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")


def check_model_source(name_or_path, what):
    """Before a load: a local path that does not exist is named at once; for a hub id,
    when the hub cannot be reached (one request, a few seconds), this process goes
    offline, so a cached copy loads without the hub's minute of retries. Returns a
    one-line error for a later load failure to use, or None."""
    if _looks_local(name_or_path):
        if not os.path.isdir(name_or_path):
            raise CappyError(f"{name_or_path}: folder not found")
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise CappyError(f"{name_or_path}: no config.json, so not a saved model folder")
        if not any(os.path.isfile(os.path.join(name_or_path, name)) for name in TOKENIZER_FILES):
            raise CappyError(f"{name_or_path}: no tokenizer files (one of "
                             f"{', '.join(TOKENIZER_FILES)}); save the tokenizer beside the "
                             f"model (tokenizer.save_pretrained)")
        return None
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        if _hub_reachable():
            return None
        constants.HF_HUB_OFFLINE = True  # what transformers and huggingface_hub consult
        _WENT_OFFLINE.append(constants.ENDPOINT)
    if _WENT_OFFLINE:
        return (f"cannot load {what} {name_or_path!r}: the hub ({_WENT_OFFLINE[0]}) cannot be "
                f"reached and no copy is in the local cache; connect, or pass a local folder "
                f"(HF_HUB_OFFLINE=1 skips the hub)")
    return (f"cannot load {what} {name_or_path!r}: HF_HUB_OFFLINE is set and no copy is in "
            f"the local cache; unset it to download, or pass a local folder")


def load_error(what, name_or_path, error, unreachable):
    """The one line a failed load of `what` reports: check_model_source's `unreachable`
    where the hub or the cache was wanting, else the error's own first line."""
    text = str(error)
    if unreachable and ("cache" in text.lower() or "offline" in text.lower()):
        return unreachable
    first_line = (text.strip().splitlines() or [type(error).__name__])[0]
    return f"cannot load {what} {name_or_path!r}: {first_line}"


def _hub_reachable(timeout=3.0):
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # noqa: BLE001 (any failure to get an answer means unreachable)
        return False
    return True


def _resolve(name_or_path, filename):
    """The local path of `filename` in a folder or hub repository, or None if it has none."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(name_or_path, filename)
    except EntryNotFoundError:  # also: not in the cache when offline
        return None


# ---- loading ---------------------------------------------------------------------------

def _fit_parameters(name_or_path, config, new_head_seed, read_head):
    """(parameter tree, the file read, whether the head is new) of a scorer, checked
    against its config; a missing or mismatched head is initialised only with
    `new_head_seed` (and never read when `read_head` is False)."""
    from cappy.engine import roberta

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

    from cappy.engine import roberta

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


def write_weights(params, folder):
    """`model.safetensors` (PyTorch names) and `flax_model.msgpack` of float32 parameters."""
    from flax.serialization import msgpack_serialize
    from safetensors.numpy import save_file

    host = unflatten({path: np.asarray(value, np.float32) for path, value in flatten(params).items()})
    save_file(torch_state(host), os.path.join(folder, SAFETENSORS), metadata={"format": "pt"})
    with open(os.path.join(folder, FLAX_MSGPACK), "wb") as file:
        file.write(msgpack_serialize(host))


def parameter_bytes(params):
    """Bytes of the parameters in float32, as they are saved."""
    return sum(4 * int(np.prod(np.shape(value))) for value in flatten(params).values())


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
    from cappy.engine.io import check_room_to_write, disk_full_as_error

    check_output_dir(output_dir, overwrite)
    staging = f"{output_dir.rstrip(os.sep)}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    needed = saved_model_bytes(params, tokenizer)
    check_room_to_write(output_dir, needed, kept)
    # The staging folder is removed before the error line counts the free space.
    with disk_full_as_error(output_dir, needed, kept):
        try:
            _write_model_folder(model, tokenizer, params, staging, summary, summary_name)
            if os.path.exists(output_dir):  # only now, the new folder complete beside it
                shutil.rmtree(output_dir)
            os.replace(staging, output_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return output_dir


def _write_model_folder(model, tokenizer, params, folder, summary, summary_name):
    from cappy.engine.io import dump_json

    os.makedirs(folder)
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
