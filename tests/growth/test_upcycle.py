"""Dense to MoE upcycling (issue 23): every source family's sibling loads with no missing or unexpected keys, every
preserving variant gives the dense logits, Drop-Upcycling follows its rule, fine-grained slices reassemble the MLP.

Models are tiny (hidden 32, FFN 64, 2 layers, 4 heads over 2 KV heads, vocab 128, init std 0.1 so logits are far
from uniform), float32, built offline. "Preserved" means max |dlogit| <= 1e-5 * max(1, max |logit|) on 16 tokens,
float32 rounding.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import transformers as T
from safetensors.torch import load_file

import hfgrow
from hfgrow.errors import HfgrowError
from hfgrow.eval.tiny import make_model
from hfgrow.growth.ops.upcycle import TARGETS, drop_indices
from hfgrow.growth.replay import replay
from helpers.cli import run_cli
from helpers.families import COMMON

logging.getLogger("transformers").setLevel(logging.ERROR)

SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=128, **COMMON)
SOURCES = {
    "llama": lambda: T.LlamaConfig(**SHAPE, tie_word_embeddings=False),
    "mistral": lambda: T.MistralConfig(**SHAPE, sliding_window=64),
    "qwen2": lambda: T.Qwen2Config(**SHAPE),  # q/k/v biases
    "qwen3": lambda: T.Qwen3Config(**SHAPE, head_dim=16, tie_word_embeddings=True),  # head_dim != H/heads, tied
    "olmo": lambda: T.OlmoConfig(**SHAPE),  # LayerNorm without weights
    "olmo2": lambda: T.Olmo2Config(**SHAPE),  # norms after each sublayer
}
SIBLING = {"llama": "mixtral", "mistral": "mixtral", "qwen2": "qwen2_moe", "qwen3": "qwen3_moe", "olmo": "olmoe",
           "olmo2": "olmoe"}
TOL = 1e-5


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("dense")
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            make_model(root / family, SOURCES[family](), seed=0)
            cache[family] = root / family
        return cache[family]

    return get


def load(folder: Path):
    model, info = T.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    return model.eval(), info


def max_dlogit(a: Path, b: Path) -> tuple[float, float]:
    ids = torch.randint(3, 128, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        la, lb = load(a)[0](ids).logits, load(b)[0](ids).logits
    return (la - lb).abs().max().item(), max(1.0, la.abs().max().item())


@pytest.mark.parametrize("family", list(SOURCES))
def test_each_family_upcycles_to_its_sibling_with_no_missing_keys(family, sources, tmp_path):
    out = tmp_path / "moe"
    result = hfgrow.upcycle(str(sources(family)), out, experts=4, top_k=2, quiet=True)
    model, info = load(out)
    assert model.config.model_type == SIBLING[family]
    assert (info["missing_keys"], info["unexpected_keys"], info["mismatched_keys"]) == (set(), set(), set())
    stored = load_file(out / "model.safetensors")
    moe = TARGETS[SIBLING[family]].moe
    gate = TARGETS[SIBLING[family]].projections[0]
    assert f"model.layers.1.{moe}.experts.3.{gate}.weight" in stored  # per-expert tensors, as the Hub stores them
    dense = load_file(sources(family) / "model.safetensors")
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.o_proj.weight"):
        assert torch.equal(stored[name], dense[name])  # copied byte for byte
    diff, scale = max_dlogit(sources(family), out)
    if family in ("olmo", "olmo2"):  # OLMoE's pre-norm block is not OLMo's or OLMo 2's: said, not hidden
        assert result.recipe.operation.function_preserving is False and result.plan.warnings
    else:
        assert result.recipe.operation.function_preserving is True
        assert diff <= TOL * scale


PRESERVING = {  # family, options: each a variant whose recipe says preserving
    "mixtral fine-grained G=2": ("llama", dict(experts=4, top_k=2, granularity=2)),
    "qwen3-moe fine-grained G=4, k=4": ("qwen3", dict(experts=8, top_k=4, granularity=4)),
    "qwen3-moe without renormalising, zero router": ("qwen3", dict(experts=4, top_k=2, norm_topk_prob=False)),
    "qwen2-moe zero router + shared expert": ("qwen2", dict(experts=8, top_k=2)),
    "qwen2-moe renormalised, random router, 2 shared": ("qwen2", dict(experts=8, top_k=2, norm_topk_prob=True,
                                                                       router="random", shared_experts=2)),
    "qwen2-moe fine-grained renormalised": ("qwen2", dict(experts=8, top_k=4, granularity=2, norm_topk_prob=True)),
}


@pytest.mark.parametrize("case", list(PRESERVING))
def test_preserving_variants_give_the_dense_logits(case, sources, tmp_path):
    family, options = PRESERVING[case]
    result = hfgrow.upcycle(str(sources(family)), tmp_path / "moe", quiet=True, **options)
    assert result.recipe.operation.function_preserving is True
    diff, scale = max_dlogit(sources(family), tmp_path / "moe")
    assert diff <= TOL * scale, diff


NOT_PRESERVING = {
    "drop-upcycling": ("llama", dict(drop_rate=0.5)),
    "noise": ("llama", dict(noise=0.1)),
    "qwen2-moe fine-grained without renormalising": ("qwen2", dict(experts=8, top_k=4, granularity=2)),
    "bfloat16 output": ("llama", dict(dtype="bfloat16")),
}


@pytest.mark.parametrize("case", list(NOT_PRESERVING))
def test_verify_agrees_with_the_recipe_on_variants_that_do_not_preserve(case, sources, tmp_path, capsys):
    family, options = NOT_PRESERVING[case]
    out = tmp_path / "moe"
    result = hfgrow.upcycle(str(sources(family)), out, experts=4 if "experts" not in options else options.pop("experts"),
                            quiet=True, **options)
    assert result.recipe.operation.function_preserving is False
    code, stdout, _ = run_cli(["verify", sources(family), out, "--expect", "preserved"], capsys)
    assert code == 1 and "NOT function-preserving" in stdout


def test_verify_expect_preserved_passes_and_replay_is_bit_for_bit(sources, tmp_path, capsys):
    src = sources("qwen2")
    code, _, err = run_cli(["upcycle", src, tmp_path / "moe", "--experts", "4", "--top-k", "2", "--granularity", "2",
                            "--norm-topk-prob", "--noise", "0.0", "-q"], capsys)
    assert code == 0, err
    code, stdout, _ = run_cli(["verify", src, tmp_path / "moe", "--expect", "preserved"], capsys)
    assert code == 0, stdout
    replay(tmp_path / "moe" / "hfgrow.yaml", tmp_path / "again", source=str(src), quiet=True)
    a, b = load_file(tmp_path / "moe" / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # `hfgrow grow --op upcycle` is the same operator
    code, _, err = run_cli(["grow", src, tmp_path / "grown", "--op", "upcycle", "--experts", "4", "--granularity",
                            "2", "--norm-topk-prob", "-q"], capsys)
    assert code == 0, err
    c = load_file(tmp_path / "grown" / "model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)
    card = (tmp_path / "moe" / "README.md").read_text()
    assert "Qwen2MoeForCausalLM" in card and "Drop-Upcycling (Nakamura" in card


def test_drop_upcycling_redraws_the_seeded_fraction_with_the_replaced_statistics(sources, tmp_path):
    src = sources("llama")
    rate, E = 0.5, 4
    hfgrow.upcycle(str(src), tmp_path / "moe", experts=E, top_k=2, drop_rate=rate, seed=7, quiet=True)
    dense, moe = load_file(src / "model.safetensors"), load_file(tmp_path / "moe" / "model.safetensors")
    m = dense["model.layers.0.mlp.gate_proj.weight"].shape[0]
    seen = []
    for layer in range(2):
        for j in range(E):
            units = drop_indices(m, rate, 7, layer, j)
            assert len(units) == int(m * rate)
            seen.append(tuple(units.tolist()))
            keep = torch.tensor([u for u in range(m) if u not in set(units.tolist())])
            base = f"model.layers.{layer}.block_sparse_moe.experts.{j}"
            for proj, name, dim in (("w1", "gate_proj", 0), ("w3", "up_proj", 0), ("w2", "down_proj", 1)):
                old, new = dense[f"model.layers.{layer}.mlp.{name}.weight"], moe[f"{base}.{proj}.weight"]
                assert torch.equal(new.index_select(dim, keep), old.index_select(dim, keep))  # the rest is a copy
                replaced, drawn = old.index_select(dim, units), new.index_select(dim, units)
                assert not torch.equal(replaced, drawn)
                n = replaced.numel()  # 1024 values: mean within 4 standard errors, std within 15%
                assert abs(drawn.mean() - replaced.mean()) <= 4 * replaced.std() / math.sqrt(n)
                assert drawn.std() == pytest.approx(replaced.std().item(), rel=0.15)
    assert len(set(seen)) == len(seen)  # every expert draws its own units


def test_fine_grained_slices_reassemble_the_dense_mlp(sources, tmp_path):
    src = sources("llama")
    G, E = 2, 4
    hfgrow.upcycle(str(src), tmp_path / "moe", experts=E, top_k=2, granularity=G, quiet=True)
    dense, moe = load_file(src / "model.safetensors"), load_file(tmp_path / "moe" / "model.safetensors")
    for group in range(E // G):
        experts = [f"model.layers.1.block_sparse_moe.experts.{group * G + s}" for s in range(G)]
        assert torch.equal(torch.cat([moe[f"{e}.w1.weight"] for e in experts]), dense["model.layers.1.mlp.gate_proj.weight"])
        assert torch.equal(torch.cat([moe[f"{e}.w3.weight"] for e in experts]), dense["model.layers.1.mlp.up_proj.weight"])
        down = torch.cat([moe[f"{e}.w2.weight"] for e in experts], dim=1)
        assert torch.equal(down, dense["model.layers.1.mlp.down_proj.weight"] * G)  # Mixtral renormalises: x G
    router = moe["model.layers.1.block_sparse_moe.gate.weight"]
    assert torch.equal(router[0], router[1]) and torch.equal(router[2], router[3]) and not torch.equal(router[0], router[2])


def test_shared_expert_is_the_dense_mlp_repeated(sources, tmp_path):
    src = sources("qwen2")
    hfgrow.upcycle(str(src), tmp_path / "moe", experts=4, top_k=2, shared_experts=2, quiet=True)
    dense, moe = load_file(src / "model.safetensors"), load_file(tmp_path / "moe" / "model.safetensors")
    up = dense["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(moe["model.layers.0.mlp.shared_expert.up_proj.weight"], torch.cat([up, up]))
    down = dense["model.layers.0.mlp.down_proj.weight"]
    assert torch.equal(moe["model.layers.0.mlp.shared_expert.down_proj.weight"], torch.cat([down, down], dim=1) / 2)
    assert torch.count_nonzero(moe["model.layers.0.mlp.shared_expert_gate.weight"]) == 0
    # zero router, no renormalisation: routed weights k/E, routed half x E/(2k) = 1
    assert torch.equal(moe["model.layers.0.mlp.experts.3.down_proj.weight"], down)


@pytest.mark.parametrize("options, message", [
    (dict(to="mixtral", shared_experts=1), "Mixtral has no shared experts"),
    (dict(top_k=9), "--top-k must be between 1 and --experts"),
    (dict(granularity=3), "--granularity must divide --experts"),
    (dict(granularity=2, router="zero"), "fine-grained upcycling uses a random router"),
    (dict(norm_topk_prob=True), "Mixtral always renormalises"),
    (dict(drop_rate=1.0), "--drop-rate must be in [0, 1)"),
])
def test_bad_options_are_one_sentence(options, message, sources, tmp_path, capsys):
    with pytest.raises(HfgrowError, match=message.replace("[", r"\[").replace(")", r"\)").replace("(", r"\(")):
        hfgrow.upcycle(str(sources("llama")), tmp_path / "moe", **dict(dict(experts=4), **options), quiet=True)
    assert not (tmp_path / "moe").exists()


def test_a_family_without_a_sibling_is_refused(tmp_path, capsys):
    make_model(tmp_path / "gemma", T.GemmaConfig(**dict(SHAPE, num_key_value_heads=1), head_dim=8, pad_token_id=0))
    code, _, err = run_cli(["upcycle", tmp_path / "gemma", tmp_path / "moe"], capsys)
    assert code == 1 and "'gemma' has no mixture-of-experts sibling" in err and "Traceback" not in err


def test_cli_targets_are_the_operator_targets():
    from hfgrow.cli.upcycle import TARGETS as CLI_TARGETS

    assert CLI_TARGETS == list(TARGETS)


def test_growing_an_upcycled_model(sources, tmp_path, capsys):
    """What README says about growing an upcycled Mixtral: `zero` depth growth and width growth (stack's neuron
    splitting, zero's new units) keep its function, widening every expert's units alike and the router's inputs;
    Gstack copies whole blocks, experts and routers included; LiGO refuses the fused in-memory experts."""
    moe = tmp_path / "moe"
    hfgrow.upcycle(str(sources("llama")), moe, experts=4, top_k=2, quiet=True)
    for name, options in (("zero", dict(op="zero", factor=2)), ("wide", dict(op="stack", hidden_size=64)),
                          ("ffn", dict(op="zero", intermediate_size=128))):
        result = hfgrow.grow(str(moe), tmp_path / name, quiet=True, **options)
        assert result.plan.operation.function_preserving is True, name
        diff, scale = max_dlogit(moe, tmp_path / name)
        assert diff <= TOL * scale, (name, diff)
    wide, ffn = load_file(tmp_path / "wide" / "model.safetensors"), load_file(tmp_path / "ffn" / "model.safetensors")
    for j in range(4):
        assert wide[f"model.layers.0.block_sparse_moe.experts.{j}.w1.weight"].shape == (128, 64)  # hidden and units x2
        assert ffn[f"model.layers.0.block_sparse_moe.experts.{j}.w2.weight"].shape == (32, 128)
    assert wide["model.layers.0.block_sparse_moe.gate.weight"].shape == (4, 64)
    hfgrow.stack(str(moe), tmp_path / "stacked", factor=2, quiet=True)
    stacked, source = load_file(tmp_path / "stacked" / "model.safetensors"), load_file(moe / "model.safetensors")
    copies = {k.replace("layers.1.", "layers.3."): v for k, v in source.items() if "layers.1." in k}
    assert copies and all(torch.equal(stacked[k], v) for k, v in copies.items())
    (tmp_path / "text.txt").write_text("some text to learn on " * 200)
    code, _, err = run_cli(["grow", moe, tmp_path / "ligo", "--op", "learn", "--factor", "2", "--data",
                            tmp_path / "text.txt", "--learn-steps", "1", "--seq-len", "16"], capsys)
    assert code == 1 and "stores block weights differently in memory" in err and "Traceback" not in err
