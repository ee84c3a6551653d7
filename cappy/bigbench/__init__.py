"""Experiment 2: boosting a generator on 45 BIG-Bench tasks. Task data, candidate files,
finetuning examples, one task's run, the batch runner over many, and the tables."""
