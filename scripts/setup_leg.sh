#!/usr/bin/env bash
# Create ./.venv-LEG for one of CI's other stacks and install cappy into it (editable),
# locked by scripts/legs/constraints-LEG.txt:
#   gpu-image  Python 3.12, jax 0.11.2, transformers 5.17.0: the GPU image's versions
#   newest     Python 3.13, the newest jax, flax, transformers and datasets the registry serves
# No PyTorch in either (on Python 3.12+ it downloads a CUDA build of several GB). Kept while
# its lock is unchanged. The interpreter: $PYTHON, else python3.X on PATH, else pyenv's.
set -euo pipefail
cd "$(dirname "$0")/.."
leg="${1:-}"
case "$leg" in
    gpu-image) version=3.12 ;;
    newest) version=3.13 ;;
    *) echo "usage: scripts/setup_leg.sh gpu-image|newest" >&2; exit 2 ;;
esac
venv=".venv-$leg"
requirements="scripts/legs/requirements-$leg.txt"
lock="scripts/legs/constraints-$leg.txt"
is_version="import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if python$version -c "$is_version" 2>/dev/null; then
        python="$(command -v python$version)"
    elif command -v pyenv >/dev/null && pyenv_version=$(pyenv versions --bare | grep -E "^$version\.[0-9]+$" | tail -1) \
            && [ -n "$pyenv_version" ]; then
        python="$(pyenv root)/versions/$pyenv_version/bin/python$version"
    fi
fi
if [ -z "$python" ] || ! "$python" -c "$is_version" 2>/dev/null; then
    echo "CI's $leg leg needs Python $version, and none was found (not python$version on PATH, not in pyenv); set PYTHON=/path/to/python$version" >&2
    exit 1
fi
stamp="$venv/.cappy-lock"
wanted=$(cat "$requirements" "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && "$venv/bin/python" -c "import cappy, jax, redco" 2>/dev/null; then
    echo "$leg environment ready ($venv, unchanged)"
    exit 0
fi
rm -rf "$venv"
"$python" -m venv "$venv"
pip_quiet=""
[ -t 1 ] || pip_quiet="--quiet"
echo "installing cappy (editable) and the $leg leg's locked stack into $venv (a few minutes the first time) ..."
"$venv/bin/python" -m pip install $pip_quiet -e ".[test]" -r "$requirements" -c "$lock"
echo "$wanted" > "$stamp"
TRANSFORMERS_VERBOSITY=error "$venv/bin/python" -c "import sys, jax, flax, redco, transformers; from importlib.metadata import version; print('$leg environment ready: Python', sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'transformers', transformers.__version__, 'redco', version('redco'))"
