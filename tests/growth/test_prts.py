"""--style prts: each growth operator exactly as the reference code of Du et al. 2024 runs it (tongxuluo/prts).

Every test builds the reference construction independently — a few lines of torch following the prts file and
lines named in its docstring, without calling hfgrow — on a tiny Llama, and compares it with
``grow(..., style="prts")``: equal tensors wherever the reference copies or zeroes values, and equal
distributions (mean 0 within 4 standard errors, std within 12%) wherever it keeps the target model's random
init. Expectations marked NaN in a reference tensor are "the target's init".

Seed rule: the reference draws its init from torch's global generator (pretrain/run_pretrain.py seeds it with
``fabric.seed_everything(3407)``); hfgrow draws every random value from ops/common.py's generator keyed by
(--seed, purpose, tensor name, chunk), so a recipe replays bit for bit (tested in test_operators.py) but only
the distribution of the random parts can match the reference's.

The reference init (prts lit_gpt/model.py ``GPT._init_weights``, lines 40-56): every nn.Linear and
nn.Embedding normal(0, sqrt(2 / (5 · weight.size(1)))), biases zero, the SwiGLU down projection (``w3``)
normal(0, 1 / sqrt(fan_in) / n_layer) with n_layer the target's layer count, RMSNorm weights one
(lit_gpt/rmsnorm.py ``RMSNorm.reset_parameters``).
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import pytest
import torch
import transformers as T
from safetensors.torch import load_file

import hfgrow
from hfgrow.eval.tiny import make_model, make_tokenizer, python_docs_corpus
from hfgrow.growth.ligo.operator import learn
from hfgrow.growth.pipeline import grow
from hfgrow.growth.recipe import Mask, Recipe, WidthMask
from hfgrow.growth.verify import verify
from hfgrow.io.checkpoint import Checkpoint
from helpers.cli import run_cli
from helpers.families import OPERATOR_CONFIGS

logging.getLogger("transformers").setLevel(logging.ERROR)

H, I, HEADS, KV = 32, 64, 4, 2  # OPERATOR_CONFIGS["llama"]: 2 layers, GQA, untied, init std 0.1


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("prts") / "llama"
    make_model(src, OPERATOR_CONFIGS["llama"](), seed=0)
    return src


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    """Models with a tokenizer and text to learn on: models(name) -> (folder, data file)."""
    root = tmp_path_factory.mktemp("prts-text")
    docs = python_docs_corpus(max_chars=10_000)
    data = root / "data.txt"
    data.write_text("\n\n".join(docs))
    configs = {
        "llama_mha": lambda: T.LlamaConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=2, num_attention_heads=4,
                                           num_key_value_heads=4, max_position_embeddings=128,
                                           initializer_range=0.1, tie_word_embeddings=False),
        "llama": OPERATOR_CONFIGS["llama"],
        "llama_tied": OPERATOR_CONFIGS["llama"],  # tie_word_embeddings set below: no lm_head tensor on disk
        "gpt2": OPERATOR_CONFIGS["gpt2"],  # tied, Conv1D, LayerNorm
        "gemma": OPERATOR_CONFIGS["gemma"],  # tied, MQA, (1 + w) norms, scaled embedding
    }
    cache: dict[str, Path] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in cache:
            config = configs[name]()
            config.vocab_size = 300  # room for the byte-level tokenizer
            if name == "llama_tied":
                config.tie_word_embeddings = True
            folder = root / name
            make_model(folder, config, tokenizer=False)
            make_tokenizer(folder, text="\n".join(docs[:20]), vocab_size=300)
            cache[name] = folder
        return cache[name], data

    return get


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v for file in sorted(Path(folder).glob("*.safetensors")) if file.name != "hfgrow_ligo.safetensors"
            for k, v in load_file(file).items()}


def prts_std(name: str, shape: tuple[int, ...], layers: int) -> float:
    """GPT._init_weights for a Hugging Face Llama tensor: fan-in is weight.size(1) (nn.Linear, nn.Embedding)."""
    fan_in = shape[1]
    if name.endswith("mlp.down_proj.weight"):  # SwiGLU w3
        return 1 / math.sqrt(fan_in) / layers
    return math.sqrt(2 / (5 * fan_in))


def check_init(values: torch.Tensor, std: float, what: str) -> None:
    """Drawn from normal(0, std): mean within 4 standard errors of 0, sample std within 12% of std."""
    values = values.double().flatten()
    assert values.numel() >= 256, what
    assert abs(values.mean().item()) < 4 * std / math.sqrt(values.numel()), what
    assert abs(values.std().item() / std - 1) < 0.12, (what, values.std().item(), std)


def compare(grown: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], layers: int) -> None:
    """Equal where the reference has a value; the prts init's distribution where it is NaN (the target's init)."""
    assert set(grown) == set(reference)
    for name, expected in reference.items():
        value = grown[name]
        assert value.shape == expected.shape, name
        known = ~torch.isnan(expected)
        assert torch.equal(value[known], expected[known]), name
        if not known.all():
            check_init(value[~known], prts_std(name, tuple(value.shape), layers), name)


# --------------------------------------------------------------------------- G-up-random (prts msg.py)


def test_g_up_random_is_prts_msg(llama, tmp_path):
    """msg.py: the target model is initialised (run_pretrain.py line 208-210), every tensor the source has is copied
    into it by name (MsgModel.grow, lines 159-168), so the new layers src_depth..trg_depth-1 sit on top and keep the
    init, and find_and_replace wraps exactly those in MsgBlock (lines 185-189): y = c·block(x) + (1 − c)·x
    (line 137), c = step / grow_step (MsgMask.getfullmask, lines 34-41; MsgConfig.grow_step = 5000)."""
    grow(str(llama), tmp_path / "out", op="random", layers=4, style="prts", seed=3, quiet=True)
    source, grown = tensors(llama), tensors(tmp_path / "out")
    reference = {name: source[name] if name in source else torch.ones(H) if name.endswith("norm.weight")
                 else torch.full(tuple(value.shape), math.nan) for name, value in grown.items()}
    compare(grown, reference, layers=4)
    assert sum(name.startswith("model.layers.3.") for name in reference) == 9  # the new layers are all there
    recipe = Recipe.read(tmp_path / "out")
    assert recipe.layer_map == [0, 1, 0, 1] and recipe.new_layers == [2, 3]
    assert recipe.operation.style == "prts" and recipe.params["style"] == "prts"
    assert recipe.operation.mask == Mask(layers=(2, 3), steps=0, form="block", steps_given=False)
    # hfgrow's own variant interleaves the new layers, draws them at initializer_range and ramps each sublayer
    own = grow(str(llama), tmp_path / "own", op="random", layers=4, seed=3, quiet=True)
    assert own.plan.new_layers == [1, 3] and own.recipe.operation.mask.form == "sublayer"
    check_init(tensors(tmp_path / "own")["model.layers.1.mlp.down_proj.weight"], 0.1, "hfgrow init")


# --------------------------------------------------------------------------- G-right-zero (prts zero.py)


def reference_zero(source: torch.Tensor, shape: tuple[int, ...], transposed: bool = False) -> torch.Tensor:
    """ZeroModel.expand_tensor (zero.py lines 14-23): target[:dout, :din] = source, target[dout:, :din] = 0; for a
    vector target[:d] = source, target[d:] = 0; the rest keeps the target's init (NaN). The embedding goes through
    transposed (line 31)."""
    if transposed:
        return reference_zero(source.T, shape[::-1]).T
    target = torch.full(shape, math.nan)
    if source.dim() == 2:
        dout, din = source.shape
        target[:dout, :din] = source
        target[dout:, :din] = 0
    else:
        target[: source.shape[0]] = source
        target[source.shape[0]:] = 0
    return target


def test_g_right_zero_is_prts_zero(llama, tmp_path):
    """zero.py: new units' fan-in from old units is zero, their fan-out random; new embedding columns and new norm
    weights zero; no rescale anywhere. With the hidden size grown the norms see a smaller mean square, so the
    function changes; growing the FFN and the heads only, it is kept."""
    grow(str(llama), tmp_path / "out", op="zero", hidden_size=2 * H, style="prts", quiet=True)
    source, grown = tensors(llama), tensors(tmp_path / "out")
    reference = {name: reference_zero(source[name], tuple(grown[name].shape), transposed="embed_tokens" in name)
                 for name in grown}
    compare(grown, reference, layers=2)
    config, source_config = (T.AutoConfig.from_pretrained(f) for f in (tmp_path / "out", llama))
    assert config.rms_norm_eps == source_config.rms_norm_eps  # nothing rescaled
    assert verify(str(llama), str(tmp_path / "out")).preserved is False
    assert Recipe.read(tmp_path / "out").operation.width.function_preserving is False

    ffn_heads = grow(str(llama), tmp_path / "ffn", op="zero", intermediate_size=2 * I, num_heads=8, num_kv_heads=4,
                     style="prts", quiet=True)
    grown = tensors(tmp_path / "ffn")
    compare(grown, {name: reference_zero(source[name], tuple(grown[name].shape), transposed="embed_tokens" in name)
                    for name in grown}, layers=2)
    assert ffn_heads.plan.operation.function_preserving is True
    assert verify(str(llama), str(tmp_path / "ffn")).preserved


# --------------------------------------------------------------------------- G-right-random (prts msg.py)


def reference_msg(source: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """MsgModel.expand_tensor (msg.py lines 150-157): the source in the leading units, the rest the target's init
    (NaN; a norm weight's init is one)."""
    target = torch.ones(shape) if name.endswith("norm.weight") else torch.full(shape, math.nan)
    target[tuple(slice(0, n) for n in source.shape)] = source
    return target


def test_g_right_random_is_prts_msg(llama, tmp_path):
    """msg.py width: the source copied into the target init's leading units; the recipe asks for MsgMask's staged
    ramp (getmask, lines 43-83: FFN units over grow_step steps, then hidden units, then heads), masks on the outputs
    of every Linear and Embedding but the LM head (MsgLayer, lines 103-117; find_and_replace 171-183), and
    mask-weighted norm statistics (MsgNorm, lines 86-100)."""
    grow(str(llama), tmp_path / "out", op="random", hidden_size=2 * H, style="prts", quiet=True)
    source, grown = tensors(llama), tensors(tmp_path / "out")
    compare(grown, {name: reference_msg(source[name], tuple(grown[name].shape), name) for name in grown}, layers=2)
    mask = Recipe.read(tmp_path / "out").operation.mask
    assert mask == Mask(steps=0, width=WidthMask(hidden=(H, 2 * H), ffn={"intermediate_size": (I, 2 * I)},
                                                    new_heads=(4, 5, 6, 7), new_kv_heads=(2, 3)),
                        stages=(("ffn",), ("hidden",), ("heads",)), units_at="writers", norm_stats="masked",
                        steps_given=False)
    own = grow(str(llama), tmp_path / "own", op="random", hidden_size=2 * H, quiet=True).recipe.operation.mask
    assert (own.stages, own.units_at, own.norm_stats) == ((("ffn", "hidden", "heads"),), "readers", "fill")


# --------------------------------------------------------------------------- G-right-learn (prts ligo.py)


def test_g_right_learn_is_prts_ligo(text_models, tmp_path):
    """ligo.py, at the start of learning (--learn-steps 0), depth x2 and width 32 -> 48 on a multi-head Llama (the
    reference's case): B_embd, BQ, BK, BV, B_ffn start at [I; N(0, 1/new)] (LiGOModel.init, lines 82-98), the width
    expansion is q' = BQ·q·B_embdᵀ, k', v' alike, o' = B_embd·o·BVᵀ, w1/w2' = B_ffn·W·B_embdᵀ, w3' = B_embd·W·B_ffnᵀ,
    norms w·B_embdᵀ (width_expansion, lines 111-161), embedding, LM head and final norm ·B_embdᵀ (get_trg_params,
    lines 163-179), and depth starts at the stacked identities (init 'depth', lines 92-96): layer l = source l mod L."""
    src, data = text_models("llama_mha")
    result = learn(str(src), tmp_path / "out", data=[str(data)], factor=2, hidden_size=48, learn_steps=0, seq_len=32,
                   style="prts", quiet=True)
    B = load_file(tmp_path / "out" / "hfgrow_ligo.safetensors")
    assert set(B) == {"hidden", "q", "k", "v", "ffn__intermediate_size"}
    for name, (old, new) in {"hidden": (32, 48), "q": (32, 48), "k": (32, 48), "v": (32, 48),
                             "ffn__intermediate_size": (64, 96)}.items():
        assert B[name].shape == (new, old) and torch.equal(B[name][:old], torch.eye(old))
        check_init(B[name][old:], math.sqrt(1 / new), name)
    E, Q, K, V, F = B["hidden"], B["q"], B["k"], B["v"], B["ffn__intermediate_size"]
    source = tensors(src)
    reference = {"model.embed_tokens.weight": source["model.embed_tokens.weight"] @ E.T,
                 "lm_head.weight": source["lm_head.weight"] @ E.T, "model.norm.weight": source["model.norm.weight"] @ E.T}
    for position in range(4):
        layer = {rest: source[f"model.layers.{position % 2}.{rest}"] for rest in (
            "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
            "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight",
            "post_attention_layernorm.weight")}
        expanded = {"self_attn.q_proj.weight": Q @ layer["self_attn.q_proj.weight"] @ E.T,
                    "self_attn.k_proj.weight": K @ layer["self_attn.k_proj.weight"] @ E.T,
                    "self_attn.v_proj.weight": V @ layer["self_attn.v_proj.weight"] @ E.T,
                    "self_attn.o_proj.weight": E @ layer["self_attn.o_proj.weight"] @ V.T,
                    "mlp.gate_proj.weight": F @ layer["mlp.gate_proj.weight"] @ E.T,
                    "mlp.up_proj.weight": F @ layer["mlp.up_proj.weight"] @ E.T,
                    "mlp.down_proj.weight": E @ layer["mlp.down_proj.weight"] @ F.T,
                    "input_layernorm.weight": layer["input_layernorm.weight"] @ E.T,
                    "post_attention_layernorm.weight": layer["post_attention_layernorm.weight"] @ E.T}
        reference.update({f"model.layers.{position}.{rest}": value for rest, value in expanded.items()})
    grown = tensors(tmp_path / "out")
    assert set(grown) == set(reference)
    for name, expected in reference.items():
        torch.testing.assert_close(grown[name], expected, rtol=1e-5, atol=1e-6, msg=name)
    assert result.recipe.operation.width.init == "ligo" and result.recipe.operation.style == "prts"
    hfgrow.replay(tmp_path / "out", tmp_path / "again", source=str(src), quiet=True)  # the sidecar's B, read back
    again = tensors(tmp_path / "again")
    assert set(again) == set(grown) and all(torch.equal(again[k], grown[k]) for k in grown)


def test_prts_learn_refuses_a_width_init(text_models, tmp_path, capsys):
    src, data = text_models("llama")
    capsys.readouterr()
    code, _, err = run_cli(["grow", src, tmp_path / "out", "--op", "learn", "--hidden-size", "48", "--data", data,
                            "--style", "prts", "--width-init", "identity"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "--width-init is for --style hfgrow" in lines[0]


# --------------------------------------------------------------------------- the same under both styles


@pytest.mark.parametrize("kwargs", [
    dict(factor=2),  # Gstack (stackingpt.py)
    dict(op="zero", factor=2),  # G-up-zero (G_zero_depthwise.py, lemon=True: copies after their source, zeroed)
    dict(factor=2, noise=0.2, seed=4),  # noise (paper §5.2 scales)
], ids=["gstack", "g-up-zero", "noise"])
def test_prts_style_writes_hfgrows_tensors_for_gstack_zero_blocks_and_noise(kwargs, llama, tmp_path):
    """Gstack, G-up-zero and the noise scales have one rule in both hfgrow and the reference: --style prts writes
    the same tensors, and the recipe differs only in the style it records."""
    own = grow(str(llama), tmp_path / "own", quiet=True, **kwargs)
    prts = grow(str(llama), tmp_path / "prts", style="prts", quiet=True, **kwargs)
    a, b = tensors(tmp_path / "own"), tensors(tmp_path / "prts")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert own.recipe.operation.style == "hfgrow" and prts.recipe.operation.style == "prts"
    assert prts.recipe.operation.replace(style="hfgrow") == own.recipe.operation


# --------------------------------------------------------------------------- G-right-direct (prts bert2bert.py)


def reference_bert2bert(source: dict[str, torch.Tensor], H2: int, I2: int, seed: int) -> dict[str, torch.Tensor]:
    """bert2BERT as bert2bert.py runs it on a lit_gpt Llama (multi-head), built from the rule, without hfgrow.

    get_extra_src_indices (from_left=False, lines 62-75): diff = H2 - H units drawn with replacement,
    random.choices(range(diff), k=diff), each modulo H (hfgrow seeds random.Random(--seed) for the draw); the new
    rows of a 3H fused q|k|v take the list three times; the FFN's new units (idx * 4)[:I2 - I] unless I2 - I is
    diff, 3·diff or 4·diff. update_linear (lines 105-186): the input dimension first, through expand_tensor with
    div=True (prts_lit/utils/other.py: the copies and the source column both divided by 1 + the number of
    copies), then the output dimension with div=False (rows copied). Embedding columns and norm weights copied.
    lit_gpt's attention weight is [q_h; k_h; v_h] head by head; the target reads its rows in the same layout."""
    H = source["model.embed_tokens.weight"].shape[1]
    I = source["model.layers.0.mlp.up_proj.weight"].shape[0]
    hd = H // 4
    diff = H2 - H
    idx = [x % H for x in random.Random(seed).choices(range(diff), k=diff)]
    extra = {diff: idx, 3 * diff: idx * 3, 4 * diff: idx * 4}
    if I2 - I not in extra:
        extra[I2 - I] = (idx * 4)[:I2 - I]
    mapping = {H: H2, 3 * H: 3 * H2, I: I2}

    def expand(t: torch.Tensor, dim: int, div: bool) -> torch.Tensor:
        ind = torch.tensor(extra[mapping[t.shape[dim]] - t.shape[dim]])
        pad = t.index_select(dim, ind)
        out = t.clone()
        if div:
            count = (ind.unsqueeze(-1) == ind).sum(-1) + 1
            pad = pad / (count if dim == 0 else count.unsqueeze(0))
            out.index_copy_(dim, ind, pad)
        return torch.cat([out, pad], dim)

    def linear(w: torch.Tensor) -> torch.Tensor:
        if w.shape[1] in mapping:
            w = expand(w, 1, True)
        return expand(w, 0, False) if w.shape[0] in mapping else w

    grown = {"model.embed_tokens.weight": expand(source["model.embed_tokens.weight"], 1, False),
             "model.norm.weight": expand(source["model.norm.weight"], 0, False),
             "lm_head.weight": linear(source["lm_head.weight"])}
    for layer in range(2):
        p = f"model.layers.{layer}."
        q, k, v = (source[p + f"self_attn.{x}_proj.weight"] for x in "qkv")
        fused = torch.cat([torch.cat([m[h * hd:(h + 1) * hd] for m in (q, k, v)]) for h in range(H // hd)])
        fused = linear(fused)
        heads = [fused[h * 3 * hd:(h + 1) * 3 * hd] for h in range(H2 // hd)]
        for j, x in enumerate("qkv"):
            grown[p + f"self_attn.{x}_proj.weight"] = torch.cat([head[j * hd:(j + 1) * hd] for head in heads])
        for rest in ("self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"):
            grown[p + rest] = linear(source[p + rest])
        for rest in ("input_layernorm.weight", "post_attention_layernorm.weight"):
            grown[p + rest] = expand(source[p + rest], 0, False)
    return grown


@pytest.mark.parametrize("seed", [0, 5])
def test_g_right_direct_is_prts_bert2bert(seed, text_models, tmp_path):
    """--style prts G-right-direct writes bert2BERT's tensors (32 -> 48 hidden, 4 -> 6 heads, FFN 64 -> 96: the
    (idx * 4)[:32] branch), records that it is not function-preserving, and replays bit for bit."""
    src, _ = text_models("llama_mha")
    out = tmp_path / "out"
    result = grow(str(src), out, hidden_size=48, style="prts", seed=seed, quiet=True)
    grown, expected = tensors(out), reference_bert2bert(tensors(src), 48, 96, seed)
    assert set(grown) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(grown[name], value, rtol=1e-6, atol=1e-7, msg=name)
    assert result.plan.operation.function_preserving is False
    assert Recipe.read(out).operation.width.function_preserving is False
    assert verify(str(src), str(out)).preserved is False
    hfgrow.replay(out, tmp_path / "again", source=str(src), quiet=True)
    again = tensors(tmp_path / "again")
    assert all(torch.equal(again[k], grown[k]) for k in grown)


def test_prts_direct_refuses_grouped_query_attention(llama, tmp_path, capsys):
    code, _, err = run_cli(["grow", str(llama), str(tmp_path / "out"), "--hidden-size", "64", "--style", "prts"],
                           capsys)
    assert code == 1 and "multi-head attention" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_learn_depth_is_the_same_under_both_styles(text_models, tmp_path):
    """LiGO depth (one D per weight kind from the stacking map, ligo.py lines 44-58 and 193-234) is the same under
    both styles, learning included."""
    src, data = text_models("llama")
    runs = {style: learn(str(src), tmp_path / style, data=[str(data)], factor=2, learn_steps=2, learn_lr=1e-2,
                         seq_len=32, style=style, quiet=True) for style in ("hfgrow", "prts")}
    a, b = tensors(tmp_path / "hfgrow"), tensors(tmp_path / "prts")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert runs["prts"].recipe.operation.coefficients == runs["hfgrow"].recipe.operation.coefficients
    assert any(row not in ([1.0, 0.0], [0.0, 1.0]) for rows in runs["prts"].recipe.operation.coefficients.values()
               for row in rows)


# --------------------------------------------------------------------------- LiGO on tied embeddings


@pytest.mark.parametrize("family", ["gpt2", "gemma", "llama_tied", "llama"])
def test_learn_on_tied_embeddings_starts_at_gstack_bit_for_bit(family, text_models, tmp_path, capsys):
    """`hfgrow grow --op learn` on a checkpoint without an lm_head tensor (tied embeddings, like SmolLM2) used to
    fail with "the grown model's lm_head.weight has no tensor in the source checkpoint"; its step 0 is Gstack."""
    src, data = text_models(family)
    names = set(Checkpoint.open(src).tensors)
    assert ("lm_head.weight" in names) == (family == "llama")  # tied families store the embedding only
    code, _, err = run_cli(["grow", src, tmp_path / "ligo", "--op", "learn", "--factor", "2", "--data", data,
                            "--learn-steps", "0", "--seq-len", "32", "-q"], capsys)
    assert code == 0, err
    hfgrow.stack(str(src), tmp_path / "gstack", factor=2, quiet=True)
    a, b = Checkpoint.open(tmp_path / "ligo"), Checkpoint.open(tmp_path / "gstack")
    assert set(a.tensors) == set(b.tensors) and all(torch.equal(a.load(n), b.load(n)) for n in a.tensors)


@pytest.mark.parametrize("style", ["hfgrow", "prts"])
@pytest.mark.parametrize("family", ["gpt2", "gemma", "llama_tied", "llama"])
def test_learn_depth_and_width_on_tied_embeddings_writes_a_loadable_model(family, style, text_models, tmp_path):
    src, data = text_models(family)
    result = learn(str(src), tmp_path / "out", data=[str(data)], factor=2, hidden_size=48, learn_steps=1,
                   learn_lr=1e-2, seq_len=32, style=style, quiet=True)
    model, info = T.AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.num_hidden_layers == 4 and model.get_input_embeddings().weight.shape[1] == 48
    with torch.no_grad():
        assert torch.isfinite(model(torch.arange(16)[None]).logits).all()
    assert result.recipe.operation.style == style
