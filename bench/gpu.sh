#!/usr/bin/env bash
# Every GPU measurement of the trainer, on one NVIDIA GPU (H100/H200 class), offline. Two windows:
#
#   bash bench/gpu.sh [train]        # ~9 min: continue.py vs the HF Trainer with the same kernels and compile
#                                    # (eager/eager, compile+liger/compile+liger), the first 20 losses with and
#                                    # without each speed option (liger, compile, float8 on 8.9+ cards), the pause
#                                    # of an in-run growth (1.1B x2); JSON to $OUT/bench_gpu.json
#   bash bench/gpu.sh compare        # <= 7 min: hfgrow compare --target gpu (34M-parameter 8-layer target, 5e7
#                                    # tokens per arm) on the Python sources this machine holds; $OUT/compare/
#   bash bench/gpu.sh ... --dry      # the same on a CPU at toy size (tests/bench/test_bench_gpu.py runs both)
#
# Needs torch (CUDA), transformers, accelerate, tokenizers, numpy. liger-kernel and torchao, when missing, are
# installed from wheels in $WHEELS (default bench/out/wheels; carry that folder to the GPU machine after
# `pip download --no-deps liger-kernel torchao -d bench/out/wheels`); without them those phases are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WHAT=train
if [[ ${1:-} == train || ${1:-} == compare ]]; then WHAT=$1; shift; fi
DRY=0
for arg in "$@"; do [[ $arg == --dry ]] && DRY=1; done
"$PYTHON" -c "import torch, transformers, accelerate, tokenizers, numpy" \
  || { echo "error: bench/gpu.sh needs torch, transformers, accelerate, tokenizers and numpy" >&2; exit 1; }
if [[ $DRY == 0 ]]; then
  WHEELS=${WHEELS:-bench/out/wheels}
  for pkg in liger_kernel torchao; do
    if ! "$PYTHON" -c "import $pkg" 2>/dev/null; then
      shopt -s nullglob; wheels=("$WHEELS"/${pkg}-*.whl); shopt -u nullglob
      if (( ${#wheels[@]} )); then
        "$PYTHON" -m pip install -q --no-deps --no-index "${wheels[@]}" || echo "warning: could not install $pkg" >&2
      else
        echo "note: $pkg is not installed and no wheel is in $WHEELS; its phases are skipped" >&2
      fi
    fi
  done
fi

if [[ $WHAT == train ]]; then
  # the script keeps to --budget (540 s by default); the hard stop is the last resort
  exec timeout --signal=KILL 580 "$PYTHON" bench/bench_gpu.py "$@"
fi

# compare: Python's own sources (the standard library and the installed packages), one document per file
OUTDIR=${OUT:-bench/out}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" - "$WORK/python.jsonl" "$DRY" <<'PY'
import json, sys, sysconfig
from pathlib import Path
out, dry = Path(sys.argv[1]), sys.argv[2] == "1"
limit = 300_000 if dry else 150_000_000  # characters
roots = [Path(sysconfig.get_paths()[k]) for k in ("stdlib", "purelib")]
total = 0
with out.open("w") as f:
    for root in dict.fromkeys(roots):
        for path in sorted(root.rglob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if len(text) < 200:
                continue
            f.write(json.dumps({"text": text}) + "\n")
            total += len(text)
            if total >= limit:
                break
        if total >= limit:
            break
print(f"[gpu.sh] {total / 1e6:.1f}M characters of Python sources", file=sys.stderr)
PY
rm -rf "$OUTDIR/compare"
if [[ $DRY == 1 ]]; then
  ARGS=(--target tiny --max-tokens 5e3 --seq-len 32 --batch-size 8 --lr 3e-3 --no-small)
else
  # bf16 autocast for every arm (compare runs python -m hfgrow.continue, which accelerate configures from this)
  export ACCELERATE_MIXED_PRECISION=bf16
  ARGS=(--target gpu --max-tokens 5e7 --seq-len 512 --batch-size 64 --lr 2e-3)
fi
start=$(date +%s)
timeout --signal=KILL 590 "$PYTHON" -m hfgrow.cli.main compare "$OUTDIR/compare" --data "$WORK/python.jsonl" \
  --no-untrained "${ARGS[@]}"
echo "[gpu.sh] compare took $(( $(date +%s) - start )) s" >&2
cat "$OUTDIR/compare/compare.md"
