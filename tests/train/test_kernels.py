"""hfgrow.train.kernels: what --kernels / --float8 / --compile resolve to on this (CPU) machine, the refusals, and
that a run prepares every model it trains — the grown one too (kernels re-applied, compiled again)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfgrow.errors import HfgrowError
from hfgrow.train import kernels, loop

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_model, make_text  # noqa: E402  (the tiny Llama and text of the training tests)


def speed_args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"kernels": "auto", "float8": False, "compile": False, "compile_backend": None, **kw})


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only choices")
def test_auto_picks_no_kernels_on_cpu_and_forced_ones_are_refused():
    speed = kernels.resolve(speed_args())
    assert (speed.kernels, speed.why) == ("none", "auto: no CUDA GPU")
    assert speed.describe() == "kernels none (auto: no CUDA GPU), no float8, eager"
    assert kernels.resolve(speed_args(kernels="none", compile=True, compile_backend="eager")).describe() == \
        "kernels none (asked), no float8, compiled (eager)"
    with pytest.raises(HfgrowError, match="^--kernels liger needs a CUDA GPU"):
        kernels.resolve(speed_args(kernels="liger"))
    with pytest.raises(HfgrowError, match="^--float8 needs a CUDA GPU of compute capability 8.9"):
        kernels.resolve(speed_args(float8=True))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only refusal")
def test_forced_liger_on_cpu_is_one_sentence_before_anything_is_written(tmp_path):
    make_model(tmp_path / "m", layers=2, tokenizer_text=" ".join(make_text(50, 0)))
    (tmp_path / "d.txt").write_text("\n".join(make_text(50, 1)))
    proc = subprocess.run([sys.executable, "-m", "hfgrow.continue", "--model", str(tmp_path / "m"), "--data",
                           str(tmp_path / "d.txt"), "--output-dir", str(tmp_path / "run"), "--max-steps", "2",
                           "--kernels", "liger"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: --kernels liger needs a CUDA GPU (Liger's kernels are "
                                                    "written in Triton) and none is visible; use --kernels none.")
    assert not (tmp_path / "run").exists()


def test_float8_filter_skips_the_lm_head_and_odd_sizes():
    assert kernels._float8_filter(torch.nn.Linear(32, 64), "model.layers.0.mlp.up_proj")
    assert not kernels._float8_filter(torch.nn.Linear(32, 64), "lm_head")
    assert not kernels._float8_filter(torch.nn.Linear(32, 60), "model.layers.0.mlp.up_proj")
    assert not kernels._float8_filter(torch.nn.LayerNorm(32), "model.norm")


def test_a_growth_prepares_the_grown_model_again(tmp_path, monkeypatch):
    """--compile (torch's eager backend: dynamo traces, nothing is code-generated, seconds on a CPU) with a growth
    at step 3: prepare_model runs for the 2-layer model and again for the 4-layer grown one, and the model and
    optimizer the trainer steps after the growth are that second, compiled model and its parameters."""
    make_model(tmp_path / "m", layers=2, tokenizer_text=" ".join(make_text(200, 0)))
    (tmp_path / "d.txt").write_text("\n".join(make_text(400, 1)))
    prepared, swapped = [], []
    real_prepare, real_swap = kernels.prepare_model, loop.Trainer.swap

    def prepare(model, speed):
        out = real_prepare(model, speed)
        prepared.append((model.config.num_hidden_layers, speed, out))
        return out

    def swap(self, model, optimizer, *rest):
        swapped.append((model, optimizer))
        return real_swap(self, model, optimizer, *rest)

    monkeypatch.setattr(loop, "prepare_model", prepare)
    monkeypatch.setattr(loop.Trainer, "swap", swap)
    # 4 sequences x 32 tokens = 128 tokens per step: the growth is before step 3 (0-based), 6 steps in all
    code = loop.main(["--model", str(tmp_path / "m"), "--data", str(tmp_path / "d.txt"), "--output-dir",
                      str(tmp_path / "run"), "--seq-len", "32", "--batch-size", "4", "--max-steps", "6",
                      "--eval-sequences", "0", "--save-steps", "100", "--lr", "1e-3", "--warmup-steps", "1",
                      "--grow", "stack:2@384", "--compile", "--compile-backend", "eager", "--no-export"])
    assert code == 0
    assert [layers for layers, _, _ in prepared] == [2, 4]
    assert all(s.compile and s.compile_backend == "eager" and s.kernels == "none" for _, s, _ in prepared)
    grown = prepared[1][2]
    assert isinstance(grown, torch._dynamo.eval_frame.OptimizedModule)
    assert grown._orig_mod.config.num_hidden_layers == 4
    model, optimizer = swapped[-1]
    assert model is grown
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert stepped == {id(p) for p in grown.parameters()}
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r.get("type") == "train"]
    assert len(losses) == 6 and all(0 < x < 20 for x in losses)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["speed"] == {"kernels": "none", "why": "auto: no CUDA GPU", "float8": False, "compile": True,
                            "compile_backend": "eager"}
