#!/usr/bin/env bash
# The GPU check, for one call on a GPU machine with the image's own jax, transformers and
# torch (the device tool's H200 image: Python 3.12, jax 0.11.2 with CUDA 13):
#
#   here:    bash scripts/gpu_check.sh --prepare     # the wheels the image lacks, into .whl/
#   there:   bash scripts/gpu_check.sh               # carry .whl; writes under $OUT
#   here:    bash scripts/gpu_check.sh --dry_run     # the whole check on this CPU, small
#
# Test ids after the mode replace the list of tests (CI's dry run names a few: the gpu-image
# leg has run them all in the same stack already).
#
# It installs the carried pure-Python wheels (scripts/legs/gpu-wheels.txt, under 64 MiB)
# into a folder of their own and replaces nothing of the image's, runs the tests of
# scripts/legs/tests.txt but those of cappy serve and the package install (whose clients
# and build tools the image lacks), then scripts/benchmark.py with --model_size large
# --dtype bfloat16 (scoring pairs/s, finetuning examples/s, FLOP/s against the measured bf16
# matmul peak, first-call (compile) times, and generation tokens/s of a FLAN-T5-large-shaped
# model against PyTorch's generate()). Under $OUT: gpu_check.json (the benchmark's report
# with the tests' outcome) and gpu_check.md (the tables). The dry run does all of it here,
# in .venv-gpu-image (scripts/setup_leg.sh gpu-image) on the CPU, on micro shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
[ $# -gt 0 ] && shift
wheels=.whl
limit_mib=64

prepare() {
    rm -rf "$wheels" && mkdir -p "$wheels"
    local lock=scripts/legs/constraints-gpu-image.txt name pin
    for name in $(grep -v '^\s*\(#\|$\)' scripts/legs/gpu-wheels.txt); do
        pin=$(grep -i "^${name//-/[-_]}==" "$lock" || true)
        if [ -z "$pin" ]; then
            echo "scripts/legs/gpu-wheels.txt: $name is not in $lock" >&2; exit 1
        fi
        # A wheel where the registry has one, else built here from the sdist (pure Python).
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
            -d "$wheels" "$pin" 2>/dev/null \
            || python3 -m pip wheel -q --no-deps -w "$wheels" "$pin"
    done
    local impure
    impure=$(ls "$wheels" | grep -v -- '-none-any\.whl$' || true)
    if [ -n "$impure" ]; then
        echo "not pure-Python wheels: $impure" >&2; exit 1
    fi
    local size_kib
    size_kib=$(du -sk "$wheels" | cut -f1)
    if [ "$size_kib" -gt $((limit_mib * 1024)) ]; then
        echo "$wheels holds $((size_kib / 1024)) MiB; a device call carries at most $limit_mib" >&2; exit 1
    fi
    echo "$(ls "$wheels" | wc -l) wheels, $((size_kib / 1024 + 1)) MiB, in $wheels/"
}

case "$mode" in
    --prepare) prepare; exit 0 ;;
    --dry_run) python=.venv-gpu-image/bin/python; dry=1
        if [ ! -x "$python" ]; then
            echo "the dry run needs .venv-gpu-image: run scripts/setup_leg.sh gpu-image" >&2; exit 1
        fi
        prepare ;;
    run) python=python3; dry=0
        if [ ! -d "$wheels" ]; then
            echo "no $wheels/: run 'bash scripts/gpu_check.sh --prepare' here and carry $wheels" >&2; exit 1
        fi ;;
    *) echo "usage: scripts/gpu_check.sh [run | --prepare | --dry_run] [test ids]" >&2; exit 2 ;;
esac
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
site=$(mktemp -d)
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
before=$("$python" -c "import jax, numpy; print(jax.__version__, numpy.__version__)")
"$python" -c "import cappy.engine.jobs.session, redco, datasets, rouge_score, nltk"
platform=$("$python" -c "import jax; print(jax.default_backend())")
echo "gpu check: $("$python" -V), jax/numpy $before, on $platform; writing to $OUT"
if [ "$dry" = 0 ] && [ "$platform" != gpu ]; then
    echo "jax finds no GPU here ($platform): the check is meant for a GPU machine (or --dry_run)" >&2; exit 1
fi

if [ $# -gt 0 ]; then  # tests named on the command line instead (CI's dry run: a few)
    tests=("$@")
else
    mapfile -t tests < <(grep -v '^\s*\(#\|$\)' scripts/legs/tests.txt | grep -v 'test_serve\|test_package')
fi
# float32 parity on a GPU: XLA would compute float32 matrix products in TF32.
set +e
JAX_DEFAULT_MATMUL_PRECISION=highest CAPPY_NO_SKIPS=1 "$python" -m pytest -q -p no:cacheprovider \
    -m "slow or not slow" "${tests[@]}" --junitxml="$OUT/tests.xml" 2>&1 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}
set -e

if [ "$dry" = 1 ]; then
    sizes=(--model_size micro --max_length 128 --n_prompts 6 --train_size 32
           --per_device_train_batch_size 4 --accumulate_grad_batches 4
           --generation_size micro --generation_instructions 3)
else
    sizes=(--model_size large --dtype bfloat16 --max_length 512 --n_prompts 360
           --train_size 8192 --per_device_train_batch_size 32 --accumulate_grad_batches 4
           --generation_size large --generation_instructions 24)
fi
"$python" scripts/benchmark.py "${sizes[@]}" --no_original --quiet \
    --output_file "$OUT/benchmark.json" | tee "$OUT/gpu_check.md"
"$python" - "$OUT" "$tests_rc" "$before" <<'PY'
import json, os, sys
import xml.etree.ElementTree as ET

out, tests_rc, before = sys.argv[1], int(sys.argv[2]), sys.argv[3]
suite = ET.parse(os.path.join(out, "tests.xml")).getroot()
suite = suite if suite.tag == "testsuite" else suite[0]
tests = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
report = json.load(open(os.path.join(out, "benchmark.json")))
import jax, numpy
after = f"{jax.__version__} {numpy.__version__}"
report["gpu_check"] = {"tests": tests, "tests_exit_code": tests_rc,
                       "image_jax_numpy_unchanged": before == after, "jax_numpy": after}
with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(report, f, indent=1)
with open(os.path.join(out, "gpu_check.md"), "a") as f:
    f.write(f"\ntests: {tests}; the image's jax and numpy {after}, unchanged: {before == after}\n")
print(f"tests: {tests}; wrote {out}/gpu_check.json and gpu_check.md")
PY
exit "$tests_rc"
