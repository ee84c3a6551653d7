#!/usr/bin/env bash
# Create ./.venv and install cappy into it, editable, with the locked requirements (CPU).
# Safe to run twice.
# For NVIDIA GPUs, set CAPPY_JAX="jax[cuda13]==0.10.2" (or cuda12) first; for TPUs "jax[tpu]==0.10.2".
# CAPPY_TORCH=1 also installs PyTorch for Cappy's torch backend (requirements-torch.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
new_enough='import sys; sys.exit(sys.version_info[:2] < (3, 11))'
if ! "$PYTHON" -c "$new_enough" 2>/dev/null; then
    echo "cappy needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1 || echo missing)." \
         "Run again with PYTHON=python3.11 (or python3.12)." >&2
    exit 1
fi
if [ -e .venv ] && ! .venv/bin/python -c "$new_enough" 2>/dev/null; then
    echo "rebuilding .venv: its interpreter is broken or older than 3.11"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# pip's own progress (downloads, builds) on a terminal; one line per step in logs.
pip_quiet=""
[ -t 1 ] || pip_quiet="--quiet"
echo "installing cappy (editable) and its locked requirements into .venv (a few minutes the first time) ..."
.venv/bin/python -m pip install $pip_quiet -e ".[test]" -c constraints.txt
if [ "${CAPPY_TORCH:-0}" = "1" ]; then  # the optional PyTorch backend
    echo "installing PyTorch (CPU) for the torch backend ..."
    .venv/bin/python -m pip install $pip_quiet -r requirements-torch.txt -c constraints.txt
fi
if [ -n "${CAPPY_JAX:-}" ]; then
    echo "installing $CAPPY_JAX ..."
    .venv/bin/python -m pip install $pip_quiet "$CAPPY_JAX"
fi
.venv/bin/python -c "import jax, flax, optax, redco, transformers; print('cappy environment ready: jax', jax.__version__, 'on', jax.default_backend())"
