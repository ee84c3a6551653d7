"""Weights and checkpoints: weight files in and out (`files`), where a model comes from
(`model_hub`), Cappy's checkpoints (`cappy_checkpoint`), the generators' loading
(`generator_loading`), and tiny random models for offline runs (`tiny_models`)."""
