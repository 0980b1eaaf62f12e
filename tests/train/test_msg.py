"""MSG masks in continued training (hfgrow.train.msg.MaskRamp) on models grown with `grow --op random`.

Tiny random models of several families (tests/helpers/families.py), built and grown offline. At c = 0 a grown
model must compute the source model's logits; at c = 1 the hooks are gone and it is the plain model.

``--style prts`` recipes ask for the reference code's ramp (tongxuluo/prts ``prts_lit/scaling/msg.py``): the whole
block, y = c·block(x) + (1 − c)·x (``MsgBlock``, line 137); width in stages, FFN then hidden then heads
(``MsgMask.getmask``, lines 43-83); masks on the outputs of the projections that write new units (``MsgLayer``,
lines 103-117) and mask-weighted norm statistics (``MsgNorm``, lines 86-100). Each is checked against a
construction written here from those lines, not through MaskRamp.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial

import pytest
import torch
from helpers.families import FAMILIES

from hfgrow.arch.layout import decoder_blocks
from hfgrow.errors import HfgrowError
from hfgrow.growth.pipeline import grow
from hfgrow.growth.recipe import Mask, Recipe, WidthMask
from hfgrow.eval.tiny import make_model
from hfgrow.train.msg import MaskRamp, ramp_length, ramp_stages, ramp_values, sublayer_outputs

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
    """(source logits, grown model with its MaskRamp over 10 steps (per stage) at c = 0, plain grown logits)."""
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


# --------------------------------------------------------------------------- --style prts: the reference's ramp

T = 10  # the ramp's steps (per width stage) in these tests


def grown_prts(source, tmp_path, family: str, **kwargs):
    """(source logits, grown --style prts model with its MaskRamp over T steps per stage at t = 0, plain logits)."""
    return grown(source, tmp_path, family, style="prts", **kwargs)


def c_block_hook(c: float):
    """prts MsgBlock.forward (msg.py 131-137) as a forward hook: y·c + x·(1 − c) on the block's hidden-state output."""
    def hook(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        y = output[0] if isinstance(output, tuple) else output
        mixed = y * c + x * (1 - c)
        return (mixed, *output[1:]) if isinstance(output, tuple) else mixed
    return hook


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gemma2", "bloom"])
def test_prts_depth_ramp_is_the_whole_block(source, tmp_path, family):
    """At c = 0.5 (t = 5 of 10) the ramped model equals the grown model whose new blocks are wrapped by hand in
    y = c·block(x) + (1 − c)·x; at t = 0 it is the source (the new layers sit on top: identities)."""
    ref, model, ramp, plain = grown_prts(source, tmp_path, family, layers=4)
    mask = Recipe.read(tmp_path / "grown").operation.mask
    assert mask.form == "block" and mask.layers == (2, 3)
    assert (logits(model).logits - ref).abs().max() <= 1e-5
    ramp.set_step(5)
    ramped = logits(model).logits
    by_hand = load(tmp_path / "grown")
    for i in mask.layers:
        decoder_blocks(by_hand)[1][i].register_forward_hook(c_block_hook(0.5), with_kwargs=True)
    torch.testing.assert_close(ramped, logits(by_hand).logits, rtol=1e-5, atol=1e-5)
    # hfgrow's sublayer form is another function half way (each update scaled: the MLP's norm sees x + c·attn);
    # for a parallel block (GPT-NeoX: y = x + attn(ln1 x) + mlp(ln2 x)) the two forms are the same
    sublayer = load(tmp_path / "grown")
    MaskRamp(sublayer, dataclasses.replace(mask, steps=T, form="sublayer")).set_step(5)
    apart = (logits(sublayer).logits - ramped).abs().max()
    assert apart <= 1e-5 if family == "gpt_neox" else apart > 1e-3
    check_ends(model, ramp, plain)


def test_staged_width_ramp_follows_the_stage_schedule():
    """prts MsgMask.getmask (msg.py 43-83), per space k = 0 (FFN), 1 (hidden), 2 (heads): c = clamp((t − k·T)/T, 0, 1);
    new layers (MsgMask.getfullmask, 34-41): min(t/T, 1). The table is that formula evaluated by hand."""
    width = WidthMask(hidden=(32, 64), ffn={"intermediate_size": (64, 128)}, new_heads=(4, 5, 6, 7),
                      new_kv_heads=(2, 3))
    prts = Mask(layers=(2, 3), steps=T, width=width, stages=(("ffn",), ("hidden",), ("heads",)))
    table = {  # t: (layer, ffn, hidden, heads)
        0: (0.0, 0.0, 0.0, 0.0), 5: (0.5, 0.5, 0.0, 0.0), 10: (1.0, 1.0, 0.0, 0.0), 12: (1.0, 1.0, 0.2, 0.0),
        20: (1.0, 1.0, 1.0, 0.0), 25: (1.0, 1.0, 1.0, 0.5), 30: (1.0, 1.0, 1.0, 1.0), 99: (1.0, 1.0, 1.0, 1.0)}
    for t, expected in table.items():
        assert ramp_values(prts, t) == pytest.approx(dict(zip(("layer", "ffn", "hidden", "heads"), expected))), t
    assert ramp_length(prts) == 3 * T
    hfgrow = dataclasses.replace(prts, stages=(("ffn", "hidden", "heads"),))  # one stage: all together over T
    assert ramp_values(hfgrow, 4) == pytest.approx({"layer": 0.4, "ffn": 0.4, "hidden": 0.4, "heads": 0.4})
    assert ramp_length(hfgrow) == T
    # a stage whose space did not grow is skipped; a grown space no stage names ramps in the first stage
    assert ramp_stages(dataclasses.replace(prts, width=WidthMask(new_heads=(4,)))) == (("heads",),)
    assert ramp_stages(dataclasses.replace(prts, stages=(("hidden",), ("heads",)))) == (("hidden", "ffn"), ("heads",))
    with pytest.raises(HfgrowError, match="'attention' as a space"):
        ramp_stages(dataclasses.replace(prts, stages=(("attention",),)))


def test_staged_width_ramp_on_a_model(source, tmp_path):
    """The MaskRamp of a prts width recipe sets each space's c by the schedule, reports its progress, and only
    leaves the plain model after the last stage (3·T)."""
    _, model, ramp, plain = grown_prts(source, tmp_path, "llama", hidden_size=64)
    assert ramp.steps == 3 * T
    for t, (ffn, hidden, heads) in {5: (0.5, 0, 0), 15: (1, 0.5, 0), 25: (1, 1, 0.5)}.items():
        assert ramp.set_step(t) == pytest.approx(t / 30)
        assert ramp.values() == pytest.approx({"layer": min(1, t / T), "ffn": ffn, "hidden": hidden, "heads": heads})
        assert ramp.active and not torch.allclose(logits(model).logits, plain, atol=1e-4)
    assert ramp.set_step(29) < 1 and ramp.active
    assert ramp.set_step(30) == 1.0 and not ramp.active
    assert torch.equal(logits(model).logits, plain)


def row_factors(model, ramp_step, ramp, names):
    """Per module name, output / (the module's own computation on the input it got), per output unit (last dim)."""
    import torch.nn.functional as F

    modules = dict(model.named_modules())
    seen = {}

    def keep(name, module, args, output):
        seen[name] = (args[0], output)

    hooks = [modules[n].register_forward_hook(partial(keep, n)) for n in names]  # after the ramp's: sees its output
    ramp.set_step(ramp_step)
    logits(model)
    for h in hooks:
        h.remove()
    factors = {}
    for name, (x, y) in seen.items():
        module = modules[name]
        if isinstance(module, torch.nn.Embedding):
            raw = F.embedding(x, module.weight)
        elif type(module).__name__ == "Conv1D":  # GPT-2: weight is (in, out)
            raw = x @ module.weight + module.bias
        else:
            raw = F.linear(x, module.weight, module.bias)
        factors[name] = (y / raw).flatten(0, -2).median(0).values  # median over positions: robust to raw ≈ 0
    return factors


def expected_rows(size: int, new: list[int], c: float) -> torch.Tensor:
    out = torch.ones(size)
    out[new] = c
    return out


def test_writers_mask_the_rows_of_new_units(source, tmp_path):
    """units_at: writers (prts MsgLayer): every projection's output is scaled by its output space's mask. Llama
    32 -> 64 hidden, 4 -> 8 heads (new 4-7; head_dim 8) over 2 -> 4 key/value heads (new 2, 3), FFN 64 -> 128.
    At t = 5 only the FFN ramps (c = 0.5), at t = 15 the hidden units, at t = 25 the heads."""
    _, model, ramp, _ = grown_prts(source, tmp_path, "llama", hidden_size=64)
    layer = "model.layers.1."
    names = ["model.embed_tokens", *(layer + n for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                       "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                                       "mlp.down_proj"))]
    heads_q = [u for h in range(4, 8) for u in range(8 * h, 8 * h + 8)]
    heads_kv = [u for h in (2, 3) for u in range(8 * h, 8 * h + 8)]
    hidden, ffn = list(range(32, 64)), list(range(64, 128))
    for t, (c_ffn, c_hidden, c_heads) in {5: (0.5, 0.0, 0.0), 15: (1.0, 0.5, 0.0), 25: (1.0, 1.0, 0.5)}.items():
        expected = {"model.embed_tokens": expected_rows(64, hidden, c_hidden),
                    layer + "self_attn.q_proj": expected_rows(64, heads_q, c_heads),
                    layer + "self_attn.k_proj": expected_rows(32, heads_kv, c_heads),
                    layer + "self_attn.v_proj": expected_rows(32, heads_kv, c_heads),
                    layer + "self_attn.o_proj": expected_rows(64, hidden, c_hidden),
                    layer + "mlp.gate_proj": expected_rows(128, ffn, c_ffn),
                    layer + "mlp.up_proj": expected_rows(128, ffn, c_ffn),
                    layer + "mlp.down_proj": expected_rows(64, hidden, c_hidden)}
        found = row_factors(model, t, ramp, names)
        for name in names:
            torch.testing.assert_close(found[name], expected[name], rtol=1e-4, atol=1e-4, msg=f"t={t} {name}")
    # readers (hfgrow's) leave q and up/gate outputs alone: the o/down projections read masked inputs instead
    readers = load(tmp_path / "grown")
    names = [layer + "self_attn.q_proj", layer + "mlp.up_proj"]
    found = row_factors(readers, 25, MaskRamp(readers, dataclasses.replace(ramp.mask, units_at="readers")), names)
    assert all(torch.allclose(found[name], torch.ones(len(found[name]))) for name in names)


@pytest.mark.parametrize("family, qkv, new_rows", [
    # GPT-NeoX: fused per head [q_h k_h v_h], head_dim 8 (64 / 8 heads): heads 4-7 are rows 96-191
    ("gpt_neox", "gpt_neox.layers.1.attention.query_key_value", list(range(96, 192))),
    # Phi-3: fused [q (8 heads) | k (4) | v (4)], head_dim 8: q rows 32-63, k rows 80-95, v rows 112-127
    ("phi3", "model.layers.1.self_attn.qkv_proj", [*range(32, 64), *range(80, 96), *range(112, 128)]),
])
def test_writers_mask_fused_qkv_rows_through_their_layout(source, tmp_path, family, qkv, new_rows):
    _, model, ramp, _ = grown_prts(source, tmp_path, family, hidden_size=64)
    found = row_factors(model, 25, ramp, [qkv])[qkv]  # heads' stage, c = 0.5
    torch.testing.assert_close(found, expected_rows(len(found), new_rows, 0.5), rtol=1e-4, atol=1e-4)
    if family == "phi3":  # fused [gate | up]: the new FFN units of both halves (FFN 64 -> 128), at t = 5
        name = "model.layers.1.mlp.gate_up_proj"
        found = row_factors(model, 5, ramp, [name])[name]
        torch.testing.assert_close(found, expected_rows(256, [*range(64, 128), *range(192, 256)], 0.5),
                                   rtol=1e-4, atol=1e-4)


def capture_norm(model, path: str):
    """Hooks that record a norm module's input before any MaskRamp hook and its output after them."""
    module = dict(model.named_modules())[path]
    seen = {}
    module.register_forward_pre_hook(lambda m, args: seen.__setitem__("x", args[0]))
    return module, seen


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_masked_norm_statistics_are_msgs(source, tmp_path, family):
    """norm_stats: masked, computed here from the formula (MSG LayerNormEx / prts MsgNorm) on the norm's input x,
    half way through the hidden stage (t = 15: m = 1 on the 32 source units, 0.5 on the 32 new ones):
    RMSNorm (Llama): y = w·u / sqrt(Σu² / Σm + ε)·m, u = x·m;
    LayerNorm (NeoX): y = (w·u / sqrt(Σu² / Σm + ε) + b)·m, u = (x − μ)·m, μ = Σ(x·m) / Σm."""
    out = tmp_path / "grown"
    grow(str(source(family)), out, op="random", hidden_size=64, style="prts", quiet=True)
    model = load(out)
    path = "model.layers.1.input_layernorm" if family == "llama" else "gpt_neox.layers.1.input_layernorm"
    norm, seen = capture_norm(model, path)  # registered before the ramp's hooks: sees the raw input
    ramp = MaskRamp(model, dataclasses.replace(Recipe.read(out).operation.mask, steps=T))
    norm.register_forward_hook(lambda m, args, output: seen.__setitem__("y", output))  # after: the final output
    ramp.set_step(15)
    logits(model)
    x, m = seen["x"].double(), torch.cat([torch.ones(32), torch.full((32,), 0.5)]).double()
    eps = norm.variance_epsilon if family == "llama" else norm.eps
    u = x * m if family == "llama" else (x - (x * m).sum(-1, keepdim=True) / m.sum()) * m
    y = norm.weight.double() * u / (u.square().sum(-1, keepdim=True) / m.sum() + eps).sqrt()
    if family == "gpt_neox":
        y = y + norm.bias.double()
    torch.testing.assert_close(seen["y"].double(), y * m, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma2", "olmo", "olmo2", "phi3", "falcon",
                                    "qwen2_moe"])
def test_prts_width_at_t0_matches_source(source, tmp_path, family):
    """Writers' masks and masked statistics at t = 0 give the source's logits (to float rounding) on every family
    (fused q|k|v and gate|up, LayerNorm, (1 + w) norms, post-norms, q/k norms over all heads, fused MoE experts),
    with new layers on top too; the ramp ends after the third stage with the plain model."""
    ref, model, ramp, plain = grown_prts(source, tmp_path, family, hidden_size=64, layers=4)
    assert (logits(model).logits - ref).abs().max() <= 1e-5
    assert not torch.allclose(plain, ref, atol=1e-2)
    ramp.set_step(15)
    assert not torch.allclose(logits(model).logits, plain, atol=1e-4)
    assert ramp.set_step(30) == 1.0 and not ramp.active
    assert torch.equal(logits(model).logits, plain)


def test_unknown_ramp_fields_are_refused(source, tmp_path):
    _, model, _, _ = grown(source, tmp_path, "llama", factor=2)
    with pytest.raises(HfgrowError, match="units_at 'outputs'; hfgrow knows readers, writers"):
        MaskRamp(model, Mask(layers=(1,), steps=T, units_at="outputs"))


def test_prts_ramp_compiles_without_graph_breaks(source, tmp_path):
    """torch.compile (dynamo, with a counting backend for speed) makes one graph of the model with the writers'
    masks, masked norms and block ramp (a graph break would make two), and follows set_step without recompiling:
    c lives in tensors filled in place, on the model's device before the forward."""
    from torch._dynamo.testing import CompileCounter

    _, model, ramp, _ = grown_prts(source, tmp_path, "llama", hidden_size=64, layers=4)
    forward = lambda ids: model(input_ids=ids, use_cache=False).logits  # noqa: E731
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(forward, backend=counter)
    with torch.no_grad():
        for t in (15, 22):
            ramp.set_step(t)
            torch.testing.assert_close(compiled(IDS), forward(IDS), rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1
