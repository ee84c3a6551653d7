#!/usr/bin/env bash
# Table 1 of the paper in one command: Cappy zero-shot on 11 held-out PromptSource tasks.
#
#   bash scripts/reproduce_table1.sh [cappy_promptsource.py flags, e.g. --dtype bfloat16]
#
# Steps, each skipped when its output is complete (so a re-run resumes):
#   1. the test file TEST_FILE: built from the datasets on the hub and PromptSource's
#      templates (TEST_DATA=build, the default; StoryCloze needs STORY_CLOZE_DIR, the folder
#      of its hand-downloaded CSV, and is left out without it), or the authors' own file
#      from Google Drive (TEST_DATA=download);
#   2. the evaluation with MODEL: accuracy per dataset beside the paper's Table 1, saved as
#      RESULTS_FILE (with RESULTS_FILE's .predictions.jsonl beside it). A finished
#      RESULTS_FILE is printed again instead of re-evaluated; delete it to evaluate again.
#
# Settings (environment): MODEL (btan2/cappy-large), TEST_DATA (build | download),
# TEST_FILE (promptsource_test.jsonl), STORY_CLOZE_DIR, RESULTS_FILE
# (promptsource_results.json), PYTHON (the repository's .venv/bin/python).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
MODEL="${MODEL:-btan2/cappy-large}"
TEST_DATA="${TEST_DATA:-build}"
TEST_FILE="${TEST_FILE:-promptsource_test.jsonl}"
RESULTS_FILE="${RESULTS_FILE:-promptsource_results.json}"
case "$TEST_DATA" in build|download) ;; *)
    echo "error: TEST_DATA=$TEST_DATA: expected build or download" >&2; exit 2 ;;
esac

echo "[1/2] the test file: $TEST_FILE"
if [ -s "$TEST_FILE" ]; then
    echo "      present; skipped (delete it to make it again)"
elif [ "$TEST_DATA" = download ]; then
    if [ "$TEST_FILE" != promptsource_test.jsonl ]; then
        echo "error: TEST_DATA=download writes ./promptsource_test.jsonl; leave TEST_FILE unset" >&2
        exit 2
    fi
    bash "$REPO/scripts/download_promptsource_test_data.sh"
else
    build=("$PYTHON" "$REPO/scripts/build_promptsource_test_data.py" --output_file "$TEST_FILE")
    if [ -n "${STORY_CLOZE_DIR:-}" ]; then
        build+=(--story_cloze_dir "$STORY_CLOZE_DIR")
    fi
    "${build[@]}"
fi

echo "[2/2] evaluating $MODEL -> $RESULTS_FILE"
if [ -s "$RESULTS_FILE" ]; then
    echo "      finished before; its table (delete $RESULTS_FILE to evaluate again):"
    "$PYTHON" -m cappy.promptsource.evaluate "$RESULTS_FILE"
else
    "$PYTHON" "$REPO/cappy_promptsource.py" --data_file "$TEST_FILE" \
        --model_name_or_path "$MODEL" --output_file "$RESULTS_FILE" "$@"
fi
