"""Pre-training with growth in one run (issue 14): ``hfgrow.continue --grow OP:FACTOR@WHEN``.

In process: the --grow syntax, the stage plan (growth steps, sizes, `auto` and its refusals), the LR re-warm,
`hfgrow plan`'s --grow argument, and --grow-optimizer carry on a real AdamW. As subprocesses (tiny random
Llamas, ~2-3 minutes on 2 cores): the Done-when run (2-layer base from a config-only folder, --grow
stack:2@10240 at 512 tokens per step, 40 steps) with SIGKILL + --resume on both sides of the growth; the
same run on 2 CPU processes under FSDP2 (and its resume) and under DDP with carried moments.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfgrow.errors import HfgrowError
from hfgrow.train.growth import (AUTO_MIN_PARAMS, carry_moments, full_optimizer_state, grow_spec,
                                 load_optimizer_state, parse_grow, plan_stages)
from hfgrow.train.loop import main as continue_main
from hfgrow.train.schedule import Schedule, lr_at
from helpers.optim import stepped_adamw
from helpers.launch import launch_continue

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_model, make_text  # noqa: E402  (the tiny Llama and text of the training tests)

# 8 sequences x 64 tokens = 512 tokens per step; 10240 tokens = step 20 of 40
RUN = ("--seq-len", "64", "--max-steps", "40", "--save-steps", "10", "--eval-steps", "10", "--eval-sequences", "4",
       "--lr", "3e-3", "--warmup-steps", "2", "--save-total-limit", "3")
GROW = ("--grow", "stack:2@10240")


def llama(layers: int, hidden: int = 32, vocab: int = 300) -> dict:
    return {"model_type": "llama", "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": vocab, "max_position_embeddings": 64,
            "tie_word_embeddings": True}


def built_params(config: dict) -> int:
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = {k: v for k, v in config.items() if k != "model_type"}
    return sum(p.numel() for p in AutoModelForCausalLM.from_config(LlamaConfig(**cfg)).parameters())


# --------------------------------------------------------------------------------------------- in process


def test_grow_syntax():
    g = parse_grow("stack:2@10240")
    assert (g.op, g.factor, g.tokens, g.auto) == ("stack", 2.0, 10240, False)
    assert parse_grow("zero:1.5@250k").tokens == 250_000 and parse_grow("random:2@1e7").tokens == 10_000_000
    assert parse_grow("interpolate:4@10B").tokens == 10**10 and parse_grow("stack:4@auto").auto
    for text, message in [("stack:2", "write OP:FACTOR@WHEN"), ("gstack:2@1M", "unknown operator 'gstack'"),
                          ("learn:2@1M", "LiGO learns its operator"), ("stack:1@1M", "above 1"),
                          ("stack:2@soon", "not a valid growth point")]:
        with pytest.raises(HfgrowError, match=message):
            parse_grow(text)
    # the operators are the ones `hfgrow stack` / `hfgrow grow` build
    assert grow_spec("stack", 2).command == "stack" and grow_spec("interpolate", 2).depth.order == "interpolate"
    assert grow_spec("zero", 2).op == "zero" and grow_spec("random", 2, seed=3).seed == 3


def test_grow_style_prts_builds_the_reference_operator(tmp_path):
    """--grow-style prts: the stage is grown as `hfgrow grow --style prts` grows it (random: the new layers on top
    of the source's, ramped as whole blocks), and the stage plan counts the same layers."""
    from hfgrow.eval.tiny import make_model as tiny_model, tiny_llama_config
    from hfgrow.growth.pipeline import WriteOptions, grow_model
    from hfgrow.growth.recipe import Recipe

    tiny_model(tmp_path / "small", tiny_llama_config(layers=2), tokenizer=False)
    for style in ("hfgrow", "prts"):
        grow_model(str(tmp_path / "small"), tmp_path / style, grow_spec("random", 2, 0, style), WriteOptions(quiet=True))
    ours, reference = Recipe.read(tmp_path / "hfgrow"), Recipe.read(tmp_path / "prts")
    assert reference.operation.style == "prts" and reference.operation.mask.form == "block"
    assert reference.new_layers == [2, 3] and list(reference.operation.mask.layers) == [2, 3]  # on top
    assert ours.operation.mask.form == "sublayer" and ours.new_layers == [1, 3]  # interleaved
    config = json.loads((tmp_path / "small" / "config.json").read_text())
    plan = plan_stages(config, [parse_grow("random:2@1024")], tokens_per_step=512, max_steps=4, style="prts")
    assert [s.layers for s in plan.stages] == [2, 4]


def test_stage_plan_steps_sizes_and_refusals():
    plan = plan_stages(llama(2), [parse_grow("stack:2@10240")], tokens_per_step=512, max_steps=40)
    assert [(s.index, s.start_step, s.layers) for s in plan.stages] == [(0, 0, 2), (1, 20, 4)]
    assert [s.n_params for s in plan.stages] == [built_params(llama(2)), built_params(llama(4))]
    assert plan.growth_before(20, 0).index == 1 and plan.growth_before(20, 1) is None
    assert plan.growth_before(19, 0) is None
    # a growth point between steps: after the first step that reaches it (the small model sees at least that many)
    assert plan_stages(llama(2), [parse_grow("stack:2@10000")], tokens_per_step=512, max_steps=40).stages[1].start_step == 20
    two = plan_stages(llama(2), [parse_grow("stack:2@5k"), parse_grow("stack:2@15k")], tokens_per_step=512,
                      max_steps=40)
    assert [(s.start_step, s.layers) for s in two.stages] == [(0, 2), (10, 4), (30, 8)]
    assert plan_stages(llama(2), [parse_grow("zero:1.5@0")], tokens_per_step=512, max_steps=4).stages[1].layers == 3
    for grows, message in [(["stack:2@20480"], "the run ends after 20,480 tokens"),
                           (["stack:2@15k", "stack:2@5k"], "not after the growth before it"),
                           (["stack:2@auto", "stack:2@5k"], "times one growth"),
                           (["stack:1.2@5k"], r"stack:1.2@5k \(of 2 layers\): --factor 1.2 does not give a whole")]:
        with pytest.raises(HfgrowError, match=message):
            plan_stages(llama(2), [parse_grow(g) for g in grows], tokens_per_step=512, max_steps=40)


def test_auto_growth_timing_and_its_refusal_rule():
    from hfgrow.growth.timing import growth_tokens

    with pytest.raises(HfgrowError, match="below the smallest the paper measured"):
        plan_stages(llama(2), [parse_grow("stack:4@auto")], tokens_per_step=512, max_steps=40)
    # a target in the law's range: 4 -> 16 layers of width 2048 (about 0.67B parameters), 105B tokens
    big = llama(4, hidden=2048, vocab=32000)
    steps, per_step = 50_000, 2**21
    plan = plan_stages(big, [parse_grow("stack:4@auto")], tokens_per_step=per_step, max_steps=steps)
    n = plan.final_params
    assert n >= AUTO_MIN_PARAMS
    d = growth_tokens(n, 6.0 * n * steps * per_step)
    assert plan.stages[1].start_step == math.ceil(round(d) / per_step)
    assert "growth-timing law gives d" in plan.notes[0]
    with pytest.raises(HfgrowError, match="not below the budget"):  # a budget below the law's d
        plan_stages(big, [parse_grow("stack:4@auto")], tokens_per_step=per_step, max_steps=100)


def test_lr_across_growth_continues_or_rewarms():
    s = Schedule.plan(n_params=1e6, max_steps=40, lr=1.0, warmup=2, growth_steps=(20,))
    assert [s.lr(i) for i in range(40)] == [lr_at(i, 1.0, 0.1, 2, 40) for i in range(40)]  # default: one cosine
    r = Schedule.plan(n_params=1e6, max_steps=40, lr=1.0, warmup=2, rewarm=4, growth_steps=(20,))
    assert [r.lr(i) / s.lr(i) for i in range(19, 25)] == [1.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_plan_prints_the_grow_argument_and_launch_command():
    from hfgrow.growth.timing import make_plan

    plan = make_plan("7B", "2T")
    assert plan.grow_argument == "stack:4@11.11B"
    assert parse_grow(plan.grow_argument).tokens == pytest.approx(plan.growth_tokens, rel=1e-3)
    assert "-m hfgrow.continue --model BASE/ --grow stack:4@11.11B" in plan.launch and "--max-tokens 2T" in plan.launch
    assert f"--grow {plan.grow_argument}" in plan.report() and plan.launch in plan.report()
    assert make_plan("7B", "5B").grow_argument is None  # d >= D: the law says not to grow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("growth")
    docs = make_text(600, 1)
    (root / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    make_model(root / "small", layers=2, tokenizer_text="\n".join(docs))
    (root / "base").mkdir()  # what a pre-training run starts from: config and tokenizer, no weights
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(root / "small" / name, root / "base" / name)
    return root


def test_carry_moments_of_block_copies_equal_the_source_blocks(env, tmp_path):
    from transformers import AutoModelForCausalLM

    from hfgrow.growth.pipeline import stack

    torch.manual_seed(0)
    small = AutoModelForCausalLM.from_pretrained(env / "small")
    opt = stepped_adamw(small)
    old = full_optimizer_state(small, opt, distributed=False)
    small_state = {n: opt.state[p] for n, p in small.named_parameters()}  # read directly, not through the API
    result = stack(str(env / "small"), tmp_path / "grown", factor=2, quiet=True)  # layers [0, 1, 0, 1]
    grown = AutoModelForCausalLM.from_pretrained(tmp_path / "grown")
    new_opt = torch.optim.AdamW(grown.parameters(), lr=1e-3)
    template = full_optimizer_state(grown, new_opt, distributed=False)
    template["state"], missing = carry_moments(old["state"], template["state"], prefix="model.layers.",
                                               layer_map=result.plan.layer_map, zeroed=set())
    load_optimizer_state(grown, new_opt, template, distributed=False)
    assert missing == []
    for name, param in grown.named_parameters():
        src = name
        if ".layers." in name:
            i = int(name.split(".")[2])
            src = name.replace(f".layers.{i}.", f".layers.{result.plan.layer_map[i]}.")
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(new_opt.state[param][key], small_state[src][key]), (name, key)
    assert float(new_opt.state[dict(grown.named_parameters())["model.layers.3.mlp.up_proj.weight"]]["step"]) == 3.0
    # new blocks of zero/random growth: zero moments, the step count kept
    carried, _ = carry_moments(old["state"], template["state"], prefix="model.layers.", layer_map=[0, 1, 0, 1],
                               zeroed={2, 3})
    block = carried["model.layers.2.self_attn.q_proj.weight"]
    assert not block["exp_avg"].any() and not block["exp_avg_sq"].any() and float(block["step"]) == 3.0
    assert torch.equal(carried["model.layers.1.self_attn.q_proj.weight"]["exp_avg"],
                       small_state["model.layers.1.self_attn.q_proj.weight"]["exp_avg"])


# --------------------------------------------------------------------------------------------- subprocesses


def run_continue(env: Path, out: str, *extra: str, procs: int = 1, config: str = "multi_cpu.yaml",
                 kill_at: int | None = None, batch: int = 8, grow: tuple = GROW) -> subprocess.CompletedProcess:
    args = ["--model", str(env / "base"), "--data", f"a={env / 'a.jsonl'}", "--output-dir", str(env / out),
            "--batch-size", str(batch), *RUN, *grow, *extra]
    extra_env = {"HFGROW_DEBUG_KILL_AT_STEP": str(kill_at)} if kill_at is not None else None
    proc = launch_continue(args, procs=procs, config=config, env_extra=extra_env, timeout=600, check=kill_at is None)
    if kill_at is not None:
        assert proc.returncode != 0, "the debug kill did not happen"
    return proc


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


@pytest.fixture(scope="module")
def grown_run(env):
    proc = run_continue(env, "run")
    return env / "run", proc


def test_growth_run_end_to_end(env, grown_run):
    """Done when: 2-layer base, --grow stack:2@10240 with 512-token steps, 40 steps."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from hfgrow.growth.pipeline import stack
    from hfgrow.train.export import load_checkpoint_weights
    from hfgrow.train.runlog import plot_run, read_run

    run, proc = grown_run
    assert f"{env / 'base'} has no weights: the run starts from llama's own random initialisation (seed 0)." \
        in proc.stderr
    # the run's random init is the architecture's own: the same weights as `from_config` under the same seed
    # (test_train's make_model saved exactly that, seed 0, as small/); step 1 sees the same loss
    run_continue(env, "ref", "--model", str(env / "small"), "--max-steps", "1", "--no-export", grow=())
    assert records(env / "ref", "train")[0]["loss"] == records(run, "train")[0]["loss"]

    train = records(run, "train")
    assert [r["step"] for r in train] == list(range(1, 41)) and train[-1]["tokens"] == 40 * 512
    assert [r["stage"] for r in train] == [0] * 20 + [1] * 20
    (growth,) = records(run, "growth")
    assert {k: growth[k] for k in ("step", "tokens", "stage", "op", "factor", "layers_before", "layers_after",
                                   "optimizer", "small_folder", "grown_folder")} == {
        "step": 20, "tokens": 10240, "stage": 1, "op": "stack", "factor": 2.0, "layers_before": 2,
        "layers_after": 4, "optimizer": "fresh", "small_folder": "stage-0", "grown_folder": "grown-1"}
    assert growth["operator"].startswith("Gstack") and math.isfinite(growth["eval_loss_after"])
    evals = records(run, "eval")
    assert [(e["step"], e["stage"]) for e in evals] == [(0, 0), (10, 0), (20, 0), (30, 1), (40, 1)]
    # losses after the growth fall
    after = [r["loss"] for r in train[20:]]
    assert sum(after[-3:]) / 3 < after[0] - 0.2 and evals[-1]["eval_loss"] < growth["eval_loss_after"]

    # final/: 4 layers, loads, runs; stage-0/: the 2-layer model exactly as trained at step 20
    final = AutoModelForCausalLM.from_pretrained(run / "final")
    assert final.config.num_hidden_layers == 4 and final.config.use_cache is True
    assert torch.isfinite(final(torch.tensor([[1, 2, 3, 4]])).logits).all()
    assert AutoModelForCausalLM.from_pretrained(run / "stage-0").config.num_hidden_layers == 2
    at_growth = load_checkpoint_weights(run / "checkpoint-20")
    written = load_file(run / "stage-0" / "model.safetensors")
    assert written.keys() <= at_growth.keys() and all(torch.equal(written[k], at_growth[k]) for k in written)
    # grown-1/ is what `hfgrow stack` makes of stage-0/, byte for byte (one growth implementation)
    by_hand = stack(str(run / "stage-0"), env / "stacked-by-hand", factor=2, quiet=True).out
    a, b = load_file(run / "grown-1" / "model.safetensors"), load_file(by_hand / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # --save-total-limit 3: checkpoint-10 went, the stage folders stay
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30", "checkpoint-40"]
    assert (run / "stage-0").is_dir() and (run / "grown-1").is_dir()
    assert json.loads((run / "checkpoint-20" / "hfgrow_state.json").read_text())["stage"] == 0
    assert json.loads((run / "checkpoint-30" / "hfgrow_state.json").read_text())["stage"] == 1

    info = json.loads((run / "run.json").read_text())
    assert [(s["start_step"], s["layers"]) for s in info["stages"]] == [(0, 2), (20, 4)]
    assert info["random_init"] is True and info["n_params"] == info["stages"][1]["n_params"]
    card = (run / "final" / "README.md").read_text()
    assert "| growth 1 | step 20 (10,240 tokens): 2 → 4 layers, `stack` ×2" in card and "--grow stack:2@10240" in card
    assert "| steps | 20 |" in (run / "stage-0" / "README.md").read_text()
    # one token axis; FLOPs count each stage's parameters
    record = read_run(run)
    n0, n1 = info["stages"][0]["n_params"], info["stages"][1]["n_params"]
    assert record.flops(40 * 512) == 6.0 * n0 * 10240 + 6.0 * n1 * 10240
    assert (10240, growth["eval_loss_after"]) in record.eval_curve()
    assert plot_run(run, env / "growth.png", x="flops").read_bytes()[:4] == b"\x89PNG"


def test_sigkill_after_the_growth_then_resume_gives_the_same_losses(env, grown_run):
    """Killed at step 25 (after the growth; last checkpoint 20, before it: the growth is made again), resumed and
    killed at step 35 (last checkpoint 30, in the grown stage), resumed to the end: the unbroken run's losses."""
    run, _ = grown_run
    run_continue(env, "killed", kill_at=25)
    assert not (env / "killed" / "checkpoint-30").exists() and (env / "killed" / "grown-1").is_dir()
    run_continue(env, "killed", "--resume", kill_at=35)
    run_continue(env, "killed", "--resume")
    killed = env / "killed"
    assert [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in records(killed, "train")] == \
        [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in records(run, "train")]
    assert [e["losses"] for e in records(killed, "eval")] == [e["losses"] for e in records(run, "eval")]
    assert len(records(killed, "growth")) == 1  # the growth made again replaced the killed run's record
    # a different growth schedule cannot resume this run
    code = continue_main(["--model", str(env / "base"), "--data", f"a={env / 'a.jsonl'}", "--output-dir", str(killed),
                          "--batch-size", "8", *RUN, "--grow", "stack:2@5120", "--resume"])
    assert code == 1


def test_fsdp2_two_processes_equal_one_across_a_growth_and_resume(env, grown_run):
    """2 CPU processes under FSDP2 (configs/fsdp2_cpu.yaml, gloo) x 4 sequences = 1 process x 8: the same losses
    within float tolerance (summation order differs: 1e-5 relative on the loss, 1e-4 on the gradient norm), through
    the growth; killed after the growth and resumed, the FSDP2 run reproduces itself exactly."""
    run, _ = grown_run
    run_continue(env, "fsdp", procs=2, config="fsdp2_cpu.yaml", batch=4)
    fsdp = env / "fsdp"
    assert json.loads((fsdp / "run.json").read_text())["distributed_type"] == "DistributedType.FSDP"
    assert (fsdp / "checkpoint-30" / "pytorch_model_fsdp_0").is_dir()  # sharded: accelerate's FSDP2 checkpoint
    one, two = records(run, "train"), records(fsdp, "train")
    assert len(one) == len(two) == 40
    for x, y in zip(one, two):
        assert abs(x["loss"] - y["loss"]) < 1e-5 * abs(x["loss"]) and abs(x["grad_norm"] - y["grad_norm"]) < 1e-4
    assert records(fsdp, "growth")[0]["layers_after"] == 4
    assert records(fsdp, "growth")[0]["eval_loss_after"] == pytest.approx(records(run, "growth")[0]["eval_loss_after"],
                                                                         abs=1e-5)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(fsdp / "final").config.num_hidden_layers == 4
    run_continue(env, "fsdp-killed", procs=2, config="fsdp2_cpu.yaml", batch=4, kill_at=25)
    run_continue(env, "fsdp-killed", "--resume", procs=2, config="fsdp2_cpu.yaml", batch=4)
    assert [(r["loss"], r["grad_norm"]) for r in records(env / "fsdp-killed", "train")] == \
        [(r["loss"], r["grad_norm"]) for r in two]


def test_ddp_with_carried_moments_equals_one_process(env):
    """--grow-optimizer carry under DDP (2 CPU processes, gloo) = 1 process through the growth (the moments are
    gathered onto the main process, carried, and broadcast back)."""
    short = ("--grow-optimizer", "carry", "--no-export", "--max-steps", "24")  # the growth at step 20 of 24
    run_continue(env, "carry", *short)
    run_continue(env, "carry-ddp", *short, procs=2, batch=4)
    one, two = records(env / "carry", "train"), records(env / "carry-ddp", "train")
    assert len(one) == len(two) == 24
    for x, y in zip(one, two):
        assert abs(x["loss"] - y["loss"]) < 1e-5 * abs(x["loss"])
    assert json.loads((env / "carry-ddp" / "run.json").read_text())["distributed_type"] == "DistributedType.MULTI_CPU"
    growth = records(env / "carry", "growth")[0]
    assert growth["optimizer"] == "carry" and growth["carry_unmatched"] == []


@pytest.mark.parametrize("extra, message", [
    (["--grow", "stack:2@20480"], "the run ends after 20,480 tokens"),
    (["--grow", "stack:2@auto"], "below the smallest the paper measured"),
    (["--grow", "stack:2@1k", "--train", "lora"], "does not combine with --train lora"),
    (["--grow", "lift:2@1k"], "unknown operator 'lift'"),
])
def test_bad_growth_input_one_clear_line(env, capsys, extra, message):
    argv = ["--model", str(env / "base"), "--data", f"a={env / 'a.jsonl'}", "--output-dir", str(env / "bad"),
            "--seq-len", "64", "--batch-size", "8", "--max-steps", "40", "--eval-sequences", "2", *extra]
    try:
        code = continue_main(argv)
    except SystemExit as exc:  # argparse: the --grow type check
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2) and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (env / "bad" / "checkpoint-1").exists()
