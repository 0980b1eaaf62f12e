"""The operator registry (issue 22): one entry per operator, found by every command with no other file changed;
one name (`stack` is Gstack everywhere, `direct` still read with a note); `grow --op stack` is `hfgrow stack`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hfgrow.arch.roles import block_index
from hfgrow.eval.tiny import make_model, tiny_llama_config
from hfgrow.growth import registry
from hfgrow.growth.ops.common import then
from hfgrow.growth.pipeline import WriteOptions, grow_model
from hfgrow.growth.recipe import Recipe
from helpers.cli import run_cli


def halve_plan(plan, roles, spec):
    """A toy depth operator: Gstack whose new blocks have their output projections halved."""
    new = set(plan.new_layers)
    tensors = [then(t, lambda x: x * 0.5, "halved (toy)")
               if block_index(t.name, roles.prefix) in new and roles.role(t.sources[0]).output_projection else t
               for t in plan.tensors]
    return dataclasses.replace(plan, tensors=tensors)


@pytest.fixture
def toy():
    entry = registry.register(registry.Operator(
        "halve", "toy: Gstack with the new blocks' output projections halved",
        {"depth": "G-up-halve (toy: new blocks' output projections halved)"},
        layer_map_text="toy layer map: output layer i is source layer pattern[i], repeats halved",
        order="stack", depth_plan=halve_plan, card="A toy operator registered by a test."))
    yield entry
    registry.unregister("halve")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("registry") / "small"
    make_model(folder, tiny_llama_config(layers=2, hidden_size=32, intermediate_size=64, vocab_size=128), seed=0)
    return folder


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_a_registered_operator_is_found_by_grow_replay_card_and_the_trainer(toy, small, tmp_path, capsys):
    out = tmp_path / "halved"
    code, _, err = run_cli(["grow", small, out, "--op", "halve", "--factor", "2", "-q"], capsys)
    assert code == 0, err
    w, src = weights(out), weights(small)
    assert torch.equal(w["model.layers.3.mlp.down_proj.weight"], src["model.layers.1.mlp.down_proj.weight"] * 0.5)
    assert torch.equal(w["model.layers.1.mlp.down_proj.weight"], src["model.layers.1.mlp.down_proj.weight"])
    card = (out / "README.md").read_text()
    assert "G-up-halve" in card and "toy layer map" in card and "A toy operator registered by a test." in card
    assert Recipe.read(out).operation.op == "halve"
    code, _, err = run_cli(["grow", small, tmp_path / "again", "--recipe", out / "hfgrow.yaml", "-q"], capsys)
    assert code == 0, err
    again = weights(tmp_path / "again")
    assert all(torch.equal(w[k], again[k]) for k in w)
    # --grow halve:2@WHEN: parsed, staged and grown as the trainer does it
    from hfgrow.arch.layout import read_config
    from hfgrow.train.growth import grow_spec, parse_grow, plan_stages

    arg = parse_grow("halve:2@1024")
    stages = plan_stages(read_config(small), [arg], tokens_per_step=512, max_steps=10)
    assert [(s.start_step, s.layers) for s in stages.stages] == [(0, 2), (2, 4)]
    grow_model(str(small), tmp_path / "in-run", grow_spec(arg.op, arg.factor), WriteOptions(quiet=True))
    assert all(torch.equal(w[k], weights(tmp_path / "in-run")[k]) for k in w)
    from hfgrow.eval.compare import plan_arms

    arms, _ = plan_arms(4000, 1000, scratch_tokens=20480, base_fraction=0.25, tokens_per_step=512, factor=2,
                        ops=("halve",), optimizers=("fresh",), include_untrained=False, include_small=False)
    assert arms[0].name == "grown-halve" and arms[0].grow == "halve:2@5120"


def test_grow_op_stack_equals_hfgrow_stack_bit_for_bit(small, tmp_path, capsys):
    assert run_cli(["stack", small, tmp_path / "stack", "--factor", "2", "-q"], capsys)[0] == 0
    assert run_cli(["grow", small, tmp_path / "grow", "--op", "stack", "--factor", "2", "-q"], capsys)[0] == 0
    a, b = tmp_path / "stack", tmp_path / "grow"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "config.json").read_bytes() == (b / "config.json").read_bytes()
    assert Recipe.read(b).operation.op == "stack" and Recipe.read(b).params["op"] == "stack"


def test_the_old_name_direct_is_stack_with_a_one_line_note(small, tmp_path, capsys):
    code, _, err = run_cli(["grow", small, tmp_path / "old", "--op", "direct", "--factor", "2", "-q"], capsys)
    assert code == 0
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == ["note: --op direct is now called --op stack; the old name is accepted for one more release."]
    assert Recipe.read(tmp_path / "old").operation.op == "stack"
    run_cli(["grow", small, tmp_path / "new", "--op", "stack", "--factor", "2", "-q"], capsys)
    assert (tmp_path / "old" / "model.safetensors").read_bytes() == (tmp_path / "new" / "model.safetensors").read_bytes()


def test_unknown_operators_are_one_sentence_naming_the_choices(small, tmp_path, capsys):
    code, _, err = run_cli(["grow", small, tmp_path / "x", "--op", "nope", "--factor", "2"], capsys)
    assert code == 2 and "'nope' is not one of stack, zero, random, learn, upcycle" in err
    from hfgrow.errors import HfgrowError
    from hfgrow.train.growth import parse_grow

    with pytest.raises(HfgrowError, match="unknown operator 'nope'; use one of stack, interpolate, zero, random"):
        parse_grow("nope:2@1k")
    with pytest.raises(HfgrowError, match="LiGO learns its operator"):
        parse_grow("learn:2@1k")
    assert parse_grow("interpolate:2@1k").op == "interpolate"


def test_every_entry_names_its_forms_and_the_placements_match_the_paper():
    assert registry.get("stack").order == "stack" and registry.get("zero").order == "interleave"
    assert registry.get("random").prts_order == "stack" and registry.get("random").masks
    assert registry.get("zero").preserves and not registry.get("stack").preserves
    assert registry.names(in_run=True) == ["stack", "interpolate", "zero", "random", "upcycle"]
    for name in registry.names():
        assert registry.get(name).names, name
