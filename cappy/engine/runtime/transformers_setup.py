"""What cappy asks of transformers before using its configs and tokenizers: no PyTorch
import in a process that computes with JAX only, and no advisory noise while loading.
"""

import contextlib
import io
import logging
import os
import sys


def keep_torch_out_of_transformers():
    """In a process that computes with JAX only: keep transformers from importing PyTorch,
    which it does whenever torch is installed (about 1 s of start-up on a 2-core CPU).
    Call before transformers is first imported. transformers 4 reads USE_TORCH (an
    explicit value in the environment is kept). transformers 5 has no switch: while the
    modules cappy uses are imported, torch is marked absent (`sys.modules["torch"] =
    None`, which its availability check reads as not installed), then the mark is lifted,
    so that other libraries and `pytorch_model.bin` weights find torch as usual."""
    os.environ.setdefault("USE_TORCH", "0")
    if (os.environ["USE_TORCH"] != "0" or "torch" in sys.modules
            or "transformers" in sys.modules):
        return
    sys.modules["torch"] = None
    advice = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"  # not its "PyTorch was not found"
    try:
        import transformers  # noqa: F401
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig  # noqa: F401
        import transformers.modeling_rope_utils  # noqa: F401
        import transformers.tokenization_utils_tokenizers  # noqa: F401
    except ImportError:  # another transformers: its own imports decide
        pass
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
        if advice is None:
            del os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"]
        else:
            os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = advice


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' notices while loading (its Flax deprecation banner, the
    loading report); real errors still raise."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
