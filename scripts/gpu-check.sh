#!/usr/bin/env bash
# The GPU check of retnetc's CUDA target, as one command.
#
#   Here (after npm ci; needs g++, xz, and a few minutes the first time for the references):
#     bash scripts/gpu-check.sh --prepare      # makes build/gpu-check/ (about 35 MiB)
#   On the GPU machine (Linux x86_64, NVIDIA driver, nvcc; no network, maybe no node or g++),
#   from a copy of this tree carrying build/gpu-check:
#     bash scripts/gpu-check.sh [--no-bench] [--no-agree] [--no-mma] [--bench-lengths 2048,16384] [--time-budget S]
#
# Environment: OUT (where the log and JSON go; else build/gpu-check/), GPU_CHECK_TIMEOUT (seconds
# for the whole check, default 290), GPU_CHECK_MMA_SECONDS (of those, kept for the tensor-core
# cases, default 75), GPU_CHECK_CARRIED_NODE=1 (use node.xz even if node exists),
# RETNETC_NVCC, RETNETC_CUDA_ADDON, RETNETC_CUDA_CACHE (nvcc output cache; ~/.cache/retnetc/cuda).
#
# It finds node >= 20 (else unpacks the carried build/gpu-check/node.xz), the CUDA addon (the
# carried build, else rebuilt with g++ from the carried headers), checks nvcc, then runs the
# bundled check (runtime/cuda/gpu-check.ts): the hand-written contract kernel, the agreement cases
# (retention, linear and gated retention; every schedule; forward and backward; against float64
# references at rel. RMSE <= 1e-5) and a short benchmark, and prints a summary; then (unless
# --no-mma) the tensor-core cases of schedule dense 'mma' (runtime/cuda/mma-check.ts: mma against
# dense tiled and float64, f16 and bf16, with times; opt-in until this passes on hardware). Output
# goes to stdout and, with the JSON summaries, to $OUT (or build/gpu-check/) as gpu-check.log,
# gpu-check.json and gpu-check-mma.json. Exit code 0 = pass, 1 = a disagreement or error (in
# either part), 2 = cannot run, 124 = timeout.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
BUNDLE="${RETNETC_GPU_BUNDLE:-$ROOT/build/gpu-check}"

if [ "${1:-}" = "--prepare" ]; then
  shift
  command -v node >/dev/null || { echo "[gpu-check.sh] --prepare needs node (run it where npm ci ran)"; exit 2; }
  exec node "$ROOT/scripts/gpu-check-prepare.mjs" "$@"
fi

START=$(date +%s)
say() { echo "[gpu-check.sh] $*"; }
fail() { say "FAIL: $*"; exit 2; }

[ -f "$BUNDLE/gpu-check.mjs" ] || fail "no $BUNDLE/gpu-check.mjs: run 'bash scripts/gpu-check.sh --prepare' where npm ci ran and carry build/gpu-check"

# ---- node ----------------------------------------------------------------------------------------
NODE=""
if [ "${GPU_CHECK_CARRIED_NODE:-0}" != 1 ] && command -v node >/dev/null 2>&1 && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' 2>/dev/null; then
  NODE="$(command -v node)"
elif [ -f "$BUNDLE/node.xz" ]; then
  DEST="${TMPDIR:-/tmp}/retnetc-node-$(tr -dc 'A-Za-z0-9.-' < "$BUNDLE/node.version" 2>/dev/null || echo x)"
  if [ ! -x "$DEST/node" ]; then
    mkdir -p "$DEST" || fail "cannot create $DEST"
    if command -v xz >/dev/null 2>&1; then
      xz -dc "$BUNDLE/node.xz" > "$DEST/node.part"
    elif command -v python3 >/dev/null 2>&1; then
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$BUNDLE/node.xz" "$DEST/node.part"
    else
      fail "node.xz cannot be unpacked: neither xz nor python3 is here"
    fi
    chmod +x "$DEST/node.part" && mv "$DEST/node.part" "$DEST/node" || fail "unpacking node.xz failed"
  fi
  NODE="$DEST/node"
else
  fail "no node >= 20 here and no carried $BUNDLE/node.xz"
fi
NODE_VERSION="$("$NODE" --version 2>&1)" || fail "$NODE does not run here: $NODE_VERSION"
say "node $NODE_VERSION ($NODE)"

# ---- the addon -----------------------------------------------------------------------------------
loads() { [ -f "$1" ] && "$NODE" -e 'require(process.argv[1]).available()' "$1" >/dev/null 2>&1; }
ADDON=""
for cand in "${RETNETC_CUDA_ADDON:-}" "$BUNDLE/retnetc_cuda.node" "$ROOT/runtime/cuda/addon/build/Release/retnetc_cuda.node"; do
  if [ -n "$cand" ] && loads "$cand"; then ADDON="$cand"; break; fi
done
if [ -z "$ADDON" ]; then
  WHY="$("$NODE" -e 'require(process.argv[1])' "$BUNDLE/retnetc_cuda.node" 2>&1 | grep -m1 -i error)"
  say "the carried addon does not load here (${WHY:-missing}); rebuilding it"
  CXX_BIN="$(command -v g++ || command -v c++ || command -v clang++ || true)"
  [ -n "$CXX_BIN" ] || fail "no C++ compiler here to rebuild the CUDA addon (the carried one: ${WHY:-missing})"
  ADIR="${TMPDIR:-/tmp}/retnetc-addon"
  mkdir -p "$ADIR"
  "$CXX_BIN" -std=c++17 -O2 -fPIC -shared -fexceptions -fvisibility=hidden -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS \
    -I"$BUNDLE/include" "$ROOT/runtime/cuda/addon/cuda_addon.cc" -o "$ADIR/retnetc_cuda.node" -ldl \
    || fail "rebuilding the CUDA addon with $CXX_BIN failed"
  loads "$ADIR/retnetc_cuda.node" || fail "the rebuilt CUDA addon does not load either"
  ADDON="$ADIR/retnetc_cuda.node"
fi
export RETNETC_CUDA_ADDON="$ADDON"
say "addon $ADDON: $("$NODE" -e 'const s = require(process.argv[1]).available(); console.log(s.ok ? "CUDA available" : s.reason)' "$ADDON")"

# ---- nvcc ----------------------------------------------------------------------------------------
NVCC="$(command -v nvcc 2>/dev/null || true)"
for c in "${CUDA_HOME:-}/bin/nvcc" /usr/local/cuda/bin/nvcc; do
  [ -z "$NVCC" ] && [ -x "$c" ] && NVCC="$c"
done
if [ -n "$NVCC" ]; then
  say "nvcc $("$NVCC" --version | grep -o 'V[0-9][0-9.]*' | head -1) ($NVCC); host compiler: $(command -v g++ || command -v gcc || echo none)"
  export RETNETC_NVCC="$NVCC"
else
  say "no nvcc here: the kernels cannot be built (the check will say so)"
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>/dev/null | sed 's/^/[gpu-check.sh] nvidia-smi: /'

# ---- the check -----------------------------------------------------------------------------------
REPORT_DIR="${OUT:-$BUNDLE}"
mkdir -p "$REPORT_DIR" 2>/dev/null || REPORT_DIR="${TMPDIR:-/tmp}"
LIMIT="${GPU_CHECK_TIMEOUT:-290}"
# --no-mma is this script's; the rest go to the main check.
MMA=1
ARGS=()
for a in "$@"; do if [ "$a" = "--no-mma" ]; then MMA=0; else ARGS+=("$a"); fi; done
[ -f "$BUNDLE/mma-check.mjs" ] || { [ "$MMA" = 1 ] && say "no $BUNDLE/mma-check.mjs (an older bundle): the tensor-core cases are not run"; MMA=0; }
RESERVE=$(( MMA == 1 ? ${GPU_CHECK_MMA_SECONDS:-75} : 0 ))
USED=$(( $(date +%s) - START ))
timeout --kill-after=10 "$(( LIMIT - USED - RESERVE ))" "$NODE" "$BUNDLE/gpu-check.mjs" check --refs "$BUNDLE/refs" --json "$REPORT_DIR/gpu-check.json" \
  --time-budget "$(( LIMIT - USED - RESERVE - 60 ))" ${ARGS[@]+"${ARGS[@]}"} 2>&1 | tee "$REPORT_DIR/gpu-check.log"
RC=${PIPESTATUS[0]}
if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
  say "FAIL: the main check timed out"
elif [ "$MMA" = 1 ] && [ "$RC" != 2 ]; then
  # The tensor-core cases in what is left of the limit (compiles, agreement, then timings).
  LEFT=$(( LIMIT - ($(date +%s) - START) ))
  NOBENCH=""
  for a in ${ARGS[@]+"${ARGS[@]}"}; do [ "$a" = "--no-bench" ] && NOBENCH="--no-bench"; done
  timeout --kill-after=5 "$(( LEFT - 5 ))" "$NODE" "$BUNDLE/mma-check.mjs" --json "$REPORT_DIR/gpu-check-mma.json" --time-budget "$(( LEFT - 25 ))" $NOBENCH 2>&1 | tee -a "$REPORT_DIR/gpu-check.log"
  MRC=${PIPESTATUS[0]}
  if [ "$MRC" = 124 ] || [ "$MRC" = 137 ]; then say "FAIL: the tensor-core cases timed out"; RC=124; elif [ "$MRC" != 0 ] && [ "$RC" = 0 ]; then RC=1; fi
fi
[ "$RC" = 124 ] || [ "$RC" = 137 ] && say "FAIL: timed out after ${LIMIT} s"
say "exit $RC after $(( $(date +%s) - START )) s; log and JSON summaries in $REPORT_DIR/gpu-check.{log,json} and gpu-check-mma.json"
exit "$RC"
