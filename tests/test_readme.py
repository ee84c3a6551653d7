"""The README's Python examples run as written, against a tiny local model."""

import os
import re

import pytest
from conftest import assert_close

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks():
    with open(README, encoding="utf-8") as file:
        text = file.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run(tiny_scorer):
    pytest.importorskip("torch")
    # The folder the project writes carries Flax and PyTorch weights, as the hub's does.
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace, scores = {}, []
    for block in blocks:
        code = block.replace('"btan2/cappy-large"', repr(tiny_scorer))
        assert tiny_scorer in code or "from_pretrained" not in code
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
        scores.append(namespace.get("score"))
    # Each example produced what it says it does, and the package scores as the model card.
    assert isinstance(namespace["score"], float)
    own = namespace["cappy"].score([namespace["instruction"]], [namespace["response"]])[0]
    assert_close([own], [scores[0]])
    assert namespace["scores"].shape == (2,)
    assert sorted(c for c, _ in namespace["ranked"]) == ["Business", "Sports", "World"]
    assert namespace["label"] in ["World", "Sports", "Business", "Sci/Tech"]
