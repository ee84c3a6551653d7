"""Weight files, read into and written from parameter trees, with no model class of
transformers in between.

A folder (or hub id) holds its weights in the first of these present: `model.safetensors`
in PyTorch's names (or in Flax's, when its metadata says `format: flax`), single or
sharded (`model.safetensors.index.json`); `flax_model.msgpack`, single or sharded; or
`pytorch_model.bin`, single or sharded (needs torch). Parameters are kept in the names of
`flax_model.msgpack` (nested dicts), float32 on the host; `lookup` finds each expected
parameter under its Flax or PyTorch name (and the aliases a model gives).
"""

import json
import os
import numpy as np
from cappy.engine.errors import CappyError
from cappy.engine.weights.model_hub import resolve_file


SAFETENSORS, FLAX_MSGPACK, TORCH_BIN = "model.safetensors", "flax_model.msgpack", "pytorch_model.bin"


WEIGHT_FILES = (SAFETENSORS, FLAX_MSGPACK, TORCH_BIN)  # in order of preference


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
        index = resolve_file(name_or_path, f"{filename}.index.json")
        if index is not None:  # sharded: an index names the files
            with open(index, encoding="utf-8") as file:
                shards = sorted(set(json.load(file)["weight_map"].values()))
            kind, entries = None, {}
            for shard in shards:
                shard_path = resolve_file(name_or_path, shard)
                if shard_path is None:
                    raise CappyError(f"{name_or_path}: {filename}.index.json lists {shard}, "
                                     f"which is missing")
                kind, part = READERS[filename](shard_path)
                entries.update(part)
            return kind, entries, f"{filename}.index.json"
        path = resolve_file(name_or_path, filename)
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
