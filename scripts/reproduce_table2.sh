#!/usr/bin/env bash
# Table 2 of the paper in one command: Cappy boosting generators on 45 BIG-Bench tasks.
#
#   bash scripts/reproduce_table2.sh [GEN_MODEL ...] [-- cappy_bigbench.py flags]
#
# GEN_MODEL: a FLAN-T5 size (flan-t5-small ... flan-t5-xxl, the default: all five), or,
# with CANDIDATES=generate, any generator's hub id or folder (its folder name names its
# candidates and results). Flags after `--` go to every task, e.g. `-- --train_size 1024
# --lr_schedule corrected`.
#
# Steps, each skipped when its output is complete (so a re-run resumes where it stopped):
#   1. the BIG-Bench data in DATA_DIR (BIGBENCH_SOURCE=hub, the default, or pypi: offline);
#   2. each generator's candidates in GEN_DIR/<generator>: the authors' files from Google
#      Drive (CANDIDATES=download, the default; FLAN-T5 only) or generated here
#      (CANDIDATES=generate, with GENERATE_FLAGS such as "--n_model_shards 4");
#   3. the baselines (decodings and self-score) -> RESULTS_DIR/baselines.json;
#   4. Cappy (MODEL) finetuned and reranking on every task through the batch runner
#      (DEVICES=0,1,... runs one task per GPU) -> RESULTS_DIR/<generator>/<task>.json;
#   5. the tables (ours beside the original release's A10G run, the paper's means) and
#      the plot -> RESULTS_DIR/cappy_bigbench.json and RESULTS_DIR/cappy_bigbench.png.
# A task that fails does not stop the others; the tables list it and the exit code is 1.
#
# Settings (environment): MODEL (btan2/cappy-large), DATA_DIR (bigbench_data), GEN_DIR
# (bigbench_flan_gens), RESULTS_DIR (bigbench_cappy_results), BIGBENCH_SOURCE, CANDIDATES,
# GENERATE_FLAGS, DEVICES, PYTHON (the repository's .venv/bin/python).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
MODEL="${MODEL:-btan2/cappy-large}"
DATA_DIR="${DATA_DIR:-bigbench_data}"
GEN_DIR="${GEN_DIR:-bigbench_flan_gens}"
RESULTS_DIR="${RESULTS_DIR:-bigbench_cappy_results}"
BIGBENCH_SOURCE="${BIGBENCH_SOURCE:-hub}"
CANDIDATES="${CANDIDATES:-download}"
FLAN_T5="flan-t5-small flan-t5-base flan-t5-large flan-t5-xl flan-t5-xxl"
case "$CANDIDATES" in download|generate) ;; *)
    echo "error: CANDIDATES=$CANDIDATES: expected download or generate" >&2; exit 2 ;;
esac

generators=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do generators+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift  # the rest goes to every task
[ ${#generators[@]} -gt 0 ] || read -r -a generators <<< "$FLAN_T5"
names=()
for generator in "${generators[@]}"; do
    name="$(basename "$generator")"
    if [ "$CANDIDATES" = download ] && [[ " $FLAN_T5 " != *" $name "* ]]; then
        echo "error: $generator: the authors' candidates are FLAN-T5's only ($FLAN_T5);" \
             "use CANDIDATES=generate for other generators" >&2
        exit 2
    fi
    names+=("$name")
done
models_csv="$(IFS=,; echo "${names[*]}")"

# Every task of DATA_DIR/subset_names.json, one per line (nothing when the file is absent).
tasks() {
    [ -s "$DATA_DIR/subset_names.json" ] || return 0
    "$PYTHON" -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))))' \
        "$DATA_DIR/subset_names.json"
}
# Whether FOLDER holds {task}_train.jsonl and {task}_validation.jsonl for every task.
complete() {
    local folder="$1" task n=0
    while read -r task; do
        n=$((n + 1))
        [ -s "$folder/${task}_train.jsonl" ] && [ -s "$folder/${task}_validation.jsonl" ] || return 1
    done < <(tasks)
    [ "$n" -gt 0 ]
}

echo "[1/5] BIG-Bench data -> $DATA_DIR"
if complete "$DATA_DIR"; then
    echo "      complete ($(tasks | wc -l) tasks); skipped"
else
    "$PYTHON" "$REPO/scripts/get_bigbench_data.py" --source "$BIGBENCH_SOURCE" --output_dir "$DATA_DIR"
fi

echo "[2/5] candidates ($CANDIDATES) -> $GEN_DIR: ${names[*]}"
missing=()
for i in "${!names[@]}"; do
    if complete "$GEN_DIR/${names[$i]}"; then
        echo "      ${names[$i]}: complete; skipped"
    else
        missing+=("$i")
    fi
done
if [ ${#missing[@]} -gt 0 ] && [ "$CANDIDATES" = download ]; then
    if [ "$GEN_DIR" != bigbench_flan_gens ]; then
        echo "error: CANDIDATES=download unpacks into ./bigbench_flan_gens; leave GEN_DIR unset" >&2
        exit 2
    fi
    bash "$REPO/scripts/download_bigbench_flan_gens.sh"
elif [ ${#missing[@]} -gt 0 ]; then
    for i in "${missing[@]}"; do
        generator="${generators[$i]}"
        if [ ! -e "$generator" ] && [[ "$generator" != */* ]]; then
            generator="google/$generator"  # a FLAN-T5 size names its hub id
        fi
        # shellcheck disable=SC2086  # GENERATE_FLAGS is a list of flags
        "$PYTHON" "$REPO/scripts/bigbench_flan_generate.py" --model_name_or_path "$generator" \
            --data_dir "$DATA_DIR" --output_dir "$GEN_DIR" ${GENERATE_FLAGS:-}
    done
fi

echo "[3/5] baselines -> $RESULTS_DIR/baselines.json"
if [ -s "$RESULTS_DIR/baselines.json" ]; then
    echo "      present; skipped (delete it to compute again)"
else
    mkdir -p "$RESULTS_DIR"
    "$PYTHON" "$REPO/scripts/present_bigbench_baselines.py" --bigbench_data_dir "$DATA_DIR" \
        --bigbench_gen_dir "$GEN_DIR" --gen_models "$models_csv" \
        --output_file "$RESULTS_DIR/baselines.json"
fi

echo "[4/5] Cappy ($MODEL) on every task -> $RESULTS_DIR"
runner=("$PYTHON" "$REPO/scripts/run_cappy_bigbench.py" --bigbench_data_dir "$DATA_DIR"
        --bigbench_gen_dir "$GEN_DIR" --gen_models "$models_csv" --results_dir "$RESULTS_DIR")
[ -z "${DEVICES:-}" ] || runner+=(--devices "$DEVICES")
status=0
"${runner[@]}" --model_name_or_path "$MODEL" "$@" || status=$?

echo "[5/5] tables -> $RESULTS_DIR/cappy_bigbench.json, $RESULTS_DIR/cappy_bigbench.png"
"$PYTHON" "$REPO/scripts/present_cappy_bigbench_results.py" --results_dir "$RESULTS_DIR" \
    --bigbench_data_dir "$DATA_DIR" --gen_models "$models_csv" \
    --baselines_file "$RESULTS_DIR/baselines.json" \
    --output_file "$RESULTS_DIR/cappy_bigbench.json" --plot "$RESULTS_DIR/cappy_bigbench.png"
exit "$status"
