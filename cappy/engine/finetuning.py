"""Finetune Cappy on your own labelled (instruction, response, label) rows.

Same trainer as cappy_bigbench.py (packed rows, AdamW, MSE on logits[..., 0],
float32 parameters), with the schedule counted in optimizer updates. The
checkpoint folder (`cappy.engine.checkpoints.save_cappy`) holds the weights as
`model.safetensors` (PyTorch names) and `flax_model.msgpack`, and records the
truncation policy the model was trained with, which loading it again uses.
"""

import time

import numpy as np

from cappy.engine.checkpoints import check_output_dir, save_cappy


def finetune_on_rows(args, train_rows, validation_rows=None):
    """Train on rows as configured by `python -m cappy finetune`'s flags; save; summarize."""
    from cappy.engine.checkpoints import load_cappy
    from cappy.engine.redco_adapter import make_deployer
    from cappy.engine.roberta import longest_pair
    from cappy.engine.scoring import PairScorer, encode_examples
    from cappy.engine.training import finetune

    check_output_dir(args.output_dir, args.overwrite)  # before training, not after
    start = time.time()
    deployer = make_deployer(args.seed, verbose=True)
    model, tokenizer = load_cappy(args.model_name_or_path, dtype=args.dtype,
                                  truncation=args.truncation)
    if args.max_length is None:
        args.max_length = min(512, longest_pair(model.config))
    examples = [{"instruction": row["instruction"], "response": row["response"],
                 "label": float(row["label"])} for row in train_rows] * args.n_epochs
    encoded = encode_examples(tokenizer, examples, args.max_length, model.truncation)
    trainer = finetune(
        model, tokenizer, deployer, encoded, args.seed, per_device_batch_size=args.batch_size,
        accumulate_grad_batches=args.accumulate_grad_batches,
        learning_rate=args.learning_rate, warmup_rate=args.warmup_rate,
        weight_decay=args.weight_decay, lr_schedule="corrected", max_length=args.max_length)
    params = trainer.host_params()
    summary = {"train_rows": len(train_rows), "n_epochs": args.n_epochs,
               "truncation": model.truncation, "train_seconds": round(time.time() - start, 2),
               "settings": {k: v for k, v in sorted(vars(args).items())}}
    if validation_rows:
        scorer = PairScorer(model, tokenizer, deployer, max_length=args.max_length,
                            per_device_batch_size=args.batch_size)
        scores = scorer.score([r["instruction"] for r in validation_rows],
                              [r["response"] for r in validation_rows], params)
        labels = np.array([r["label"] for r in validation_rows], np.float32)
        summary["validation_rows"] = len(validation_rows)
        summary["validation_mse"] = float(np.mean((scores - labels) ** 2))
    save_cappy(model, tokenizer, params, args.output_dir, summary, "cappy_finetune.json",
               args.overwrite)
    return {k: v for k, v in summary.items() if k != "settings"}
