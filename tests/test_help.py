"""Every command's --help answers without importing the heavy libraries (JAX,
transformers, PyTorch, datasets, nltk, Redco, Flax), so it comes back at once."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = {"jax", "transformers", "torch", "datasets", "nltk", "redco", "flax"}
COMMANDS = [["-m", "cappy"], ["-m", "cappy", "score"], ["-m", "cappy", "rerank"],
            ["-m", "cappy", "finetune"], ["cappy_bigbench.py"], ["cappy_promptsource.py"],
            ["cappy_pretrain.py"]] + [
    [os.path.join("scripts", name)] for name in sorted(os.listdir(os.path.join(REPO, "scripts")))
    if name.endswith(".py")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_imports_nothing_heavy(command):
    done = subprocess.run([sys.executable, "-X", "importtime", *command, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & HEAVY, sorted(imported & HEAVY)


# Scripts that build their own parser, and package modules behind thin scripts.
SCRIPTS_WITH_PARSE_ARGS = [command[0] for command in COMMANDS if command[0].endswith(".py")
                          and "def parse_args(" in open(os.path.join(REPO, command[0])).read()]
MODULES_WITH_PARSE_ARGS = ["cappy.bigbench.task"]


def test_the_scripts_are_found():
    assert {"cappy_promptsource.py", "cappy_pretrain.py",
            os.path.join("scripts", "bigbench_flan_generate.py")} <= set(SCRIPTS_WITH_PARSE_ARGS)
    # cappy_bigbench.py is a thin wrapper over the package's command
    assert "from cappy.bigbench.task import main" in open(
        os.path.join(REPO, "cappy_bigbench.py")).read()


@pytest.mark.parametrize("script", SCRIPTS_WITH_PARSE_ARGS + MODULES_WITH_PARSE_ARGS)
def test_every_flag_is_documented_with_its_default(script, monkeypatch):
    import argparse
    import importlib
    import importlib.util

    if script.endswith(".py"):
        spec = importlib.util.spec_from_file_location(script[:-3], os.path.join(REPO, script))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(script)
    parsers = []

    def capture(self, *args, **kwargs):
        parsers.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(SystemExit):
        module.parse_args([])
    (parser,) = parsers
    undocumented = [action.option_strings[0] for action in parser._actions
                    if action.option_strings and action.dest != "help" and not action.help]
    assert undocumented == []
    assert "(default: " in parser.format_help()


def test_every_flag_of_the_cappy_command_is_documented():
    import argparse

    from cappy.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"score", "rerank", "finetune"}
    for name, sub in commands.choices.items():
        undocumented = [a.option_strings[0] for a in sub._actions
                        if a.option_strings and a.dest != "help" and not a.help]
        assert undocumented == [], name
