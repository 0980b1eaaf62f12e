"""`hfgrow plan` and hfgrow.growth.timing: the paper's growth law, parameter counts, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from helpers.cli import run_cli
from hfgrow.eval import tiny
from hfgrow.units import format_count, parse_count
from hfgrow.growth.timing import (
    check_factor,
    count_params,
    growth_tokens,
    make_plan,
)

# Paper Table 4 (Du et al. 2024): (N, D) -> d in billions of tokens, with nominal N.
TABLE_4 = [
    ("8B", "15T", 6.58),
    ("7B", "2T", 11.11),
    ("13B", "2T", 15.84),
    ("70B", "2T", 42.48),
]






def tiny_llama_config(**overrides) -> LlamaConfig:
    settings = dict(layers=8, vocab_size=97, hidden_size=32, intermediate_size=64, max_position_embeddings=64)
    return tiny.tiny_llama_config(**{**settings, **overrides})


# --------------------------------------------------------------------------- the law


@pytest.mark.parametrize("n, d_total, expected_b", TABLE_4)
def test_growth_tokens_reproduces_paper_table_4(n, d_total, expected_b):
    N, D = parse_count(n), parse_count(d_total)
    d = growth_tokens(N, 6 * N * D)
    assert abs(d / 1e9 - expected_b) <= 0.01


@pytest.mark.parametrize("n, d_total, expected_b", TABLE_4)
def test_make_plan_reproduces_paper_table_4(n, d_total, expected_b):
    plan = make_plan(n, d_total)
    assert abs(plan.growth_tokens / 1e9 - expected_b) <= 0.01
    assert plan.factor == 4
    assert plan.compute == pytest.approx(6 * plan.params.total * plan.tokens, rel=1e-12)
    assert plan.command == "hfgrow stack BASE_MODEL OUT --factor 4"
    assert format_count(plan.growth_tokens, 2) == f"{expected_b:.2f}B"


@pytest.mark.parametrize("argv_n, argv_d, expected_b", TABLE_4)
def test_cli_plan_json_reproduces_table_4(argv_n, argv_d, expected_b, capsys):
    code, out, _ = run_cli(["plan", "--target", argv_n, "--max-tokens", argv_d, "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert abs(data["growth_tokens"] / 1e9 - expected_b) <= 0.01
    assert data["human"]["growth_tokens"] == f"{expected_b:.2f}B"


# --------------------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("tied", [False, True])
def test_count_params_matches_instantiated_model(tied):
    config = tiny_llama_config(tie_word_embeddings=tied)
    counted = count_params(config)
    model = AutoModelForCausalLM.from_config(config)  # real random weights on CPU
    assert counted.total == sum(p.numel() for p in model.parameters())
    vocab_x_hidden = config.vocab_size * config.hidden_size
    assert counted.embedding == (1 if tied else 2) * vocab_x_hidden
    assert counted.non_embedding == counted.total - counted.embedding
    assert counted.non_embedding == sum(
        p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lm_head" not in name
    )


def test_count_params_gpt2_counts_position_embeddings_as_embedding():
    from transformers import GPT2Config

    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    counted = count_params(config)
    assert counted.embedding == (50 + 16) * 16  # wte + wpe; lm_head tied to wte
    model = AutoModelForCausalLM.from_config(config)
    assert counted.total == sum(p.numel() for p in model.parameters())


def test_plan_from_config_file(tmp_path, capsys):
    config = tiny_llama_config()
    config.save_pretrained(tmp_path)
    plan = make_plan(str(tmp_path / "config.json"), "1B", factor=4)
    assert plan.target_layers == 8 and plan.base_layers == 2 and plan.hidden_size == 32
    base = AutoModelForCausalLM.from_config(tiny_llama_config(num_hidden_layers=2))
    assert plan.base_params == sum(p.numel() for p in base.parameters())
    assert plan.base_params_exact
    assert plan.base_flops == pytest.approx(6 * plan.base_params * plan.growth_tokens)
    assert plan.grown_flops == pytest.approx(6 * plan.params.total * max(plan.tokens - plan.growth_tokens, 0))
    assert plan.total_flops == pytest.approx(plan.base_flops + plan.grown_flops)
    assert plan.saving_flops == pytest.approx(plan.scratch_flops - plan.total_flops)

    # folder form, human report: a target this small is outside the law's fit (410M-7B), refused up front ...
    code, out, err = run_cli(["plan", "--target", str(tmp_path), "--max-tokens", "300B", "--factor", "2"], capsys)
    assert code == 1 and out == "" and "below 410M, the smallest model the growth-timing law was fitted on" in err
    # ... and with --extrapolate planned, every warning before the numbers
    code, out, _ = run_cli(["plan", "--target", str(tmp_path), "--max-tokens", "300B", "--factor", "2", "--extrapolate"],
                           capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].startswith("  warning: the target has ") and lines.index("  FLOPs") > 2
    assert "--grow stack" not in out  # no one-run recipe for a law that does not apply
    assert "4 layers, hidden 32" in out
    assert "hfgrow stack BASE_MODEL OUT --factor 2" in out
    assert "embedding" in out and "non-embedding" in out


def test_plan_from_model_type_name_offline():
    plan = make_plan("llama", "2T")  # transformers' default Llama config: 32 layers, 4096 wide
    assert plan.target_layers == 32 and plan.base_layers == 8 and plan.hidden_size == 4096
    assert plan.params.embedding == 2 * 32000 * 4096


def test_plan_warns_when_growth_timing_exceeds_budget():
    plan = make_plan("100M", "1B")
    assert plan.growth_tokens > plan.tokens
    assert plan.grown_flops == 0
    assert plan.warnings


# --------------------------------------------------------------------------- bad input via the CLI


def _assert_one_line_error(code, out, err, *needles):
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


def test_cli_unknown_size(capsys):
    code, out, err = run_cli(["plan", "--target", "7Q", "--max-tokens", "2T"], capsys)
    _assert_one_line_error(code, out, err, "'7Q' is not a valid model size", "K/M/B/T", "7B")


@pytest.mark.parametrize("tokens", ["0", "-2T"])
def test_cli_tokens_not_positive(tokens, capsys):
    code, out, err = run_cli(["plan", "--target", "7B", "--max-tokens", tokens], capsys)
    _assert_one_line_error(code, out, err, "--max-tokens must be > 0")


def test_cli_bad_tokens_string(capsys):
    code, out, err = run_cli(["plan", "--target", "7B", "--max-tokens", "lots"], capsys)
    _assert_one_line_error(code, out, err, "'lots' is not a valid token count")


def test_cli_factor_not_dividing_layers_suggests_nearest(tmp_path, capsys):
    tiny_llama_config(num_hidden_layers=24).save_pretrained(tmp_path)
    code, out, err = run_cli(["plan", "--target", str(tmp_path), "--max-tokens", "1T", "--factor", "5"], capsys)
    _assert_one_line_error(code, out, err, "factor 5 does not divide", "24 layers", "use 4 or 6")


def test_a_fractional_factor_is_a_growth_as_in_grow(tmp_path, capsys):
    """--factor means L·g output layers in plan as in stack/grow: 1.5 plans a 16-layer base for a 24-layer target."""
    assert check_factor(24, 4) == 6 and check_factor(24, 1.5) == 16
    tiny_llama_config(num_hidden_layers=24).save_pretrained(tmp_path)
    code, out, err = run_cli(["plan", "--target", str(tmp_path), "--max-tokens", "1T", "--factor", "1.5",
                              "--extrapolate", "--json"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["base_layers"] == 16 and plan["factor"] == 1.5
    assert plan["command"] == "hfgrow stack BASE_MODEL OUT --factor 1.5"
    for bad, needle in (("1", "--factor must be above 1 (got 1)"), ("nan", "--factor must be above 1")):
        code, out, err = run_cli(["plan", "--target", str(tmp_path), "--max-tokens", "1T", "--factor", bad], capsys)
        _assert_one_line_error(code, out, err, needle)


def test_compare_takes_the_target_as_plan_does(tmp_path, capsys):
    """compare's model is --target, as in plan; --config (accelerate's word) is read with a warning for one release."""
    missing = tmp_path / "missing.json"
    code, out, err = run_cli(["compare", tmp_path / "out", "--config", missing], capsys)
    assert code != 0 and "warning: --config is now --target" in err and str(missing) in err
    code, out, err = run_cli(["compare", tmp_path / "out", "--config", "tiny", "--target", "gpu"], capsys)
    assert code == 2 and "give --target once" in err


def test_cli_unknown_target(capsys):
    code, out, err = run_cli(["plan", "--target", "no-such-model-type", "--max-tokens", "1T"], capsys)
    _assert_one_line_error(code, out, err, "no-such-model-type")


def test_cli_plan_human_report(capsys):
    code, out, _ = run_cli(["plan", "--target", "7B", "--max-tokens", "2T"], capsys)
    assert code == 0
    assert "11.11B tokens" in out
    assert "8.4e22" in out
    assert "hfgrow stack BASE_MODEL OUT --factor 4" in out


def test_meta_count_allocates_no_weights():
    import resource

    # 70B Llama shape: 280 GB of float32 weights if they were materialised; counted on the meta device
    config = tiny_llama_config(
        vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8,
    )
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    counted = count_params(config)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    # by hand: 80 layers x (q 8192^2 + k,v 2*8192*1024 + o 8192^2 + 3*8192*28672 + 2*8192 norms)
    #          + 2*32000*8192 embeddings + 8192 final norm = 68,976,648,192
    assert counted.total == 68_976_648_192
    assert grown_kib < 1 << 20  # under 1 GiB: no weight was allocated
    assert torch.empty(0).device.type == "cpu"  # default device restored after the meta context


def test_plan_takes_the_old_tokens_spelling_with_a_warning(capsys):
    """--max-tokens is the token budget in every command; --tokens (0.2) still works for one release."""
    code, new, _ = run_cli(["plan", "--target", "7B", "--max-tokens", "2T", "--json"], capsys)
    assert code == 0
    code, old, err = run_cli(["plan", "--target", "7B", "--tokens", "2T", "--json"], capsys)
    assert code == 0 and old == new and "warning: --tokens is now --max-tokens" in err
    code, _, err = run_cli(["plan", "--target", "7B"], capsys)
    assert code == 2 and "--max-tokens" in err


# --------------------------------------------------------------------------- active parameters (mixture of experts)


def _moe_configs():
    import transformers as tf

    common = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, vocab_size=97,
                  max_position_embeddings=64)
    return {
        # (config, E, k, expert size, layers with routed experts, shared expert units per MoE layer)
        "mixtral": (tf.MixtralConfig(num_hidden_layers=3, intermediate_size=48, num_local_experts=8,
                                     num_experts_per_tok=2, **common), 8, 2, 48, 3, 0),
        # layer 0 a dense MLP (mlp_only_layers), a shared expert of 40 units in the others
        "qwen2_moe": (tf.Qwen2MoeConfig(num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=16,
                                        shared_expert_intermediate_size=40, num_experts=6, num_experts_per_tok=3,
                                        mlp_only_layers=[0], **common), 6, 3, 16, 2, 40),
        "olmoe": (tf.OlmoeConfig(num_hidden_layers=2, intermediate_size=24, num_experts=4, num_experts_per_tok=1,
                                 **common), 4, 1, 24, 2, 0),
        "qwen3_moe": (tf.Qwen3MoeConfig(num_hidden_layers=2, intermediate_size=64, moe_intermediate_size=16,
                                        num_experts=4, num_experts_per_tok=2, head_dim=8, **common), 4, 2, 16, 2, 0),
    }


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "olmoe", "qwen3_moe"])
def test_active_params_of_a_mixture_of_experts(family):
    """Active = every parameter outside the routed experts + k/E of them, checked three ways: by hand from the
    config, against the instantiated model's own tensors split into expert and non-expert, and against the
    parameters one token's backward pass actually reaches (k experts of each MoE layer get a gradient)."""
    config, E, k, size, moe_layers, shared = _moe_configs()[family]
    counted = count_params(config)
    H = config.hidden_size
    per_expert = 3 * H * size  # gate, up, down
    # by hand: the routed experts are E x (gate, up, down) in each MoE layer; a token uses k of them
    assert counted.experts == moe_layers * E * per_expert
    assert counted.active == counted.total - moe_layers * (E - k) * per_expert
    # the instantiated model: its expert tensors (transformers 5 fuses them: mlp.experts.gate_up_proj/down_proj)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    experts = {n: p for n, p in model.named_parameters() if ".experts." in n}
    assert sum(p.numel() for p in experts.values()) == counted.experts
    assert all(p.shape[0] == E for p in experts.values())
    non_expert = sum(p.numel() for n, p in model.named_parameters() if n not in experts)
    assert counted.total == non_expert + counted.experts
    assert counted.active == non_expert + counted.experts * k // E
    if shared:  # the shared expert (always used) is counted in full, outside the routed experts
        assert sum(p.numel() for n, p in model.named_parameters() if ".shared_expert." in n) == \
            moe_layers * 3 * H * shared
    # one token's backward pass: in every MoE layer exactly k experts receive a gradient
    model.zero_grad()
    model(torch.tensor([[5]])).logits[0, -1].logsumexp(-1).backward()  # one token, every logit depends on it
    touched = 0
    for name, p in experts.items():
        hit = [j for j in range(E) if p.grad is not None and p.grad[j].abs().sum() > 0]
        assert len(hit) == k, name
        touched += len(hit) * p[0].numel()
    assert counted.active == non_expert + touched
    assert f"{format_count(counted.active)} active per token" in counted.describe()


def test_a_dense_model_is_all_active():
    counted = count_params(tiny_llama_config())
    assert counted.experts == counted.routed == 0 and counted.active == counted.total
    assert "active" not in counted.describe()


def test_plan_counts_flops_by_active_parameters(tmp_path, capsys):
    config = _moe_configs()["mixtral"][0]
    config.save_pretrained(tmp_path)
    counted = count_params(config)
    plan = make_plan(str(tmp_path / "config.json"), "100B", factor=3)
    assert plan.params.active == counted.active < counted.total
    assert plan.compute == 6.0 * counted.active * 100e9 and plan.growth_tokens < 100e9
    base = count_params(type(config)(**{**config.to_dict(), "num_hidden_layers": 1}))
    assert plan.base_active_params == base.active and plan.base_params == base.total
    assert plan.base_flops == 6.0 * base.active * plan.growth_tokens
    assert plan.grown_flops == 6.0 * counted.active * (100e9 - plan.growth_tokens)
    assert any("mixture of experts" in w for w in plan.warnings)
    code, out, _ = run_cli(["plan", "--target", str(tmp_path), "--max-tokens", "100B", "--factor", "3", "--json",
                            "--extrapolate"], capsys)
    assert code == 0 and json.loads(out)["params"]["active"] == counted.active


def test_plan_of_mixtral_counts_its_known_active_parameters(capsys):
    """README's `hfgrow plan --target mixtral --max-tokens 1T`: transformers' default Mixtral config is Mixtral 8x7B,
    published as 46.7B parameters of which 12.9B are active per token (2 of 8 experts)."""
    code, out, _ = run_cli(["plan", "--target", "mixtral", "--max-tokens", "1T", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert round(data["params"]["total"] / 1e9, 1) == 46.7 and round(data["params"]["active"] / 1e9, 1) == 12.9
    assert data["compute"] == 6.0 * data["params"]["active"] * 1e12
    code, out, _ = run_cli(["plan", "--target", "mixtral", "--max-tokens", "1T"], capsys)
    assert code == 0 and "46.7B (embedding 262M, non-embedding 46.4B; 12.9B active per token)" in out
