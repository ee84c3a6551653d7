"""Every command's --help answers without importing the heavy libraries (JAX,
transformers, PyTorch, datasets, nltk, Redco, Flax), so it comes back at once."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = {"jax", "transformers", "torch", "datasets", "nltk", "redco", "flax"}
# name of `cappy NAME` -> (its module, its script in scripts/, if any)
PACKAGE_COMMANDS = {
    "bigbench": ("cappy.bigbench.task", "cappy_bigbench.py"),
    "promptsource": ("cappy.promptsource.evaluate", "cappy_promptsource.py"),
    "pretrain": ("cappy.pretraining.train", "cappy_pretrain.py"),
    "serve": ("cappy.serve.command", None),
    "generate": ("cappy.bigbench.generate", "scripts/bigbench_flan_generate.py"),
    "bigbench-tasks": ("cappy.bigbench.runner", "scripts/run_cappy_bigbench.py"),
    "bigbench-data": ("cappy.bigbench.build", "scripts/get_bigbench_data.py"),
    "baselines": ("cappy.bigbench.baselines", "scripts/present_bigbench_baselines.py"),
    "tables": ("cappy.bigbench.present", "scripts/present_cappy_bigbench_results.py"),
    "promptsource-data": ("cappy.promptsource.build", "scripts/build_promptsource_test_data.py"),
    "pretraining-data": ("cappy.pretraining.build", "scripts/build_pretraining_data.py"),
    "tiny-models": ("cappy.engine.weights.tiny_models", "scripts/make_tiny_models.py"),
    "demo": ("cappy.bigbench.demo", "scripts/demo_offline.py"),
    "processes": ("cappy.engine.runtime.local_processes", "scripts/run_local_processes.py"),
}
COMMANDS = ([["-m", "cappy"], ["-m", "cappy", "score"], ["-m", "cappy", "rerank"],
             ["-m", "cappy", "finetune"]]
            + [["-m", "cappy", name] for name in PACKAGE_COMMANDS]
            + [["cappy_bigbench.py"], ["cappy_promptsource.py"], ["cappy_pretrain.py"]]
            + [[os.path.join("scripts", name)]
               for name in sorted(os.listdir(os.path.join(REPO, "scripts")))
               if name.endswith(".py")])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_imports_nothing_heavy(command):
    done = subprocess.run([sys.executable, "-X", "importtime", *command, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & HEAVY, sorted(imported & HEAVY)


# Scripts that build their own parser (developer tooling: benchmarks, the original's code).
SCRIPTS_WITH_PARSE_ARGS = [command[0] for command in COMMANDS if command[0].endswith(".py")
                          and "def parse_args(" in open(os.path.join(REPO, command[0])).read()]
# The package modules of the commands, each with its parse_args.
COMMAND_MODULES = [module for module, _ in PACKAGE_COMMANDS.values()]


def test_every_user_script_is_a_thin_wrapper_over_its_command():
    """One way to declare a command: its module's configuration dataclass; the root and
    scripts/ files only call its main. What still parses its own flags is developer
    tooling (benchmarks, the original release's code in its own stack)."""
    for name, (module, script) in PACKAGE_COMMANDS.items():
        if script:
            text = open(os.path.join(REPO, script)).read()
            assert f"from {module} import main" in text and "argparse" not in text, script
    assert all(os.path.basename(script).startswith(("benchmark", "make_original", "original_",
                                                    "torch_promptsource", "make_generation"))
               for script in SCRIPTS_WITH_PARSE_ARGS), SCRIPTS_WITH_PARSE_ARGS


@pytest.mark.parametrize("script", SCRIPTS_WITH_PARSE_ARGS + COMMAND_MODULES)
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
    assert "(default: " in " ".join(parser.format_help().split())


def test_every_flag_of_the_cappy_command_is_documented():
    import argparse

    from cappy.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"score", "rerank", "finetune", *PACKAGE_COMMANDS}
    for name, sub in commands.choices.items():  # the experiments': tested above, as modules
        undocumented = [a.option_strings[0] for a in sub._actions
                        if a.option_strings and a.dest != "help" and not a.help]
        assert undocumented == [], name


def test_configuration_dataclass_makes_the_flags():
    """A job's flags come from its configuration dataclass: types, defaults, choices, the
    --quiet flag that turns `verbose` off, and the multi-host group."""
    from cappy.bigbench.task import TaskConfig, parse_args

    assert parse_args([]) == TaskConfig()
    config = parse_args(["--train_size", "64", "--learning_rate", "0", "--quiet",
                         "--lr_schedule", "corrected", "--n_processes", "2"])
    assert (config.train_size, config.learning_rate, config.verbose, config.lr_schedule,
            config.n_processes) == (64, 0.0, False, "corrected", 2)
    assert isinstance(config.learning_rate, float) and isinstance(config.n_processes, int)
    with pytest.raises(SystemExit):
        parse_args(["--lr_schedule", "sideways"])


def test_the_cappy_command_runs_the_experiments_commands():
    """`cappy bigbench|promptsource|pretrain` are the entry scripts' commands, same flags."""
    for name, script in (("bigbench", "cappy_bigbench.py"),
                         ("promptsource", "cappy_promptsource.py"),
                         ("pretrain", "cappy_pretrain.py")):
        ours = subprocess.run([sys.executable, "-m", "cappy", name, "--help"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        theirs = subprocess.run([sys.executable, script, "--help"], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert ours.returncode == 0 and theirs.returncode == 0, ours.stderr + theirs.stderr
        assert ours.stdout.startswith(f"usage: python -m cappy {name} ")
        flags = lambda text: sorted(set(re.findall(r"--[a-z0-9_]+", text)))  # noqa: E731
        assert flags(ours.stdout) == flags(theirs.stdout)
