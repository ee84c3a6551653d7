#!/usr/bin/env bash
# CI's other stacks: the tests of scripts/legs/tests.txt (every model family, the original's
# recorded choices, training, resume, generation, several processes, cappy serve, the
# package install) in .venv-LEG (scripts/setup_leg.sh LEG), slow ones among them included,
# and a test that would skip fails (CAPPY_NO_SKIPS=1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
leg="${1:?usage: scripts/test_leg.sh gpu-image|newest [pytest arguments]}"
shift
if [ ! -x ".venv-$leg/bin/python" ]; then
    echo "no .venv-$leg: run scripts/setup_leg.sh $leg first" >&2
    exit 1
fi
mapfile -t tests < <(grep -v '^\s*\(#\|$\)' scripts/legs/tests.txt)
echo "the $leg leg: ${#tests[@]} test files and tests of scripts/legs/tests.txt"
CAPPY_NO_SKIPS=1 ".venv-$leg/bin/python" -m pytest -q -m "slow or not slow" "${tests[@]}" "$@"
