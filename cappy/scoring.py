"""Cappy as a scorer: load a checkpoint, encode (instruction, response) pairs,
and score them in length-sorted, bucket-padded batches.

A score is the raw regression output `logits[..., 0]` (no sigmoid, no
clipping), returned in float32 and in input order.
"""

import contextlib
import io
import logging

import jax
import numpy as np

from cappy import fast_roberta, packing
from cappy.batching import bucket_length, length_sorted_order, pad_batch
from cappy.errors import CappyError


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' Flax deprecation banner; real errors still raise."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def flax_scorer_from_pretrained(model_name_or_path, **kwargs):
    """FlaxAutoModelForSequenceClassification from Flax weights, or converted from
    PyTorch-only weights (needs torch) when the folder or hub id has no Flax file."""
    from transformers import FlaxAutoModelForSequenceClassification

    try:
        return FlaxAutoModelForSequenceClassification.from_pretrained(model_name_or_path,
                                                                      **kwargs)
    except OSError as error:
        if "from_pt" not in str(error):
            raise
        return FlaxAutoModelForSequenceClassification.from_pretrained(
            model_name_or_path, from_pt=True, **kwargs)


def load_cappy(model_name_or_path, dtype="float32"):
    """(model, tokenizer) of a Cappy checkpoint, parameters in float32 on the CPU.

    Accepts a hub id or a folder with `flax_model.msgpack`, or only PyTorch
    weights (converted; needs torch). `dtype` is the compute dtype.
    """
    import jax.numpy as jnp
    from transformers import AutoTokenizer

    kwargs = {"dtype": getattr(jnp, dtype)}
    with quiet_transformers(), jax.default_device(jax.devices("cpu")[0]):
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            model = flax_scorer_from_pretrained(model_name_or_path, **kwargs)
        except (OSError, ValueError) as error:
            raise CappyError(f"cannot load Cappy model {model_name_or_path!r}: "
                             f"{str(error).splitlines()[0]}") from None
        # transformers stores the Flax compute dtype in the config, where PyTorch
        # would later read it as a torch dtype; weights are float32, so say so.
        model.config.dtype = "float32"
        if model.config.num_labels != 1:
            raise CappyError(f"{model_name_or_path}: a Cappy scorer has num_labels=1, "
                             f"this checkpoint has {model.config.num_labels}")
        model.params = model.to_fp32(model.params)
    return model, tokenizer


TRUNCATIONS = ("longest_first", "instruction_first")
DTYPES = ("float32", "bfloat16", "float16")


def encode_pairs(tokenizer, instructions, responses, max_length, truncation="longest_first"):
    """Token ids of `<s> instruction </s></s> response </s>`, at most `max_length` long.

    `longest_first` (the original release's, used for the paper runs): the
    longer side gives way first, token by token. `instruction_first` (the API's
    default): the instruction's end is cut first, and the response only once the
    instruction is gone, so the response a caller asks about stays whole.
    """
    if truncation == "longest_first":
        encoded = tokenizer(list(instructions), list(responses), max_length=max_length,
                            truncation=True)
        keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
        return [{k: encoded[k][i] for k in keys} for i in range(len(encoded["input_ids"]))]
    if truncation != "instruction_first":
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room for text")
    firsts = tokenizer(list(instructions), add_special_tokens=False)["input_ids"]
    seconds = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    examples = []
    for first, second in zip(firsts, seconds):
        second = second[:budget]
        first = first[:budget - len(second)]
        ids = tokenizer.build_inputs_with_special_tokens(first, second)
        example = {"input_ids": ids}
        if "token_type_ids" in tokenizer.model_input_names:
            example["token_type_ids"] = tokenizer.create_token_type_ids_from_sequences(
                first, second)
        examples.append(example)
    return examples


def encode_examples(tokenizer, examples, max_length, src_key="instruction",
                    tgt_key="response", label_key="label"):
    """Labelled examples as encoded pairs (`encode_pairs`, longest_first) with their
    label; each distinct pair is tokenized once and repeats share the encoding."""
    distinct = list(dict.fromkeys((ex[src_key], ex[tgt_key]) for ex in examples))
    encodings = encode_pairs(tokenizer, [k[0] for k in distinct], [k[1] for k in distinct],
                             max_length)
    cache = dict(zip(distinct, encodings))
    return [{**cache[(ex[src_key], ex[tgt_key])], label_key: ex[label_key]} for ex in examples]


def collate_pairs(examples, pad_id, max_length, label_key=None, bucketed=True):
    """Pad a batch to its bucket width; add float32 `labels` when `label_key` is given.

    `bucketed=False` pads every batch to `max_length`, as the original release
    did (kept for benchmarks and equivalence tests).
    """
    longest = max(len(ex["input_ids"]) for ex in examples)
    width = bucket_length(longest, max_length) if bucketed else max_length
    ids, mask = pad_batch([ex["input_ids"] for ex in examples], width, pad_id)
    batch = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in examples[0]:
        batch["token_type_ids"], _ = pad_batch([ex["token_type_ids"] for ex in examples],
                                               width, 0)
    if label_key is not None:
        batch["labels"] = np.array([ex[label_key] for ex in examples], dtype=np.float32)
    return batch


class PairScorer:
    """Scores encoded pairs with a Redco Predictor over the deployer's devices.

    RoBERTa checkpoints (Cappy's) go through `cappy.fast_roberta` with pairs
    packed into rows (`cappy.packing`): the same scores as transformers'
    module with far less padding. `fast=False` forces transformers' module,
    one pair per row in length-sorted, bucket-padded batches.

    A batch holds `per_device_batch_size * max_length` tokens per device (the
    original's batch of padded pairs) in packed rows; on CPUs at most
    CPU_TOKENS_PER_BATCH, which keeps a batch's activations in cache.
    """

    CPU_TOKENS_PER_BATCH = 2048

    def __init__(self, model, tokenizer, deployer, max_length=512, per_device_batch_size=32,
                 params_sharding_rules=None, truncation="longest_first", fast=True):
        from redco import Predictor

        self.model, self.tokenizer, self.deployer = model, tokenizer, deployer
        self.fast = fast and fast_roberta.supports(model.config)
        self.max_length = max_length
        self.truncation = truncation
        self.per_device_batch_size = per_device_batch_size
        self.predictor = Predictor(
            deployer=deployer, collate_fn=self._collate, pred_fn=self._pred_fn,
            output_fn=lambda preds: list(np.asarray(preds, np.float32)),
            params_sharding_rules=params_sharding_rules)

    def _collate(self, examples):
        pad_id = self.tokenizer.pad_token_id
        if not self.fast:
            return collate_pairs(examples, pad_id, self.max_length)
        return packing.collate_packed_rows([row["pairs"] for row in examples],
                                           examples[0]["width"], pad_id)

    def _pred_fn(self, rng, params, batch):
        del rng
        if self.fast:
            return fast_roberta.packed_roberta_scores(
                params, self.model.config, batch["input_ids"], batch["segment_ids"],
                batch["position_ids"], batch["first_tokens"], batch.get("token_type_ids"),
                dtype=self.model.dtype)
        return self.model(**batch, params=params, train=False).logits[..., 0].astype("float32")

    def tokens_per_batch(self):
        """Tokens in one device's packed batch."""
        tokens = self.per_device_batch_size * self.max_length
        if jax.default_backend() == "cpu":
            tokens = min(tokens, self.CPU_TOKENS_PER_BATCH)
        return tokens

    def score(self, instructions, responses, params, desc="scoring", **placement):
        """float32 scores of (instruction, response) pairs, in input order.

        Each distinct pair is scored once, so repeated pairs get equal scores.
        `placement` is passed to Redco (`params_replicated` / `params_sharded`)
        when `params` already live on the devices.
        """
        if len(instructions) != len(responses):
            raise ValueError("instructions and responses differ in length")
        if not instructions:
            return np.zeros((0,), np.float32)
        index_of = {}
        pair_index = [index_of.setdefault(pair, len(index_of))
                      for pair in zip(instructions, responses)]
        distinct = list(index_of)
        return self._score_distinct([p[0] for p in distinct], [p[1] for p in distinct],
                                    params, desc, placement)[pair_index]

    def _score_distinct(self, instructions, responses, params, desc, placement):
        examples = encode_pairs(self.tokenizer, instructions, responses, self.max_length,
                                self.truncation)
        lengths = [len(ex["input_ids"]) for ex in examples]
        scores = np.empty(len(examples), np.float32)
        if not self.fast:
            order = length_sorted_order(lengths)
            preds = self.predictor.predict(
                examples=[examples[i] for i in order], params=params,
                per_device_batch_size=self.per_device_batch_size, desc=desc, **placement)
            scores[order] = np.asarray(preds, np.float32)
            return scores
        rows = packing.pack_rows(lengths, packing.row_widths(self.max_length))
        for width in sorted({width for width, _ in rows}):
            indices = [row for w, row in rows if w == width]
            preds = self.predictor.predict(
                examples=[{"width": width, "pairs": [examples[i] for i in row]}
                          for row in indices],
                params=params,
                per_device_batch_size=packing.rows_per_batch(width, self.tokens_per_batch()),
                desc=f"{desc} ({width}-token rows)", **placement)
            for row, row_scores in zip(indices, preds):
                scores[row] = row_scores[:len(row)]
        return scores


class TorchPairScorer:
    """The same scoring with the PyTorch model class of transformers (one device).

    Same encoding, length order and bucket widths as PairScorer, so the two
    backends see identical inputs.
    """

    def __init__(self, model, tokenizer, max_length=512, batch_size=32,
                 truncation="instruction_first", device=None):
        import torch

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer, self.max_length = tokenizer, max_length
        self.batch_size, self.truncation = batch_size, truncation

    def score(self, instructions, responses, desc="scoring", progress=False):
        import tqdm

        if len(instructions) != len(responses):
            raise ValueError("instructions and responses differ in length")
        examples = encode_pairs(self.tokenizer, instructions, responses, self.max_length,
                                self.truncation)
        order = length_sorted_order([len(ex["input_ids"]) for ex in examples])
        scores = np.empty(len(examples), np.float32)
        starts = range(0, len(order), self.batch_size)
        with self.torch.inference_mode():
            for start in tqdm.tqdm(starts, desc=desc, disable=not progress):
                index = order[start:start + self.batch_size]
                batch = collate_pairs([examples[i] for i in index], self.tokenizer.pad_token_id,
                                      self.max_length)
                batch = {k: self.torch.as_tensor(v, device=self.device) for k, v in batch.items()}
                logits = self.model(**batch).logits[..., 0]
                scores[index] = logits.float().cpu().numpy()
        return scores
