#!/usr/bin/env bash
# The whole test suite, slow tests included, as CI runs it (after scripts/setup.sh with
# CAPPY_TORCH=1 and scripts/setup_original.sh): the BIG-Bench sdist is fetched once into
# ~/.cache/cappy for the full-conversion test, and a test that would skip fails instead,
# naming what is missing (CAPPY_NO_SKIPS=1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
CAPPY_BIGBENCH_SDIST="${CAPPY_BIGBENCH_SDIST:-$(.venv/bin/python -c \
    'from cappy.bigbench.data import ensure_sdist; print(ensure_sdist("~/.cache/cappy", progress=False))')}"
export CAPPY_BIGBENCH_SDIST
CAPPY_NO_SKIPS=1 .venv/bin/python -m pytest -q -m "slow or not slow" "$@"
