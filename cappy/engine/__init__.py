"""The engine under the experiments: models (RoBERTa, T5, BART, decoder-only LMs) and their
checkpoints, encoding and packing, scoring, training and generation, plus the reading,
writing and error helpers everything shares. It imports nothing from the experiment
packages above it."""
