"""MSG masks in continued training (hfgrow.train.msg.MaskRamp) on models grown with `grow --op random`.

Tiny random models of several families (tests/helpers/families.py), built and grown offline. At c = 0 a grown
model must compute the source model's logits; at c = 1 the hooks are gone and it is the plain model.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from helpers.families import FAMILIES

from hfgrow.arch.layout import decoder_blocks
from hfgrow.growth.pipeline import grow
from hfgrow.growth.recipe import Recipe
from hfgrow.eval.tiny import make_model
from hfgrow.train.msg import MaskRamp, sublayer_outputs

logging.getLogger("transformers").setLevel(logging.ERROR)
IDS = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A saved 2-layer model of a family (initializer_range 0.1, so that differences show)."""
    made = {}

    def make(family: str):
        if family not in made:
            made[family] = tmp_path_factory.mktemp(family)
            config = FAMILIES[family](2)
            config.initializer_range = 0.1
            make_model(made[family], config, tokenizer=False)
        return made[family]

    return make


def load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def logits(model, **kwargs):
    with torch.no_grad():
        return model(IDS, **kwargs)


def grown(source, tmp_path, family: str, **kwargs):
    """(source logits, grown model with its MaskRamp over 10 steps at c = 0, plain grown logits)."""
    out = tmp_path / "grown"
    grow(str(source(family)), out, op="random", quiet=True, **kwargs)
    mask = Recipe.read(out).operation.mask
    model = load(out)
    plain = logits(model).logits
    ramp = MaskRamp(model, dataclasses.replace(mask, steps=10))
    ramp.set_step(0)
    return logits(load(source(family))).logits, model, ramp, plain


def check_ends(model, ramp, plain):
    """Half way the model is neither; at c = 1 the hooks are gone and it is the plain grown model."""
    ramp.set_step(5)
    half = logits(model).logits
    assert not torch.allclose(half, plain, atol=1e-4)
    assert ramp.set_step(10) == 1.0 and not ramp.active
    assert torch.equal(logits(model).logits, plain)


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gemma2", "bloom"])
def test_new_layers_are_identities_at_c0(source, tmp_path, family):
    ref, model, ramp, plain = grown(source, tmp_path, family, factor=2)  # new layers 1 and 3
    assert (logits(model).logits - ref).abs().max() <= 1e-5
    assert not torch.allclose(plain, ref, atol=1e-2)
    check_ends(model, ramp, plain)


def test_ramp_scales_each_sublayers_residual_update(source, tmp_path):
    def tails(family):
        grow(str(source(family)), tmp_path / family, op="random", factor=2, quiet=True)
        model = load(tmp_path / family)
        block = decoder_blocks(model)[1][1]
        return block, sublayer_outputs(model, decoder_blocks(model)[1], [1])[1]

    block, found = tails("llama")
    assert found == [block.self_attn, block.mlp]
    block, found = tails("gemma2")  # post-norms: the update is the norm's output
    assert found == [block.post_attention_layernorm, block.post_feedforward_layernorm]
    block, found = tails("bloom")  # its attention and MLP add the residual themselves
    assert found == [block.self_attention.dense, block.mlp.dense_4h_to_h]

    # a parallel-residual block (GPT-NeoX) at c: y = x + c·attn(ln1 x) + c·mlp(ln2 x), linear in c
    ref, model, ramp, plain = grown(source, tmp_path, "gpt_neox", factor=2)
    ramp.set_step(3)
    states = logits(model, output_hidden_states=True).hidden_states
    ramp.remove()
    full = logits(model, output_hidden_states=True).hidden_states
    assert torch.equal(states[1], full[1])  # layer 0 is a source layer, unmasked
    torch.testing.assert_close(states[2] - states[1], 0.3 * (full[2] - full[1]), atol=1e-5, rtol=1e-4)


def test_block_without_attention_found_ramps_whole(source, tmp_path, capsys):
    ref, model, ramp, plain = grown(source, tmp_path, "qwen3_next", factor=2)  # layer 1: linear attention
    assert "no attention/MLP found in layers [1]" in capsys.readouterr().err
    assert (logits(model).logits - ref).abs().max() <= 1e-5
    check_ends(model, ramp, plain)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "olmo", "olmo2", "qwen2_moe"])
def test_width_at_c0_matches_source(source, tmp_path, family):
    # hidden 32 -> 64; heads and FFN sizes follow. The norms see the source units' statistics (not bit-exact:
    # their mean/variance are computed over the wider vector, ~1e-6)
    ref, model, ramp, plain = grown(source, tmp_path, family, hidden_size=64)
    assert ramp.new.keys() >= {("hidden", 64), ("q", 64)}
    assert (logits(model).logits - ref).abs().max() <= 1e-5
    assert not torch.allclose(plain, ref, atol=1e-2)
    check_ends(model, ramp, plain)


def test_width_heads_and_ffn_alone_are_exact_and_combine_with_depth(source, tmp_path):
    ref, model, ramp, plain = grown(source, tmp_path / "ffn", "qwen2_moe", intermediate_size=128)  # + fused experts
    assert torch.equal(logits(model).logits, ref)
    ref, model, ramp, plain = grown(source, tmp_path / "heads", "llama", num_heads=8)
    assert torch.equal(logits(model).logits, ref)
    ref, model, ramp, plain = grown(source, tmp_path / "both", "llama", factor=2, hidden_size=64)
    assert (logits(model).logits - ref).abs().max() <= 1e-5
    check_ends(model, ramp, plain)
