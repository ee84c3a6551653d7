"""The generator families cappy computes, and what decoding and log-likelihoods need of
each: T5 and FLAN-T5 (`cappy.engine.models.t5`), BART, BART0 and mBART
(`cappy.engine.models.bart`), both sequence-to-sequence, and GPT-2 and the Llama family
(`cappy.engine.models.causal_lm`), decoder-only. The one place the two kinds are told
apart: `search_functions` gives `cappy.engine.models.decoding` a batch's prefill and step,
`target_logits` the logits of given responses.
"""

import jax.numpy as jnp

from cappy.engine.models import bart, causal_lm, t5

SEQ2SEQ_MODULES = {"t5": t5, "mt5": t5, "bart": bart, "mbart": bart}
SEQ2SEQ_TYPES = tuple(SEQ2SEQ_MODULES)
SUPPORTED_MODEL_TYPES = SEQ2SEQ_TYPES + causal_lm.SUPPORTED_MODEL_TYPES


def model_module(model_type):
    """The module computing generators of `model_type`."""
    return SEQ2SEQ_MODULES.get(model_type, causal_lm)


def search_functions(generator, input_ids, attention_mask, max_new_tokens):
    """(prefill, step, prompt, max_length) for `cappy.engine.models.decoding` on a batch of sources:
    a seq2seq model decodes from its start token up to max_new_tokens in all (the
    original's max_length); a decoder-only model continues its left-padded prompt by
    up to max_new_tokens."""
    config, dtype = generator.config, generator.compute_dtype
    if generator.is_seq2seq:
        model = generator.module
        max_length = max_new_tokens
        start = jnp.full((input_ids.shape[0],), generator.decoder_start_token_id, jnp.int32)

        def prefill(params):
            states = model.encode(params, config, input_ids, attention_mask, dtype)
            cache = model.init_cache(params, config, states, attention_mask, max_length, dtype)
            return model.decode_step(params, config, cache, start, jnp.asarray(0), dtype)

        def step(params, cache, tokens, index):
            return model.decode_step(params, config, cache, tokens, index, dtype)

        return prefill, step, start[:, None], max_length
    max_length = input_ids.shape[1] + max_new_tokens

    def prefill(params):
        return causal_lm.prefill(params, config, input_ids, attention_mask, max_length, dtype)

    def step(params, cache, tokens, index):
        return causal_lm.step(params, config, cache, tokens, index, dtype)

    return prefill, step, input_ids, max_length


def target_logits(generator, params, batch):
    """Logits [batch, target, vocab] (float32) predicting each target token of `batch`
    (input_ids/attention_mask: sources; labels/label_mask: targets)."""
    config, dtype = generator.config, generator.compute_dtype
    if generator.is_seq2seq:
        model = generator.module
        labels = batch["labels"]
        start = jnp.full((labels.shape[0], 1), generator.decoder_start_token_id, labels.dtype)
        decoder_ids = jnp.concatenate([start, labels[:, :-1]], axis=1)
        states = model.encode(params, config, batch["input_ids"], batch["attention_mask"], dtype)
        return model.decode(params, config, decoder_ids, states, batch["attention_mask"],
                            batch["label_mask"], dtype)
    # The prompt (left-padded), then the response (right-padded).
    ids = jnp.concatenate([batch["input_ids"], batch["labels"]], axis=1)
    mask = jnp.concatenate([batch["attention_mask"], batch["label_mask"]], axis=1)
    logits = causal_lm.forward(params, config, ids, mask, dtype)
    source_length, width = batch["input_ids"].shape[1], batch["labels"].shape[1]
    return logits[:, source_length - 1:source_length - 1 + width]
