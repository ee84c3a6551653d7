#!/usr/bin/env bash
# The whole test suite, slow tests included, as CI runs it (after scripts/setup.sh with
# CAPPY_TORCH=1 and scripts/setup_original.sh): the BIG-Bench sdist is fetched once into
# ~/.cache/cappy for the full-conversion test, and a test that would skip fails instead,
# naming what is missing (CAPPY_NO_SKIPS=1). Extra arguments go to pytest.
# The registry stopped serving bigbench==1.0.0 (seen 2026-12-07: only 0.0.1, which holds no
# task); where it cannot be fetched and CAPPY_BIGBENCH_SDIST names no copy, that one test is
# left out, and this says so first.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
sdist_error="$(mktemp)"
trap 'rm -f "$sdist_error"' EXIT
if [ -z "${CAPPY_BIGBENCH_SDIST:-}" ]; then
    if CAPPY_BIGBENCH_SDIST="$(.venv/bin/python -c \
            'from cappy.bigbench.data import ensure_sdist; print(ensure_sdist("~/.cache/cappy", progress=False))' \
            2>"$sdist_error")"; then
        export CAPPY_BIGBENCH_SDIST
    else
        echo "scripts/test.sh: $(tail -n 1 "$sdist_error")" >&2
        echo "scripts/test.sh: leaving out the full BIG-Bench conversion test" \
             "(set CAPPY_BIGBENCH_SDIST to a copy of bigbench-1.0.0.tar.gz to run it)" >&2
        extra+=(--deselect tests/test_bigbench_data.py::test_full_sdist_sizes_and_sample)
    fi
else
    export CAPPY_BIGBENCH_SDIST
fi
CAPPY_NO_SKIPS=1 .venv/bin/python -m pytest -q -m "slow or not slow" "${extra[@]}" "$@"
