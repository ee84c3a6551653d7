"""Finetune Cappy on your own labelled (instruction, response, label) rows.

Same trainer as cappy_bigbench.py (Redco, AdamW, MSE on logits[..., 0],
float32 parameters), with the schedule counted in optimizer updates. The
checkpoint folder holds Flax weights and, when PyTorch is installed, the same
weights as safetensors, so both backends load it without conversion.
"""

import os
import shutil
import time

import numpy as np

from cappy.errors import CappyError
from cappy.io import write_json


def check_output_dir(output_dir, overwrite):
    if os.path.exists(output_dir) and os.listdir(output_dir) and not overwrite:
        raise CappyError(f"{output_dir}: exists and is not empty (use --overwrite)")


def save_checkpoint(model, tokenizer, params, output_dir, summary, overwrite=False,
                    summary_name="cappy_finetune.json"):
    """Write a Hugging Face folder atomically: build it beside, then rename it into place.

    `summary` (how the model was trained) is saved as `summary_name` inside it.
    """
    from cappy.scoring import quiet_transformers

    check_output_dir(output_dir, overwrite)
    staging = f"{output_dir.rstrip(os.sep)}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging, params=params)
        tokenizer.save_pretrained(staging)
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        else:
            from cappy.api import torch_model_from_flax

            with quiet_transformers():  # the conversion's loading report
                torch_model_from_flax(staging, params=params).save_pretrained(
                    staging, safe_serialization=True)
        write_json(os.path.join(staging, summary_name), summary)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def finetune_on_rows(args, train_rows, validation_rows=None):
    """Train on rows as configured by `python -m cappy finetune`'s flags; save; summarize."""
    from redco import Deployer

    from cappy.scoring import PairScorer, encode_pairs, load_cappy
    from cappy.training import host_params, make_trainer

    check_output_dir(args.output_dir, args.overwrite)  # before training, not after
    start = time.time()
    deployer = Deployer(jax_seed=args.seed, verbose=True)
    model, tokenizer = load_cappy(args.model_name_or_path, dtype=args.dtype)
    encoded = encode_pairs(tokenizer, [r["instruction"] for r in train_rows],
                           [r["response"] for r in train_rows], args.max_length,
                           truncation="instruction_first")
    examples = [{**enc, "label": float(row["label"])}
                for enc, row in zip(encoded, train_rows)] * args.n_epochs
    trainer = make_trainer(
        model, tokenizer, deployer, train_size=len(examples),
        per_device_batch_size=args.batch_size,
        accumulate_grad_batches=args.accumulate_grad_batches,
        learning_rate=args.learning_rate, warmup_rate=args.warmup_rate,
        weight_decay=args.weight_decay, lr_schedule="corrected", max_length=args.max_length)
    trainer.train(examples=examples, per_device_batch_size=args.batch_size, desc="finetuning")
    params = host_params(trainer)
    summary = {"train_rows": len(train_rows), "n_epochs": args.n_epochs,
               "train_seconds": round(time.time() - start, 2),
               "settings": {k: v for k, v in sorted(vars(args).items())}}
    if validation_rows:
        scorer = PairScorer(model, tokenizer, deployer, max_length=args.max_length,
                            per_device_batch_size=args.batch_size,
                            truncation="instruction_first")
        scores = scorer.score([r["instruction"] for r in validation_rows],
                              [r["response"] for r in validation_rows], params)
        labels = np.array([r["label"] for r in validation_rows], np.float32)
        summary["validation_rows"] = len(validation_rows)
        summary["validation_mse"] = float(np.mean((scores - labels) ** 2))
    save_checkpoint(model, tokenizer, params, args.output_dir, summary, args.overwrite)
    return {k: v for k, v in summary.items() if k != "settings"}
