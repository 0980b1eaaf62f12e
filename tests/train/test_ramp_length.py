"""How long the MSG mask ramp is in a run (hfgrow.train.args.fit_ramp), and that a ramp the run cannot finish is
refused (or, with --no-export, warned about) at the start.

The rule: a resumed run keeps its ramp; else --mask-steps; else the recipe's steps when `grow --mask-steps` chose
them; else (grow's default, written "10% of the training run" in the recipe) 10% of the run shared by the ramp's stages. Expected lengths below are that
rule worked by hand: T = max(1, ⌊0.1 · run steps / stages⌋).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hfgrow.errors import HfgrowError
from hfgrow.eval.tiny import make_model, make_tokenizer, tiny_llama_config
from hfgrow.growth.pipeline import grow
from hfgrow.growth.replay import replay
from hfgrow.growth.recipe import Mask, Recipe, WidthMask
from hfgrow.io.source import open_source
from hfgrow.train.args import fit_ramp, preflight
from hfgrow.train.config import TrainConfig, build_parser
from hfgrow.train.loop import main as continue_main

PRTS_WIDTH = WidthMask(hidden=(32, 64), ffn={"intermediate_size": (64, 128)}, new_heads=(4, 5, 6, 7),
                       new_kv_heads=(2, 3))


def test_fit_ramp_rule():
    depth = Mask(layers=(2, 3), steps=5000, steps_given=False)  # grow's default length
    prts = Mask(steps=5000, width=PRTS_WIDTH, stages=(("ffn",), ("hidden",), ("heads",)), steps_given=False)
    # grow's default: the whole ramp takes the first 10% of the run (450 steps: 45; three stages: 15 each)
    assert fit_ramp(depth, 450) == (Mask(layers=(2, 3), steps=45), None)
    assert fit_ramp(prts, 450)[0].steps == 15
    assert fit_ramp(depth, 5)[0].steps == 1  # at least one step
    # a length grow --mask-steps chose is kept; --mask-steps (asked) overrides both; a resumed run keeps its own
    chosen = Mask(layers=(2, 3), steps=300)
    assert fit_ramp(chosen, 450)[0].steps == 300
    assert fit_ramp(depth, 450, asked=100)[0].steps == 100 and fit_ramp(chosen, 450, asked=100)[0].steps == 100
    assert fit_ramp(depth, 9000, resumed=45)[0].steps == 45  # not 900: c must not fall back below 1
    with pytest.raises(HfgrowError, match="--mask-steps 100 differs from the MSG ramp this run started with"):
        fit_ramp(depth, 9000, asked=100, resumed=45)
    with pytest.raises(HfgrowError, match="no MSG mask"):
        fit_ramp(None, 450, asked=100)
    assert fit_ramp(None, 450) == (None, None)


def test_a_ramp_that_cannot_finish_is_refused_or_warned_about():
    prts = Mask(steps=200, width=PRTS_WIDTH, stages=(("ffn",), ("hidden",), ("heads",)))  # ends at 3 × 200 = 600
    with pytest.raises(HfgrowError) as refused:
        fit_ramp(prts, 450)
    assert str(refused.value) == (
        "the MSG mask ramp ends at step 600 (3 stages of 200 steps), after the run's 450 steps, so final/ would use "
        "new structure at a strength it was never trained at; give --mask-steps 150 or less, a larger --max-steps, "
        "or --no-export to go on later.")
    mask, warning = fit_ramp(prts, 450, exports=False)  # the run will go on later: say so, keep the ramp
    assert mask.steps == 200 and warning == ("the MSG mask ramp ends at step 600 (3 stages of 200 steps), "
                                             "after the run's 450 steps; resume with --max-steps 600 or more to "
                                             "finish it.")
    assert fit_ramp(prts, 600) == (prts, None)  # ends on the last step: fine


def test_the_recipe_says_whether_grow_chose_the_length(tmp_path):
    make_model(tmp_path / "small", tiny_llama_config(layers=2))
    default = grow(str(tmp_path / "small"), tmp_path / "default", op="random", factor=2, quiet=True).recipe
    assert default.operation.mask.steps == 0 and default.operation.mask.steps_given is False  # no number yet
    written = (tmp_path / "default" / "hfgrow.yaml").read_text()
    assert "steps: 10% of the training run" in written and "steps_given: false" in written
    assert "mask_steps" not in default.params  # a replay takes the default again, and says so
    replay(tmp_path / "default" / "hfgrow.yaml", tmp_path / "again", quiet=True)
    assert Recipe.read(tmp_path / "again").operation.mask == default.operation.mask
    chosen = grow(str(tmp_path / "small"), tmp_path / "chosen", op="random", factor=2, mask_steps=50, quiet=True)
    assert chosen.recipe.operation.mask.steps_given is True and chosen.recipe.params["mask_steps"] == 50
    assert "steps_given" not in (tmp_path / "chosen" / "hfgrow.yaml").read_text()
    # recipes written before the field existed keep the length they record
    assert Mask.from_dict({"layers": [1], "steps": 5000}).steps_given is True


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tokenizer'd 2-layer Llama grown to 4 layers twice (grow's default ramp length; --mask-steps 50), and data."""
    root = tmp_path_factory.mktemp("ramp")
    tokenizer = make_tokenizer(root / "small", vocab_size=300)
    make_model(root / "small", tiny_llama_config(layers=2, vocab_size=len(tokenizer)), tokenizer=False)
    grow(str(root / "small"), root / "default", op="random", factor=2, quiet=True)
    grow(str(root / "small"), root / "chosen", op="random", factor=2, mask_steps=50, quiet=True)
    (root / "d.txt").write_text("the cat sat on the mat. the dog ran over the log. " * 200)
    return root


def setup_for(models, tmp_path, model: str, *extra: str):
    cfg = TrainConfig.from_argv(["--model", str(models / model), "--data", str(models / "d.txt"),
                                 "--output-dir", str(tmp_path / "run"), "--seq-len", "32", *extra])
    with open_source(cfg.model, progress=False) as source:
        return preflight(cfg, source)


def test_preflight_fits_the_ramp_to_the_run(models, tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert setup_for(models, tmp_path, "default", "--max-steps", "400").mask.steps == 40
    assert setup_for(models, tmp_path, "chosen", "--max-steps", "400").mask.steps == 50
    assert setup_for(models, tmp_path, "default", "--max-steps", "400", "--mask-steps", "7").mask.steps == 7
    # --max-tokens: the steps the loop will count, 10,240 tokens / (8 sequences × 32 tokens × processes)
    assert setup_for(models, tmp_path, "default", "--max-tokens", "10240").mask.steps == 4  # 40 steps
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert setup_for(models, tmp_path, "default", "--max-tokens", "10240").mask.steps == 2  # 20 steps


def test_preflight_refuses_or_warns_at_the_start(models, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(HfgrowError, match="ramp ends at step 50 .* after the run's 20 steps.*--mask-steps 20 or less"):
        setup_for(models, tmp_path, "chosen", "--max-steps", "20")
    setup = setup_for(models, tmp_path, "chosen", "--max-steps", "20", "--no-export")
    assert setup.mask.steps == 50
    assert capsys.readouterr().err.strip() == ("warning: the MSG mask ramp ends at step 50 (50 steps), after the "
                                               "run's 20 steps; resume with --max-steps 50 or more to finish it.")
    # through the training entry point: one error line, before any process group, data or output folder
    argv = ["--model", str(models / "chosen"), "--data", str(models / "d.txt"), "--output-dir", str(tmp_path / "x"),
            "--seq-len", "32", "--max-steps", "20"]
    assert continue_main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the MSG mask ramp ends at step 50")
    assert not (tmp_path / "x").exists()


def test_help_states_the_rule():
    text = " ".join(build_parser().format_help().split())
    assert "--mask-steps N" in text and "else 10% of the run shared by the ramp's stages" in text


def test_a_default_ramp_finishes_early_in_a_real_run(models, tmp_path):
    """grow's default (10% of the run) in a 20-step run: the ramp takes 2 steps (10%), c = 0, 0.5, 1, then no mask."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "hfgrow.continue", "--model", str(models / "default"), "--data",
               str(models / "d.txt"), "--output-dir", str(tmp_path / "run"), "--seq-len", "32", "--batch-size", "2",
               "--max-steps", "20", "--save-steps", "20", "--eval-sequences", "0", "--no-export"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r.get("mask_c") for r in records if r["type"] == "train"] == [0.0, 0.5, 1.0] + [None] * 17
    assert json.loads((tmp_path / "run" / "run.json").read_text())["mask"]["steps"] == 2
    assert "MSG mask ramp: the new layers are scaled by c = 0 -> 1 over the first 2 steps" in proc.stderr
    assert "warning" not in proc.stderr  # no warning: the ramp ended long before the run
