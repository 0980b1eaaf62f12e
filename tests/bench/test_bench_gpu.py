"""bench/gpu.sh in its CPU dry mode (tiny model, 2 steps), so the GPU benchmark cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_dry_run_on_cpu(tmp_path):
    # --no-compile: torch.compile of even the tiny model takes ~80 s on 2 CPU cores; the compiled run
    # is the same worker with --compile added, measured on the GPU
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry", "--no-compile"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert report["errors"] == [] and set(report["runs"]) == {"continue.py", "HF Trainer"}
    for run in report["runs"].values():
        assert run["steps_timed"] == 2 and run["tokens_per_s"] > 0
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("continue.py ") and lines[-1].startswith("HF Trainer ") and "1.00x" in lines[-1]


def test_peak_flops_and_parameter_counts():
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_gpu

    assert bench_gpu.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench_gpu.peak_flops("NVIDIA H100 PCIe") == 756e12 and bench_gpu.peak_flops("NVIDIA H200") == 989e12
    assert bench_gpu.peak_flops("Tesla T4") is None
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = dict(bench_gpu.DRY)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**cfg))
    counts = bench_gpu.param_counts(cfg)
    emb = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["non_embedding"] == counts["total"] - emb
    assert bench_gpu.param_counts(bench_gpu.TINYLLAMA)["total"] == 1_100_048_384  # TinyLlama-1.1B's own count
