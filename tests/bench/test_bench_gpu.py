"""bench/gpu.sh in its CPU dry modes (tiny model, 2 steps; compare at toy size), so the GPU measurements cannot rot,
and the MFU arithmetic (hfgrow.units) against the published figures it has to reproduce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfgrow.units import matmul_params, mfu, training_flops_per_token

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import bench_gpu  # noqa: E402


def test_gpu_script_dry_run_on_cpu(tmp_path):
    """The compiled path (torch's eager compile backend on the CPU) for both tools, each continue.py run set
    against the Trainer run with the same options, per-step times and losses, the versions, the growth pause."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry"], env=env, capture_output=True, text=True,
                          timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert report["errors"] == []
    assert list(report["runs"]) == ["continue.py", "HF Trainer", "continue.py --compile", "HF Trainer torch_compile"]
    runs = report["runs"]
    assert runs["continue.py"]["versus"] == "HF Trainer"
    assert runs["continue.py --compile"]["versus"] == "HF Trainer torch_compile"
    for name in ("continue.py", "continue.py --compile"):
        r = runs[name]
        assert r["ratio_vs_trainer"] == pytest.approx(r["tokens_per_s"] / runs[r["versus"]]["tokens_per_s"])
    for r in runs.values():
        assert r["steps_timed"] == 2 and len(r["step_seconds"]) == 2 and r["tokens_per_s"] > 0
        assert len(r["losses"]) == 3 and all(0 < x < 10 for x in r["losses"])  # 1 warm-up + 2 timed steps
    # the same weights, data and order: the compiled run's losses against the eager one's
    check = runs["continue.py --compile"]["loss_check"]
    assert check["steps"] == 3 and check["max_relative_difference"] < 1e-3 and check["within"]
    versions = report["versions"]
    assert versions["torch"] and versions["transformers"] and "driver" in versions and "cuda" in versions
    pause = report["pause"]
    assert pause["layers"] == [2, 4] and pause["at_step"] == 3 and pause["gap_seconds"] > pause["pause_seconds"] > 0
    assert any("Liger" in s for s in report["skipped"]) and any("float8" in s for s in report["skipped"])
    table = proc.stdout.strip().splitlines()
    rows = {line.split("  ")[0]: line for line in table if line.startswith(("continue.py", "HF Trainer"))}
    assert rows.keys() == set(runs) and f"{runs['continue.py --compile']['ratio_vs_trainer']:.2f}x" in \
        rows["continue.py --compile"]
    assert any(line.startswith("growth pause: 2 -> 4 layers at step 3") for line in table)


def test_compare_preset_dry_run_on_cpu(tmp_path):
    """bench/gpu.sh compare --dry: the same command at toy size (tiny preset, Python sources of this machine)."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "compare", "--dry"], env=env, capture_output=True,
                          text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert set(report["final_loss"]) == {"base", "scratch", "grown-stack"}  # --no-small at toy size
    assert report["setup"]["lr"]["chosen"] == {name: 3e-3 for name in report["setup"]["lr"]["chosen"]}
    assert (tmp_path / "compare" / "compare.png").is_file() and proc.stdout.strip()


def test_gpu_preset_is_the_paper_regime_size():
    from hfgrow.eval.compare import PRESETS, _count_params

    target = PRESETS["gpu"]
    n = _count_params(target).total
    assert target["num_hidden_layers"] == 8 and 20e6 <= n <= 40e6
    assert _count_params(dict(target, num_hidden_layers=2)).total < n / 2


def test_mfu_by_the_palm_convention():
    """The recorded H200 run (bench/results/gpu_h200.json): 58,673 tokens/s compiled is 40.1% MFU by PaLM's count
    with causal attention (6·N + 6·L·H·T, N = non-embedding + LM head), 36.8% without attention and 43.4% with
    PaLM's full 12·L·H·T; the old figure (6 x all parameters, input embedding included) was 39.2%."""
    counts = bench_gpu.model_counts(bench_gpu.TINYLLAMA, 2048)
    assert counts["total"] == 1_100_048_384 and counts["input_embedding"] == 32000 * 2048  # TinyLlama-1.1B's count
    assert counts["matmul"] == matmul_params(1_100_048_384, 65_536_000, tied=False) == 1_034_512_384
    recorded = json.loads((ROOT / "bench" / "results" / "gpu_h200.json").read_text())
    rate = recorded["runs"]["continue.py --compile"]["tokens_per_s"]
    got = {a: round(mfu(rate, f, 989e12), 3) for a, f in counts["flops_per_token"].items()}
    assert got == {"full": 0.434, "causal": 0.401, "none": 0.368}
    assert round(6 * counts["total"] * rate / 989e12, 3) == 0.392
    assert training_flops_per_token(100, 2, 8, 16, "none") == 600
    assert matmul_params(1000, 100, tied=True) == 1000  # a tied LM head still multiplies


def test_peak_flops_and_phases():
    assert bench_gpu.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench_gpu.peak_flops("NVIDIA H100 PCIe") == 756e12 and bench_gpu.peak_flops("NVIDIA H200") == 989e12
    assert bench_gpu.peak_flops("Tesla T4") is None
    gpu, skipped = bench_gpu.phases(dry=False, float8_ok=True)
    assert [name for name, *_ in gpu] == [
        "continue.py", "HF Trainer", "continue.py --compile --kernels liger", "HF Trainer torch_compile use_liger_kernel",
        "continue.py --kernels liger", "continue.py --compile", "continue.py --compile --kernels liger --float8"]
    assert skipped == [] and [check for *_, check in gpu] == [False, False, True, False, True, True, True]
    _, skipped = bench_gpu.phases(dry=False, float8_ok=False)
    assert skipped == ["continue.py --compile --kernels liger --float8: needs a GPU of compute capability 8.9+ and "
                       "torchao"]
