"""Growth operators (issue 3): G-up-zero, G-up-random, width direct/zero/random, noise, verify, replay.

Every model is tiny (hidden 32, 2 layers, vocab 128) with random weights, built offline.
Function preservation is checked with hfgrow.growth.verify (float32 logits on a sample text), which
also reports missing/unexpected keys when transformers loads the output.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import transformers as T
from safetensors.torch import load_file

from hfgrow.growth.pipeline import grow
from hfgrow.growth.replay import replay
from hfgrow.growth.ops.noise import noise_stds
from hfgrow.growth.ops.width import grow_indices
from hfgrow.arch.pattern import interleave_map
from hfgrow.growth.recipe import Mask, Recipe, WidthMask
from hfgrow.eval.tiny import make_model
from hfgrow.growth.verify import verify
from helpers.cli import run_cli
from helpers.families import COMMON, INIT, OPERATOR_CONFIGS

logging.getLogger("transformers").setLevel(logging.ERROR)

SEEDS = [0, 1]
CONFIGS = OPERATOR_CONFIGS
ALL = list(CONFIGS)
RMS = ["llama", "qwen2", "gemma", "phi3", "mixtral"]
LAYERNORM = ["gpt2", "neox", "opt"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Lazily built source models: models(family, seed) -> folder."""
    root = tmp_path_factory.mktemp("sources")
    cache: dict[tuple[str, int], Path] = {}

    def get(family: str, seed: int = 0) -> Path:
        key = (family, seed)
        if key not in cache:
            folder = root / f"{family}-{seed}"
            make_model(folder, CONFIGS[family](), seed=seed)
            cache[key] = folder
        return cache[key]

    return get






def check_preserved(src: Path, out: Path):
    result = verify(str(src), str(out))
    assert not result.load_issues, result.load_issues
    assert result.preserved, result.report()
    assert result.kl < 1e-9
    assert math.isclose(result.src_loss, result.out_loss, rel_tol=1e-5, abs_tol=1e-5)
    return result


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    return state


# --------------------------------------------------------------------------- G-up-zero


def test_interleave_map_follows_llama_pro():
    assert interleave_map(4, 6) == [0, 1, 1, 2, 3, 3]
    assert interleave_map(4, 8) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert interleave_map(4, 7) == [0, 1, 1, 2, 2, 3, 3]  # 3 copies spread over 4 layers
    assert interleave_map(2, 6) == [0, 0, 0, 1, 1, 1]
    assert interleave_map(3, 3) == [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("family", ALL)
def test_zero_depth_is_identity(family, seed, models, tmp_path):
    src = models(family, seed)
    out = tmp_path / "out"
    result = grow(str(src), out, op="zero", factor=2, seed=seed, quiet=True)
    assert result.plan.layer_map == [0, 0, 1, 1] and result.plan.new_layers == [1, 3]
    assert result.plan.operation.function_preserving is True
    check_preserved(src, out)
    grown, source = tensors(out), tensors(src)
    prefix = result.layout.prefix
    zeroed = 0
    for name, value in grown.items():
        if not name.startswith(f"{prefix}1.") and not name.startswith(f"{prefix}3."):
            continue
        rest = name.split(".", len(prefix.split(".")))[-1]
        neighbour = source[f"{prefix}{0 if name.startswith(f'{prefix}1.') else 1}.{rest}"]
        if _is_output_projection(rest):
            assert torch.count_nonzero(value) == 0, name
            zeroed += 1
        else:
            assert torch.equal(value, neighbour), name
    experts = {"mixtral": 3, "qwen2_moe": 5}.get(family, 1)  # every expert (and the shared expert) zeroed
    assert zeroed >= 2 * (1 + experts)


def _is_output_projection(rest: str) -> bool:
    module = rest.rsplit(".", 1)[0].split(".")
    return module[-1] in ("o_proj", "out_proj", "down_proj", "w2", "fc2", "dense_4h_to_h") or (
        module[-1] == "c_proj") or (module[-1] == "dense" and module[-2] in ("attention", "self_attention"))


def test_zero_depth_pattern_places_identity_copies(models, tmp_path):
    src = models("llama")
    out = tmp_path / "out"
    result = grow(str(src), out, op="zero", pattern="0,1,1,1", quiet=True)
    assert result.plan.new_layers == [2, 3]
    check_preserved(src, out)
    assert Recipe.read(out).params["pattern"] == "0,1*3"


# --------------------------------------------------------------------------- G-right-direct


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("family", ALL)
def test_direct_width_x2_preserves(family, seed, models, tmp_path):
    src = models(family, seed)
    out = tmp_path / "out"
    result = grow(str(src), out, hidden_size=64, seed=seed, quiet=True)  # heads and FFN follow the hidden size
    config = json.loads((out / "config.json").read_text())
    roles_key = {"gpt2": "n_embd"}.get(family, "hidden_size")
    assert config[roles_key] == 64
    assert result.plan.operation.function_preserving is True
    check_preserved(src, out)
    if family in ("gpt2", "gemma", "opt"):
        assert config["tie_word_embeddings"] is False  # untied: the LM head is divided, the embedding is not


@pytest.mark.parametrize("family", RMS + ["falcon"])
def test_direct_width_non_integer_preserves(family, models, tmp_path):
    """x1.5 via Net2Net splits of a seeded subset (RMS-preserving scaled copies for the hidden size)."""
    src = models(family, 1)
    out = tmp_path / "out"
    sizes = dict(hidden_size=48, num_heads=6)
    if family == "falcon":  # LayerNorm: keep the hidden size, grow FFN and heads (head_dim explicit is not
        sizes = dict(intermediate_size=192)  # supported by Falcon, so heads need the hidden size to grow)
    result = grow(str(src), out, seed=3, quiet=True, **sizes)
    assert result.plan.operation.function_preserving is True
    check_preserved(src, out)


@pytest.mark.parametrize("family", LAYERNORM)
def test_direct_width_non_integer_layernorm_is_flagged(family, models, tmp_path):
    result = grow(str(models(family)), None, hidden_size=48, num_heads=6, intermediate_size=144 if family == "gpt2"
                  else 96, dry_run=True, quiet=True)
    assert result.plan.operation.function_preserving is False
    assert any("non-integer" in note for note in result.plan.notes)


def test_norm_over_all_heads_is_flagged_unless_tiled(tmp_path):
    """OLMo 2 normalises the whole query/key vector: exact for whole tiling only."""
    src = tmp_path / "olmo2"
    make_model(src, T.Olmo2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, **COMMON), tokenizer=False)
    assert grow(str(src), None, hidden_size=64, dry_run=True, quiet=True).plan.operation.function_preserving
    result = grow(str(src), None, hidden_size=48, num_heads=6, dry_run=True, quiet=True)
    assert result.plan.operation.function_preserving is False
    assert any("q norm spans all heads" in note for note in result.plan.notes)


@pytest.mark.parametrize("kwargs", [
    dict(num_heads=8, num_kv_heads=2),  # more query heads per KV head
    dict(num_heads=8, num_kv_heads=8),  # GQA -> MHA
    dict(hidden_size=48, num_heads=6, num_kv_heads=6),  # non-integer, GQA -> MHA
    dict(intermediate_size=100),  # FFN only, non-integer
])
def test_direct_width_heads_and_ffn(kwargs, models, tmp_path):
    src = models("llama")
    out = tmp_path / "out"
    grow(str(src), out, quiet=True, **kwargs)
    check_preserved(src, out)


def test_mqa_stays_mqa(models, tmp_path):
    src = models("gemma")
    out = tmp_path / "out"
    grow(str(src), out, hidden_size=64, quiet=True)
    config = json.loads((out / "config.json").read_text())
    assert config["num_attention_heads"] == 8 and config["num_key_value_heads"] == 1 and config["head_dim"] == 8


def test_direct_width_tiles_exactly(models, tmp_path):
    """HyperCloning's integer rule: tiled, and divided by the factor along input dimensions."""
    src = models("llama")
    out = tmp_path / "out"
    grow(str(src), out, hidden_size=64, intermediate_size=128, quiet=True)
    a, b = tensors(src), tensors(out)
    up = a["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(b["model.layers.0.mlp.up_proj.weight"], up.repeat(2, 2) / 2)
    assert torch.equal(b["model.embed_tokens.weight"], a["model.embed_tokens.weight"].repeat(1, 2))
    assert torch.equal(b["model.norm.weight"], a["model.norm.weight"].repeat(2))
    assert torch.equal(b["lm_head.weight"], a["lm_head.weight"].repeat(1, 2) / 2)
    assert grow_indices(4, 6, 0, "x")[:4] == [0, 1, 2, 3]


# --------------------------------------------------------------------------- combined and G-right-zero


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("family", ["llama", "gemma", "phi3", "gpt2", "neox", "mixtral"])
def test_zero_depth_plus_direct_width_preserves(family, seed, models, tmp_path):
    src = models(family, seed)
    out = tmp_path / "out"
    result = grow(str(src), out, op="zero", width_op="direct", layers=3, hidden_size=64, seed=seed, quiet=True)
    assert result.plan.operation.direction == "depth+width"
    assert "G-up-zero" in result.report() and "G-right-direct" in result.report()
    check_preserved(src, out)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma", "phi3"])
def test_zero_width_preserves_with_rmsnorm(family, seed, models, tmp_path):
    src = models(family, seed)
    out = tmp_path / "out"
    result = grow(str(src), out, op="zero", hidden_size=64, seed=seed, quiet=True)
    assert result.plan.operation.function_preserving is True
    check_preserved(src, out)
    a, b = tensors(src), tensors(out)
    prefix = "model.layers.0."
    down = b[prefix + "mlp.down_proj.weight"]
    assert torch.count_nonzero(down[:, 64:]) == 0 and torch.count_nonzero(down[32:, :]) == 0  # zero fan-out
    assert torch.equal(down[:32, :64], a[prefix + "mlp.down_proj.weight"])  # source units unchanged
    up = b.get(prefix + "mlp.up_proj.weight", b.get(prefix + "mlp.gate_up_proj.weight"))
    assert torch.count_nonzero(up[-64:]) == up[-64:].numel()  # random fan-in of the new FFN units
    assert torch.count_nonzero(b["model.embed_tokens.weight"][:, 32:]) == 0  # new hidden units are never written


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_zero_width_ffn_and_heads_preserve_with_layernorm(family, models, tmp_path):
    src = models(family)
    out = tmp_path / "out"
    grow(str(src), out, op="zero", intermediate_size=256, quiet=True)
    check_preserved(src, out)


def test_zero_growth_on_moe_zeroes_every_expert(models, tmp_path):
    src = models("qwen2_moe")
    out = tmp_path / "out"
    result = grow(str(src), out, op="zero", layers=3, quiet=True)
    assert result.plan.new_layers == [2]
    state = tensors(out)
    new = [name for name in state if name.startswith("model.layers.2.") and name.endswith("down_proj.weight")]
    assert len(new) == 5  # 4 experts + the shared expert
    assert all(torch.count_nonzero(state[name]) == 0 for name in new)
    check_preserved(src, out)


# --------------------------------------------------------------------------- G-up-random and G-right-random


def test_random_depth_initialises_and_records_mask(models, tmp_path):
    src = models("llama")
    out = tmp_path / "out"
    result = grow(str(src), out, op="random", factor=2, seed=5, quiet=True)
    recipe = Recipe.read(out)
    assert recipe.operation.mask == Mask(layers=(1, 3), steps_given=False)  # grow's default length (10% of the run)
    assert recipe.new_layers == [1, 3] and result.plan.operation.function_preserving is False
    state = tensors(out)
    for name in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "mlp.up_proj.weight"):
        std = state[f"model.layers.1.{name}"].std().item()
        assert abs(std - INIT) < 0.1 * INIT, (name, std)
    assert torch.equal(state["model.layers.1.input_layernorm.weight"], torch.ones(32))
    assert torch.equal(state["model.layers.0.mlp.up_proj.weight"], tensors(src)["model.layers.0.mlp.up_proj.weight"])
    assert not verify(str(src), str(out)).load_issues


def test_random_depth_mask_steps_and_family_inits(models, tmp_path):
    gemma, gpt2 = tmp_path / "gemma", tmp_path / "gpt2"
    grow(str(models("gemma")), gemma, op="random", layers=3, mask_steps=123, quiet=True)
    assert Recipe.read(gemma).operation.mask.steps == 123
    assert torch.count_nonzero(tensors(gemma)["model.layers.1.input_layernorm.weight"]) == 0  # (1 + w) norms
    grow(str(models("gpt2")), gpt2, op="random", layers=4, pattern=None, quiet=True)
    state = tensors(gpt2)
    assert torch.count_nonzero(state["transformer.h.1.attn.c_attn.bias"]) == 0
    std = state["transformer.h.1.mlp.c_proj.weight"].std().item()  # GPT-2 scales residual projections
    assert abs(std - INIT / math.sqrt(2 * 4)) < 0.1 * INIT / math.sqrt(8)


def test_random_width_keeps_source_units_and_records_new_units(models, tmp_path):
    src = models("llama")
    out = tmp_path / "out"
    grow(str(src), out, op="random", hidden_size=48, num_heads=6, quiet=True)
    recorded = Recipe.read(out).operation.mask
    assert recorded.steps_given is False and recorded.steps == 0  # grow's default: 10% of the run, fitted by training
    assert "steps: 10% of the training run" in (out / "hfgrow.yaml").read_text()
    mask = Recipe.read(out).operation.mask.width
    assert mask == WidthMask(hidden=(32, 48), ffn={"intermediate_size": (64, 96)}, new_heads=(4, 5), new_kv_heads=(2,))
    a, b = tensors(src), tensors(out)
    q = b["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(q[:32, :32], a["model.layers.0.self_attn.q_proj.weight"])
    assert abs(q[32:].std().item() - INIT) < 0.15 * INIT


# --------------------------------------------------------------------------- noise and replay


def test_noise_has_the_papers_scale(models, tmp_path):
    src = models("llama")
    out = tmp_path / "out"
    alpha = 0.2
    grow(str(src), out, factor=2, noise=alpha, seed=7, quiet=True)
    a, b = tensors(src), tensors(out)
    # the paper's scales, written out: N(0, 1/(d*l^2)) for o/down projections, N(0, 2/(5d)) elsewhere
    out_std, other_std = (1 / (32 * 4**2)) ** 0.5, (2 / (5 * 32)) ** 0.5
    assert noise_stds(32, 4) == pytest.approx((out_std, other_std))
    o = (b["model.layers.2.self_attn.o_proj.weight"] - (1 - alpha) * a["model.layers.0.self_attn.o_proj.weight"])
    up = (b["model.layers.2.mlp.up_proj.weight"] - (1 - alpha) * a["model.layers.0.mlp.up_proj.weight"])
    assert abs(o.std().item() / (alpha * out_std) - 1) < 0.1
    assert abs(up.std().item() / (alpha * other_std) - 1) < 0.1
    assert torch.equal(b["model.layers.2.input_layernorm.weight"], a["model.layers.0.input_layernorm.weight"])
    # copies of one source layer get different noise
    assert not torch.equal(b["model.layers.0.mlp.up_proj.weight"], b["model.layers.2.mlp.up_proj.weight"])


@pytest.mark.parametrize("args", [
    ["--op", "random", "--factor", "2", "--hidden-size", "48", "--num-heads", "6", "--noise", "0.1", "--seed", "3"],
    ["--op", "zero", "--width-op", "random", "--layers", "3", "--intermediate-size", "80", "--seed", "4"],
    ["--hidden-size", "48", "--num-heads", "6", "--seed", "9", "--noise", "0.05"],
    ["--op", "random", "--factor", "2", "--hidden-size", "48", "--num-heads", "6", "--style", "prts", "--seed", "3"],
    ["--op", "zero", "--hidden-size", "48", "--num-heads", "6", "--style", "prts", "--seed", "5"],
])
def test_recipe_replay_is_bit_for_bit(args, models, tmp_path, capsys):
    src = models("qwen2")
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli(["grow", src, first, "-q", *args], capsys)[0] == 0
    # the recipe names a local source by its folder name only, so it is found beside the grown folder or given
    code, _, err = run_cli(["grow", "--recipe", first / "hfgrow.yaml", second, "-q"], capsys)
    assert code == 1 and f"a local folder named '{src.name}'" in err and "hfgrow grow SRC OUT --recipe" in err
    assert run_cli(["grow", src, second, "--recipe", first / "hfgrow.yaml", "-q"], capsys)[0] == 0
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    assert json.loads((first / "config.json").read_text()) == json.loads((second / "config.json").read_text())
    third = replay(first, tmp_path / "third", source=str(src), quiet=True)  # library form, from the folder
    assert (third.out / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()


def test_seeds_change_random_values_only(models, tmp_path):
    src = models("llama")
    a, b = tmp_path / "a", tmp_path / "b"
    grow(str(src), a, op="random", factor=2, seed=0, quiet=True)
    grow(str(src), b, op="random", factor=2, seed=1, quiet=True)
    ta, tb = tensors(a), tensors(b)
    assert not torch.equal(ta["model.layers.1.mlp.up_proj.weight"], tb["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(ta["model.layers.0.mlp.up_proj.weight"], tb["model.layers.0.mlp.up_proj.weight"])


def test_replay_of_a_stack_recipe(models, tmp_path, capsys):
    from hfgrow.growth.pipeline import stack

    src = models("llama")
    grown = src.parent / f"{tmp_path.name}-stacked"  # beside its source: the recipe's folder name finds it
    stack(str(src), grown, factor=2, quiet=True)
    assert run_cli(["grow", "--recipe", grown, tmp_path / "g2", "-q"], capsys)[0] == 0
    assert (grown / "model.safetensors").read_bytes() == (tmp_path / "g2" / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------- CLI: verify, card, bad input


def test_verify_cli(models, tmp_path, capsys):
    src = models("llama")
    zero, stacked = tmp_path / "zero", tmp_path / "stacked"
    assert run_cli(["grow", src, zero, "--op", "zero", "--factor", "2", "-q"], capsys)[0] == 0
    assert run_cli(["grow", src, stacked, "--factor", "2", "-q"], capsys)[0] == 0
    code, out, _ = run_cli(["verify", src, zero, "--expect", "preserved"], capsys)
    assert code == 0 and "max |dlogit|" in out and "KL(src||out)" in out and "loss out" in out
    text = tmp_path / "t.txt"
    text.write_text("Some other text to check the models on, a little longer than a line.")
    code, out, _ = run_cli(["verify", src, stacked, "--expect", "preserved", "--text", text], capsys)
    assert code == 1 and "NOT function-preserving" in out  # Gstack is not function-preserving
    card = (zero / "README.md").read_text()
    assert "G-up-zero" in card and "same function" in card


@pytest.mark.parametrize("family, args, words", [
    ("llama", ["--num-heads", "6", "--num-kv-heads", "4"], "split evenly"),
    ("llama", ["--hidden-size", "16"], "smaller"),
    ("llama", ["--intermediate-size", "32"], "smaller"),
    ("gpt2", ["--hidden-size", "64", "--num-heads", "6"], "head size"),
    ("neox", ["--num-heads", "8", "--num-kv-heads", "4"], "as many key/value heads"),
    ("llama", ["--factor", "2", "--noise", "1.0"], "--noise"),
    ("llama", ["--factor", "2", "--noise", "-0.1"], "--noise"),
    ("llama", ["--op", "zero", "--num-heads", "8", "--num-kv-heads", "8"], "at least"),
    ("llama", ["--num-heads", "6"], "head_dim"),
    ("llama", [], "nothing to grow"),
    ("llama", ["--factor", "2", "--mask-steps", "10"], "--mask-steps"),
    ("mamba", ["--hidden-size", "64"], "no width rule"),
    ("mamba", ["--op", "zero", "--factor", "2"], "identity"),
    ("bloom", ["--hidden-size", "64"], "ALiBi"),
])
def test_bad_input_fails_in_one_line(family, args, words, models, tmp_path, capsys):
    extra = {"mamba": lambda: T.MambaConfig(hidden_size=32, num_hidden_layers=2, vocab_size=128, state_size=4),
             "bloom": lambda: T.BloomConfig(hidden_size=32, n_layer=2, n_head=4, vocab_size=128)}
    if family in extra:
        src = tmp_path / family
        make_model(src, extra[family](), tokenizer=False)
    else:
        src = models(family)
    capsys.readouterr()
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["grow", src, out, *args], capsys)
    assert code == 1, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], stderr
    assert not out.exists()


def test_zero_with_reordered_pattern_is_not_called_preserving(models, tmp_path):
    src = models("llama")
    result = grow(str(src), tmp_path / "out", op="zero", pattern="1,0,0", quiet=True)
    assert result.plan.operation.function_preserving is False
    in_order = grow(str(src), tmp_path / "out2", op="zero", pattern="0,0,1", quiet=True)
    assert in_order.plan.operation.function_preserving is True


# --------------------------------------------------------------------------- post-norm blocks (issue 25)

_POST = {"post_attention_layernorm": "o", "post_feedforward_layernorm": "down"}


@pytest.mark.parametrize("config, expected", [
    (lambda: T.Gemma2Config(num_hidden_layers=2, vocab_size=128, pad_token_id=0), _POST),
    (lambda: T.Gemma3TextConfig(num_hidden_layers=2, vocab_size=128, pad_token_id=0), _POST),
    (lambda: T.Olmo2Config(num_hidden_layers=2, vocab_size=128, **{k: 0 for k in ("pad_token_id", "eos_token_id")}),
     _POST),
    (lambda: T.Olmo3Config(num_hidden_layers=2, vocab_size=128, pad_token_id=0, eos_token_id=0), _POST),
    (lambda: T.Exaone4Config(num_hidden_layers=2, vocab_size=128, bos_token_id=0, eos_token_id=0, pad_token_id=0),
     _POST),
    (lambda: T.Glm4Config(num_hidden_layers=2, vocab_size=128, pad_token_id=0, eos_token_id=0),
     {"post_self_attn_layernorm": "o", "post_mlp_layernorm": "down"}),
    (lambda: T.FlexOlmoConfig(num_hidden_layers=2, vocab_size=128, pad_token_id=0, eos_token_id=0), _POST),
    (lambda: T.LlamaConfig(num_hidden_layers=2, vocab_size=128), {}),  # its post_attention_layernorm is pre-MLP
    (lambda: T.Qwen3MoeConfig(num_hidden_layers=2, vocab_size=128), {}),
    (lambda: T.CohereConfig(num_hidden_layers=2, vocab_size=128, pad_token_id=0, bos_token_id=0, eos_token_id=0),
     {}),
], ids=["gemma2", "gemma3", "olmo2", "olmo3", "exaone4", "glm4", "flex_olmo", "llama", "qwen3_moe", "cohere"])
def test_post_norms_are_the_norms_that_take_a_sublayer_output(config, expected):
    from hfgrow.arch.layout import meta_model
    from hfgrow.arch.roles import post_norms

    assert post_norms(meta_model(config())) == expected


def _post_norm_source(folder: Path, family: str, docs: list[str]) -> None:
    """A trained 4-layer model of a post-norm family: Gemma-3-shaped (sliding/full layer types, GQA 4:1, tied,
    (1 + w) norms, sqrt(H) embedding scale) or OLMo-2-shaped (plain-w RMSNorm post-norms, q/k norms, tied)."""
    from hfgrow.eval.tiny import make_tokenizer, pretrain_tiny

    make_tokenizer(folder, text="\n".join(docs[:20]), vocab_size=512)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2, head_dim=8, vocab_size=512, max_position_embeddings=256,
                 tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "gemma3":
        config = T.Gemma3TextConfig(**shape, sliding_window=16, layer_types=["sliding_attention"] * 3 + ["full_attention"])
    else:
        config = T.Olmo2Config(**shape)
    make_model(folder, config, tokenizer=False)
    pretrain_tiny(folder, docs[20:], steps=150, seq_len=64, batch_size=8, lr=3e-3)


@pytest.mark.parametrize("family", ["gemma3", "olmo2"])
def test_zero_blocks_of_post_norm_models_stay_near_the_source_under_training(family, tmp_path):
    """Identity blocks zero the post-norms' effective gain (Gemma's 1 + w at w = -1, OLMo 2's w at 0) and keep the
    projections as copies: the function is preserved, and 3 steps at 1e-4 of the new blocks only (what
    ``--train new`` trains) leave the held-out loss within 0.05 of the source's. With the projections zeroed
    instead, the post-norm scales their first small update to full size: on these same models the loss rose
    by 0.08 (Gemma 3) and 0.12 (OLMo 2)."""
    from hfgrow.arch.layout import decoder_blocks
    from hfgrow.eval.tiny import python_docs_corpus

    docs = python_docs_corpus()
    src, out = tmp_path / "src", tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and the test is not slowed by other processes
    try:
        _post_norm_source(src, family, docs)
    finally:
        torch.set_num_threads(threads)
    result = grow(str(src), out, op="zero", layers=8, quiet=True)
    assert result.plan.new_layers == [1, 3, 5, 7] and result.plan.operation.function_preserving
    check_preserved(src, out)
    grown, source = tensors(out), tensors(src)
    gain_zero = -1.0 if family == "gemma3" else 0.0
    for name, value in grown.items():
        if not name.startswith("model.layers.") or int(name.split(".")[2]) not in (1, 3, 5, 7):
            continue
        rest = name.split(".", 3)[3]
        if rest.startswith(("post_attention_layernorm", "post_feedforward_layernorm")):
            assert torch.equal(value, torch.full_like(value, gain_zero)), name
        else:  # the projections (o_proj and down_proj included) are copies of the neighbour below
            assert torch.equal(value, source[f"model.layers.{int(name.split('.')[2]) // 2}.{rest}"]), name

    tokenizer = T.AutoTokenizer.from_pretrained(src)
    ids = tokenizer(tokenizer.eos_token.join(docs[:20]), add_special_tokens=False)["input_ids"]
    windows = torch.tensor(ids[: len(ids) // 64 * 64]).view(-1, 64)
    held_out, train = windows[:32], windows[32:]
    model = T.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.requires_grad_(False)
    _, blocks = decoder_blocks(model)
    for i in result.plan.new_layers:
        blocks[i].requires_grad_(True)

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(input_ids=held_out, labels=held_out).loss.item()

    before = loss()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(3):
        batch = train[torch.randint(len(train), (8,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = loss()
    assert after - before <= 0.05, (before, after)
    gains = [blocks[i].post_feedforward_layernorm.weight for i in result.plan.new_layers]
    assert all(not torch.equal(g, torch.full_like(g, gain_zero)) for g in gains)  # the gains did learn


# --------------------------------------------------------------------------- --keep-tied (issue 25)


@pytest.mark.parametrize("family", ["gemma", "llama_tied"])
def test_zero_width_keep_tied_preserves_and_stays_tied(family, models, tmp_path, capsys):
    """G-right-zero with --keep-tied: new hidden units zero in the (tied) embedding, no LM head tensor written,
    the config still tied, and the function kept (Gemma: the sqrt(hidden) embedding factor is undone in the final
    norm, since the tied LM head reads the rescaled embedding)."""
    if family == "llama_tied":
        src = tmp_path / "src"
        make_model(src, T.LlamaConfig(**dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=128, **COMMON), tie_word_embeddings=True))
    else:
        src = models(family)
    out = tmp_path / "out"
    code, _, err = run_cli(["grow", str(src), str(out), "--op", "zero", "--hidden-size", "64", "--keep-tied", "-q"],
                           capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["hidden_size"] == 64
    grown = tensors(out)
    assert "lm_head.weight" not in grown
    embedding = grown["model.embed_tokens.weight"]
    assert embedding.shape[1] == 64 and torch.count_nonzero(embedding[:, 32:]) == 0
    check_preserved(src, out)
    model = T.AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied in memory
    assert Recipe.read(out).params["keep_tied"] is True
    again = tmp_path / "again"
    assert run_cli(["grow", str(src), str(again), "--recipe", str(out / "hfgrow.yaml"), "-q"], capsys)[0] == 0
    assert all(torch.equal(v, tensors(again)[k]) for k, v in grown.items())


def test_keep_tied_needs_zero_width_and_tied_embeddings(models, tmp_path, capsys):
    code, _, err = run_cli(["grow", str(models("gemma")), str(tmp_path / "a"), "--hidden-size", "64", "--keep-tied"],
                           capsys)
    assert code == 1 and "--keep-tied is for width growth with --op zero" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["grow", str(models("llama")), str(tmp_path / "b"), "--op", "zero", "--hidden-size", "64",
                            "--keep-tied"], capsys)
    assert code == 1 and "embeddings are not tied" in err and not (tmp_path / "b").exists()
