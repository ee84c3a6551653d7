"""Tiny random models for tests and the offline demo, and `cappy tiny-models`
(= scripts/make_tiny_models.py), which writes them:

    cappy tiny-models --output_dir demo_run/models [--models tiny-cappy,tiny-t5]

Nothing here can reach a hub: tokenizers are trained on local text and models
are built from small configs with random weights, then saved to a folder so
that every caller loads them back through the same `from_pretrained` path a
user's real checkpoint takes. Their scores and generations mean nothing.
"""

import dataclasses
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from cappy.engine.config import setting
from cappy.engine.runtime.process import job_command

# A little English so the tokenizer has real words even with no other text.
BASE_TEXT = [
    "Cappy scores how correct a response is for an instruction.",
    "The quick brown fox jumps over the lazy dog.",
    "Question: what is two plus three? Answer: five.",
    "Sort the following words alphabetically: banana apple cherry.",
    "Translate the sentence into French. The cat sleeps on the mat.",
    "Q: How many legs does a spider have?\nA: eight",
    "True or false: the sun rises in the west. False.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 + - * / = ( ) [ ] { } , . ; : ! ?",
]


def _train_byte_level_bpe(texts, vocab_size, special_tokens):
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(BASE_TEXT) + list(texts), trainer=trainer)
    return tokenizer


def make_scorer_tokenizer(texts=(), vocab_size=600):
    """A RoBERTa-style tokenizer: `<s> instruction </s></s> response </s>`."""
    from transformers import RobertaTokenizerFast

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tokenizer = _train_byte_level_bpe(texts, vocab_size, special)
    tokenizer.post_processor = processors.RobertaProcessing(  # (sep, cls): positional in 0.23
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")),
        add_prefix_space=False)
    return RobertaTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
        model_max_length=512)


def make_generator_tokenizer(texts=(), vocab_size=600, append_eos=True):
    """A generator tokenizer: pad=0, eos=1, unk=2.

    With `append_eos` (T5-style) `</s>` ends every text; decoder-only models
    leave the prompt open instead.
    """
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>"]
    tokenizer = _train_byte_level_bpe(texts, vocab_size, special)
    if append_eos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=512)


def seeded_parameters(shapes, seed, std, norm_names=("scale", "weight")):
    """Parameters drawn in sorted-name order from one seeded generator: weights normal
    with `std`, biases small, norm scales near one. The same tree gives the same
    numbers whichever code built the tree, so two implementations can be compared
    on identical weights (tests/data/generation_golden.json was made on these)."""
    import numpy as np

    from cappy.engine.weights.files import flatten, unflatten

    rng = np.random.default_rng(seed)
    flat = {}
    for path, shape in sorted(flatten(shapes).items()):
        shape = tuple(np.shape(shape)) if hasattr(shape, "shape") else tuple(shape)
        if path[-1] == "bias":
            value = rng.normal(0.0, 0.02, shape)
        elif path[-1] in norm_names and len(shape) == 1:
            value = 1.0 + rng.normal(0.0, 0.1, shape)
        else:
            value = rng.normal(0.0, std, shape)
        flat[path] = value.astype(np.float32)
    return unflatten(flat)


def as_trained(params, seed, spread=0.1):
    """A fresh initialisation with every bias and norm parameter moved off its initial
    value (biases 0, norm scales 1), as a trained checkpoint's are: code that drops a
    bias, a norm's scale or its offset gives other outputs on these weights, where fresh
    weights hide it. Biases and norm offsets (and BART's `final_logits_bias`) drawn normal
    with `spread`, norm scales 1 + normal(`spread`); weights as given. A new tree of
    float32 host arrays."""
    import numpy as np

    from cappy.engine.weights.files import flatten, unflatten

    rng = np.random.default_rng([seed, 7])
    moved = {}
    for path, value in sorted(flatten(params).items()):
        value = np.array(value, np.float32)
        if path[-1] in ("bias", "final_logits_bias"):
            value = value + rng.normal(0.0, spread, value.shape).astype(np.float32)
        elif path[-1] in ("scale", "weight") and value.ndim == 1:
            value = value * (1.0 + rng.normal(0.0, spread, value.shape)).astype(np.float32)
        moved[path] = value
    return unflatten(moved)


def tiny_scorer_config(tokenizer, hidden_size=32, num_layers=2, num_heads=2, max_position=514,
                       **overrides):
    """The config of a small random RoBERTa regression scorer for `tokenizer`."""
    from transformers import RobertaConfig

    settings = dict(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=hidden_size * 4,
        max_position_embeddings=max_position, type_vocab_size=1, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, problem_type="regression",
        architectures=["RobertaForSequenceClassification"],
        # Wider than RoBERTa's 0.02 so random scores differ visibly between inputs.
        initializer_range=0.2)
    settings.update(overrides)
    return RobertaConfig(**settings)


def make_tiny_scorer(path, texts=(), hidden_size=32, num_layers=2, num_heads=2,
                     max_position=514, seed=0):
    """Save a random RoBERTa regression scorer (num_labels=1) and its tokenizer to `path`,
    written as the project writes every checkpoint (`cappy.engine.weights.cappy_checkpoint.save_cappy`).
    Every bias and LayerNorm parameter is drawn (`as_trained`), as in a real checkpoint."""
    from cappy.engine.models import roberta
    from cappy.engine.weights.cappy_checkpoint import CappyModel, save_cappy

    tokenizer = make_scorer_tokenizer(texts)
    config = tiny_scorer_config(tokenizer, hidden_size, num_layers, num_heads, max_position)
    params = as_trained(roberta.init_params(config, seed), seed)
    save_cappy(CappyModel(config=config, params=params), tokenizer, params, path, overwrite=True)
    return path


def fingerprint(path):
    """sha256 of a saved Cappy's vocabulary and float32 parameters (sorted by name): equal
    on two software stacks when both built the same tiny model, so a reference file made
    on one stack holds for a test on another."""
    import hashlib
    import json

    import numpy as np

    from cappy.engine.weights.cappy_checkpoint import load_cappy
    from cappy.engine.weights.files import flatten

    model, tokenizer = load_cappy(path)
    digest = hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    for name, value in sorted(flatten(model.params).items()):
        digest.update("/".join(name).encode())
        digest.update(np.ascontiguousarray(value, np.float32).tobytes())
    return digest.hexdigest()


def save_generator(params, config, tokenizer, path, generation=None):
    """A generator folder as the project writes one: weights in both formats, config,
    generation config (the config's values, then `generation`'s), tokenizer."""
    from transformers import GenerationConfig

    from cappy.engine.weights.files import write_weights

    os.makedirs(path, exist_ok=True)
    write_weights(params, path)
    config.save_pretrained(path)
    generation_config = GenerationConfig.from_model_config(config)
    if generation:
        generation_config.update(**generation)
    generation_config.save_pretrained(path)
    tokenizer.save_pretrained(path)  # last: its config marks a finished folder
    return path


def make_tiny_seq2seq(path, texts=(), d_model=32, num_layers=2, num_heads=2, seed=0):
    """Save a random T5 generator (FLAN-T5's variant: gated GELU, untied head) and its
    tokenizer to `path`; its norm scales drawn around one (`as_trained`)."""
    from transformers import T5Config

    from cappy.engine.models import t5

    tokenizer = make_generator_tokenizer(texts)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // num_heads,
        d_ff=d_model * 2, num_layers=num_layers, num_decoder_layers=num_layers,
        num_heads=num_heads, relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return save_generator(as_trained(t5.init_params(config, seed), seed), config, tokenizer,
                          path)


# What bart-large's generation config (and BART0's, made from it) sets beside the token
# ids: the forced first and last tokens, no repeated 3-grams, 4 beams stopping early.
BART_GENERATION = {"forced_bos_token_id": 0, "forced_eos_token_id": 2, "no_repeat_ngram_size": 3,
                   "num_beams": 4, "early_stopping": True}


def tiny_bart_config(tokenizer, d_model=32, num_layers=2, num_heads=2, **overrides):
    """The config of a small random BART for a BART-style `tokenizer` (<s>=0, <pad>=1,
    </s>=2): decoding starts from </s>, as BART's does."""
    from transformers import BartConfig

    settings = dict(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=num_layers,
        decoder_layers=num_layers, encoder_attention_heads=num_heads,
        decoder_attention_heads=num_heads, encoder_ffn_dim=d_model * 2,
        decoder_ffn_dim=d_model * 2, max_position_embeddings=tokenizer.model_max_length,
        activation_function="gelu", pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id)
    settings.update(overrides)
    return BartConfig(**settings)


def make_tiny_bart(path, texts=(), d_model=32, num_layers=2, num_heads=2, seed=0,
                   generation=None):
    """Save a random BART generator (BART0's architecture: tied head, final_logits_bias)
    with bart-large's generation settings (`BART_GENERATION`, then `generation`'s) and
    its tokenizer to `path`; every bias, norm and the final_logits_bias drawn
    (`as_trained`). BART's tokenizer is RoBERTa's (`<s> text </s>`), so it is the
    scorer's."""
    from cappy.engine.models import bart

    tokenizer = make_scorer_tokenizer(texts)
    config = tiny_bart_config(tokenizer, d_model, num_layers, num_heads)
    return save_generator(as_trained(bart.init_params(config, seed), seed), config, tokenizer,
                          path, {**BART_GENERATION, **(generation or {})})


def make_tiny_causal_lm(path, texts=(), n_embd=32, n_layer=2, n_head=2, seed=0):
    """Save a random GPT-2 decoder-only generator and its tokenizer to `path`, every bias
    and LayerNorm parameter drawn (`as_trained`)."""
    from transformers import GPT2Config

    from cappy.engine.models import causal_lm

    tokenizer = make_generator_tokenizer(texts, append_eos=False)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        n_positions=1024, bos_token_id=1, eos_token_id=1, pad_token_id=0)
    return save_generator(as_trained(causal_lm.init_params(config, seed), seed), config,
                          tokenizer, path)


PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE_DIR = os.path.join(PACKAGE_DIR, "data", "bigbench_sample")  # cappy/data/bigbench_sample
BUILDERS = {"tiny-cappy": make_tiny_scorer, "tiny-t5": make_tiny_seq2seq,
            "tiny-gpt2": make_tiny_causal_lm, "tiny-bart": make_tiny_bart}


def sample_texts(sample_dir=SAMPLE_DIR):
    """Instructions and references of the shipped BIG-Bench sample: local tokenizer text."""
    from cappy.engine.io import iter_jsonl

    texts = []
    for name in sorted(os.listdir(sample_dir)):
        if name.endswith(".jsonl"):
            for _, row in iter_jsonl(os.path.join(sample_dir, name),
                                     {"instruction": str, "references": list}):
                texts.append(row["instruction"])
                texts.extend(row["references"])
    return texts


def build_tiny_models(output_dir, names=tuple(BUILDERS), overwrite=False):
    """Build the named tiny models under `output_dir`; keep finished ones unless overwrite."""
    from cappy.engine.errors import CappyError

    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise CappyError(f"unknown tiny model(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(BUILDERS)}")
    texts = sample_texts()
    paths = {}
    for name in names:
        path = os.path.join(output_dir, name)
        # The tokenizer is saved after the weights: its config marks a finished folder.
        if overwrite or not os.path.exists(os.path.join(path, "tokenizer_config.json")):
            BUILDERS[name](path, texts=texts)
        paths[name] = path
    return paths


@dataclasses.dataclass(kw_only=True)
class TinyModelsConfig:
    """The flags of `cappy tiny-models`."""
    output_dir: str = setting("demo_run/models", "where the models are written")
    models: str = setting("tiny-cappy,tiny-t5,tiny-gpt2", "comma-separated models to write, of "
                          + ", ".join(BUILDERS))
    overwrite: bool = setting(False, "replace models already there")
    verbose: bool = setting(True, "do not list the folders written", flag="--quiet")


def run(config):
    from cappy.engine.flags import comma_list

    for name, path in build_tiny_models(config.output_dir, comma_list(config.models, "--models"),
                                        overwrite=config.overwrite).items():
        if config.verbose:
            print(f"{name}: {path}")


parse_args, main = job_command(TinyModelsConfig, __doc__, run, computes=False)
