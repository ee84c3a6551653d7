#!/usr/bin/env bash
# Create ./.venv-original with the original release's stack (transformers 4.57.6's Flax
# classes, Redco 0.4.13, jax 0.9.2), locked by scripts/baselines/constraints-original.txt:
# the baselines in scripts/baselines/ and the references the tests compare cappy with run
# in it. Kept while its lock is unchanged, so a second run costs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
requirements=scripts/baselines/requirements-original.txt
lock=scripts/baselines/constraints-original.txt
stamp=.venv-original/.cappy-lock
wanted=$(cat "$requirements" "$lock" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && .venv-original/bin/python -c \
        "import redco; from transformers import FlaxRobertaForSequenceClassification" 2>/dev/null; then
    echo "original release's environment ready (.venv-original, unchanged)"
    exit 0
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    echo "the original release's stack (jax 0.9.2) is locked on Python 3.11; $PYTHON is" \
         "$("$PYTHON" -V 2>&1 || echo missing). Run again with PYTHON=python3.11." >&2
    exit 1
fi
rm -rf .venv-original
"$PYTHON" -m venv .venv-original
pip_quiet=""
[ -t 1 ] || pip_quiet="--quiet"
echo "installing the original release's stack into .venv-original (a minute or two) ..."
.venv-original/bin/python -m pip install $pip_quiet -r "$requirements" -c "$lock"
echo "$wanted" > "$stamp"
.venv-original/bin/python -c "import jax, redco, transformers; print('original release environment ready: jax', jax.__version__, 'transformers', transformers.__version__, 'redco 0.4.13')"
