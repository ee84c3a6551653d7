"""The engine under the experiments, in four rooms over a few shared modules:

- `models/`: the forward passes and decoding (RoBERTa, T5, BART, decoder-only LMs);
- `weights/`: weight files, checkpoints, loading generators, tiny models;
- `runtime/`: the device mesh, several hosts, which process writes, how a command runs;
- `jobs/`: scoring, training, candidate generation, and the front door (`jobs.session`);
- shared below them: errors, settings and flags (`config`, `flags`), files (`io`), data
  rows, ROUGE-L, ranking, the paper's recipes, the hub's datasets.

It imports nothing from the experiment packages above it, and no room imports one above
it."""
