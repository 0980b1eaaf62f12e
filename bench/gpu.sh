#!/usr/bin/env bash
# The trainer measured on one NVIDIA GPU (H100/H200 class), offline, in under 8 minutes:
# continue.py eager and --compile vs the HF Trainer on the TinyLlama-1.1B shape (random weights),
# bf16, seq 2048, SDPA; tokens/s, MFU, peak memory. Needs torch (CUDA), transformers, accelerate,
# tokenizers, numpy; installs nothing. Prints a table last; JSON to $OUT/bench_gpu.json if OUT is set.
#
#   bash bench/gpu.sh            # on the GPU machine, from a checkout (or after pip install --no-deps -e .)
#   bash bench/gpu.sh --dry      # CPU, tiny model, 2 steps (tests/bench/test_gpu_dry.py runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PYTHON" -c "import torch, transformers, accelerate, tokenizers, numpy" \
  || { echo "error: bench/gpu.sh needs torch, transformers, accelerate, tokenizers and numpy" >&2; exit 1; }
# the script keeps to --budget (450 s by default); the hard stop is the last resort
exec timeout --signal=KILL 475 "$PYTHON" bench/bench_gpu.py "$@"
