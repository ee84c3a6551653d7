"""One hub reader for every dataset the project loads (cappy.engine.dataset_hub), checked with a
stand-in for datasets.load_dataset: no network."""

import datasets
import pytest

from cappy.engine import dataset_hub as hub


@pytest.fixture
def calls(monkeypatch):
    """Records load_dataset calls; a repository named script/* has only a loading script."""
    seen = []

    def load_dataset(path, name=None, **kwargs):
        seen.append((path, name, kwargs))
        if path.startswith("script/"):
            raise RuntimeError(f"Dataset scripts are no longer supported, but found {path}.py")
        if path.startswith("broken/"):
            raise RuntimeError("something else went wrong")
        return [{"from": path}]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return seen


def test_a_plain_repository_is_read_directly(calls):
    assert hub.load_hub_dataset("me/data", "cfg", "train", streaming=True) == [{"from": "me/data"}]
    assert calls == [("me/data", "cfg", {"split": "train", "streaming": True, "revision": None})]


def test_a_script_repository_is_read_from_its_parquet_export(calls):
    assert hub.load_hub_dataset("script/anli", "plain_text", "test_r1") == [{"from": "parquet"}]
    path, name, kwargs = calls[-1]
    assert (path, name) == ("parquet", None)
    # The split's own folder, whatever its name (test_r1 is not a name datasets infers).
    assert kwargs == {"data_files": {"test_r1": "hf://datasets/script/anli@refs%2Fconvert%2F"
                                                "parquet/plain_text/test_r1/*.parquet"},
                      "split": "test_r1", "streaming": False}
    hub.load_hub_dataset("script/trec", None, "train", streaming=True)
    assert calls[-1][2]["data_files"] == {
        "train": "hf://datasets/script/trec@refs%2Fconvert%2Fparquet/default/train/*.parquet"}
    assert calls[-1][2]["streaming"] is True


def test_other_errors_and_pinned_revisions_are_not_redirected(calls):
    with pytest.raises(RuntimeError, match="something else"):
        hub.load_hub_dataset("broken/x", None, "train")
    with pytest.raises(RuntimeError, match="no longer supported"):
        hub.load_hub_dataset("script/x", None, "train", revision="abc123")
    assert [path for path, _, _ in calls] == ["broken/x", "script/x"]


def test_both_builders_read_through_it(calls):
    from cappy.pretraining import data as pretraining_data
    from cappy.promptsource import data as promptsource_data

    assert promptsource_data.load_hub_split("script/sg", "cb", "validation") == [
        {"from": "parquet"}]
    assert calls[-1][2]["split"] == "validation" and calls[-1][2]["streaming"] is False
    spec = pretraining_data.DatasetSpec(name="x", category="c", hf_path="script/x",
                                        hf_config="all", hf_split="train")
    assert list(pretraining_data.load_hub_examples(spec)) == [{"from": "parquet"}]
    assert calls[-1][2]["streaming"] is True
    assert calls[-1][2]["data_files"]["train"].endswith("/all/train/*.parquet")


def test_dataset_hub_failures_are_one_line_naming_the_read_and_the_way_out(monkeypatch):
    """Every dataset reader (PromptSource, pretraining, BIG-Bench) turns a hub failure into
    one line: what it read, the error's first line, its own hint, and HF_HUB_OFFLINE."""
    import datasets

    from cappy.bigbench import data as bigbench_data
    from cappy.engine.errors import CappyError
    from cappy.pretraining import data as pretraining_data
    from cappy.promptsource import data as promptsource_data

    def unreachable(*args, **kwargs):
        raise ConnectionError("Max retries exceeded with url: /api/datasets/x\n(caused by ...)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setattr(datasets, "get_dataset_config_names", unreachable)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = pretraining_data.DatasetSpec(name="x", category="c", hf_path="owner/x",
                                        hf_config=None, hf_split="train")
    reads = [
        (lambda: promptsource_data.load_hub_split("aps/super_glue", "cb", "validation"),
         "aps/super_glue (cb) split validation", "another repository with the same fields"),
        (lambda: list(pretraining_data.load_hub_examples(spec)), "x (", "--dataset_overrides"),
        (lambda: bigbench_data._hub_call(datasets.get_dataset_config_names, "tasksource/bigbench"),
         "tasksource/bigbench", "offline: --source pypi"),
    ]
    for read, where, hint in reads:
        with pytest.raises(CappyError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"cannot read {where}") and "\n" not in message
        assert "ConnectionError: Max retries exceeded with url: /api/datasets/x" in message
        assert hint in message and "HF_HUB_OFFLINE is set" in message


UNREACHABLE_LOAD = """
import sys
from cappy.engine.errors import CappyError
from cappy.engine.weights.cappy_checkpoint import load_cappy
from cappy.engine.weights.generator_loading import load_generator
for load, name in ((load_cappy, "owner/some-cappy"), (load_generator, "owner/some-generator")):
    try:
        load(name)
    except CappyError as error:
        print(error)
"""


def test_an_unreachable_hub_is_one_line_without_retries(tmp_path):
    """A hub id while the hub cannot be reached (here: a closed local port) and nothing
    is cached: one line naming the hub and the way out, and none of the hub's retries."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"),
           "JAX_PLATFORMS": "cpu"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", UNREACHABLE_LOAD], capture_output=True,
                          text=True, env=env, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2, done.stdout + done.stderr
    for what, line in zip(("Cappy model 'owner/some-cappy'", "generator 'owner/some-generator'"),
                          lines):
        assert line.startswith(f"cannot load {what}: the hub (http://127.0.0.1:9) cannot be "
                               "reached"), line
        assert "HF_HUB_OFFLINE=1" in line and "local folder" in line
    assert "Retrying" not in done.stderr


def test_a_missing_local_folder_is_named(tmp_path):
    from cappy.engine.weights.cappy_checkpoint import load_cappy
    from cappy.engine.errors import CappyError
    from cappy.engine.weights.generator_loading import load_generator

    for load in (load_cappy, load_generator):
        with pytest.raises(CappyError, match="no-such-folder: folder not found"):
            load(str(tmp_path / "no-such-folder"))
