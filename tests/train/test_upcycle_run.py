"""Upcycling inside a training run (issue 23): ``--grow upcycle:E@WHEN --grow-top-k K``.

In process: the syntax and stage plan (active parameters for FLOPs), the expert-load count, and
``--grow-optimizer carry`` on a real AdamW (every expert gets its MLP's moments, the router fresh). As
subprocesses (the tiny random Llama of the training tests, 40 steps of 512 tokens, upcycled at step 20):
the run end to end, and SIGKILL after the growth + --resume giving the unbroken run's losses.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from hfgrow.errors import HfgrowError
from hfgrow.train.growth import (carry_upcycled, expert_load, full_optimizer_state, load_optimizer_state, parse_grow,
                                 plan_stages)
from helpers.optim import stepped_adamw
from helpers.launch import launch_continue

sys.path.insert(0, str(Path(__file__).parent))
from test_growth import RUN, env, records  # noqa: E402,F401  (the growth tests' tiny run: env is a fixture)

GROW = ("--grow", "upcycle:4@10240", "--grow-top-k", "2")


def test_syntax_and_stage_plan_count_active_parameters():
    from transformers import LlamaConfig

    assert parse_grow("upcycle:8@1M").op == "upcycle"
    with pytest.raises(HfgrowError, match="FACTOR is the number of experts"):
        parse_grow("upcycle:2.5@1M")
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128).to_dict()
    plan = plan_stages(config, [parse_grow("upcycle:4@1024")], tokens_per_step=512, max_steps=10, top_k=2)
    dense, moe = plan.stages
    expert = 3 * 32 * 64  # one expert: gate, up, down
    assert moe.layers == dense.layers == 2 and moe.n_params == dense.n_params + 2 * (3 * expert + 4 * 32)
    assert moe.n_active == moe.n_params - 2 * 2 * expert  # two of four experts idle per token, in each layer
    assert moe.to_dict(512)["n_active"] == moe.n_active


def test_a_mixture_of_experts_stage_counts_its_active_parameters_from_the_start():
    """A run that starts from an MoE model (here stacked x2 at 1024 tokens) counts stage 0 by active parameters too."""
    from transformers import MixtralConfig

    from hfgrow.growth.timing import count_params

    config = MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=128, num_local_experts=4, num_experts_per_tok=1)
    first, second = plan_stages(config.to_dict(), [parse_grow("stack:2@1024")], tokens_per_step=512,
                                max_steps=10).stages
    assert first.n_active == count_params(config).active == first.n_params - 2 * 3 * (3 * 32 * 64)
    assert second.n_active == second.n_params - 4 * 3 * (3 * 32 * 64)  # 4 layers, 3 of 4 experts idle per token
    assert first.to_dict(512)["n_active"] == first.n_active


def test_expert_load_counts_the_top_k_choices():
    logits = (torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 2))
    assert expert_load(logits, top_k=2).tolist() == [3 / 8, 3 / 8, 1 / 8, 1 / 8]


def test_carried_moments_of_every_expert_equal_its_mlps(env, tmp_path):
    from transformers import AutoModelForCausalLM

    from hfgrow.growth.pipeline import upcycle

    torch.manual_seed(0)
    small = AutoModelForCausalLM.from_pretrained(env / "small")
    opt = stepped_adamw(small)
    old = full_optimizer_state(small, opt, distributed=False)
    dense = {n: opt.state[p] for n, p in small.named_parameters()}  # read directly, not through the API
    result = upcycle(str(env / "small"), tmp_path / "moe", experts=4, top_k=2, granularity=2, quiet=True)
    moe = AutoModelForCausalLM.from_pretrained(tmp_path / "moe")
    new_opt = torch.optim.AdamW(moe.parameters(), lr=1e-3)
    template = full_optimizer_state(moe, new_opt, distributed=False)
    template["state"], missing = carry_upcycled(old["state"], template["state"], result.recipe.operation.experts)
    load_optimizer_state(moe, new_opt, template, distributed=False)
    assert missing == []
    params = dict(moe.named_parameters())
    m = result.recipe.operation.experts["expert_size"]
    for key in ("exp_avg", "exp_avg_sq"):
        gate_up = new_opt.state[params["model.layers.1.mlp.experts.gate_up_proj"]][key]
        down = new_opt.state[params["model.layers.1.mlp.experts.down_proj"]][key]
        for j in range(4):
            s = j % 2  # expert j holds slice j mod G
            gate, up = dense["model.layers.1.mlp.gate_proj.weight"][key], dense["model.layers.1.mlp.up_proj.weight"][key]
            assert torch.equal(gate_up[j], torch.cat([gate[s * m:(s + 1) * m], up[s * m:(s + 1) * m]]))
            assert torch.equal(down[j], dense["model.layers.1.mlp.down_proj.weight"][key][:, s * m:(s + 1) * m])
        assert torch.equal(new_opt.state[params["model.layers.0.self_attn.q_proj.weight"]][key],
                           dense["model.layers.0.self_attn.q_proj.weight"][key])
        assert not new_opt.state[params["model.layers.0.mlp.gate.weight"]][key].any()  # the router starts fresh
    assert float(new_opt.state[params["model.layers.0.mlp.gate.weight"]]["step"]) == 3.0


def run_continue(env: Path, out: str, *extra: str, kill_at: int | None = None):
    args = ["--model", str(env / "base"), "--data", f"a={env / 'a.jsonl'}", "--output-dir", str(env / out),
            "--batch-size", "8", *RUN, *GROW, *extra]
    extra_env = {"HFGROW_DEBUG_KILL_AT_STEP": str(kill_at)} if kill_at is not None else None
    proc = launch_continue(args, env_extra=extra_env, timeout=600, check=kill_at is None)
    if kill_at is not None:
        assert proc.returncode != 0, "the debug kill did not happen"
    return proc


def test_in_run_upcycling_end_to_end_and_resume_after_sigkill(env):
    """Upcycled at step 20 of 40 with carried moments; killed at step 25 and resumed: the same losses."""
    from transformers import AutoModelForCausalLM

    from hfgrow.train.runlog import read_run

    run_continue(env, "moe", "--grow-optimizer", "carry")
    run = env / "moe"
    train = records(run, "train")
    assert [r["stage"] for r in train] == [0] * 20 + [1] * 20
    (growth,) = records(run, "growth")
    assert growth["op"] == "upcycle" and growth["carry_unmatched"] == [] and growth["layers_after"] == 2
    # sparse upcycling into Mixtral (renormalised top-k) keeps the function: the held-out loss does not move
    (at_growth,) = [e for e in records(run, "eval") if e["step"] == 20]
    assert growth["eval_loss_after"] == pytest.approx(at_growth["eval_loss"], rel=1e-5)
    for r in train[20:]:  # the load-balancing loss is logged apart; the load is a distribution over the 4 experts
        assert r["aux_loss"] > 0 and len(r["expert_load"]) == 4 and sum(r["expert_load"]) == pytest.approx(1, abs=1e-3)
    assert all("expert_load" not in r for r in train[:20])
    final = AutoModelForCausalLM.from_pretrained(run / "final")
    assert final.config.model_type == "mixtral" and final.config.num_local_experts == 4
    info = json.loads((run / "run.json").read_text())
    dense, moe = info["stages"]
    assert moe["n_active"] < moe["n_params"]
    assert read_run(run).flops(40 * 512) == 6.0 * dense["n_params"] * 10240 + 6.0 * moe["n_active"] * 10240

    run_continue(env, "moe-killed", "--grow-optimizer", "carry", kill_at=25)
    run_continue(env, "moe-killed", "--grow-optimizer", "carry", "--resume")
    assert [(r["step"], r["loss"], r["grad_norm"]) for r in records(env / "moe-killed", "train")] == \
        [(r["step"], r["loss"], r["grad_norm"]) for r in train]


def test_fsdp2_two_processes_equal_one_through_an_upcycling(env):
    """2 CPU processes under FSDP2 (gloo) x 4 sequences = 1 process x 8 through the upcycling, moments carried:
    the same losses within float tolerance (summation order differs: 1e-5 relative)."""
    short = ("--grow-optimizer", "carry", "--no-export", "--max-steps", "24")
    run_continue(env, "moe-one", *short)
    args = ["--model", str(env / "base"), "--data", f"a={env / 'a.jsonl'}", "--output-dir", str(env / "moe-fsdp"),
            "--batch-size", "4", *RUN, *GROW, *short]
    launch_continue(args, procs=2, config="fsdp2_cpu.yaml", timeout=600)
    one, two = records(env / "moe-one", "train"), records(env / "moe-fsdp", "train")
    assert len(one) == len(two) == 24
    for x, y in zip(one, two):
        assert abs(x["loss"] - y["loss"]) < 1e-5 * abs(x["loss"]), (x["step"], x["loss"], y["loss"])
    assert records(env / "moe-fsdp", "growth")[0]["carry_unmatched"] == []
