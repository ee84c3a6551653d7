"""Experiment 1: zero-shot classification on 11 held-out PromptSource tasks. Templates,
building the test file, and the evaluation."""
