"""scripts/setup.sh refuses an old Python in one line and rebuilds a broken .venv,
before installing anything (checked on a copy of the script with stand-in
interpreters: nothing is installed)."""

import os
import shutil
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_python(path, version, ok):
    """An interpreter stand-in: `-V` prints `version`; the version check exits 0 if ok."""
    path.write_text("#!/usr/bin/env bash\n"
                    f'if [ "$1" = "-V" ]; then echo "Python {version}"; exit 0; fi\n'
                    f'if [ "$1" = "-c" ]; then exit {0 if ok else 1}; fi\n'
                    "exit 3\n")
    path.chmod(0o755)
    return path


def copy_of_setup(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(os.path.join(REPO, "scripts", "setup.sh"), tmp_path / "scripts" / "setup.sh")
    return tmp_path / "scripts" / "setup.sh"


def test_an_old_python_is_refused_in_one_line(tmp_path):
    script = copy_of_setup(tmp_path)
    old = fake_python(tmp_path / "python3.10", "3.10.12", ok=False)
    done = subprocess.run(["bash", str(script)], env={**os.environ, "PYTHON": str(old)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"cappy needs Python 3.11 or newer; {old} is Python 3.10.12. Run again with "
        "PYTHON=python3.11 (or python3.12)."]
    assert not (tmp_path / ".venv").exists()


def test_a_broken_venv_is_rebuilt(tmp_path):
    script = copy_of_setup(tmp_path)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    fake_python(tmp_path / ".venv" / "bin" / "python", "3.10.12", ok=False)
    # A good interpreter whose `-m venv` fails: the script stops right after the rebuild
    # decision, so nothing is installed.
    good = fake_python(tmp_path / "python3.11", "3.11.9", ok=True)
    done = subprocess.run(["bash", str(script)], env={**os.environ, "PYTHON": str(good)},
                          capture_output=True, text=True, timeout=60)
    assert "rebuilding .venv: its interpreter is broken or older than 3.11" in done.stdout
    assert not (tmp_path / ".venv").exists()  # removed; the stand-in made no new one
    assert done.returncode != 0


def test_the_original_stack_is_refused_on_another_python_in_one_line(tmp_path):
    """scripts/setup_original.sh: the original release's lock is for Python 3.11."""
    (tmp_path / "scripts" / "baselines").mkdir(parents=True)
    shutil.copy(os.path.join(REPO, "scripts", "setup_original.sh"), tmp_path / "scripts")
    for name in ("requirements-original.txt", "constraints-original.txt"):
        shutil.copy(os.path.join(REPO, "scripts", "baselines", name),
                    tmp_path / "scripts" / "baselines")
    newer = fake_python(tmp_path / "python3.12", "3.12.1", ok=False)
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "setup_original.sh")],
                          env={**os.environ, "PYTHON": str(newer)}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"the original release's stack (jax 0.9.2) is locked on Python 3.11; {newer} is "
        "Python 3.12.1. Run again with PYTHON=python3.11."]
    assert not (tmp_path / ".venv-original").exists()


def test_download_scripts_use_the_projects_interpreter():
    """gdown is installed in .venv: the download scripts call that interpreter, not
    whatever `python` is on the PATH."""
    done = subprocess.run(["bash", "-c", 'source scripts/_gdrive.sh; echo "$CAPPY_PYTHON"'],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    venv_python = os.path.join(REPO, ".venv", "bin", "python")
    expected = venv_python if os.access(venv_python, os.X_OK) else "python3"
    assert done.stdout.strip() == expected


def test_a_leg_without_its_interpreter_stops_in_one_line(tmp_path):
    """scripts/setup_leg.sh: no Python 3.13 on PATH, no pyenv, none given; or one of
    another version given. Nothing is built."""
    shutil.copytree(os.path.join(REPO, "scripts", "legs"), tmp_path / "scripts" / "legs")
    shutil.copy(os.path.join(REPO, "scripts", "setup_leg.sh"), tmp_path / "scripts")
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    for tool in ("bash", "cat", "grep", "tail", "sha256sum", "cut", "dirname"):
        os.symlink(shutil.which(tool), bare_path / tool)
    wrong = fake_python(tmp_path / "python3.12", "3.12.1", ok=False)
    expected = ("CI's newest leg needs Python 3.13, and none was found (not python3.13 on "
                "PATH, not in pyenv); set PYTHON=/path/to/python3.13")
    for python in ("", str(wrong)):
        done = subprocess.run(["bash", str(tmp_path / "scripts" / "setup_leg.sh"), "newest"],
                              env={"PATH": str(bare_path), "PYTHON": python},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / ".venv-newest").exists()
