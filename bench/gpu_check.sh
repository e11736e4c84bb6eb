#!/usr/bin/env bash
# One-shot GPU check for a freshly lent H100/H200 that has CUDA, torch and triton but no internet:
#   bash bench/gpu_check.sh OUTDIR
# 0. measures the L2's read and atomic-add rates (python -m bench.l2), which the static report's bound needs,
# 1. builds the C++/CUDA extension in place (for this GPU's architecture; a failed build fails the check),
# 2. compiles every bf16 Triton kernel variant ahead of time on all cores (the sm_90 compile check, which reports
#    registers and spills on this machine's Triton and fills its kernel cache: the benchmarks' kernels then load
#    instead of compiling one by one), then runs the GPU tests (pytest -m cuda: every engine against the oracles
#    in fp32/fp16/bf16, opcheck, torch.compile), spread over 8 processes when pytest-xdist is installed,
# 3. benchmarks the GPU engines (bf16, D = 128 and 512, B = 4k..64k) and, at B = 4k and 16k, the peers that
#    are installed (pytorch-metric-learning, torch.compile of the dense formula, Inf-CL for CLIP).
# 4. times the Triton engine's backwards side by side: atomic, deterministic and (X = Y) symmetric (bf16, B = 16k,
#    D = 128 and 512; multi-similarity and CLIP).
# Each stage has its own time limit: the whole check ends within 10 minutes whatever happens (the limits add up to
# 565 s, leaving half a minute for the steps between them), sooner when the build is quick. A benchmark stopped by
# its limit keeps the rows it measured (its JSON is rewritten after each case). OUTDIR receives device.txt, l2.log,
# build.log, pytest-cuda.log, compile-check.log, the benchmark JSON and PNG files, the bench-*.log files and
# summary.txt. Peers' wheels (pure-Python ones: pytorch-metric-learning, inf-cl) can travel in a folder named by
# PAIRLOSS_WHEELS; they are installed into a scratch folder, not into the machine's Python.
set -uo pipefail
mkdir -p "${1:?usage: bash bench/gpu_check.sh OUTDIR}"
OUT="$(cd "$1" && pwd)"
cd "$(dirname "$0")/.." || exit 1
PY="${PYTHON:-python3}"
START=$(date +%s)
STATUS=0

note() { echo "[gpu_check +$(($(date +%s) - START))s] $*" | tee -a "$OUT/summary.txt"; }
stage() {  # stage NAME SECONDS LOG COMMAND...: run with a time limit, record its exit status
  local name="$1" limit="$2" log="$3"
  shift 3
  note "$name: start (limit ${limit}s)"
  timeout -k 5 "$limit" "$@" >"$log" 2>&1
  local rc=$?
  note "$name: exit $rc$([ $rc -eq 124 ] && echo ' (time limit)')"
  [ $rc -eq 0 ] || STATUS=1
  return $rc
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  # setuptools: the build reads pyproject.toml, whose SPDX license needs setuptools 77 or later.
  "$PY" -c 'import setuptools, torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton",
    triton.__version__, "setuptools", setuptools.__version__, torch.cuda.get_device_name(),
    torch.cuda.get_device_properties(0).multi_processor_count, "SMs")'
} >"$OUT/device.txt" 2>&1
note "device: $(tail -1 "$OUT/device.txt")"
# The rates at which the static report bounds the engine's L2 traffic (_compile_check --report B D --l2-tbps).
stage l2 20 "$OUT/l2.log" "$PY" -m bench.l2
note "L2: $(tail -1 "$OUT/l2.log")"

if [ -n "${PAIRLOSS_WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/pairloss-peers "$PAIRLOSS_WHEELS"/*.whl \
    >"$OUT/wheels.log" 2>&1 && export PYTHONPATH="/tmp/pairloss-peers${PYTHONPATH:+:$PYTHONPATH}"
  note "peer wheels: $(find "$PAIRLOSS_WHEELS" -name '*.whl' -printf '%f ')"
fi

# CI=1: a failed extension build is an error here, not a quietly missing backend.
if ! stage build 150 "$OUT/build.log" env CI=1 MAX_JOBS="$(nproc)" "$PY" setup.py build_ext --inplace; then
  note "the extension did not build: the tests and benchmarks below run without the cpp backend"
fi
"$PY" -c 'import pairloss; print("backends on cuda:", pairloss.available_backends("cuda"))' 2>&1 |
  tee -a "$OUT/summary.txt"

# The same binder and cache key as a launch (_compile_check.compile_launch): the bf16 kernels of the benchmarks'
# aligned batches (D = 128 and 512) are compiled here, in parallel, once.
stage compile-check 60 "$OUT/compile-check.log" "$PY" -m pairloss.triton_engine._compile_check --arch 90 --all \
  --match " bf16 " --jobs "$(nproc)"
note "compile check: $(tail -1 "$OUT/compile-check.log")"
# Serially, the Triton tests' own compilations could outlast the limit: about 100 Triton cases of several kernels,
# each kernel ~0.5 s of one core to compile (Triton 3.6, on the 2-core CI machine).
# (One inductor compile thread per worker: eight workers' default pools would oversubscribe the cores.)
XDIST=()
"$PY" -c 'import xdist' 2>/dev/null && XDIST=(-p xdist -n 8)
stage tests 130 "$OUT/pytest-cuda.log" env TORCHINDUCTOR_COMPILE_THREADS=1 "$PY" -m pytest -m cuda -q -rfEs \
  -p no:cacheprovider "${XDIST[@]}" tests
note "tests: $(tail -1 "$OUT/pytest-cuda.log")"

# The engines over the whole sweep, then the peers where they fit (dense peers grow with B²).
stage bench-engines 100 "$OUT/bench-engines.log" "$PY" -m bench --device cuda --dtype bfloat16 --dim 128 512 \
  --batch 4096 16384 65536 --loss multi_similarity supcon triplet clip siglip --backend triton cpp \
  --repeats 5 --case-seconds 8 --out "$OUT" --name gpu-engines
stage bench-peers 55 "$OUT/bench-peers.log" "$PY" -m bench --device cuda --dtype bfloat16 --dim 128 \
  --batch 4096 16384 --loss multi_similarity supcon supcon_multi_label clip \
  --backend triton cpp pml torch.compile-dense inf-cl \
  --repeats 5 --case-seconds 8 --out "$OUT" --name gpu-peers
# The Triton engine's backwards side by side: atomic (owner launches split, X = Y the mirrored one, no per-tile
# atomics; D = 512: products added per group of tiles), deterministic (the owners unsplit, the forward over every
# tile) and, X = Y, the symmetric one (1.5 passes, both dX blocks atomic per tile).
stage bench-backward 50 "$OUT/bench-backward.log" "$PY" -m bench --device cuda --dtype bfloat16 --dim 128 512 \
  --batch 16384 --loss multi_similarity clip --backend triton triton-deterministic triton-symmetric \
  --repeats 5 --case-seconds 4 --out "$OUT" --name gpu-backward
grep -h "faster than" "$OUT"/bench-*.log | tee -a "$OUT/summary.txt"
grep -hE "^[a-z_]+ +pairloss-triton" "$OUT/bench-backward.log" | tee -a "$OUT/summary.txt"  # the final table's rows
note "done, status $STATUS"
exit $STATUS
