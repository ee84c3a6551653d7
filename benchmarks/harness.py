"""Side-by-side speed measurements: the project's paths against the original's.

Every path runs on the same random weights and the same data:

- scoring, original: the release's own computation in the release's stack
  (`scripts/baselines/original_benchmark.py`, a process of the interpreter that
  `original_python` finds: transformers 4's Flax RoBERTa under Redco 0.4.13's Predictor),
  every pair padded to max_length, batches in input order, duplicates scored again;
- scoring, cappy: `cappy.engine.jobs.scoring.PairScorer` (each distinct pair once, pairs
  packed into rows of two widths, `cappy.engine.models.roberta`), in this process;
- scoring, PyTorch peer (optional): transformers' PyTorch model, pairs sorted
  by length, each batch padded to its own longest pair;
- finetuning, original: the release's loop in the release's stack (Redco's Trainer, every
  pair padded to max_length, micro-batches of 8 accumulated 16 at a time by
  optax.MultiSteps); buckets: the same loop with each micro-batch padded to its
  power-of-two bucket (this project's path before packing); cappy: the packed trainer
  (`cappy.engine.jobs.training`) on the same optimizer updates. Each runs two epochs: the first
  compiles, the second shows the speed a 102,400-example run lives at.

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
    """A random RoBERTa scorer of a named shape for `tokenizer` (`cappy.engine.weights.cappy_checkpoint.CappyModel`)."""
    from transformers import RobertaConfig

    from cappy.engine.models import roberta
    from cappy.engine.weights.cappy_checkpoint import CappyModel

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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINAL_VENV = os.path.join(ROOT, ".venv-original")


def original_python():
    """(the original release's interpreter, None) or (None, why it is missing): from
    $CAPPY_ORIGINAL_PYTHON, else .venv-original/ (scripts/setup_original.sh), checked to
    have transformers' Flax RoBERTa and Redco."""
    import subprocess

    path = os.environ.get("CAPPY_ORIGINAL_PYTHON") or os.path.join(ORIGINAL_VENV, "bin",
                                                                    "python")
    if not os.path.exists(path):
        return None, (f"no interpreter of the original release's stack at {path}: "
                      f"bash scripts/setup_original.sh builds it (or set "
                      f"CAPPY_ORIGINAL_PYTHON)")
    check = subprocess.run([path, "-c", "import redco; from transformers import "
                            "FlaxRobertaForSequenceClassification"], capture_output=True,
                           text=True)
    if check.returncode:
        last = (check.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{path} lacks the original release's stack ({last})"
    return path, None


def _token_pool(tokenizer):
    from cappy.engine.weights.tiny_models import sample_texts

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
    from cappy.engine.weights.tiny_models import SAMPLE_DIR

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


REFERENCE_TASK, REFERENCE_GENERATOR = "auto_categorization", "gen"


def write_bigbench_task(folder, task=REFERENCE_TASK, generator=REFERENCE_GENERATOR):
    """One task's candidate files (train and validation) under folder/generator/, the
    layout cappy_bigbench.py's --bigbench_gen_dir reads."""
    import json

    for split in ("train", "validation"):
        path = os.path.join(folder, generator, f"{task}_{split}.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(row) + "\n" for row in bigbench_candidate_rows(task, split))


def bigbench_task_flags(scorer, folder, *flags):
    """The flags of one task (cappy_bigbench.py's and the original's, the paper's settings
    but max length 64) on the candidates written to folder/gens."""
    write_bigbench_task(os.path.join(folder, "gens"))
    return ["--model_name_or_path", scorer, "--bigbench_gen_dir", os.path.join(folder, "gens"),
            "--bigbench_gen_model", REFERENCE_GENERATOR, "--bigbench_subset_name",
            REFERENCE_TASK, "--max_length", 64, *flags]


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
    from cappy.engine.jobs.scoring import encode_pairs

    return encode_pairs(tokenizer, [p[0] for p in pairs], [p[1] for p in pairs], max_length,
                        "longest_first")


def cappy_scorer(model, tokenizer, batch_size, max_length):
    """The project's scoring (cappy.engine.jobs.scoring.PairScorer): each distinct pair once,
    pairs packed into rows. Returns score(pairs, params)."""
    from cappy.engine.runtime.mesh import Devices
    from cappy.engine.jobs.scoring import PairScorer

    scorer = PairScorer(model, tokenizer, Devices(), max_length=max_length,
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
    from cappy.engine.weights.cappy_checkpoint import torch_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch_model(model, dtype).to(device)


def torch_scorer(torch_model, tokenizer, batch_size, max_length):
    """The PyTorch peer: length-sorted batches padded to their longest pair.
    Returns score(pairs)."""
    import torch

    from cappy.engine.models.padding import length_sorted_order, pad_batch

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
    from cappy.engine.models import packing

    if path_name == ORIGINAL:  # every pair, batches of batch_size x max_length
        return -(-len(lengths) // batch_size) * batch_size * max_length
    if path_name == CAPPY:  # distinct pairs, packed rows, fixed batch shapes
        rows = packing.pack_rows(distinct_lengths, packing.row_widths(max_length))
        return packing.computed_positions(rows, score.scorer.tokens_per_batch())
    ordered = sorted(lengths)  # the PyTorch peer: every pair, padded to its batch's longest
    return sum(max(ordered[i:i + batch_size]) * len(ordered[i:i + batch_size])
               for i in range(0, len(ordered), batch_size))


# ---- finetuning paths ------------------------------------------------------------------

def finetune_rows(rows, train_size, seed=11111):
    """The paper's finetuning examples for the rows ({"instruction", "response", "label"})."""
    from cappy.bigbench.examples import build_finetune_examples

    return build_finetune_examples(rows, train_size, seed)[0]


def run_original_paths(python, model, tokenizer, datasets, rows, max_length, batch_size,
                       per_device_batch_size, accumulate, learning_rate, seed, log=print):
    """The original's scoring of each dataset and its two finetuning loops, measured by
    scripts/baselines/original_benchmark.py in the original release's stack (`python`)
    on `model` saved as the project saves checkpoints. Returns that script's figures, each
    loop's parameters after its first epoch read back as a parameter tree."""
    import json
    import subprocess
    import tempfile

    from cappy.engine.weights.cappy_checkpoint import save_cappy
    from cappy.engine.weights.files import unflatten
    from cappy.engine.errors import CappyError

    script = os.path.join(ROOT, "scripts", "baselines", "original_benchmark.py")
    with tempfile.TemporaryDirectory(prefix="cappy-original-") as work_dir:
        model_dir = save_cappy(model, tokenizer, model.params, os.path.join(work_dir, "model"))
        work = {"model_dir": model_dir, "max_length": max_length, "batch_size": batch_size,
                "datasets": {name: [list(pair) for pair in pairs]
                             for name, pairs in datasets.items()},
                "examples": rows, "per_device_batch_size": per_device_batch_size,
                "accumulate_grad_batches": accumulate, "learning_rate": learning_rate,
                "seed": seed, "params_dir": work_dir}
        work_file, result_file = (os.path.join(work_dir, name) for name in ("work.json",
                                                                          "result.json"))
        with open(work_file, "w", encoding="utf-8") as file:
            json.dump(work, file)
        log(f"the original's paths, in {python} ...")
        done = subprocess.run([python, script, work_file, result_file], text=True,
                              capture_output=True)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CappyError(f"{script} failed in {python}: {last}")
        with open(result_file, encoding="utf-8") as file:
            result = json.load(file)
        for figures in result["finetuning"].values():
            with np.load(figures.pop("params_file")) as saved:
                figures["params"] = unflatten({tuple(name.split("/")): saved[name]
                                               for name in saved.files})
    return result


def training_positions(path_name, examples, seed, global_micro, accumulate, max_length,
                       trainer=None):
    """Token positions one epoch of a finetuning path computes."""
    from cappy.engine.models.padding import bucket_length
    from cappy.engine.runtime.redco_adapter import original_example_order
    from cappy.engine.jobs.training import (original_updates, pack_update, plan_steps,
                                            rows_per_step_for)

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


def train_cappy_twice(model, tokenizer, examples, per_device_batch_size, accumulate,
                      max_length, learning_rate, seed=11111):
    """Two epochs of the packed trainer, each timed: the first compiles every step shape
    it meets, the second runs compiled. Returns (host params after the first epoch, whose
    updates every path shares; s1, s2, the trainer)."""
    import jax

    from cappy.engine.runtime.mesh import Devices
    from cappy.engine.jobs.training import finetune_trainer, original_updates, train_updates

    trainer, per_update = finetune_trainer(
        model, tokenizer, Devices(), 2 * len(examples), seed,
        per_device_batch_size, accumulate, learning_rate=learning_rate, max_length=max_length)
    updates = original_updates(examples, seed, per_update)
    seconds = []
    for index in range(2):
        start = time.perf_counter()
        train_updates(trainer, updates, progress=False)
        jax.block_until_ready(trainer.params)
        seconds.append(time.perf_counter() - start)
        if index == 0:  # the second epoch's order is the loop's own (Redco reshuffles)
            params = trainer.host_params()
    return params, seconds[0], seconds[1], trainer


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
                  n_prompts=360, dropout=0.1, learning_rate=2e-5, original_python=None,
                  log=print):
    """Run every measurement; return a JSON-ready dict of figures. Without
    `original_python` (the original release's interpreter) its paths are left out."""
    import jax

    from cappy.bigbench.candidates import all_candidates
    from cappy.engine.errors import CappyError
    from cappy.engine.jobs.scoring import encode_examples
    from cappy.engine.weights.tiny_models import make_scorer_tokenizer, sample_texts

    tokenizer = make_scorer_tokenizer(sample_texts())
    model = make_model(model_size, tokenizer, dtype, dropout=dropout)
    report = {**machine_report(dtype), "model_size": model_size, "shape": dict(zip(
                  ("layers", "hidden", "heads", "intermediate"), MODEL_SHAPES[model_size])),
              "batch_size": batch_size, "max_length": max_length, "dropout": dropout,
              "learning_rate": learning_rate, "original_python": original_python,
              "scoring": {}, "finetuning": {}}
    peak = report["matmul_peak_tflops"] * 1e12

    rows = bigbench_candidate_rows()
    datasets = {
        "promptsource_like": promptsource_like_pairs(tokenizer, n_prompts=n_prompts),
        "bigbench_candidates": [(row["instruction"], cand["response"])
                                for row in rows for cand in all_candidates(row)],
    }
    per_update = per_device_train_batch * jax.device_count() * accumulate
    if train_size < per_update:
        raise CappyError(f"--train_size {train_size} is less than one optimizer update "
                         f"({per_update} examples)")
    # Whole optimizer updates only, so that every path computes the same examples.
    train_rows = finetune_rows(rows, train_size // per_update * per_update)
    examples = encode_examples(tokenizer, train_rows, max_length, "longest_first")
    original = {"scoring": {}, "finetuning": {}}
    if original_python:
        original = run_original_paths(original_python, model, tokenizer, datasets, train_rows,
                                      max_length, batch_size, per_device_train_batch,
                                      accumulate, learning_rate, 11111, log)
        report["original_jax"] = original["jax"]
    peer = torch_peer(model, dtype) if with_torch else None
    if with_torch and peer is None:
        log("note: PyTorch is not installed; the PyTorch peer is skipped")
    for data_name, pairs in datasets.items():
        lengths = [len(e["input_ids"]) for e in _encode(tokenizer, pairs, max_length)]
        distinct_lengths = list({pair: n for pair, n in zip(pairs, lengths)}.values())
        # The work scoring needs: each distinct pair once, no padding.
        flops = model_flops(model.config, distinct_lengths)
        measured = {}
        if data_name in original["scoring"]:
            figures = original["scoring"][data_name]
            measured[ORIGINAL] = (np.asarray(figures["scores"], np.float32),
                                  figures["first_call_seconds"], figures["seconds"], None)
        scorers = {CAPPY: cappy_scorer}
        if peer is not None:
            scorers[PYTORCH] = lambda *a: torch_scorer(peer, *a[1:])
        for path_name, make_scorer in scorers.items():
            log(f"scoring {data_name}: {path_name} ...")
            score = make_scorer(model, tokenizer, batch_size, max_length)
            scores, first = timed(score, pairs)  # compiles every shape it meets
            _, second = timed(score, pairs)  # compiled: the speed of a long run
            measured[path_name] = (scores, first, second, score)
        entry = {"pairs": len(pairs), "distinct_pairs": len(set(pairs)),
                 "mean_tokens": float(np.mean(lengths)), "max_tokens": int(np.max(lengths)),
                 "largest_abs_score": float(np.max(np.abs(measured[CAPPY][0]))), "paths": {}}
        for path_name, (scores, first, second, score) in measured.items():
            figures = entry["paths"][path_name] = {
                "first_call_seconds": first, "seconds": second,
                "pairs_per_second": len(pairs) / second,
                "first_call_pairs_per_second": len(pairs) / first,
                "tflops": flops / second / 1e12, "fraction_of_peak": flops / second / peak,
                "real_token_fraction": sum(distinct_lengths) / path_computed_positions(
                    path_name, lengths, distinct_lengths, batch_size, max_length, score)}
            if ORIGINAL in measured:
                base_scores, base_first, base_second, _ = measured[ORIGINAL]
                figures.update(
                    max_abs_difference_from_original=float(np.max(np.abs(scores
                                                                         - base_scores))),
                    speedup_over_original=base_second / second,
                    first_call_speedup_over_original=base_first / first)
        report["scoring"][data_name] = entry

    train_lengths = [len(e["input_ids"]) for e in examples]
    flops = model_flops(model.config, train_lengths, training=True)
    log(f"finetuning: {CAPPY} ...")
    params = {}
    params[CAPPY], first, compiled, trainer = train_cappy_twice(
        model, tokenizer, examples, per_device_train_batch, accumulate, max_length,
        learning_rate)
    timings = {CAPPY: (first, compiled)}
    for path_name, key in ((ORIGINAL, "original"), (BUCKETS, "buckets")):
        if key in original["finetuning"]:
            figures = original["finetuning"][key]
            params[path_name] = figures["params"]
            timings[path_name] = (figures["first_epoch_seconds"], figures["seconds"])
    for path_name in (ORIGINAL, BUCKETS, CAPPY):
        if path_name not in timings:
            continue
        first, compiled = timings[path_name]
        positions = training_positions(path_name, examples, 11111,
                                       per_device_train_batch * jax.device_count(), accumulate,
                                       max_length, trainer)
        report["finetuning"][path_name] = {
            "first_epoch_seconds": first, "seconds": compiled,
            "examples_per_second": len(examples) / compiled,
            "tflops": flops / compiled / 1e12, "fraction_of_peak": flops / compiled / peak,
            "real_token_fraction": sum(train_lengths) / positions,
            # one epoch's compilation, then the paper's 102,400 examples compiled
            "projected_minutes_for_102400_examples": (
                max(first - compiled, 0) + 102400 * compiled / len(examples)) / 60}
        if ORIGINAL in timings:
            report["finetuning"][path_name]["speedup_over_original"] = (
                timings[ORIGINAL][1] / compiled)
    report["finetuning_examples"] = len(examples)
    report["finetuning_mean_tokens"] = float(np.mean(train_lengths))
    # The first epoch's optimizer updates, computed three ways: the models score alike,
    # and unlike the model they started from.
    score = cappy_scorer(model, tokenizer, batch_size, max_length)
    candidates = datasets["bigbench_candidates"]
    finetuned = {name: score(candidates, trained) for name, trained in params.items()}
    report["finetuned_scores_moved"] = float(np.max(np.abs(finetuned[CAPPY]
                                                           - score(candidates))))
    if ORIGINAL in finetuned:
        report["finetuned_scores_max_abs_difference"] = max(
            float(np.max(np.abs(finetuned[name] - finetuned[ORIGINAL]))) for name in params)
    return report


# ---- candidate generation ------------------------------------------------------------

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
    from cappy.engine.models import t5
    from cappy.engine.weights.tiny_models import save_generator, seeded_parameters

    config = t5_generator_config(size, tokenizer)
    params = seeded_parameters(t5.parameter_shapes(config), seed,
                               std=(1.0 / config.d_model) ** 0.5)
    params["lm_head"]["kernel"][:, config.eos_token_id] *= eos_boost
    return save_generator(params, config, tokenizer, folder)


def torch_generate_peer(folder, instructions, batch_size, max_tgt_len, dtype, n_samples=4):
    """transformers' PyTorch `generate()` on the same generator folder and instructions,
    each decoding of the recipe (beam4 once, every sampling decoding `n_samples` times) in
    batches of `batch_size` instructions, on the GPU where there is one; called twice, the
    first warming up. It computes no log-likelihoods, which cappy's path also does, so the
    comparison favours it. None without torch."""
    try:
        import torch
    except ImportError:
        return None
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    from cappy.engine.recipes import DECODINGS, DETERMINISTIC_DECODINGS

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = T5ForConditionalGeneration.from_pretrained(
        folder, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    eos = model.generation_config.eos_token_id

    def generate_all():
        tokens = 0
        torch.manual_seed(0)
        with torch.inference_mode():
            for name, settings in DECODINGS.items():
                copies = 1 if name in DETERMINISTIC_DECODINGS else n_samples
                for start in range(0, len(instructions), batch_size):
                    batch = tokenizer(instructions[start:start + batch_size], padding=True,
                                      return_tensors="pt").to(device)
                    out = model.generate(**batch, **settings, num_return_sequences=copies,
                                         max_new_tokens=max_tgt_len,
                                         min_new_tokens=1)[:, 1:].cpu().numpy()
                    ended = np.cumsum(out == eos, axis=1)
                    tokens += int(((ended == 0) | ((ended == 1) & (out == eos))).sum())
        if device == "cuda":
            torch.cuda.synchronize()
        return tokens

    calls = []
    for _ in range(2):
        tokens, seconds = timed(generate_all)
        calls.append(seconds)
    return {"device": device, "first_call_seconds": calls[0], "seconds": calls[1],
            "candidate_tokens": tokens, "candidate_tokens_per_second": tokens / calls[1]}


def run_generation_benchmark(size="tiny", n_instructions=24, per_device_batch_size=8,
                             max_tgt_len=64, dtype="float32", with_torch=True, log=print):
    """Candidate generation as scripts/bigbench_flan_generate.py runs it (17 candidates per
    instruction and their log-likelihoods) with a seeded random FLAN-T5-shaped model on
    the shipped BIG-Bench sample's instructions; called twice, the first compiling. With
    `with_torch` (and torch installed), PyTorch's `generate()` of the same candidates
    beside it (`torch_generate_peer`)."""
    import tempfile

    from cappy.engine.jobs.candidate_generation import CandidateGenerator
    from cappy.engine.io import read_jsonl
    from cappy.engine.weights.tiny_models import SAMPLE_DIR, make_generator_tokenizer, sample_texts

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
        peer = None
        if with_torch:
            log("generating with PyTorch's generate() ...")
            peer = torch_generate_peer(folder, instructions, per_device_batch_size,
                                       max_tgt_len, dtype)
    responses = [c["response"] for row in candidates for cands in row.values() for c in cands]
    tokens = sum(map(len, generator._encode_targets(responses)))
    report = {"size": size, "shape": dict(zip(("d_model", "d_ff", "layers", "heads"),
                                              GENERATOR_SHAPES[size])),
              "instructions": len(instructions), "candidates": len(responses),
              "candidate_tokens": tokens, "first_call_seconds": calls[0], "seconds": calls[1],
              "candidates_per_second": len(responses) / calls[1],
              "candidate_tokens_per_second": tokens / calls[1],
              "first_call_candidate_tokens_per_second": tokens / calls[0],
              "beam4": [row["beam4"][0]["response"] for row in candidates]}
    if peer:
        report["torch_generate"] = peer
        report["tokens_per_second_over_torch"] = (report["candidate_tokens_per_second"]
                                                  / peer["candidate_tokens_per_second"])
    return report


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
        if "torch_generate" in g:
            t = g["torch_generate"]
            lines += ["", f"PyTorch generate() on {t['device']}, the same candidates without "
                          f"log-likelihoods: {t['seconds']:.1f} s warm, "
                          f"{t['candidate_tokens_per_second']:.1f} tokens/s; cappy "
                          f"{g['tokens_per_second_over_torch']:.2f}x its tokens/s"]
    return "\n".join(lines)


def _speedup(figures, key="speedup_over_original"):
    return f"{figures[key]:.2f}x" if key in figures else "-"


def _scoring_and_finetuning_lines(report):
    original = (f"the original's paths ran in {report['original_python']} (jax "
                f"{report.get('original_jax')})" if report.get("original_python")
                else "the original's paths were left out (--no_original)")
    lines = [f"scoring and finetuning model: {report['model_size']} {report['shape']}; "
             f"{original}", ""]
    for data_name, entry in report["scoring"].items():
        lines += [f"scoring {data_name}: {entry['pairs']} pairs ({entry['distinct_pairs']} "
                  f"distinct), {entry['mean_tokens']:.0f} tokens on average, up to "
                  f"{entry['max_tokens']}", "",
                  "| path | first call s | speed-up | compiled s | pairs/s | speed-up | "
                  "TFLOP/s | of peak | real tokens | max abs diff |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, f in entry["paths"].items():
            difference = f.get("max_abs_difference_from_original")
            lines.append(f"| {name} | {f['first_call_seconds']:.1f} | "
                         f"{_speedup(f, 'first_call_speedup_over_original')} | "
                         f"{f['seconds']:.1f} | {f['pairs_per_second']:.1f} | {_speedup(f)} | "
                         f"{f['tflops']:.3f} | {100 * f['fraction_of_peak']:.1f}% | "
                         f"{100 * f['real_token_fraction']:.0f}% | "
                         + ("-" if difference is None else f"{difference:.1e}") + " |")
        lines.append("")
    agreement = ""
    if "finetuned_scores_max_abs_difference" in report:
        agreement = (f"; the finetuned models' scores differ from the original's by at most "
                     f"{report['finetuned_scores_max_abs_difference']:.1e}"
                     + (" (dropout masks differ between the paths, so the runs are equally "
                        "valid random draws; with --dropout 0 they agree within float noise)"
                        if report["dropout"] else ""))
    lines += [f"finetuning: 2 epochs of {report['finetuning_examples']} examples of a "
              "BIG-Bench task (the first compiles), "
              f"{report['finetuning_mean_tokens']:.0f} tokens on average; the first epoch "
              f"moved the scores by up to {report['finetuned_scores_moved']:.1e}{agreement}",
              "", "| path | first epoch s | compiled epoch s | examples/s | speed-up | TFLOP/s | "
              "of peak | real tokens | 102,400 examples |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, f in report["finetuning"].items():
        lines.append(f"| {name} | {f['first_epoch_seconds']:.1f} | {f['seconds']:.1f} | "
                     f"{f['examples_per_second']:.1f} | {_speedup(f)} | {f['tflops']:.3f} | "
                     f"{100 * f['fraction_of_peak']:.1f}% | "
                     f"{100 * f['real_token_fraction']:.0f}% | "
                     f"{f['projected_minutes_for_102400_examples']:.1f} min |")
    return lines
