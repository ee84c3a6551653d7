"""Loading the generators candidate generation runs, without transformers' model classes
(the families are `cappy.engine.models.families`').

A generator is a folder or hub id with `config.json`, a tokenizer, and weights in
`model.safetensors` or `flax_model.msgpack` (or `pytorch_model.bin` with torch),
single or sharded; `generation_config.json` gives the token ids and the decoding
defaults transformers would use (such as sampling's top_k of 50). Without one, they
come from the generation settings `config.json` carries, as transformers 5's
generate() reads them (BART's checkpoints keep `no_repeat_ngram_size` and the forced
tokens there).

Which generation-config values a decoding obeys: each of cappy's decodings passes
transformers' generate() explicit `num_beams`, `do_sample`, `min_length` and
`max_length` (and sampling its temperature, top_k and top_p, the config's where the
recipe sets none); generate() still applies every other value the config sets. Of
those, cappy applies what both transformers' generate()s (the Flax one the original
runs used, and PyTorch's) apply to these decodings: `length_penalty` and
`early_stopping` (beam search), and the token rules `forced_bos_token_id`,
`forced_eos_token_id` and `no_repeat_ngram_size` (`cappy.engine.models.decoding.
generation_rules`; bart-large and BART0 set all three, with `num_beams` 4 and
`early_stopping`). The others both apply, `suppress_tokens` and
`begin_suppress_tokens` (and transformers 4's `forced_decoder_ids`), are not
implemented: a generator that sets one is refused in one line (`UNSUPPORTED_RULES`).
The rules only PyTorch's generate() has (`repetition_penalty`, `bad_words_ids`,
`encoder_no_repeat_ngram_size`, `typical_p`, `min_p` and the like) are not applied,
as the Flax generate() the original ran did not apply them (Qwen2-Instruct's
generation config sets `repetition_penalty`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cappy.engine.errors import CappyError
from cappy.engine.models.families import SEQ2SEQ_TYPES, SUPPORTED_MODEL_TYPES, model_module

# transformers' generation defaults where a generation config leaves a value unset
# (transformers 5 keeps them None in the config and applies them in generate()):
# plain sampling keeps the top 50 tokens, as the original's sampled candidates did.
GENERATION_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "length_penalty": 1.0,
                       "early_stopping": False}
# Where PyTorch checkpoints may keep a parameter under another name.
TORCH_ALIASES = {("shared", "embedding"): ("encoder.embed_tokens.weight",
                                           "decoder.embed_tokens.weight"),
                 ("model", "shared", "embedding"): ("model.encoder.embed_tokens.weight",
                                                    "model.decoder.embed_tokens.weight")}
# Generation-config values transformers' generate() would apply and cappy's decoding
# does not implement (see the module's docstring).
UNSUPPORTED_RULES = ("suppress_tokens", "begin_suppress_tokens", "forced_decoder_ids")


@dataclasses.dataclass
class Generator:
    """A loaded generator: config, parameters (host arrays in `dtype`), tokenizer, and
    the decoding settings of its generation config."""

    config: object
    params: dict
    tokenizer: object
    dtype: str
    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    sampling_defaults: dict
    beam_defaults: dict
    source: str = "the generator"
    # The generation config's token rules, as `cappy.engine.models.decoding.generation_rules`
    # takes them (only those set).
    token_rules: dict = dataclasses.field(default_factory=dict)

    @property
    def is_seq2seq(self):
        return self.config.model_type in SEQ2SEQ_TYPES

    @property
    def module(self):
        return model_module(self.config.model_type)

    @property
    def compute_dtype(self):
        return getattr(jnp, self.dtype)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def load_generator(name_or_path, dtype="float32"):
    """A Generator from a folder or hub id, weights cast to `dtype`."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from cappy.engine.weights.cappy_checkpoint import check_dtype
    from cappy.engine.weights.files import check_shapes, read_parameters
    from cappy.engine.weights.model_hub import check_model_source, load_error
    from cappy.engine.runtime.transformers_setup import quiet_transformers

    check_dtype(dtype, "--dtype")
    unreachable = check_model_source(name_or_path, "generator")
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(name_or_path)
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            try:
                generation = GenerationConfig.from_pretrained(name_or_path)
            except OSError:  # no generation_config.json: config.json's values, as
                # transformers 5 reads them (its model config drops them)
                generation = GenerationConfig.from_pretrained(
                    name_or_path, config_file_name="config.json", _from_model_config=True)
    except (OSError, ValueError) as error:
        raise CappyError(load_error("generator", name_or_path, error, unreachable)) from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise CappyError(f"{name_or_path}: generators of model_type {config.model_type!r} are "
                         f"not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    module = model_module(config.model_type)
    problem = module.unsupported_reason(config)
    if problem:
        raise CappyError(f"{name_or_path}: this {config.model_type} has {problem}, which cappy's "
                         f"generators do not compute")
    rules = _token_rules(generation, name_or_path)
    shapes = module.parameter_shapes(config)
    found, weights_file = read_parameters(name_or_path, shapes, TORCH_ALIASES)
    source = f"{name_or_path} ({weights_file})"
    defaults = getattr(module, "parameter_defaults", lambda config: {})(config)
    check_shapes(found, shapes, source, optional=lambda path: path in defaults)
    found = {**defaults, **found}
    host_dtype = jnp.dtype(dtype)
    params = jax.tree.map(lambda x: np.asarray(x, host_dtype), _unflatten(found))
    eos = _first(generation.eos_token_id if generation.eos_token_id is not None
                 else tokenizer.eos_token_id)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad = generation.pad_token_id if generation.pad_token_id is not None else tokenizer.pad_token_id
    start = generation.decoder_start_token_id
    if start is None:
        start = getattr(config, "decoder_start_token_id", None)
    return Generator(
        config=config, params=params, tokenizer=tokenizer, dtype=dtype,
        decoder_start_token_id=0 if start is None else int(_first(start)),
        eos_token_id=int(eos), pad_token_id=int(_first(pad)),
        sampling_defaults={key: _setting(generation, key)
                           for key in ("temperature", "top_k", "top_p")},
        beam_defaults={"length_penalty": _setting(generation, "length_penalty"),
                       "early_stopping": _setting(generation, "early_stopping") is True},
        source=source, token_rules=rules)


def _token_rules(generation, name_or_path):
    """The token rules the generation config sets, as `decoding.generation_rules` takes
    them; one that cappy does not implement stops the load."""
    for key in UNSUPPORTED_RULES:
        value = getattr(generation, key, None)
        if value is not None and (not isinstance(value, (list, tuple, dict)) or len(value)):
            raise CappyError(f"{name_or_path}: its generation config sets {key}, which "
                             f"transformers' generate() applies and cappy's decoding does not")
    rules = {}
    if generation.forced_bos_token_id is not None:
        rules["forced_bos_id"] = int(generation.forced_bos_token_id)
    forced_eos = generation.forced_eos_token_id
    if forced_eos is not None:
        ids = forced_eos if isinstance(forced_eos, (list, tuple)) else [forced_eos]
        rules["forced_eos_id"] = tuple(int(token) for token in ids)
    if (generation.no_repeat_ngram_size or 0) > 0:
        rules["no_repeat_ngram_size"] = int(generation.no_repeat_ngram_size)
    return rules


def _setting(generation, key):
    value = getattr(generation, key, None)
    return GENERATION_DEFAULTS[key] if value is None else value


def _unflatten(flat):
    from cappy.engine.weights.files import unflatten

    return unflatten(flat)


# ---- what decoding and scoring need ----------------------------------------------------


