"""The original release's computation, for the baselines and the references the tests
compare cappy with: transformers 4's Flax RoBERTa under Redco 0.4.13, as the release ran it.

Runs only in the original's stack (`scripts/baselines/requirements-original.txt`, built by
`scripts/setup_original.sh` into `.venv-original/`): transformers 4.57.6 still has the Flax
model classes, Redco 0.4.13 is the version the release's README installs. Nothing here
imports cappy: a reference made with cappy's own code would compare cappy with itself.

- `load`: the checkpoint through transformers' own Flax loader (`_do_init=False`, so a
  parameter missing from the file is an error, never a silent random one), float32;
- `pair_collate`: every pair tokenized by transformers 4's tokenizer and padded to
  max_length (`bucketed`: to its power-of-two bucket, the project's own path before
  packing), truncated longest first;
- `predict_scores`: Redco's Predictor over every row in input order, repeats included;
- `original_trainer`: Redco's Trainer with AdamW inside optax.MultiSteps, the learning
  rate from Redco's `get_lr_schedule_fn` sized in micro-batches (the published schedule);
- `rouge_l`: rouge-score's ROUGE-L F-measure with stemming, best over the references.
"""

import json


def read_jsonl(path):
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def write_json(path, value):
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(value, file)


def load(model_dir):
    """(tokenizer, Flax module, float32 parameters) of a Cappy folder, strictly."""
    import jax
    from transformers import AutoTokenizer, FlaxAutoModelForSequenceClassification

    with jax.default_device(jax.devices("cpu")[0]):
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        module, params = FlaxAutoModelForSequenceClassification.from_pretrained(
            model_dir, _do_init=False)
        params = module.to_fp32(params)
    expected = jax.eval_shape(lambda: module.init_weights(jax.random.PRNGKey(0),
                                                          module.input_shape))
    missing = sorted(set(_paths(expected)) - set(_paths(params)))
    unexpected = sorted(set(_paths(params)) - set(_paths(expected)))
    if missing or unexpected:
        raise SystemExit(f"error: {model_dir}: parameters missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return tokenizer, module, params


def _paths(tree):
    from flax.traverse_util import flatten_dict
    from flax.core import unfreeze

    return ["/".join(key) for key in flatten_dict(unfreeze(tree))]


def bucket_width(longest, max_length):
    """The power of two (at least 16) that holds `longest`, at most max_length."""
    width = 16
    while width < longest:
        width *= 2
    return min(width, max_length)


def pair_collate(tokenizer, max_length, src_key="instruction", tgt_key="response",
                 label_key=None, bucketed=False):
    import numpy as np

    def collate(examples):
        pairs = [(e[src_key], e[tgt_key]) for e in examples]
        if bucketed:
            longest = max(len(ids) for ids in tokenizer(
                pairs, max_length=max_length, truncation=True)["input_ids"])
            width = bucket_width(longest, max_length)
        else:
            width = max_length
        batch = tokenizer(pairs, max_length=width, padding="max_length", truncation=True,
                          return_tensors="np")
        batch = {key: batch[key] for key in ("input_ids", "attention_mask")}
        if label_key is not None:
            batch["labels"] = np.array([e[label_key] for e in examples], np.float32)
        return batch

    return collate


def predict_scores(deployer, module, params, collate, examples, per_device_batch_size):
    """Scores of every example, in order, through Redco's Predictor."""
    from redco import Predictor

    predictor = Predictor(
        deployer=deployer, collate_fn=collate,
        pred_fn=lambda pred_rng, params, batch: module(**batch, params=params,
                                                      train=False).logits[..., 0],
        params_sharding_rules=deployer.get_sharding_rules(params))
    return [float(score) for score in predictor.predict(
        examples=examples, per_device_batch_size=per_device_batch_size, params=params)]


def original_trainer(deployer, module, params, collate, train_size, per_device_batch_size,
                     accumulate_grad_batches, learning_rate, warmup_rate, weight_decay):
    """Redco's Trainer as the release built it for finetuning; `.train(examples,
    per_device_batch_size)` runs one epoch (examples shuffled with the deployer's key)."""
    import jax.numpy as jnp
    import optax
    from redco import Trainer

    def loss_fn(train_rng, state, params, batch, is_training):
        labels = batch.pop("labels")
        logits = state.apply_fn(**batch, params=params, dropout_rng=train_rng,
                                train=is_training).logits
        return jnp.mean(jnp.square(logits[..., 0] - labels))

    schedule = deployer.get_lr_schedule_fn(
        train_size=train_size, per_device_batch_size=per_device_batch_size, n_epochs=1,
        learning_rate=learning_rate, schedule_type="linear", warmup_rate=warmup_rate)
    optimizer = optax.MultiSteps(optax.adamw(learning_rate=schedule, weight_decay=weight_decay),
                                 every_k_schedule=accumulate_grad_batches)
    return Trainer(deployer=deployer, collate_fn=collate, apply_fn=module, loss_fn=loss_fn,
                   params=params, optimizer=optimizer, lr_schedule_fn=schedule,
                   accumulate_grad_batches=accumulate_grad_batches,
                   params_sharding_rules=deployer.get_sharding_rules(params))


def trained_params(trainer):
    """The trainer's parameters as host arrays (Redco unreplicates them)."""
    import jax
    import numpy as np

    return jax.tree_util.tree_map(np.asarray, trainer.params)


def rouge_l(prediction, references):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return max(scorer.score(reference, prediction)["rougeL"].fmeasure
               for reference in references)


def save_params(params, path):
    """Parameters as an .npz of '/'-joined names (read back by benchmarks/harness.py)."""
    import numpy as np
    from flax.core import unfreeze
    from flax.traverse_util import flatten_dict

    np.savez(path, **{"/".join(key): np.asarray(value)
                      for key, value in flatten_dict(unfreeze(params)).items()})
