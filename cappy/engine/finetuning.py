"""Finetune Cappy on your own labelled (instruction, response, label) rows.

Same trainer as cappy_bigbench.py (packed rows, AdamW, MSE on logits[..., 0],
float32 parameters); its default schedule is counted in optimizer updates
(`--lr_schedule corrected`), where cappy_bigbench.py defaults to the published runs'
(`paper`). The
checkpoint folder (`cappy.engine.checkpoints.save_cappy`) holds the weights as
`model.safetensors` (PyTorch names) and `flax_model.msgpack`, and records the
truncation policy the model was trained with, which loading it again uses.
"""

import time

import numpy as np

from cappy.engine.checkpoints import save_cappy
from cappy.engine.config import settings_of


def finetune_on_rows(config, train_rows, validation_rows=None):
    """Train on rows as configured by `config` (`cappy finetune`'s FinetuneConfig, whose
    --output_dir `cappy.engine.checkpoints.check_output_dir` has passed); save the model;
    return a summary."""
    from cappy.engine.checkpoints import load_cappy
    from cappy.engine.redco_adapter import make_deployer
    from cappy.engine.roberta import longest_pair
    from cappy.engine.scoring import PairScorer, encode_examples
    from cappy.engine.training import finetune

    start = time.time()
    import jax

    deployer = make_deployer(config.seed, verbose=config.verbose, hosts=config)
    model, tokenizer = load_cappy(config.model_name_or_path, dtype=config.dtype,
                                  truncation=config.truncation)
    max_length = config.max_length or min(512, longest_pair(model.config))
    examples = [{"instruction": row["instruction"], "response": row["response"],
                 "label": float(row["label"])} for row in train_rows] * config.n_epochs
    encoded = encode_examples(tokenizer, examples, max_length, model.truncation)
    trainer = finetune(
        model, tokenizer, deployer, encoded, config.seed, per_device_batch_size=config.batch_size,
        accumulate_grad_batches=config.accumulate_grad_batches,
        learning_rate=config.learning_rate, warmup_rate=config.warmup_rate,
        weight_decay=config.weight_decay, lr_schedule=config.lr_schedule, max_length=max_length,
        progress=config.verbose)
    params = trainer.host_params()
    summary = {"train_rows": len(train_rows), "n_epochs": config.n_epochs,
               "truncation": model.truncation, "train_seconds": round(time.time() - start, 2),
               "settings": dict(sorted({**settings_of(config), "command": "finetune",
                                        "max_length": max_length}.items()))}
    if validation_rows:
        scorer = PairScorer(model, tokenizer, deployer, max_length=max_length,
                            per_device_batch_size=config.batch_size)
        scores = scorer.score([r["instruction"] for r in validation_rows],
                              [r["response"] for r in validation_rows], params)
        labels = np.array([r["label"] for r in validation_rows], np.float32)
        summary["validation_rows"] = len(validation_rows)
        summary["validation_mse"] = float(np.mean((scores - labels) ** 2))
    if jax.process_index() == 0:  # every process trained; one writes
        save_cappy(model, tokenizer, params, config.output_dir, summary, "cappy_finetune.json",
                   config.overwrite)
    return {k: v for k, v in summary.items() if k != "settings"}
