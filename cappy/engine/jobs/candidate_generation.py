"""Candidate responses from a generator LLM, with their log-likelihoods.

For each instruction: one beam search (4 beams) and `n_sample_gens` samples of
each sampling decoding, 17 candidates in all with the defaults (docs/DESIGN.md section
3), then every distinct (instruction, candidate) pair is scored once under the
generator: the log-likelihood of the candidate's tokens (with the closing
end-of-sequence token), summed and averaged over tokens.

The generators are cappy's own (`cappy.engine.weights.generator_loading`): T5 / FLAN-T5, BART / BART0 /
mBART, GPT-2 and the Llama family (Llama 2 and 3, Mistral, Qwen2), decoded with
transformers' semantics (`cappy.engine.models.decoding`), with the token rules their
generation config sets (BART's forced first and last tokens, no repeated 3-grams).
Batches are sorted by length and padded to a few fixed bucket widths; each is spread
over every device of every process (`cappy.engine.runtime.mesh.Devices`), or over model copies
of `n_model_shards` devices each, by one compiled step per decoding: every process
collates the whole batch and keeps its devices' rows, so the layout of devices over
processes never changes a candidate.
"""

import os
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from cappy.engine.errors import CappyError
from cappy.engine.models import decoding
from cappy.engine.models.families import search_functions, target_logits
from cappy.engine.models.padding import bucket_length, length_sorted_order, pad_batch
from cappy.engine.recipes import DECODINGS, DETERMINISTIC_DECODINGS, LOG_LIKELIHOOD_KEYS
from cappy.engine.weights.generator_loading import load_generator

MIN_NEW_TOKENS = 3


SAMPLE = "sample"  # the step every sampling decoding shares
SAMPLING_SETTINGS = {"temperature": np.float32, "top_k": np.int32, "top_p": np.float32}


def generator_name(model_name_or_path):
    """The folder name of a generator's candidates: `google/flan-t5-xl` -> `flan-t5-xl`."""
    return os.path.basename(os.path.normpath(model_name_or_path))


def _token_log_likelihoods(logits, labels, label_mask):
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_ll = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    ll_sum = jnp.sum(token_ll * label_mask, axis=-1)
    ll_mean = ll_sum / jnp.maximum(jnp.sum(label_mask, axis=-1), 1)
    return {"log_likelihood_sum": ll_sum, "log_likelihood_mean": ll_mean}


class CandidateGenerator:
    """Generates the candidates of docs/DESIGN.md section 3 for lists of instructions."""

    def __init__(self, model_name_or_path, n_model_shards=1, n_sample_gens=4,
                 per_device_batch_size=8, max_src_len=512, max_tgt_len=64,
                 dtype="float16", jax_seed=42, verbose=True, hosts=None):
        from cappy.engine.runtime.leader import writes_outputs
        from cappy.engine.runtime.mesh import devices_for, place

        if hosts is not None:  # before the generator is read, which computes on a device
            from cappy.engine.runtime.hosts import join

            join(hosts)
        if n_sample_gens < 1:
            raise CappyError(f"--n_sample_gens must be at least 1, got {n_sample_gens}")
        if max_tgt_len <= MIN_NEW_TOKENS:
            raise CappyError(f"--max_tgt_len must be above {MIN_NEW_TOKENS}, got {max_tgt_len}")
        self.n_sample_gens = n_sample_gens
        self.per_device_batch_size = per_device_batch_size
        self.max_src_len = max_src_len
        self.max_tgt_len = max_tgt_len
        # Loaded on the host: a large model never fills one accelerator before sharding.
        self.generator = load_generator(model_name_or_path, dtype=dtype)
        self.tokenizer, self.is_seq2seq = self.generator.tokenizer, self.generator.is_seq2seq
        if not self.is_seq2seq:
            # A decoder-only prompt must keep its end (the question), not its start.
            self.tokenizer.truncation_side = "left"
        self.devices = devices_for(n_model_shards, jax_seed, verbose)
        if verbose and writes_outputs():
            copies = self.devices.data_parallel
            print(f"generating on {jax.device_count()} devices: {copies} model "
                  f"cop{'y' if copies == 1 else 'ies'} of {n_model_shards} device"
                  f"{'' if n_model_shards == 1 else 's'}", file=sys.stderr)
        self._param_shardings = self.devices.parameter_shardings(self.generator.params)
        self.params = place(self.generator.params, self._param_shardings)
        self._steps = {}

    # ---- tokenization and collation -------------------------------------------------

    def _encode_sources(self, texts):
        return self.tokenizer(list(texts), max_length=self.max_src_len, truncation=True,
                              add_special_tokens=True)["input_ids"]

    def _encode_targets(self, texts):
        if self.is_seq2seq:
            return self.tokenizer(list(texts), max_length=self.max_tgt_len, truncation=True,
                                  add_special_tokens=True)["input_ids"]
        # Decoder-only: the response's own tokens, closed by end-of-sequence.
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return [seq[:self.max_tgt_len - 1] + [eos] for seq in ids]

    def _collate_sources(self, examples):
        src = [ex["src_ids"] for ex in examples]
        width = bucket_length(max(map(len, src)), self.max_src_len)
        ids, mask = pad_batch(src, width, self.tokenizer.pad_token_id, left=not self.is_seq2seq)
        batch = {"input_ids": ids, "attention_mask": mask}
        for key, dtype in SAMPLING_SETTINGS.items():  # per-row sampling settings, if any
            if key in examples[0]:
                batch[key] = np.array([ex[key] for ex in examples], dtype)
        return batch

    def _collate_pairs(self, examples):
        batch = self._collate_sources(examples)
        tgt = [ex["tgt_ids"] for ex in examples]
        width = bucket_length(max(map(len, tgt)), self.max_tgt_len)
        batch["labels"], batch["label_mask"] = pad_batch(tgt, width, self.tokenizer.pad_token_id)
        return batch

    # ---- model steps ----------------------------------------------------------------

    def _generate_step(self, rng, params, batch, settings):
        """One batch of one decoding (a DECODINGS entry: transformers' generate() arguments,
        the generation config's defaults for the rest)."""
        generator = self.generator
        prefill, step, prompt, max_length = search_functions(
            generator, batch["input_ids"], batch["attention_mask"], self.max_tgt_len)
        prompt_length = prompt.shape[1]
        common = dict(max_length=max_length, min_length=MIN_NEW_TOKENS + (
            0 if self.is_seq2seq else prompt_length), eos_id=generator.eos_token_id,
            pad_id=generator.pad_token_id, **generator.token_rules)
        if settings.get("num_beams", 1) > 1:
            sequences = decoding.beam_search(params, prefill, step, prompt,
                                             num_beams=settings["num_beams"], **common,
                                             **generator.beam_defaults)
        elif settings.get("do_sample"):  # the settings come per row, in the batch
            sequences = decoding.greedy_or_sample(
                params, prefill, step, prompt, rng=rng, max_top_k=self._max_top_k(), **common,
                **{key: batch[key] for key in SAMPLING_SETTINGS})
        else:
            sequences = decoding.greedy_or_sample(params, prefill, step, prompt, **common)
        return sequences if self.is_seq2seq else sequences[:, prompt_length:]

    def _sampling_settings(self, name):
        """A sampling decoding's temperature, top_k and top_p (the generation config's
        values where DECODINGS leaves them: top_k 50 for plain sampling)."""
        return {key: DECODINGS[name].get(key, default)
                for key, default in self.generator.sampling_defaults.items()}

    def _max_top_k(self):
        """The largest top_k of the sampling decodings, or None when one keeps every
        token (then sampling sorts the whole vocabulary)."""
        top_ks = [self._sampling_settings(name)["top_k"] for name, settings in DECODINGS.items()
                  if settings.get("do_sample")]
        return max(top_ks) if all(k and k > 0 for k in top_ks) else None

    def _log_likelihood_step(self, rng, params, batch):
        del rng
        logits = target_logits(self.generator, params, batch)
        return _token_log_likelihoods(logits, batch["labels"], batch["label_mask"])

    def _decode(self, sequences):
        texts = self.tokenizer.batch_decode(np.asarray(sequences), skip_special_tokens=True)
        return texts if self.is_seq2seq else [text.strip() for text in texts]

    def _step(self, name):
        """(collate, compiled step, output) of a decoding, or of "log_likelihood"."""
        if name not in self._steps:
            if name == "log_likelihood":
                collate, per_device = self._collate_pairs, self._log_likelihood_step

                def output(preds):
                    return [{key: float(preds[key][i]) for key in LOG_LIKELIHOOD_KEYS}
                            for i in range(len(preds["log_likelihood_sum"]))]
            else:
                settings = {"do_sample": True} if name == SAMPLE else DECODINGS[name]
                collate, output = self._collate_sources, self._decode

                def per_device(rng, params, batch):
                    return self._generate_step(rng, params, batch, settings)
            self._steps[name] = (collate, self._compile(per_device), output)
        return self._steps[name]

    def _compile(self, per_device):
        """`per_device(key, params, rows)` as one program over the mesh, taking a step key,
        the placed parameters and the global batch. Each model copy computes its rows with
        a key of its own, as the original's Redco did: without model shards the function
        runs on each device's rows with that device's key; with them the copies' rows are
        mapped over inside one program (the batch shaped [copies, rows, ...])."""
        from jax.sharding import PartitionSpec

        devices = self.devices
        if devices.model_sharded:
            def step(key, params, batch):
                keys = jax.random.split(key, devices.data_parallel)
                return jax.vmap(lambda k, rows: per_device(k, params, rows))(keys, batch)
        else:
            def step(key, params, batch):
                keys = jax.random.split(jax.random.split(key, 1)[0], devices.data_parallel)
                return jax.shard_map(
                    lambda keys, params, rows: per_device(keys[0], params, rows),
                    mesh=devices.mesh, in_specs=(PartitionSpec("dp"), PartitionSpec(),
                                                 PartitionSpec("dp")),
                    out_specs=PartitionSpec("dp"), check_vma=False)(keys, params, batch)
        return jax.jit(step, out_shardings=devices.sharding())

    def _run_sorted(self, name, examples, lengths, desc):
        """Run a step over examples in length order, a global batch of
        `per_device_batch_size` rows per model copy at a time (the last filled up with
        copies of the first example); return outputs in input order."""
        from cappy.engine.runtime.leader import progress_bar
        from cappy.engine.runtime.mesh import place, record_placed

        collate, step, output = self._step(name)
        devices = self.devices
        order = length_sorted_order(lengths)
        ordered = [examples[i] for i in order]
        size = devices.micro_batch_size(self.per_device_batch_size)
        ordered += ordered[:1] * (-len(ordered) % size)
        rows = devices.sharding(("dp",))
        outputs = []
        for start in progress_bar(range(0, len(ordered), size), shown=devices.progress,
                                  desc=f"{desc} (global_batch_size = {size})"):
            batch = collate(ordered[start:start + size])
            if devices.model_sharded:
                batch = jax.tree.map(lambda x: np.reshape(
                    x, (devices.data_parallel, -1) + np.shape(x)[1:]), batch)
            batch = place(batch, rows)
            record_placed("generation", jax.tree.leaves(batch)[0])
            found = jax.tree.map(lambda x: np.reshape(np.asarray(x), (size,) + x.shape[
                2 if devices.model_sharded else 1:]), step(np.asarray(devices.next_key()),
                                                          self.params, batch))
            outputs.extend(output(found))
        restored = [None] * len(examples)
        for position, index in enumerate(order):
            restored[index] = outputs[position]
        return restored

    # ---- public ---------------------------------------------------------------------

    def reseed(self, seed, name):
        """Restart the sampling randomness from (seed, name).

        Each output file gets its own stream, so a resumed run writes exactly
        what an uninterrupted one would have.
        """
        self.devices.reseed(jax.random.fold_in(jax.random.PRNGKey(seed),
                                               zlib.crc32(name.encode("utf-8"))))

    def _sample_runs(self, src_ids, decodings, n_samples, desc):
        """{decoding: [run, ...]}: beam search once, every other decoding n_samples times;
        a run holds one response per source, in input order."""
        lengths = [len(ids) for ids in src_ids]
        runs = {}
        for name in decodings:
            if name not in DECODINGS:
                raise CappyError(f"unknown decoding {name!r}; choose from {', '.join(DECODINGS)}")
            predictor, settings = name, {}
            if DECODINGS[name].get("do_sample"):
                # Every sampling decoding runs one compiled program, its settings as data.
                predictor, settings = SAMPLE, self._sampling_settings(name)
            examples = [{"src_ids": ids, **settings} for ids in src_ids]
            runs[name] = [
                self._run_sorted(predictor, examples, lengths, desc=f"{desc} {name} #{i}")
                for i in range(1 if name in DETERMINISTIC_DECODINGS else n_samples)]
        return runs

    def sample(self, instructions, decodings=tuple(DECODINGS), n_samples=None,
               desc="sampling"):
        """Responses only (no log-likelihoods): for each instruction, the list of
        its responses, decoding by decoding in the order given, beam search once
        and every other decoding `n_samples` times (default: n_sample_gens)."""
        if not instructions:
            return []
        runs = self._sample_runs(self._encode_sources(instructions), decodings,
                                 n_samples or self.n_sample_gens, desc)
        return [[run[row] for name in decodings for run in runs[name]]
                for row in range(len(instructions))]

    def generate(self, instructions, desc="generating"):
        """Candidates for each instruction: a list of {decoding: [candidate, ...]}.

        Each candidate is {"response", "log_likelihood_sum", "log_likelihood_mean"}.
        """
        if not instructions:
            return []
        src_ids = self._encode_sources(instructions)
        responses = self._sample_runs(src_ids, DECODINGS, self.n_sample_gens, desc)

        # Score each distinct (instruction, response) pair once.
        pair_index = {}
        for name, runs in responses.items():
            for run in runs:
                for row, response in enumerate(run):
                    pair_index.setdefault((row, response), len(pair_index))
        pairs = list(pair_index)
        tgt_ids = self._encode_targets([response for _, response in pairs])
        ll_examples = [{"src_ids": src_ids[row], "tgt_ids": tgt}
                       for (row, _), tgt in zip(pairs, tgt_ids)]
        # Sort by source then target length so both paddings stay tight.
        ll_lengths = [len(ex["src_ids"]) * (self.max_tgt_len + 1) + len(ex["tgt_ids"])
                      for ex in ll_examples]
        scores = self._run_sorted("log_likelihood", ll_examples, ll_lengths,
                                      desc=f"{desc} log-likelihood")

        candidates = []
        for row in range(len(instructions)):
            candidates.append({
                name: [{"response": run[row], **scores[pair_index[(row, run[row])]]}
                       for run in runs]
                for name, runs in responses.items()})
        return candidates
