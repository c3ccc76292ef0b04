#!/usr/bin/env bash
# The GPU check in one call: install medgen from the working tree without network, run the CUDA tests,
# then the benchmarks, and leave JSON + Markdown results and a log in one folder.
#
#   bash benchmarks/gpu/run.sh [OUT]          # on the GPU machine (OUT defaults to $OUT, else gpu-out/)
#   bash benchmarks/gpu/run.sh --dry-run [OUT]  # the same steps on the CPU at toy sizes, without SimpleITK and
#                                               # nilearn as on the GPU image (CI runs this)
#
# Needs .whl/ from prepare.sh (MONAI, nibabel) unless those packages are importable already.
# Steps, each logged with its wall time; a failing step is recorded and the next one still runs:
#   1. pytest -m cuda: bf16 vs fp32, exact-within-tolerance resume, chunked = unchunked generation,
#      DDPM sampling, 2-process NCCL when the machine has 2 GPUs (tests/test_cuda.py and the other cuda tests)
#   2. HA-GAN sweep (paper preset): training at 128³ and 256³ (batch 4, bf16; fp32 at 128³), generation
#      at 128³, 256³ unchunked and chunked, 512³ chunked (benchmarks/sweep.py)
#   3. every family's cost at 64³-256³ (benchmarks/families_cost.py)
#   4. side by side with the authors' code at 128³/256³ when third_party/ holds it (benchmarks/side_by_side.py)
# At most 8 files are written to OUT: log.txt, summary.md, pytest.txt and the benchmarks' .json/.md pairs.
set -uo pipefail
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUTDIR=${1:-${OUT:-$ROOT/gpu-out}}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG="$OUTDIR/log.txt"
: > "$LOG"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

# ---- install: medgen from src/, missing packages from .whl/ (no network)
SITE=${MEDGEN_SITE:-/tmp/medgen-site}
if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$ROOT"/.whl/*.whl \
    >>"$LOG" 2>&1 || say "warning: installing .whl/ failed (see above)"
fi
export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import medgen.families.registry, medgen.cli, monai, nibabel" >>"$LOG" 2>&1; then
  say "error: medgen does not import (missing packages? run benchmarks/gpu/prepare.sh and carry .whl/)"
  exit 2
fi
"$PY" - <<'PYEOF' | tee -a "$LOG"
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"GPUs {torch.cuda.device_count()}: {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}")
PYEOF

if [ $DRY = 1 ]; then
  # as on the GPU image: no SimpleITK, no nilearn
  export PYTHONPATH="$ROOT/benchmarks/gpu/image_without:$PYTHONPATH"
  DEVICE=cpu; export MEDGEN_TEST_DEVICE=cpu
  SWEEP=(--sizes 32 --repeats 1); GEN512=(); COST=(--sizes 32 --steps 1)
  FP32=()
else
  DEVICE=cuda; export MEDGEN_TEST_DEVICE=cuda
  SWEEP=(--sizes 128 256 --repeats 3); GEN512=(--sizes 512 --generate-only --repeats 1); COST=(--sizes 64 128 256 --steps 5)
  FP32=(--sizes 128 --repeats 3 --precision fp32 --train-only)
fi
STATUS=0
step() {  # step NAME COMMAND...: run, log, time, keep going
  local name=$1; shift
  local t0=$(date +%s)
  say "step $name: $*"
  if (cd "$ROOT" && "$@") >>"$LOG" 2>&1; then say "step $name: ok in $(( $(date +%s) - t0 )) s"
  else say "step $name: FAILED (exit $?) after $(( $(date +%s) - t0 )) s"; STATUS=1; fi
}
step pytest "$PY" -m pytest -m cuda -q -p no:cacheprovider -o addopts="" tests/ --junit-xml="$OUTDIR/.junit.xml"
grep -E "passed|failed|error" "$LOG" | tail -1 > "$OUTDIR/pytest.txt"
step sweep "$PY" benchmarks/sweep.py --device $DEVICE "${SWEEP[@]}" --out "$OUTDIR"
[ ${#FP32[@]} -gt 0 ] && step sweep-fp32 "$PY" benchmarks/sweep.py --device $DEVICE "${FP32[@]}" --out "$OUTDIR" --tag fp32
[ ${#GEN512[@]} -gt 0 ] && step sweep-512 "$PY" benchmarks/sweep.py --device $DEVICE "${GEN512[@]}" --out "$OUTDIR" --tag 512
step families "$PY" benchmarks/families_cost.py --device $DEVICE "${COST[@]}" --out "$OUTDIR"
if [ -d "$ROOT/third_party" ] && [ $DRY = 0 ]; then
  step side-by-side "$PY" benchmarks/side_by_side.py --device $DEVICE --out "$OUTDIR"
else
  say "step side-by-side: skipped (no third_party/ with the authors' code, or dry run)"
fi
rm -f "$OUTDIR/.junit.xml"
{ echo "# GPU check $(date -u +%Y-%m-%d)"; echo; grep -E "^\[.*\] (step|python|error)" "$LOG" | sed 's/^/- /'; echo;
  for f in "$OUTDIR"/*.md; do [ "$(basename "$f")" = summary.md ] || { echo; cat "$f"; }; done; } > "$OUTDIR/summary.md"
say "done: results in $OUTDIR (status $STATUS)"
exit $STATUS
