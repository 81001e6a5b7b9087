#!/usr/bin/env bash
# The GPU check of issue 12: one script, at most 8 minutes, on a CUDA machine, from the repo root:
#
#     bash scripts/setup.sh && bash benchmarks/gpu_check.sh [OUT_DIR]
#
# A GPU machine needs a CUDA build of torch in .venv BEFORE scripts/setup.sh (which installs the CPU build
# only when no torch is present), e.g.:
#     python3 -m venv .venv && .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cu126
#
# Steps (each under its own time limit; a failed or timed-out step is reported and the next one runs):
#   1. CUDA present?                                   (stops here, with what to do, when it is not)
#   2. pytest -m cuda          the CUDA tests (tests/test_cuda.py)                           <= 100 s
#   3. vision MFU              EVA ViT-g frames/s and MFU at batch 16, 32, 64, 128 in bf16    <=  80 s
#   4. CUDA vs CPU             features, tokens, greedy answers on the tiny fixture           <=  60 s
#   5. speech                  benchmarks/asr.py quality on the GPU (faster-whisper float16)  <=  40 s
#   6. real size               benchmarks/realsize.py --device cuda (writes the 7B checkpoint) <= 200 s
#   7. one table of everything
# GPU_CHECK_DRY_RUN=1 runs steps 3-4 and 6 on the CPU with small sizes, to check the script's own logic.
set -u
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu-check}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
mkdir -p "$OUT"
: > "$OUT/steps.jsonl"
START=$(date +%s)
DRY="${GPU_CHECK_DRY_RUN:-0}"

record() {  # name status note
    "$PY" -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "status": sys.argv[2], "note": sys.argv[3]}))' \
        "$1" "$2" "$3" >> "$OUT/steps.jsonl"
}

step() {  # name limit_seconds command...
    local name="$1" limit="$2"
    shift 2
    local left=$(( 470 - ($(date +%s) - START) ))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped (the 8-minute budget is spent)" >&2
        record "$name" "skipped" "no time left"
        return
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    echo "== $name (at most ${limit} s)" >&2
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    local took=$(( $(date +%s) - t0 ))
    tail -n 15 "$OUT/$name.log" >&2
    if [ "$rc" -eq 0 ]; then
        record "$name" "ok" "${took} s"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        record "$name" "TIMEOUT" "stopped after ${limit} s; see $OUT/$name.log"
    else
        record "$name" "FAILED" "exit $rc after ${took} s; see $OUT/$name.log"
    fi
}

if [ "$DRY" = "1" ]; then
    echo "gpu_check: dry run on the CPU (small sizes): checks this script's logic, measures nothing real" >&2
    step vision 200 "$PY" benchmarks/gpu_check.py vision --out "$OUT" --device cpu --batches 2,4 --iters 1 --width 176 --depth 2 --mlp 704
    step agree 200 "$PY" benchmarks/gpu_check.py agree --out "$OUT" --device cpu
    "$PY" benchmarks/gpu_check.py table --out "$OUT"
    exit 0
fi

if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo missing))." >&2
    echo "gpu_check: install a CUDA build of torch into .venv (see the top of this script), then run it again." >&2
    record cuda FAILED "no CUDA device"
    exit 2
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")' >&2
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv,noheader 2>/dev/null >&2 || true

step tests 100 "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider
step vision 80 "$PY" benchmarks/gpu_check.py vision --out "$OUT" --device cuda
step agree 60 "$PY" benchmarks/gpu_check.py agree --out "$OUT" --device cuda
step asr 40 "$PY" benchmarks/asr.py quality --repeats 1 --beams 5  # speech on the GPU: RTF, WER, memory
step realsize 200 "$PY" benchmarks/realsize.py --device cuda --work "${LLAMAVID_REALSIZE_DIR:-runs/realsize}" \
    --parts load,ask,llm,kv --kv-tokens 16384 --kv-long 65536 --timeout 60 --output "$OUT/realsize.json"
echo "== summary ($(( $(date +%s) - START )) s)" >&2
"$PY" benchmarks/gpu_check.py table --out "$OUT"
