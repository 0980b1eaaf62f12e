"""Short runs and the start of a run (issue 25): a warmup floor, the warmup and MSG ramp lengths printed, and when
``--grow OP:F@T`` grows (once the run has seen at least T tokens).

Expected values are the rules worked by hand: warmup = min(3000, max(⌈5% of steps⌉, min(100, ⌊steps / 2⌋))) and
at least 1; LR at 0-based step s < warmup = max_lr · (s + 1) / warmup; growth after ⌈T / tokens per step⌉ steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hfgrow.eval.tiny import make_model, make_tokenizer, tiny_llama_config
from hfgrow.train.growth import parse_grow, plan_stages
from hfgrow.train.schedule import Schedule, default_warmup
from helpers.launch import launch_continue

sys.path.insert(0, str(Path(__file__).parent))
from test_ramp_length import models  # noqa: E402,F401  (a 2-layer Llama grown with --op random: a fixture)


@pytest.mark.parametrize("steps, warmup", [(1, 1), (2, 1), (6, 3), (40, 20), (199, 99), (200, 100), (1000, 100),
                                           (2000, 100), (2001, 101), (10_000, 500), (60_000, 3000),
                                           (1_000_000, 3000)])
def test_default_warmup_has_a_floor(steps, warmup):
    assert default_warmup(steps) == warmup
    assert Schedule.plan(n_params=1e8, max_steps=steps).warmup == warmup


def test_a_six_step_run_does_not_start_at_the_full_lr():
    s = Schedule.plan(n_params=1e8, max_steps=6)  # 6e-4, the paper's LR for <= 410M
    assert [round(s.lr(i) / s.max_lr, 6) for i in range(3)] == [round(1 / 3, 6), round(2 / 3, 6), 1.0]
    assert Schedule.plan(n_params=1e8, max_steps=6, warmup=1).lr(0) == s.max_lr  # --warmup-steps 1: as asked


def test_growth_happens_once_the_run_has_seen_the_tokens():
    """README's example: stack:2@1k at 256 tokens per step grows after step 4 (1,024 tokens), not after step 3
    (768 tokens); a count that is a whole number of steps grows right after them."""
    config = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64, "max_position_embeddings": 64}
    for when, per_step, step in (("1k", 256, 4), ("1024", 256, 4), ("1025", 256, 5), ("768", 256, 3),
                                 ("1", 256, 1), ("0", 256, 0)):
        plan = plan_stages(config, [parse_grow(f"stack:2@{when}")], tokens_per_step=per_step, max_steps=10)
        start = plan.stages[1].start_step
        assert start == step, when
        assert start * per_step >= parse_grow(f"stack:2@{when}").tokens  # the small model saw at least T tokens
        assert start == 0 or (start - 1) * per_step < parse_grow(f"stack:2@{when}").tokens  # ... and no more


def test_a_short_run_prints_its_warmup_and_ramp_and_follows_them(models, tmp_path):
    """6 steps of a model grown with --op random: warmup 3 steps (printed, and the logged LRs ramp over them), the
    MSG ramp 10% of the run (at least 1 step), printed with its length; the recipe states that default in words."""
    recipe = (models / "default" / "hfgrow.yaml").read_text()
    assert "steps: 10% of the training run" in recipe and "5000" not in recipe
    proc = launch_continue(["--model", str(models / "default"), "--data", str(models / "d.txt"), "--output-dir",
                            str(tmp_path / "run"), "--seq-len", "32", "--batch-size", "2", "--max-steps", "6",
                            "--eval-sequences", "0", "--no-export"])
    assert "warmup: 3 steps of 6 (default: 5% of the run, at least 100 steps or half the run, at most 3000)" \
        in proc.stderr
    assert "MSG mask ramp: the new layers are scaled by c = 0 -> 1 over the first 1 step\n" in proc.stderr
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
           if r["type"] == "train"]
    assert lrs[0] == pytest.approx(lrs[2] / 3, rel=1e-12) and lrs[1] == pytest.approx(2 * lrs[2] / 3, rel=1e-12)


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    root = tmp_path_factory.mktemp("tied")
    tokenizer = make_tokenizer(root / "m", vocab_size=300)
    make_model(root / "m", tiny_llama_config(layers=2, vocab_size=len(tokenizer), tie_word_embeddings=True),
               tokenizer=False)
    (root / "d.txt").write_text("the cat sat on the mat. the dog ran over the log. " * 200)
    return root


def test_save_total_limit_keeps_the_newest_and_resume_is_exact(tied, tmp_path):
    """The default keeps 2 checkpoints (also across a resume), --save-total-limit 0 all; a tied model is saved
    without its alias (no accelerate warning, no lm_head.weight in the file); a run killed after step 3 and resumed
    gives the unbroken run's losses. (The limit only deletes folders: the run that keeps all is the unbroken run.)"""
    from safetensors import safe_open

    def run(out, *extra, **kw):
        return launch_continue(["--model", str(tied / "m"), "--data", str(tied / "d.txt"), "--output-dir",
                                str(tmp_path / out), "--seq-len", "32", "--batch-size", "2", "--max-steps", "5",
                                "--save-steps", "1", "--eval-sequences", "0", "--no-export", *extra], **kw)

    proc = run("all", "--save-total-limit", "0")
    assert sorted(p.name for p in (tmp_path / "all").glob("checkpoint-*")) == [f"checkpoint-{i}" for i in range(1, 6)]
    assert "Removed shared tensor" not in proc.stderr
    with safe_open(tmp_path / "all" / "checkpoint-5" / "model.safetensors", "pt") as fh:
        names = set(fh.keys())
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
    killed = run("killed", env_extra={"HFGROW_DEBUG_KILL_AT_STEP": "3"}, check=False)
    assert killed.returncode != 0
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    proc = run("killed", "--resume")
    assert sorted(p.name for p in (tmp_path / "killed").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]
    assert "Removed shared tensor" not in proc.stderr

    def losses(out):
        return [r["loss"] for r in map(json.loads, (tmp_path / out / "log.jsonl").read_text().splitlines())
                if r["type"] == "train"]

    assert len(losses("all")) == 5 and losses("killed") == losses("all")
