"""Side-by-side speed measurements: the project's paths against the original's.

Everything runs in one process on the same random weights and the same data:

- scoring, original: the release's model class, transformers 4's Flax RoBERTa
  (under transformers 5, which has none, cappy's RoBERTa on the same rows: see
  `original_model_scores`), every pair padded to max_length, batches in input
  order, duplicates scored again (the release's path);
- scoring, cappy: `cappy.engine.scoring.PairScorer` (each distinct pair once, pairs
  packed into rows of two widths, `cappy.engine.roberta`);
- scoring, PyTorch peer (optional): transformers' PyTorch model, pairs sorted
  by length, each batch padded to its own longest pair;
- finetuning, original: the release's loop (Redco's Trainer, the release's
  model as above, every pair padded to max_length, micro-batches of 8 accumulated 16 at a
  time by optax.MultiSteps); buckets: the same loop with each micro-batch padded
  to its power-of-two bucket (this project's path before packing); cappy: the
  packed trainer (`cappy.engine.training`) on the same optimizer updates. Each runs two
  epochs: the first compiles, the second shows the speed a 102,400-example run
  lives at.

Each scoring path is called twice on the same pairs: the first call compiles
every batch shape it meets (what a short run pays), the second runs compiled
(what a long run, such as a 220,000-row PromptSource file, lives at). Times are
wall-clock seconds of the whole path: tokenizing, batching, the model, the
scores back in input order. FLOPs count the work each task needs: each distinct
pair's (each training example's) real tokens, attention within the pair, the
backward pass as twice the forward. Achieved FLOP/s are against this machine's
measured matrix-product peak. "Real tokens" is the share of the positions a
path computes that are real tokens.
"""

import os
import platform
import time

import numpy as np

MODEL_SHAPES = {  # layers, hidden, heads, intermediate (RoBERTa sizes)
    "micro": (2, 64, 2, 256),  # for the test of this script
    "tiny": (4, 256, 4, 1024),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}
ORIGINAL, BUCKETS, CAPPY, PYTORCH = ("original (fixed padding)", "buckets (cappy before packing)",
                                     "cappy", "pytorch (sorted, dynamic padding)")
GENERATOR_SHAPES = {  # FLAN-T5-style (gated GELU, untied head): d_model, d_ff, layers, heads
    "micro": (32, 64, 2, 2),
    "tiny": (256, 1024, 4, 4),
    "large": (1024, 2816, 24, 16),  # FLAN-T5-large
}


def make_model(size, tokenizer, dtype="float32", seed=0, dropout=0.1):
    """A random RoBERTa scorer of a named shape for `tokenizer` (`cappy.engine.checkpoints.CappyModel`)."""
    from transformers import RobertaConfig

    from cappy.engine import roberta
    from cappy.engine.checkpoints import CappyModel

    layers, hidden, heads, intermediate = MODEL_SHAPES[size]
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate,
        max_position_embeddings=514, type_vocab_size=1, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, problem_type="regression",
        architectures=["RobertaForSequenceClassification"])
    return CappyModel(config=config, params=roberta.init_params(config, seed), dtype=dtype,
                      source=f"a random {size} RoBERTa")


def original_model_scores(model):
    """(scores(params, batch, dropout_rng), name): the original release's model on one
    padded pair per row. That is transformers 4's Flax RoBERTa where it is installed;
    transformers 5 has no Flax classes, so there it is cappy's own RoBERTa on the same
    padded rows (the same arithmetic but the last layer's, which it computes for the
    first token only: about 1/layers less work than the original did)."""
    from cappy.engine.checkpoints import quiet_transformers

    try:
        from transformers import FlaxRobertaForSequenceClassification
    except (ImportError, AttributeError):
        from cappy.engine import roberta

        def own(params, batch, dropout_rng):
            return roberta.padded_scores(params, model.config, batch["input_ids"],
                                         batch["attention_mask"], batch.get("token_type_ids"),
                                         dropout_rng=dropout_rng)
        return own, "cappy's RoBERTa on the original's padded rows"
    with quiet_transformers():
        module = FlaxRobertaForSequenceClassification(model.config, _do_init=False)

    def flax(params, batch, dropout_rng):
        return module(**batch, params=params, dropout_rng=dropout_rng,
                      train=dropout_rng is not None).logits[..., 0]
    return flax, "transformers' Flax RoBERTa"


def _token_pool(tokenizer):
    from cappy.engine.tiny_models import sample_texts

    ids = tokenizer(" ".join(sample_texts()), add_special_tokens=False)["input_ids"]
    return np.asarray(ids)


def promptsource_like_pairs(tokenizer, n_prompts=360, n_choices=4, seed=0):
    """Classification prompts: long and short instructions, short answer choices.

    Instruction lengths follow a log-normal around 105 tokens (cut at 16 and
    550), like PromptSource's mix of NLI, coreference and story prompts.
    """
    rng = np.random.default_rng(seed)
    pool = _token_pool(tokenizer)
    lengths = np.clip(rng.lognormal(np.log(105), 0.6, n_prompts), 16, 550).astype(int)
    pairs = []
    for length in lengths:
        start = rng.integers(0, len(pool) - length)
        instruction = tokenizer.decode(pool[start:start + length])
        for _ in range(n_choices):
            start = rng.integers(0, len(pool) - 8)
            pairs.append((instruction, tokenizer.decode(pool[start:start + rng.integers(1, 8)])))
    return list(dict.fromkeys(pairs))


def bigbench_candidate_rows(task="auto_categorization", split="train", n_candidates=17,
                            seed=0):
    """The shipped BIG-Bench sample's rows with 17 candidates each.

    Candidates are the task's references drawn with replacement, so rows repeat
    candidates the way sampled generations do.
    """
    from cappy.bigbench.candidates import SAMPLES_KEY
    from cappy.engine.recipes import DECODINGS
    from cappy.engine.io import read_jsonl
    from cappy.engine.tiny_models import SAMPLE_DIR

    rows = read_jsonl(os.path.join(SAMPLE_DIR, f"{task}_{split}.jsonl"))
    references = [ref for row in rows for ref in row["references"]]
    rng = np.random.default_rng(seed)
    counts = [1] + [4] * (len(DECODINGS) - 1)  # beam4 once, 4 samples of each other decoding
    assert sum(counts) == n_candidates
    out = []
    for row in rows:
        texts = list(rng.choice(references, n_candidates))
        samples, at = {}, 0
        for decoding, count in zip(DECODINGS, counts):
            samples[decoding] = [{"response": str(t), "log_likelihood_sum": -1.0,
                                  "log_likelihood_mean": -1.0} for t in texts[at:at + count]]
            at += count
        out.append({**row, SAMPLES_KEY: samples})
    return out


def model_flops(config, lengths, training=False):
    """Matrix-product FLOPs of the encoder on sequences of these real lengths."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    inner = config.intermediate_size
    lengths = np.asarray(lengths, np.float64)
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * inner)  # QKV, output, feed-forward
    attention = 2 * 2 * hidden * lengths  # scores and weighted sum, per token
    flops = layers * np.sum(lengths * (per_token + attention))
    return float(flops * (3 if training else 1))  # backward ~ twice the forward


def matmul_peak_flops(dtype="float32", repeats=5):
    """This machine's matrix-product FLOP/s: the best of a few large shapes."""
    import jax
    import jax.numpy as jnp

    product = jax.jit(lambda x, y: x @ y)
    best = 0.0
    for m, k, n in ((2048, 2048, 2048), (8192, 1024, 1024), (8192, 1024, 4096)):
        a = jnp.ones((m, k), getattr(jnp, dtype))
        b = jnp.ones((k, n), getattr(jnp, dtype))
        product(a, b).block_until_ready()
        for _ in range(repeats):
            start = time.perf_counter()
            product(a, b).block_until_ready()
            best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


# ---- scoring paths --------------------------------------------------------------------

def _encode(tokenizer, pairs, max_length):
    from cappy.engine.scoring import encode_pairs

    return encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], max_length,
                        "longest_first")


def original_scorer(model, tokenizer, batch_size, max_length):
    """The release's scoring: transformers' Flax model, every pair padded to max_length,
    batches in input order, duplicates scored again. Returns score(pairs)."""
    import jax

    from cappy.engine.scoring import collate_pairs

    scores_fn, _ = original_model_scores(model)
    forward = jax.jit(lambda params, batch: scores_fn(params, batch, None))

    def score(pairs):
        encoded = _encode(tokenizer, pairs, max_length)
        scores = []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            chunk = chunk + [chunk[0]] * (batch_size - len(chunk))  # fixed batch shape
            batch = collate_pairs(chunk, tokenizer.pad_token_id, max_length, bucketed=False)
            scores.extend(np.asarray(forward(model.params, batch), np.float32))
        return np.asarray(scores[:len(pairs)], np.float32)

    return score


def cappy_scorer(model, tokenizer, batch_size, max_length):
    """The project's scoring (cappy.engine.scoring.PairScorer): each distinct pair once,
    pairs packed into rows. Returns score(pairs, params)."""
    from cappy.engine.redco_adapter import make_deployer
    from cappy.engine.scoring import PairScorer

    scorer = PairScorer(model, tokenizer, make_deployer(0), max_length=max_length,
                        per_device_batch_size=batch_size)

    def score(pairs, params=None):
        return scorer.score([p[0] for p in pairs], [p[1] for p in pairs], params,
                            desc="cappy scoring")

    score.scorer = scorer
    return score


def torch_peer(model, dtype):
    """transformers' PyTorch model on the same parameters (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    from cappy.engine.checkpoints import torch_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch_model(model, dtype).to(device)


def torch_scorer(torch_model, tokenizer, batch_size, max_length):
    """The PyTorch peer: length-sorted batches padded to their longest pair.
    Returns score(pairs)."""
    import torch

    from cappy.engine.padding import length_sorted_order, pad_batch

    device = next(torch_model.parameters()).device

    def score(pairs):
        encoded = _encode(tokenizer, pairs, max_length)
        order = length_sorted_order([len(e["input_ids"]) for e in encoded])
        scores = np.empty(len(pairs), np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                seqs = [encoded[i]["input_ids"] for i in index]
                ids, mask = pad_batch(seqs, max(map(len, seqs)), tokenizer.pad_token_id)
                logits = torch_model(
                    input_ids=torch.as_tensor(ids, device=device).long(),
                    attention_mask=torch.as_tensor(mask, device=device).long()).logits[:, 0]
                scores[index] = logits.float().cpu().numpy()
        return scores

    return score


def path_computed_positions(path_name, lengths, distinct_lengths, batch_size, max_length,
                            score):
    """Token positions a scoring path computes for these pairs (padding included)."""
    from cappy.engine import packing

    if path_name == ORIGINAL:  # every pair, batches of batch_size x max_length
        return -(-len(lengths) // batch_size) * batch_size * max_length
    if path_name == CAPPY:  # distinct pairs, packed rows, fixed batch shapes
        rows = packing.pack_rows(distinct_lengths, packing.row_widths(max_length))
        return packing.computed_positions(rows, score.scorer.tokens_per_batch())
    ordered = sorted(lengths)  # the PyTorch peer: every pair, padded to its batch's longest
    return sum(max(ordered[i:i + batch_size]) * len(ordered[i:i + batch_size])
               for i in range(0, len(ordered), batch_size))


# ---- finetuning paths ------------------------------------------------------------------

def finetune_examples(tokenizer, rows, train_size, max_length, seed=11111):
    """The paper's finetuning examples for the rows, tokenized as cappy_bigbench.py does."""
    from cappy.bigbench.examples import build_finetune_examples
    from cappy.engine.scoring import encode_examples

    examples, _ = build_finetune_examples(rows, train_size, seed)
    return encode_examples(tokenizer, examples, max_length, "longest_first")


def original_training_loop(params, scores_fn, train_size, seed, per_device_batch_size,
                           accumulate, learning_rate, max_length, pad_id, bucketed=False,
                           lr_schedule="paper"):
    """The original release's finetuning loop, a Redco Trainer to call `.train(examples,
    per_device_batch_size)` on: examples shuffled with the deployer's first key, every
    micro-batch padded to max_length (`bucketed`: to its power-of-two bucket), MSE on
    `scores_fn(params, batch, dropout_rng)`, AdamW inside optax.MultiSteps
    accumulating `accumulate` micro-batches, the paper's schedule."""
    import jax.numpy as jnp
    import optax
    from redco import Deployer, Trainer

    from cappy.engine.scoring import collate_pairs
    from cappy.engine.training import decay_mask, learning_rate_schedule

    deployer = Deployer(jax_seed=seed, verbose=False)
    _, global_micro = deployer.get_local_global_micro_batch_size(per_device_batch_size)
    schedule = learning_rate_schedule(learning_rate, 0.1, train_size, global_micro, accumulate,
                                      lr_schedule)
    optimizer = optax.MultiSteps(optax.adamw(learning_rate=schedule, weight_decay=0.0,
                                             mask=decay_mask), every_k_schedule=accumulate)

    def loss_fn(rng, state, params, batch, is_training):
        labels = batch.pop("labels")
        return jnp.mean(jnp.square(scores_fn(params, batch, rng if is_training else None)
                                   - labels))

    return Trainer(deployer=deployer, apply_fn=None, loss_fn=loss_fn, params=params,
                   optimizer=optimizer, accumulate_grad_batches=accumulate,
                   collate_fn=lambda examples: collate_pairs(examples, pad_id, max_length,
                                                             "label", bucketed))


def training_positions(path_name, examples, seed, global_micro, accumulate, max_length,
                       trainer=None):
    """Token positions one epoch of a finetuning path computes."""
    from cappy.engine.padding import bucket_length
    from cappy.engine.redco_adapter import original_example_order
    from cappy.engine.training import original_updates, pack_update, plan_steps, rows_per_step_for

    n_micro = len(examples) // global_micro
    if path_name == ORIGINAL:
        return n_micro * global_micro * max_length
    if path_name == BUCKETS:
        order = original_example_order(seed, len(examples))
        lengths = [len(examples[i]["input_ids"]) for i in order]
        return sum(global_micro * bucket_length(max(lengths[i:i + global_micro]), max_length)
                   for i in range(0, n_micro * global_micro, global_micro))
    updates = original_updates(examples, seed, global_micro * accumulate)
    packed = [pack_update([len(e["input_ids"]) for e in update], max_length)
              for update in updates]
    fixed = rows_per_step_for(packed, trainer.n_devices, trainer.step_tokens)
    return sum(trainer.n_devices * size * width for update in packed
               for width, size, _ in plan_steps(update, trainer.n_devices, trainer.step_tokens,
                                                fixed))


def train_twice(path_name, model, tokenizer, examples, per_device_batch_size, accumulate,
                max_length, seed=11111):
    """Two epochs of one finetuning path, each timed: the first compiles every step shape
    it meets, the second runs compiled. Returns (host params after the first epoch, whose
    updates every path shares; s1, s2, computed positions of an epoch)."""
    import jax

    from cappy.engine.redco_adapter import make_deployer
    from cappy.engine.training import finetune_trainer, original_updates, train_updates

    seconds = []
    if path_name == CAPPY:
        trainer, per_update = finetune_trainer(
            model, tokenizer, make_deployer(seed), 2 * len(examples), seed,
            per_device_batch_size, accumulate, max_length=max_length)
        updates = original_updates(examples, seed, per_update)

        def epoch():
            train_updates(trainer, updates, progress=False)
            jax.block_until_ready(trainer.params)

        def current():
            return trainer.host_params()
    else:
        trainer = original_training_loop(
            model.params, original_model_scores(model)[0], 2 * len(examples), seed,
            per_device_batch_size, accumulate, 2e-5, max_length, tokenizer.pad_token_id,
            bucketed=path_name == BUCKETS)

        def epoch():
            trainer.train(examples=examples, per_device_batch_size=per_device_batch_size)
            jax.block_until_ready(trainer.state.params)

        def current():
            return jax.tree.map(lambda x: np.asarray(x[0]), trainer.state.params)
    for index in range(2):
        start = time.perf_counter()
        epoch()
        seconds.append(time.perf_counter() - start)
        if index == 0:  # the second epoch's order is the loop's own (Redco reshuffles)
            params = current()
    positions = training_positions(path_name, examples, seed,
                                   per_device_batch_size * jax.device_count(), accumulate,
                                   max_length, trainer)
    return params, seconds[0], seconds[1], positions


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def machine_report(dtype):
    """The device, the versions, and this machine's measured matrix-product peak."""
    import jax

    device = jax.devices()[0]
    return {"device": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
            "dtype": dtype, "matmul_peak_tflops": matmul_peak_flops(dtype) / 1e12,
            "python": platform.python_version(), "jax": jax.__version__}


def run_benchmark(model_size="tiny", dtype="float32", batch_size=32, max_length=512,
                  train_size=256, per_device_train_batch=8, accumulate=16, with_torch=True,
                  n_prompts=360, dropout=0.1, log=print):
    """Run every measurement; return a JSON-ready dict of figures."""
    import jax

    from cappy.bigbench.candidates import all_candidates
    from cappy.engine.tiny_models import make_scorer_tokenizer, sample_texts

    tokenizer = make_scorer_tokenizer(sample_texts())
    model = make_model(model_size, tokenizer, dtype, dropout=dropout)
    report = {**machine_report(dtype), "original_model": original_model_scores(model)[1],
              "model_size": model_size, "shape": dict(zip(
                  ("layers", "hidden", "heads", "intermediate"), MODEL_SHAPES[model_size])),
              "batch_size": batch_size, "max_length": max_length, "dropout": dropout,
              "scoring": {}, "finetuning": {}}
    peak = report["matmul_peak_tflops"] * 1e12

    rows = bigbench_candidate_rows()
    datasets = {
        "promptsource_like": promptsource_like_pairs(tokenizer, n_prompts=n_prompts),
        "bigbench_candidates": [(row["instruction"], cand["response"])
                                for row in rows for cand in all_candidates(row)],
    }
    peer = torch_peer(model, dtype) if with_torch else None
    if with_torch and peer is None:
        log("note: PyTorch is not installed; the PyTorch peer is skipped")
    for data_name, pairs in datasets.items():
        lengths = [len(e["input_ids"]) for e in _encode(tokenizer, pairs, max_length)]
        distinct_lengths = list({pair: n for pair, n in zip(pairs, lengths)}.values())
        # The work scoring needs: each distinct pair once, no padding.
        flops = model_flops(model.config, distinct_lengths)
        scorers = {ORIGINAL: original_scorer, CAPPY: cappy_scorer}
        if peer is not None:
            scorers[PYTORCH] = lambda *a: torch_scorer(peer, *a[1:])
        results, entry = {}, {"pairs": len(pairs), "distinct_pairs": len(set(pairs)),
                              "mean_tokens": float(np.mean(lengths)),
                              "max_tokens": int(np.max(lengths)), "paths": {}}
        for path_name, make_scorer in scorers.items():
            log(f"scoring {data_name}: {path_name} ...")
            score = make_scorer(model, tokenizer, batch_size, max_length)
            scores, first = timed(score, pairs)  # compiles every shape it meets
            _, second = timed(score, pairs)  # compiled: the speed of a long run
            results[path_name] = scores
            entry["paths"][path_name] = {
                "first_call_seconds": first, "seconds": second,
                "pairs_per_second": len(pairs) / second,
                "first_call_pairs_per_second": len(pairs) / first,
                "tflops": flops / second / 1e12, "fraction_of_peak": flops / second / peak,
                "real_token_fraction": sum(distinct_lengths) / path_computed_positions(
                    path_name, lengths, distinct_lengths, batch_size, max_length, score),
                "max_abs_difference_from_original": float(np.max(np.abs(
                    scores - results[ORIGINAL])))}
        base = entry["paths"][ORIGINAL]
        for figures in entry["paths"].values():
            figures["speedup_over_original"] = base["seconds"] / figures["seconds"]
            figures["first_call_speedup_over_original"] = (base["first_call_seconds"]
                                                           / figures["first_call_seconds"])
        report["scoring"][data_name] = entry

    per_update = per_device_train_batch * jax.device_count() * accumulate
    if train_size < per_update:
        from cappy.engine.errors import CappyError

        raise CappyError(f"--train_size {train_size} is less than one optimizer update "
                         f"({per_update} examples)")
    # Whole optimizer updates only, so that every path computes the same examples.
    examples = finetune_examples(tokenizer, rows, train_size // per_update * per_update,
                                 max_length)
    train_lengths = [len(e["input_ids"]) for e in examples]
    flops = model_flops(model.config, train_lengths, training=True)
    params = {}
    for path_name in (ORIGINAL, BUCKETS, CAPPY):
        log(f"finetuning: {path_name} ...")
        params[path_name], first, compiled, positions = train_twice(
            path_name, model, tokenizer, examples, per_device_train_batch, accumulate,
            max_length)
        report["finetuning"][path_name] = {
            "first_epoch_seconds": first, "seconds": compiled,
            "examples_per_second": len(examples) / compiled,
            "tflops": flops / compiled / 1e12, "fraction_of_peak": flops / compiled / peak,
            "real_token_fraction": sum(train_lengths) / positions,
            # one epoch's compilation, then the paper's 102,400 examples compiled
            "projected_minutes_for_102400_examples": (
                max(first - compiled, 0) + 102400 * compiled / len(examples)) / 60}
    base = report["finetuning"][ORIGINAL]["seconds"]
    for figures in report["finetuning"].values():
        figures["speedup_over_original"] = base / figures["seconds"]
    report["finetuning_examples"] = len(examples)
    report["finetuning_mean_tokens"] = float(np.mean(train_lengths))
    # The first epoch's optimizer updates, computed three ways: the models score alike.
    score = cappy_scorer(model, tokenizer, batch_size, max_length)
    finetuned = {name: score(datasets["bigbench_candidates"], trained)
                 for name, trained in params.items()}
    report["finetuned_scores_max_abs_difference"] = max(
        float(np.max(np.abs(finetuned[name] - finetuned[ORIGINAL]))) for name in params)
    return report


# ---- candidate generation ------------------------------------------------------------

def seeded_parameters(shapes, seed, std, norm_names=("scale", "weight")):
    """Parameters drawn in sorted-name order from one seeded generator: weights normal
    with `std`, biases small, norm scales near one. The same tree gives the same
    numbers whichever code built the tree, so two implementations can be compared
    on identical weights."""
    from cappy.engine.checkpoints import flatten, unflatten

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


def t5_generator_config(size, tokenizer):
    from transformers import T5Config

    d_model, d_ff, layers, heads = GENERATOR_SHAPES[size]
    return T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // heads, d_ff=d_ff,
                    num_layers=layers, num_decoder_layers=layers, num_heads=heads,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


def save_seeded_generator(folder, size, tokenizer, seed=0, eos_boost=3.0):
    """A random FLAN-T5-shaped generator on seeded weights (end-of-sequence made likelier,
    so candidates end at varied lengths as a trained model's do), saved with its
    tokenizer to `folder`. The weights are those the benchmark used before the switch
    from transformers' Flax T5 (the same tree, the same draws)."""
    from cappy.engine import t5
    from cappy.engine.tiny_models import save_generator

    config = t5_generator_config(size, tokenizer)
    params = seeded_parameters(t5.parameter_shapes(config), seed,
                               std=(1.0 / config.d_model) ** 0.5)
    params["lm_head"]["kernel"][:, config.eos_token_id] *= eos_boost
    return save_generator(params, config, tokenizer, folder)


def run_generation_benchmark(size="tiny", n_instructions=24, per_device_batch_size=8,
                             max_tgt_len=64, dtype="float32", log=print):
    """Candidate generation as scripts/bigbench_flan_generate.py runs it (17 candidates per
    instruction and their log-likelihoods) with a seeded random FLAN-T5-shaped model on
    the shipped BIG-Bench sample's instructions; called twice, the first compiling."""
    import tempfile

    from cappy.engine.generation import CandidateGenerator
    from cappy.engine.io import read_jsonl
    from cappy.engine.tiny_models import SAMPLE_DIR, make_generator_tokenizer, sample_texts

    rows = []
    for name in sorted(os.listdir(SAMPLE_DIR)):
        if name.endswith(".jsonl"):
            rows += read_jsonl(os.path.join(SAMPLE_DIR, name))
    instructions = [row["instruction"] for row in rows][:n_instructions]
    with tempfile.TemporaryDirectory() as folder:
        save_seeded_generator(folder, size, make_generator_tokenizer(sample_texts()))
        generator = CandidateGenerator(folder, per_device_batch_size=per_device_batch_size,
                                       max_tgt_len=max_tgt_len, dtype=dtype, verbose=False)
        calls = []
        for call in range(2):
            log(f"generating: call {call + 1} of 2 ...")
            generator.reseed(0, "benchmark")
            candidates, seconds = timed(generator.generate, instructions)
            calls.append(seconds)
    responses = [c["response"] for row in candidates for cands in row.values() for c in cands]
    tokens = sum(map(len, generator._encode_targets(responses)))
    return {"size": size, "shape": dict(zip(("d_model", "d_ff", "layers", "heads"),
                                            GENERATOR_SHAPES[size])),
            "instructions": len(instructions), "candidates": len(responses),
            "candidate_tokens": tokens, "first_call_seconds": calls[0], "seconds": calls[1],
            "candidates_per_second": len(responses) / calls[1],
            "candidate_tokens_per_second": tokens / calls[1],
            "first_call_candidate_tokens_per_second": tokens / calls[0],
            "beam4": [row["beam4"][0]["response"] for row in candidates]}


def format_report(report):
    """The figures as markdown tables."""
    lines = [f"device: {report['device']}; dtype {report['dtype']}; matmul peak "
             f"{report['matmul_peak_tflops']:.3f} TFLOP/s; jax {report['jax']}", ""]
    if "scoring" in report:
        lines += _scoring_and_finetuning_lines(report)
    if report.get("generation"):
        g = report["generation"]
        lines += ["", f"generation: {g['instructions']} instructions x 17 candidates with "
                      f"log-likelihoods, a seeded random FLAN-T5-shaped model {g['shape']}", "",
                  "| first call s | compiled s | candidates/s | candidate tokens/s |",
                  "|---:|---:|---:|---:|",
                  f"| {g['first_call_seconds']:.1f} | {g['seconds']:.1f} | "
                  f"{g['candidates_per_second']:.1f} | {g['candidate_tokens_per_second']:.1f} |"]
    return "\n".join(lines)


def _scoring_and_finetuning_lines(report):
    lines = [f"scoring and finetuning model: {report['model_size']} {report['shape']}; the "
             f"original paths run {report.get('original_model', 'transformers Flax RoBERTa')}",
             ""]
    for data_name, entry in report["scoring"].items():
        lines += [f"scoring {data_name}: {entry['pairs']} pairs ({entry['distinct_pairs']} "
                  f"distinct), {entry['mean_tokens']:.0f} tokens on average, up to "
                  f"{entry['max_tokens']}", "",
                  "| path | first call s | speed-up | compiled s | pairs/s | speed-up | "
                  "TFLOP/s | of peak | real tokens | max abs diff |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, f in entry["paths"].items():
            lines.append(f"| {name} | {f['first_call_seconds']:.1f} | "
                         f"{f['first_call_speedup_over_original']:.2f}x | {f['seconds']:.1f} | "
                         f"{f['pairs_per_second']:.1f} | "
                         f"{f['speedup_over_original']:.2f}x | {f['tflops']:.3f} | "
                         f"{100 * f['fraction_of_peak']:.1f}% | "
                         f"{100 * f['real_token_fraction']:.0f}% | "
                         f"{f['max_abs_difference_from_original']:.1e} |")
        lines.append("")
    lines += [f"finetuning: 2 epochs of {report['finetuning_examples']} examples of a "
              "BIG-Bench task (the first compiles), "
              f"{report['finetuning_mean_tokens']:.0f} tokens on average; the finetuned "
              f"models' scores differ from the original's by at most "
              f"{report['finetuned_scores_max_abs_difference']:.1e}"
              + (" (dropout masks differ between the paths, so the runs are equally valid "
                 "random draws; with --dropout 0 they agree within float noise)"
                 if report["dropout"] else ""),
              "", "| path | first epoch s | compiled epoch s | examples/s | speed-up | TFLOP/s | "
              "of peak | real tokens | 102,400 examples |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, f in report["finetuning"].items():
        lines.append(f"| {name} | {f['first_epoch_seconds']:.1f} | {f['seconds']:.1f} | "
                     f"{f['examples_per_second']:.1f} | "
                     f"{f['speedup_over_original']:.2f}x | {f['tflops']:.3f} | "
                     f"{100 * f['fraction_of_peak']:.1f}% | "
                     f"{100 * f['real_token_fraction']:.0f}% | "
                     f"{f['projected_minutes_for_102400_examples']:.1f} min |")
    return lines
