"""Cappy as a scorer: encode (instruction, response) pairs and score them, packed
into rows (`cappy.engine.models.packing`) through Cappy's own forward pass (`cappy.engine.models.roberta`).

A score is the raw regression output `logits[..., 0]` (no sigmoid, no
clipping), returned in float32 and in input order.
"""

import jax
import numpy as np

from cappy.engine.models import packing, roberta
from cappy.engine.models.padding import bucket_length, length_sorted_order, pad_batch
from cappy.engine.runtime.leader import progress_bar
from cappy.engine.runtime.mesh import place, record_placed
from cappy.engine.weights.cappy_checkpoint import check_truncation


def encode_pairs(tokenizer, instructions, responses, max_length, truncation, truncate=True):
    """Token ids of `<s> instruction </s></s> response </s>`, at most `max_length` long.

    `longest_first` (the original release's, used for the paper runs): the
    longer side gives way first, token by token. `instruction_first`: the
    instruction's end is cut first, and the response only once the instruction is
    gone, so the response a caller asks about stays whole. Tokens are cut from the end
    of a side, or from its start where the tokenizer's `truncation_side` is "left".
    `truncate=False` cuts nothing (the caller checks the lengths).

    Each distinct text is tokenized once (an instruction is shared by all its candidates)
    and its pairs are assembled by the tokenizer's own post-processor; the pairs that
    `longest_first` has to cut go through the tokenizer's pair truncation itself, so the
    ids are those `tokenizer(instruction, response, truncation=True)` gives.
    """
    if truncation != "longest_first":
        check_truncation(truncation)
    instructions, responses = list(instructions), list(responses)
    backend = tokenizer.backend_tokenizer
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room for text")
    side = tokenizer.truncation_side
    # The backend keeps the truncation and padding of the tokenizer's last call; each
    # text is encoded whole here.
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    texts = list(dict.fromkeys(instructions + responses))
    encoding_of = dict(zip(texts, backend.encode_batch(texts, add_special_tokens=False)))
    with_types = "token_type_ids" in tokenizer.model_input_names
    examples, cut = [], []
    for index, (instruction, response) in enumerate(zip(instructions, responses)):
        first, second = encoding_of[instruction], encoding_of[response]
        if truncate and len(first) + len(second) > budget:
            if truncation == "longest_first":
                cut.append(index)
                examples.append(None)
                continue
            # cut copies: the shared encodings serve the instruction's other pairs
            first, second = (backend.encode(text, add_special_tokens=False)
                             for text in (instruction, response))
            second.truncate(budget, direction=side)
            first.truncate(budget - len(second.ids), direction=side)
        pair = backend.post_process(first, second, add_special_tokens=True)
        example = {"input_ids": list(pair.ids)}
        if with_types:
            example["token_type_ids"] = list(pair.type_ids)
        examples.append(example)
    if cut:  # the tokenizer's own pair truncation
        encoded = tokenizer([instructions[i] for i in cut], [responses[i] for i in cut],
                            max_length=max_length, truncation=True)
        keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
        for at, index in enumerate(cut):
            examples[index] = {k: encoded[k][at] for k in keys}
    return examples


def encode_examples(tokenizer, examples, max_length, truncation, src_key="instruction",
                    tgt_key="response", label_key="label"):
    """Labelled examples as encoded pairs (`encode_pairs`) with their label; each
    distinct pair is tokenized once and repeats share the encoding."""
    distinct = list(dict.fromkeys((ex[src_key], ex[tgt_key]) for ex in examples))
    encodings = encode_pairs(tokenizer, [k[0] for k in distinct], [k[1] for k in distinct],
                             max_length, truncation)
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
    """Scores pairs with a Cappy over every device of every process.

    Each distinct pair is scored once; pairs are packed into rows of two widths
    (`cappy.engine.models.packing`), each attending only to its own tokens, so a pair gets the
    score it gets alone. A batch holds `per_device_batch_size * max_length`
    tokens per device (the original's batch of padded pairs) in packed rows; on
    CPUs at most CPU_TOKENS_PER_BATCH, which keeps a batch's activations in
    cache. A batch's rows are spread over the mesh's "dp" axis: every device without
    model shards, else the (dp, mp) mesh of `devices` with the parameters sharded by
    Redco's rules. Every process builds the whole batch and keeps its devices' rows, so
    several processes score as one process of all their devices. Pairs are encoded with
    the model's truncation policy unless `truncation` says otherwise.
    """

    CPU_TOKENS_PER_BATCH = 2048

    def __init__(self, model, tokenizer, devices, max_length=512, per_device_batch_size=32,
                 params_sharding_rules=None, truncation=None):
        from jax.sharding import NamedSharding, PartitionSpec

        roberta.check_max_length(model.config, max_length, model.source)
        self.model, self.tokenizer, self.devices = model, tokenizer, devices
        self.max_length = max_length
        self.truncation = check_truncation(truncation or model.truncation)
        self.per_device_batch_size = per_device_batch_size
        self._rules = params_sharding_rules
        self.mesh = devices.mesh
        self._rows = NamedSharding(self.mesh, PartitionSpec("dp"))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        config, dtype = model.config, model.compute_dtype
        # The scores come back whole on every process (an all-gather where rows are spread).
        self._step = jax.jit(lambda params, batch: roberta.packed_scores(
            params, config, batch, dtype=dtype), out_shardings=self._replicated)
        self._placed = (None, None)  # (host parameters, the same on the devices)

    def tokens_per_batch(self):
        """Tokens in one device's packed batch."""
        tokens = self.per_device_batch_size * self.max_length
        if jax.default_backend() == "cpu":
            tokens = min(tokens, self.CPU_TOKENS_PER_BATCH)
        return tokens

    def device_params(self, params, on_devices=False):
        """`params` laid out on the mesh (placed once, kept while the same are scored)."""
        if on_devices:
            return params
        if self._placed[0] is not params:
            from flax.core import unfreeze

            shardings = self.devices.parameter_shardings(params, self._rules)
            self._placed = (params, place(unfreeze(params), shardings))
        return self._placed[1]

    def score(self, instructions, responses, params=None, desc="scoring", **placement):
        """float32 scores of (instruction, response) pairs, in input order.

        `params` default to the model's; `placement` (`params_replicated` /
        `params_sharded`, as `cappy.engine.jobs.training.Trainer.scoring_params()` gives it)
        says they already lie on the devices.
        """
        if len(instructions) != len(responses):
            raise ValueError("instructions and responses differ in length")
        if not instructions:
            return np.zeros((0,), np.float32)
        index_of = {}
        pair_index = [index_of.setdefault(pair, len(index_of))
                      for pair in zip(instructions, responses)]
        distinct = list(index_of)
        params = self.model.params if params is None else params
        on_devices = bool(placement.get("params_replicated") or placement.get("params_sharded"))
        return self._score_distinct([p[0] for p in distinct], [p[1] for p in distinct],
                                    self.device_params(params, on_devices), desc)[pair_index]

    def _score_distinct(self, instructions, responses, params, desc):
        examples = encode_pairs(self.tokenizer, instructions, responses, self.max_length,
                                self.truncation)
        return self.score_encoded(examples, params, desc)

    def score_encoded(self, examples, params, desc="scoring"):
        """float32 scores of encoded pairs ({"input_ids"}, at most max_length long, as
        `encode_pairs` makes them), in input order, every one computed; `params` as they
        lie on the devices (`device_params`)."""
        return self.score_some(examples, params, desc)[0]

    def score_some(self, examples, params, desc="scoring", defer=False, keep=()):
        """(scores, deferred): as `score_encoded`, but with `defer` the rows of each width
        that would only part-fill a last batch are left for later, unless they hold a pair
        of `keep` (indices): their pairs' indices are `deferred`, their scores NaN. A
        server batching requests tops those rows up with the next requests' pairs instead
        of computing padding."""
        lengths = [len(ex["input_ids"]) for ex in examples]
        scores = np.full(len(examples), np.nan, np.float32)
        rows = packing.pack_rows(lengths, packing.row_widths(self.max_length))
        n_devices = self.mesh.shape["dp"]
        pad_id = self.tokenizer.pad_token_id
        keep, deferred = set(keep), []
        for width in sorted({width for width, _ in rows}):
            indices = [row for w, row in rows if w == width]
            per_batch = packing.rows_per_batch(width, self.tokens_per_batch()) * n_devices
            if defer and len(indices) % per_batch:
                full = len(indices) - len(indices) % per_batch
                if not keep.intersection(i for row in indices[full:] for i in row):
                    deferred += [i for row in indices[full:] for i in row]
                    indices = indices[:full]
            for start in progress_bar(range(0, len(indices), per_batch), shown=self.devices.progress,
                                   desc=f"{desc} ({width}-token rows)", unit="batch"):
                chunk = indices[start:start + per_batch]
                batch = packing.collate_packed_rows(
                    [[examples[i] for i in row] for row in chunk]
                    + [[]] * (per_batch - len(chunk)), width, pad_id)
                batch = place(batch, self._rows)
                record_placed("scoring", batch["input_ids"])
                found = np.asarray(self._step(params, batch))
                for row, row_scores in zip(chunk, found):
                    scores[row] = row_scores[:len(row)]
        return scores, deferred


class TorchPairScorer:
    """The same scoring with transformers' PyTorch model on the same parameters
    (`cappy.engine.weights.cappy_checkpoint.torch_model`, one device): the same encoding and
    truncation, length-sorted batches padded to their bucket width."""

    def __init__(self, module, tokenizer, truncation, max_length=512, batch_size=32,
                 device=None):
        import torch

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = module.to(self.device).eval()
        self.tokenizer, self.max_length = tokenizer, max_length
        self.batch_size, self.truncation = batch_size, check_truncation(truncation)

    def score(self, instructions, responses, desc="scoring", progress=False):
        if len(instructions) != len(responses):
            raise ValueError("instructions and responses differ in length")
        examples = encode_pairs(self.tokenizer, instructions, responses, self.max_length,
                                self.truncation)
        order = length_sorted_order([len(ex["input_ids"]) for ex in examples])
        scores = np.empty(len(examples), np.float32)
        starts = range(0, len(order), self.batch_size)
        with self.torch.inference_mode():
            for start in progress_bar(starts, desc=desc, shown=progress):
                index = order[start:start + self.batch_size]
                batch = collate_pairs([examples[i] for i in index], self.tokenizer.pad_token_id,
                                      self.max_length)
                batch = {k: self.torch.as_tensor(v, device=self.device) for k, v in batch.items()}
                logits = self.model(**batch).logits[..., 0]
                scores[index] = logits.float().cpu().numpy()
        return scores
