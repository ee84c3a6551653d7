#!/usr/bin/env bash
# The authors' FLAN-T5 candidates for the 45 BIG-Bench tasks (small to xxl), unzipped
# into ./bigbench_flan_gens/. Run from the repository root. To make candidates
# yourself instead: python scripts/bigbench_flan_generate.py --model_name_or_path ...
set -euo pipefail
source "$(dirname "$0")/_gdrive.sh"
gdrive_fetch 150v5Z9GSD7GU0f2Lr71BagsyC1ytkvI5 bigbench_flan_gens.zip "FLAN-T5 candidates (zip)"
if ! unzip -tq bigbench_flan_gens.zip >/dev/null 2>&1; then
    echo "error: bigbench_flan_gens.zip is not a valid zip (a Drive error page?); delete it and retry." >&2
    exit 1
fi
unzip -oq bigbench_flan_gens.zip
echo "Candidates are in ./bigbench_flan_gens/"
