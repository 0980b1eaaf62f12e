"""The recipe (hfgrow.yaml): typed, versioned, one reader and one writer; 0.1 recipes still replay."""

from __future__ import annotations

from pathlib import Path

import pytest

import hfgrow
from hfgrow.errors import HfgrowError
from hfgrow.eval.tiny import make_model, tiny_llama_config
from hfgrow.growth.recipe import Mask, Operation, Recipe, SourceRef, WidthMask, WidthRecord
from hfgrow.io.checkpoint import Checkpoint

# Written by hfgrow 0.1 (commit e1a86c0) for `grow(small, random, op="random", layers=3, hidden_size=96,
# mask_steps=50)`; only the machine's path was replaced by {SRC}.
RECIPE_0_1 = """\
# hfgrow recipe: `hfgrow grow --recipe hfgrow.yaml OUT` rebuilds this model.
hfgrow_version: 0.1.0
created: '2026-11-27T12:10:04+00:00'
command: hfgrow grow {SRC} random --op random --pattern 0-1,1 --hidden-size 96 --seed 0 --mask-steps 50
source: {{spec: {SRC}, path: {SRC}}}
operation:
  op: random
  direction: depth+width
  width:
    op: random
    hidden_size: [64, 96]
    num_attention_heads: [4, 6]
    num_key_value_heads: [2, 3]
    head_dim: 16
    intermediate_size: [128, 192]
    function_preserving: false
  mask:
    width:
      hidden_size: [64, 96]
      intermediate_size: [128, 192]
      new_heads: [4, 5]
      new_kv_heads: [2]
    layers: [2]
    steps: 50
  function_preserving: false
  seed: 0
  depth_op: random
  depth: {{op: random, factor: null, layers: 3, pattern: null, order: interleave}}
  width_op: random
params: {{op: random, pattern: '0-1,1', hidden_size: 96, seed: 0, mask_steps: 50, max_shard_size: 5GB}}
layer_map: [0, 1, 1]
new_layers: [2]
command_name: grow
"""


def tensors(folder: Path) -> dict:
    checkpoint = Checkpoint.open(folder)
    return {name: checkpoint.load(name) for name in checkpoint.tensors}


def test_a_0_1_recipe_reads_and_replays(tmp_path):
    src = tmp_path / "small"
    make_model(src, tiny_llama_config(layers=2))
    old = tmp_path / "old"
    old.mkdir()
    (old / "hfgrow.yaml").write_text(RECIPE_0_1.format(SRC=src))
    recipe = Recipe.read(old)
    assert recipe.format == 1 and recipe.command == "grow" and recipe.source.path == str(src)
    assert recipe.source.name == "small"  # a 0.1 path becomes a name when written again
    assert recipe.operation.mask == Mask(layers=(2,), steps=50, width=WidthMask(
        hidden=(64, 96), ffn={"intermediate_size": (128, 192)}, new_heads=(4, 5), new_kv_heads=(2,)))
    assert recipe.operation.width == WidthRecord("random", {"hidden_size": (64, 96), "num_attention_heads": (4, 6),
                                                            "num_key_value_heads": (2, 3),
                                                            "intermediate_size": (128, 192)}, 16, False)
    replayed = hfgrow.replay(old / "hfgrow.yaml", tmp_path / "replayed", quiet=True)
    fresh = hfgrow.grow(str(src), tmp_path / "fresh", op="random", layers=3, hidden_size=96, mask_steps=50,
                        quiet=True)
    assert replayed.plan.layer_map == fresh.plan.layer_map == [0, 1, 1]
    a, b = tensors(tmp_path / "replayed"), tensors(tmp_path / "fresh")
    assert set(a) == set(b) and all((a[k] == b[k]).all() for k in a)
    assert Recipe.read(tmp_path / "replayed").operation == fresh.recipe.operation


def test_round_trip_and_no_paths(tmp_path):
    recipe = Recipe(command="grow", params={"op": "zero", "pattern": "0*2,1*2", "seed": 3},
                    source=SourceRef(name="small"),
                    operation=Operation(op="zero", direction="depth+width", seed=3, function_preserving=True,
                                        width=WidthRecord("direct", {"hidden_size": (64, 128)}, 16, True),
                                        mask=Mask(layers=(1,), steps=10, form="block")),
                    layer_map=[0, 0, 1, 1], new_layers=[1, 3], command_line="hfgrow grow small OUT --op zero")
    recipe.write(tmp_path)
    text = (tmp_path / "hfgrow.yaml").read_text()
    assert text.startswith("# hfgrow recipe") and "format: 2" in text and "path" not in text
    assert Recipe.read(tmp_path) == recipe
    hub = SourceRef(repo_id="org/model", revision="main", commit="a" * 40)
    assert SourceRef.from_dict(hub.to_dict()) == hub and hub.display == "org/model"


@pytest.mark.parametrize("text", ["- a list\n", "source: {name: x}\n", "{{{ not yaml"])
def test_bad_recipes_are_one_sentence(tmp_path, text):
    (tmp_path / "hfgrow.yaml").write_text(text)
    with pytest.raises(HfgrowError, match="recipe"):
        Recipe.read(tmp_path)


def test_a_folder_without_recipe_has_none(tmp_path):
    assert Recipe.read(tmp_path) is None


def test_mask_ramp_fields_round_trip_and_default_to_hfgrows_ramp(tmp_path):
    """A format-2 width mask written before the ramp fields existed reads as hfgrow's ramp (one stage, masks on
    readers, fill statistics); prts's staged ramp is written out and read back."""
    width = {"hidden_size": [64, 96], "intermediate_size": [128, 192], "new_heads": [4, 5], "new_kv_heads": [2]}
    old = Mask.from_dict({"layers": [], "steps": 50, "form": "sublayer", "width": width})
    assert (old.stages, old.units_at, old.norm_stats) == ((("ffn", "hidden", "heads"),), "readers", "fill")
    prts = Mask(layers=(2,), steps=50, form="block", width=old.width, stages=(("ffn",), ("hidden",), ("heads",)),
                units_at="writers", norm_stats="masked")
    recipe = Recipe(command="grow", params={"op": "random", "style": "prts"}, source=SourceRef(name="small"),
                    operation=Operation(op="random", direction="depth+width", style="prts", mask=prts))
    recipe.write(tmp_path)
    assert Recipe.read(tmp_path).operation.mask == prts
    assert "stages" not in Mask(layers=(1,), steps=5).to_dict()  # depth-only masks carry no width ramp
