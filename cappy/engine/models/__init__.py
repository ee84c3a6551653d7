"""The forward passes and decoding: pure functions of (parameters, config, inputs) over a
checkpoint's own parameter tree. Cappy's RoBERTa (`roberta`, with packed rows: `packing`),
the generators (`t5`, `bart`, `causal_lm`; `families` tells them apart) and the searches
(`decoding`). Nothing here reads files, knows devices or runs a job."""
