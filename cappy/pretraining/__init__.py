"""Pretraining Cappy: building the pair shards, and training on them."""
