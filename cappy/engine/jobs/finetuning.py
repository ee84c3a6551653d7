"""Finetune Cappy on your own labelled (instruction, response, label) rows.

Same trainer as cappy_bigbench.py (packed rows, AdamW, MSE on logits[..., 0],
float32 parameters); its default schedule is counted in optimizer updates
(`--lr_schedule corrected`), where cappy_bigbench.py defaults to the published runs'
(`paper`). The
checkpoint folder (`cappy.engine.weights.cappy_checkpoint.save_cappy`) holds the weights as
`model.safetensors` (PyTorch names) and `flax_model.msgpack`, and records the
truncation policy the model was trained with, which loading it again uses.
"""

import time

import numpy as np

from cappy.engine.config import settings_of


def finetune_on_rows(config, train_rows, validation_rows=None):
    """Train on rows as configured by `config` (`cappy finetune`'s FinetuneConfig, whose
    --output_dir `cappy.engine.weights.cappy_checkpoint.check_output_dir` has passed); save the model;
    return a summary."""
    from cappy.engine.jobs.session import Cappy
    from cappy.engine.runtime.leader import writes_outputs
    from cappy.engine.weights.cappy_checkpoint import check_room_for_model

    start = time.time()
    cappy = Cappy.from_pretrained(config.model_name_or_path, dtype=config.dtype,
                                  max_length=config.max_length, batch_size=config.batch_size,
                                  truncation=config.truncation,
                                  n_model_shards=config.n_model_shards, hosts=config,
                                  seed=config.seed, progress=config.verbose)
    if writes_outputs():  # before training: its disk can hold the model it will save
        check_room_for_model(config.output_dir, cappy.model.params, cappy.tokenizer)
    examples = [{"instruction": row["instruction"], "response": row["response"],
                 "label": float(row["label"])} for row in train_rows] * config.n_epochs
    cappy.finetune(examples, seed=config.seed, per_device_batch_size=config.batch_size,
                   accumulate_grad_batches=config.accumulate_grad_batches,
                   learning_rate=config.learning_rate, warmup_rate=config.warmup_rate,
                   weight_decay=config.weight_decay, lr_schedule=config.lr_schedule)
    summary = {"train_rows": len(train_rows), "n_epochs": config.n_epochs,
               "truncation": cappy.truncation, "train_seconds": round(time.time() - start, 2),
               "settings": dict(sorted({**settings_of(config), "command": "finetune",
                                        "max_length": cappy.max_length}.items()))}
    if validation_rows:
        scores = cappy.score([r["instruction"] for r in validation_rows],
                             [r["response"] for r in validation_rows])
        labels = np.array([r["label"] for r in validation_rows], np.float32)
        summary["validation_rows"] = len(validation_rows)
        summary["validation_mse"] = float(np.mean((scores - labels) ** 2))
    # every process trained; one writes
    cappy.save(config.output_dir, summary, "cappy_finetune.json", config.overwrite)
    return {k: v for k, v in summary.items() if k != "settings"}
