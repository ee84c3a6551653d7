"""Side-by-side speed measurements: the project's paths against the original's.

Everything runs in one process on the same random weights and the same data:

- scoring, original: transformers' Flax module, every pair padded to
  max_length, batches in input order, duplicates scored again (the release's
  path);
- scoring, cappy: `cappy.scoring.PairScorer` (each distinct pair once, pairs
  packed into rows of two widths, `cappy.fast_roberta`);
- scoring, PyTorch peer (optional): transformers' PyTorch model, pairs sorted
  by length, each batch padded to its own longest pair;
- finetuning, original and cappy: `cappy.training.make_trainer` on the same
  examples and batches, padded to max_length (original) or to the bucket;
  two epochs, so that the second shows the compiled speed that a 102,400-example
  run lives at.

Each scoring path is called twice on the same pairs: the first call compiles
every batch shape it meets (what a short run pays), the second runs compiled
(what a long run, such as a 220,000-row PromptSource file, lives at). Times are
wall-clock seconds of the whole path: tokenizing, batching, the model, the
scores back in input order. Scoring FLOPs count each distinct pair's real tokens
once (no padding, no repeats): achieved FLOP/s measure the work scoring needs,
against this machine's measured matrix-product peak. "Real tokens" is the share
of the positions a path computes that are real tokens of distinct pairs.
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


def make_model(size, tokenizer, dtype="float32", seed=0, dropout=0.1):
    """A random RoBERTa scorer of a named shape, built for `tokenizer`."""
    import jax.numpy as jnp
    from transformers import FlaxRobertaForSequenceClassification, RobertaConfig

    layers, hidden, heads, intermediate = MODEL_SHAPES[size]
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=intermediate,
        max_position_embeddings=514, type_vocab_size=1, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout)
    return FlaxRobertaForSequenceClassification(config, seed=seed, dtype=getattr(jnp, dtype))


def _token_pool(tokenizer):
    from cappy.tiny_models import sample_texts

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


def bigbench_candidate_rows(task="auto_categorization", n_candidates=17, seed=0):
    """The shipped BIG-Bench sample's rows with 17 candidates each.

    Candidates are the task's references drawn with replacement, so rows repeat
    candidates the way sampled generations do.
    """
    from cappy.candidates import DECODINGS, SAMPLES_KEY
    from cappy.io import read_jsonl
    from cappy.tiny_models import SAMPLE_DIR

    rows = read_jsonl(os.path.join(SAMPLE_DIR, f"{task}_train.jsonl"))
    references = [ref for row in rows for ref in row["references"]]
    rng = np.random.default_rng(seed)
    counts = [1] + [4] * (len(DECODINGS) - 1)  # beam4 once, 4 samples of each other decoding
    assert sum(counts) == n_candidates
    out = []
    for row in rows:
        texts = list(rng.choice(references, n_candidates))
        samples, at = {}, 0
        for decoding, count in zip(DECODINGS, counts):
            samples[decoding] = [{"response": t} for t in texts[at:at + count]]
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


def original_scorer(model, tokenizer, batch_size, max_length):
    """The release's scoring: transformers' module, every pair padded to max_length,
    batches in input order, duplicates scored again. Returns score(pairs)."""
    import jax

    from cappy.scoring import collate_pairs, encode_pairs

    forward = jax.jit(lambda params, batch: model(**batch, params=params,
                                                  train=False).logits[:, 0])

    def score(pairs):
        encoded = encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs],
                               max_length)
        scores = []
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            chunk = chunk + [chunk[0]] * (batch_size - len(chunk))  # fixed batch shape
            batch = collate_pairs(chunk, tokenizer.pad_token_id, max_length, bucketed=False)
            scores.extend(np.asarray(forward(model.params, batch), np.float32))
        return np.asarray(scores[:len(pairs)], np.float32)

    return score


def cappy_scorer(model, tokenizer, batch_size, max_length):
    """The project's scoring (cappy.scoring.PairScorer): each distinct pair once,
    pairs packed into rows, cappy.fast_roberta. Returns score(pairs, params)."""
    from redco import Deployer

    from cappy.scoring import PairScorer

    scorer = PairScorer(model, tokenizer, Deployer(jax_seed=0, verbose=False),
                        max_length=max_length, per_device_batch_size=batch_size)

    def score(pairs, params=model.params):
        return scorer.score([p[0] for p in pairs], [p[1] for p in pairs], params,
                            desc="cappy scoring")

    score.scorer = scorer
    return score


def torch_peer(model, dtype):
    """transformers' PyTorch model on the same weights (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    from transformers import AutoModelForSequenceClassification
    from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

    torch_model = AutoModelForSequenceClassification.from_config(model.config)
    load_flax_weights_in_pytorch_model(torch_model, model.params)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch_model.to(device=device, dtype=getattr(torch, dtype)).eval()


def torch_scorer(torch_model, tokenizer, batch_size, max_length):
    """The PyTorch peer: length-sorted batches padded to their longest pair.
    Returns score(pairs)."""
    import torch

    from cappy.batching import length_sorted_order, pad_batch
    from cappy.scoring import encode_pairs

    device = next(torch_model.parameters()).device

    def score(pairs):
        encoded = encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs],
                               max_length)
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
    from cappy import packing

    if path_name.startswith("original"):  # every pair, batches of batch_size x max_length
        return -(-len(lengths) // batch_size) * batch_size * max_length
    if path_name == "cappy":  # distinct pairs, packed rows, fixed batch shapes
        rows = packing.pack_rows(distinct_lengths, packing.row_widths(max_length))
        return packing.computed_positions(rows, score.scorer.tokens_per_batch())
    ordered = sorted(lengths)  # the PyTorch peer: every pair, padded to its batch's longest
    return sum(max(ordered[i:i + batch_size]) * len(ordered[i:i + batch_size])
               for i in range(0, len(ordered), batch_size))


def finetune_examples(tokenizer, rows, train_size, max_length, seed=11111):
    """The paper's finetuning examples for the rows, tokenized as cappy_bigbench.py does."""
    from cappy.finetune_data import build_finetune_examples
    from cappy.scoring import encode_examples

    examples, _ = build_finetune_examples(rows, train_size, seed)
    return encode_examples(tokenizer, examples, max_length)


def train_twice(model, tokenizer, examples, bucketed, per_device_batch_size, accumulate,
                max_length):
    """Two epochs of the paper's finetuning recipe, each timed: the first compiles
    every batch shape it meets, the second runs compiled. Returns (params, s1, s2)."""
    import jax
    from redco import Deployer

    from cappy.training import host_params, make_trainer

    trainer = make_trainer(model, tokenizer, Deployer(jax_seed=11111, verbose=False),
                           train_size=2 * len(examples),
                           per_device_batch_size=per_device_batch_size,
                           accumulate_grad_batches=accumulate, max_length=max_length,
                           bucketed=bucketed)
    seconds = []
    for epoch in range(2):
        start = time.perf_counter()
        trainer.train(examples=examples, per_device_batch_size=per_device_batch_size,
                      desc=f"{'cappy' if bucketed else 'original'} epoch {epoch}")
        jax.block_until_ready(trainer.state.params)
        seconds.append(time.perf_counter() - start)
    return jax.tree.map(np.asarray, host_params(trainer)), seconds[0], seconds[1]


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def run_benchmark(model_size="tiny", dtype="float32", batch_size=32, max_length=512,
                  train_size=256, per_device_train_batch=8, accumulate=16, with_torch=True,
                  n_prompts=360, dropout=0.1, log=print):
    """Run every measurement; return a JSON-ready dict of figures."""
    import jax

    from cappy.candidates import all_candidates
    from cappy.scoring import encode_pairs
    from cappy.tiny_models import make_scorer_tokenizer, sample_texts

    tokenizer = make_scorer_tokenizer(sample_texts())
    model = make_model(model_size, tokenizer, dtype, dropout=dropout)
    peak = matmul_peak_flops(dtype)
    device = jax.devices()[0]
    report = {"device": f"{jax.device_count()} x {device.device_kind} ({device.platform})",
              "model_size": model_size, "shape": dict(zip(
                  ("layers", "hidden", "heads", "intermediate"), MODEL_SHAPES[model_size])),
              "dtype": dtype, "batch_size": batch_size, "max_length": max_length,
              "dropout": dropout,
              "matmul_peak_tflops": peak / 1e12, "python": platform.python_version(),
              "jax": jax.__version__, "scoring": {}, "finetuning": {}}

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
        lengths = [len(e["input_ids"]) for e in encode_pairs(
            tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], max_length)]
        distinct_lengths = list({pair: n for pair, n in zip(pairs, lengths)}.values())
        # The work scoring needs: each distinct pair once, no padding.
        flops = model_flops(model.config, distinct_lengths)
        scorers = {"original (fixed padding)": original_scorer,
                   "cappy": cappy_scorer}
        if peer is not None:
            scorers["pytorch (sorted, dynamic padding)"] = lambda *a: torch_scorer(peer, *a[1:])
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
                    scores - results["original (fixed padding)"])))}
        base = entry["paths"]["original (fixed padding)"]
        for figures in entry["paths"].values():
            figures["speedup_over_original"] = base["seconds"] / figures["seconds"]
            figures["first_call_speedup_over_original"] = (base["first_call_seconds"]
                                                           / figures["first_call_seconds"])
        report["scoring"][data_name] = entry

    examples = finetune_examples(tokenizer, rows, train_size, max_length)
    train_lengths = [len(e["input_ids"]) for e in examples]
    flops = model_flops(model.config, train_lengths, training=True)
    params = {}
    for path_name, bucketed in (("original (fixed padding)", False), ("cappy", True)):
        log(f"finetuning: {path_name} ...")
        params[path_name], first, compiled = train_twice(
            model, tokenizer, examples, bucketed, per_device_train_batch, accumulate,
            max_length)
        report["finetuning"][path_name] = {
            "first_epoch_seconds": first, "seconds": compiled,
            "examples_per_second": len(examples) / compiled,
            "tflops": flops / compiled / 1e12, "fraction_of_peak": flops / compiled / peak,
            # one epoch's compilation, then the paper's 102,400 examples compiled
            "projected_minutes_for_102400_examples": (
                max(first - compiled, 0) + 102400 * compiled / len(examples)) / 60}
    base = report["finetuning"]["original (fixed padding)"]["seconds"]
    for figures in report["finetuning"].values():
        figures["speedup_over_original"] = base / figures["seconds"]
    report["finetuning_examples"] = len(examples)
    report["finetuning_mean_tokens"] = float(np.mean(train_lengths))
    # Same batches, padded differently: the trained models must score alike.
    score = cappy_scorer(model, tokenizer, batch_size, max_length)
    finetuned = [score(datasets["bigbench_candidates"], trained) for trained in params.values()]
    report["finetuned_scores_max_abs_difference"] = float(np.max(np.abs(
        finetuned[0] - finetuned[1])))
    return report


def format_report(report):
    """The figures as markdown tables."""
    lines = [f"device: {report['device']}; model: {report['model_size']} "
             f"{report['shape']}; dtype {report['dtype']}; matmul peak "
             f"{report['matmul_peak_tflops']:.3f} TFLOP/s", ""]
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
              f"{report['finetuning_mean_tokens']:.0f} tokens on average; the two finetuned "
              f"models' scores differ by at most {report['finetuned_scores_max_abs_difference']:.1e}"
              + (" (dropout masks are drawn per batch shape, so the two paddings are two "
                 "random draws; with --dropout 0 they agree within float noise)"
                 if report["dropout"] else ""),
              "", "| path | first epoch s | compiled epoch s | examples/s | speed-up | TFLOP/s | "
              "of peak | 102,400 examples |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, f in report["finetuning"].items():
        lines.append(f"| {name} | {f['first_epoch_seconds']:.1f} | {f['seconds']:.1f} | "
                     f"{f['examples_per_second']:.1f} | "
                     f"{f['speedup_over_original']:.2f}x | {f['tflops']:.3f} | "
                     f"{100 * f['fraction_of_peak']:.1f}% | "
                     f"{f['projected_minutes_for_102400_examples']:.1f} min |")
    return "\n".join(lines)

