#!/usr/bin/env bash
# The prepared GPU check of issue 10, for a machine with one CUDA GPU, under 8 minutes:
#   1. the fast paths' tests (fused Triton kernel, bf16 inference, CUDA-graph sampling against
#      their twins) and the repeatability of an evaluation with the sampler's noise on the GPU,
#   2. tools/benchmark.py model: R50 paper config, 800x1333, steps 1 and 8, against Faster R-CNN,
#      plain (fp32, PyTorch chain, eager loop) and with each fast path, then all three,
#   3. tools/benchmark.py train: 8 images of 800x1333 with bf16 AMP, iteration time and memory.
# Every table is appended to docs/benchmarks.md; each step has a time limit, and the script
# runs them all and exits non-zero when any failed.
#
#   tools/gpu_check.sh             # on the GPU machine, from anywhere in the checkout
#   tools/gpu_check.sh --dry-run   # the same steps on the CPU, small and quick, recorded to a
#                                  # temporary file: checks the commands, measures nothing
#                                  # (CUDA graphs need CUDA: the CPU runs those rows eagerly)
# PYTHON names the interpreter (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
CONFIG=configs/psdiff_r50.yaml

if [[ "${1:-}" == "--dry-run" ]]; then
    RECORD=$(mktemp --suffix=.md)
    DEVICE=cpu
    SIZE=(--size 128 192)
    REPEATS=(--repeats 1 --warmup 0)
    BATCH=2
    SMALL=(MODEL.PSDIFF.NUM_PROPOSALS_TEST 20 MODEL.PSDIFF.NUM_PROPOSALS_TRAIN 20)
    GRAPH=False
else
    RECORD=docs/benchmarks.md
    DEVICE=cuda
    SIZE=(--size 800 1333)
    REPEATS=(--repeats 20 --warmup 3)
    BATCH=8
    SMALL=()
    GRAPH=True
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.device_count() else 1)" || {
        echo "gpu_check: no CUDA GPU here; use --dry-run to check the commands on the CPU" >&2
        exit 2
    }
fi

failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, remember a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" || failed+=("$name")
    echo "== $name: $((SECONDS - start)) s"
}

bench_model() {  # bench_model NAME FLAGS [KEY VALUE ...]; FLAGS: "" or "--profile"
    local name=$1 flags=$2
    shift 2
    # shellcheck disable=SC2086  # $flags: no word when empty
    step "model: $name" 60 "$PY" tools/benchmark.py model --config-file "$CONFIG" --steps 1 8 \
        --baseline $flags "${SIZE[@]}" "${REPEATS[@]}" --record "$RECORD" \
        MODEL.DEVICE "$DEVICE" "${SMALL[@]}" "$@"
}

step "tests: fast paths against their twins, GPU sampler noise" 90 \
    "$PY" -m pytest -q -p no:cacheprovider tests/modeling/test_fused_kernels.py \
    tests/engine/test_inference_amp.py tests/modeling/test_sampling_graphs.py \
    tests/evaluation/test_evaluator.py::test_cuda_evaluation_is_repeatable_for_a_sampler_seed
bench_model "plain" --profile
bench_model "fused kernels" "" MODEL.PSDIFF.FUSED_KERNELS True
bench_model "bf16" "" TEST.AMP.ENABLED True
bench_model "CUDA graph" "" TEST.CUDA_GRAPH "$GRAPH"
bench_model "fused kernels + bf16 + CUDA graph" --profile MODEL.PSDIFF.FUSED_KERNELS True \
    TEST.AMP.ENABLED True TEST.CUDA_GRAPH "$GRAPH"
step "train: $BATCH images, bf16 AMP" 80 "$PY" tools/benchmark.py train --config-file "$CONFIG" \
    --batch "$BATCH" "${SIZE[@]}" --repeats 5 --warmup 2 --record "$RECORD" \
    MODEL.DEVICE "$DEVICE" "${SMALL[@]}" SOLVER.AMP.ENABLED True

echo "tables appended to $RECORD"
if (( ${#failed[@]} )); then
    printf 'FAILED: %s\n' "${failed[@]}" >&2
    exit 1
fi
