"""Regenerate tests/data/generation_golden.json: greedy and 4-beam generations of
transformers 4.57.6's Flax generate() (what made the original release's candidates) on
seeded tiny generators, the reference cappy's decoding with the Flax rules is compared
with token for token (tests/test_t5.py, tests/test_causal_lm.py, tests/test_bart.py).

    .venv-original/bin/python scripts/baselines/make_generation_golden.py [--output FILE]

Per record: a config, the parameters drawn by `cappy.engine.weights.tiny_models.seeded_parameters`
over the parameter tree of transformers' own Flax model (sorted names, one seeded
generator: the same tree gives the same numbers in cappy), the end-of-sequence logit
made likelier (`eos_boost`) so that outputs end at many lengths, 20 seeded prompts
(seq2seq: right-padded; decoder-only: left-padded) in batches of 5, min_length 3 new tokens,
64 in all. Seq2seq records keep whole sequences (the decoder start first); decoder-only
records keep the 64 new tokens. Seq2seq records also hold the beams' log-likelihood sums
under the Flax model. The BART record decodes with bart-large's forced tokens
(`generation`: <s> first, </s> last), its end of sequence made likelier by adding
`eos_bias` to final_logits_bias (its embedding row is also the decoder start token's);
not with its no-repeated-3-gram rule, which Flax generate() cannot run on this stack
(its sparse n-gram lookup fails on jax 0.9.2: "bcoo_gather: mode=CLIP not yet
supported"), and which tests/test_bart.py checks against PyTorch's generate().
transformers 4.57.6 has no Flax Qwen2, and its Flax Llama has no rope scaling: those
architectures are checked against PyTorch's generate() only. Its Flax Mistral
masks wrongly without a window (only the diagonal), so its record keeps the default
window of 4096 slots, longer than every sequence here. Needs `.venv-original`.
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # cappy.engine.weights.tiny_models.seeded_parameters only (numpy)

DEFAULT_OUTPUT = os.path.join(ROOT, "tests", "data", "generation_golden.json")
T5_CONFIG = dict(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                 num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8,
                 relative_attention_max_distance=20, feed_forward_proj="gated-gelu",
                 tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                 decoder_start_token_id=0)
LLAMA_CONFIG = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    bos_token_id=2, eos_token_id=1, pad_token_id=0, tie_word_embeddings=False)
RECORDS = {
    "t5": dict(family="t5", config=T5_CONFIG, seed=1, std=0.3, eos_boost=3.0),
    "t5 v1.0": dict(family="t5", config={**T5_CONFIG, "feed_forward_proj": "relu",
                                         "tie_word_embeddings": True},
                    seed=4, std=0.5, eos_boost=8.0),
    "gpt2": dict(family="gpt2", config=dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4,
                                            n_positions=128, bos_token_id=1, eos_token_id=1,
                                            pad_token_id=0),
                 seed=3, std=0.3, eos_boost=3.0),
    "llama gqa": dict(family="llama", config=LLAMA_CONFIG, seed=5, std=0.3, eos_boost=3.0),
    "mistral": dict(family="mistral", config={**LLAMA_CONFIG, "sliding_window": 4096},
                    seed=6, std=0.3, eos_boost=3.0),
    "bart": dict(family="bart", config=dict(
        vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=128, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2),
        generation=dict(forced_bos_token_id=0, forced_eos_token_id=2),
        seed=7, std=0.3, eos_bias=3.0),
}
SEQ2SEQ = ("t5", "bart")
N_PROMPTS, PROMPT_WIDTH, BATCH, NEW_TOKENS, MIN_NEW = 20, 32, 5, 64, 3


def flax_model(family, config):
    import transformers

    config_class, model_class = {
        "t5": (transformers.T5Config, transformers.FlaxT5ForConditionalGeneration),
        "gpt2": (transformers.GPT2Config, transformers.FlaxGPT2LMHeadModel),
        "llama": (transformers.LlamaConfig, transformers.FlaxLlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.FlaxMistralForCausalLM),
        "bart": (transformers.BartConfig, transformers.FlaxBartForConditionalGeneration),
    }[family]
    return model_class(config_class(**config), _do_init=False)


def seeded_weights(model, record):
    """The record's parameters over the Flax model's own tree, the end of sequence
    boosted in the output layer."""
    import jax

    from cappy.engine.weights.tiny_models import seeded_parameters

    shapes = jax.eval_shape(lambda: model.init_weights(jax.random.PRNGKey(0),
                                                       model.input_shape))
    params = seeded_parameters(jax.tree_util.tree_map(lambda x: x.shape, shapes,
                                                      is_leaf=lambda x: hasattr(x, "shape")),
                               record["seed"], record["std"])
    if record["family"] == "bart":
        params["final_logits_bias"][0, model.config.eos_token_id] += record["eos_bias"]
        return params
    eos, boost = model.config.eos_token_id, record["eos_boost"]
    if record["family"] == "gpt2":
        params["transformer"]["wte"]["embedding"][eos] *= boost
    elif model.config.tie_word_embeddings:
        params["shared"]["embedding"][eos] *= boost
    else:
        params["lm_head"]["kernel"][:, eos] *= boost
    return params


def seeded_prompts(seed, vocab):
    import numpy as np

    rng = np.random.default_rng([seed, 11])
    return [rng.integers(2, vocab, int(length)).tolist()
            for length in rng.integers(1, PROMPT_WIDTH + 1, N_PROMPTS)]


def batch_of(prompts, left):
    import numpy as np

    ids = np.zeros((len(prompts), PROMPT_WIDTH), np.int32)
    mask = np.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        cells = slice(PROMPT_WIDTH - len(prompt), None) if left else slice(0, len(prompt))
        ids[row, cells], mask[row, cells] = prompt, 1
    return ids, mask


def generations(model, params, prompts, seq2seq, settings):
    import numpy as np

    found = {"beam4": [], "greedy": []}
    length = NEW_TOKENS if seq2seq else PROMPT_WIDTH + NEW_TOKENS
    least = MIN_NEW if seq2seq else PROMPT_WIDTH + MIN_NEW
    for start in range(0, len(prompts), BATCH):
        ids, mask = batch_of(prompts[start:start + BATCH], left=not seq2seq)
        for name, beams in (("beam4", 4), ("greedy", 1)):
            sequences = np.asarray(model.generate(
                ids, attention_mask=mask, params=params, max_length=length, min_length=least,
                num_beams=beams, do_sample=False, early_stopping=False, length_penalty=1.0,
                pad_token_id=model.config.pad_token_id,
                eos_token_id=model.config.eos_token_id, **settings).sequences)
            found[name] += (sequences if seq2seq else sequences[:, PROMPT_WIDTH:]).tolist()
    return found


def seq2seq_log_likelihood_sums(model, params, prompts, sequences):
    """Each sequence's summed log-probability, its tokens after the start up to the first
    end of sequence, under the Flax model given the prompt."""
    import jax
    import numpy as np

    config = model.config
    ids, mask = batch_of(prompts, left=False)
    decoder = np.zeros((len(prompts), NEW_TOKENS), np.int32)
    targets, target_mask = np.zeros_like(decoder), np.zeros_like(decoder)
    for row, sequence in enumerate(sequences):
        target = sequence[1:]
        if config.eos_token_id in target:
            target = target[:target.index(config.eos_token_id) + 1]
        decoder[row, :len(target)] = [config.decoder_start_token_id] + target[:-1]
        targets[row, :len(target)], target_mask[row, :len(target)] = target, 1
    logits = model(ids, attention_mask=mask, decoder_input_ids=decoder,
                   decoder_attention_mask=target_mask, params=params).logits
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    picked = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    return (picked * target_mask).sum(-1).tolist()


def make_record(record):
    import jax

    model = flax_model(record["family"], record["config"])
    params = seeded_weights(model, record)
    prompts = seeded_prompts(record["seed"], record["config"]["vocab_size"])
    seq2seq = record["family"] in SEQ2SEQ
    with jax.default_device(jax.devices("cpu")[0]):
        found = generations(model, params, prompts, seq2seq, record.get("generation", {}))
        out = {**{k: v for k, v in record.items() if k != "family"}, "family": record["family"],
               "prompts": prompts, "prompt_width": PROMPT_WIDTH, **found}
        if seq2seq:
            out["beam4_log_likelihood_sum"] = seq2seq_log_likelihood_sums(
                model, params, prompts, found["beam4"])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default=DEFAULT_OUTPUT)
    p.add_argument("--records", default=",".join(RECORDS),
                   help="comma-separated records to make (default: all)")
    args = p.parse_args(argv)
    import jax
    import transformers

    records = {name: make_record(RECORDS[name]) for name in args.records.split(",")}
    golden = {"made_by": "scripts/baselines/make_generation_golden.py",
              "transformers": transformers.__version__, "jax": jax.__version__, **records}
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(golden, file)
        file.write("\n")
    print(f"wrote {args.output}: {', '.join(records)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
