"""The paper's recipes that flags, the engine and the experiments share, light to import
(for every script's --help): the candidate decodings and the learning-rate schedules."""

# Decoding name -> generate() arguments. Unset arguments keep transformers'
# defaults, as in the original release (so plain "sampling" keeps the default
# top_k of 50 from the generation config).
DECODINGS = {
    "beam4": {"num_beams": 4},
    "sampling": {"do_sample": True},
    "temp0.9": {"do_sample": True, "temperature": 0.9},
    "topk40": {"do_sample": True, "top_k": 40},
    "topp0.95": {"do_sample": True, "top_p": 0.95},
}
DETERMINISTIC_DECODINGS = ("beam4",)  # generated once, not n_sample_gens times
LOG_LIKELIHOOD_KEYS = ("log_likelihood_sum", "log_likelihood_mean")

# The learning-rate schedules cappy.engine.jobs.training offers: the release's as it ran
# ("paper") and the one it meant ("corrected").
LR_SCHEDULES = ("paper", "corrected")
