"""hfgrow compare: the FLOPs bookkeeping, the regime, the baseline test and the LR rule in process (run logs ->
curves, speedup); one short real run in which every arm is one `hfgrow.continue` run (the grown one with --grow);
`compare --op upcycle` (dense vs upcycled at equal active FLOPs) end to end through the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers.cli import run_cli

from hfgrow.errors import HfgrowError
from hfgrow.eval.compare import (LEARNED_MARGIN, MIN_SWEEP_STEPS, Arm, Run, baseline_check, choose_lr, collect,
                                 compare, first_stage, flops_to_reach, make_report, markdown, plan_arms,
                                 plan_upcycle_arms, plot, speedup, unigram_loss)
from hfgrow.train.runlog import RunLog


def test_flops_to_reach_and_speedup():
    assert flops_to_reach([(0, 5.0), (10, 4.0), (20, 3.0)], 3.5) == pytest.approx(15.0)
    assert flops_to_reach([(0, 5.0), (10, 4.0)], 3.0) is None
    assert flops_to_reach([(4, 2.0)], 3.0) == 4
    scratch = Run("scratch", 10, 100, 6000.0, [(3000.0, 4.0), (6000.0, 3.0)])
    grown = Run("grown", 10, 80, 5400.0, [(2000.0, 3.5), (4000.0, 2.5)])
    # grown reaches 3.0 at 3000 FLOPs; scratch spent 6000: sp = 6000/3000 - 1
    assert speedup(scratch, grown) == pytest.approx(1.0)
    assert speedup(scratch, Run("slow", 10, 100, 6000.0, [(6000.0, 3.5)])) is None


def fake_run(folder: Path, evals: list[tuple[int, float]], stages: list[dict]) -> None:
    """A run folder as training writes it: run.json with its stages, an eval record per (tokens, loss), a growth
    record (with the grown model's loss) at each stage start after the first."""
    with RunLog(folder, resume_step=None, write=True) as log:
        log.start({"n_params": stages[-1]["n_params"], "stages": stages})
        for step, (tokens, loss) in enumerate(evals):
            stage = max(i for i, s in enumerate(stages) if i == 0 or s["start_tokens"] < tokens)
            if step:
                log.train({"step": step, "loss": loss + 0.1, "tokens": tokens, "stage": stage})
            log.eval(step, tokens, {"text": loss}, mixture={"text": 1.0}, stage=stage)
            nxt = [s for s in stages[1:] if s["start_tokens"] == tokens]
            if nxt:
                log.growth({"step": step, "tokens": tokens, "stage": nxt[0]["stage"], "layers_before": 2,
                            "layers_after": 8, "losses_after": {"text": loss + 0.2}, "eval_loss_after": loss + 0.2})


def one_stage(n: int) -> list[dict]:
    return [{"stage": 0, "start_tokens": 0, "n_params": n}]


@pytest.fixture
def runs(tmp_path) -> dict[str, Run]:
    n_base, n_target = 1_000, 4_000
    stages = [{"stage": 0, "start_tokens": 0, "n_params": n_base}, {"stage": 1, "start_tokens": 500, "n_params": n_target}]
    fake_run(tmp_path / "grown", [(0, 6.0), (500, 5.0), (1000, 4.0), (1500, 3.0)], stages)
    fake_run(tmp_path / "scratch", [(0, 6.0), (1000, 4.5), (2000, 3.5)], one_stage(n_target))
    fake_run(tmp_path / "small", [(0, 6.0), (4000, 3.6), (8000, 3.2)], one_stage(n_base))
    return {"base": first_stage("base", tmp_path / "grown"), "grown-stack": collect("grown-stack", tmp_path / "grown"),
            "scratch": collect("scratch", tmp_path / "scratch"), "small-alone": collect("small-alone", tmp_path / "small")}


SETUP = {"target_params": 4000, "base_params": 1000, "factor": 4, "budget_flops": 6 * 4000 * 2000,
         "scratch_tokens": 2000, "base_tokens": 500, "lr": {"rule": "fixed: --lr 0.002 for every arm",
                                                            "chosen": {"grown-stack": 2e-3, "scratch": 2e-3}}}


def test_bookkeeping_from_run_logs(runs, tmp_path):
    n_base, n_target = 1_000, 4_000
    base, grown = runs["base"], runs["grown-stack"]
    # the base is the grown run's first stage: up to its held-out loss when it grew
    assert base.tokens == 500 and base.total_flops == 6 * n_base * 500 and base.curve == [(0, 6.0), (3e6, 5.0)]
    # each point: 6·N_base·d for the small stage, then 6·N_target per token; the grown model's loss at the growth
    offset = 6 * n_base * 500
    assert grown.curve == [(0.0, 6.0), (offset, 5.0), (offset, 5.2), (offset + 6 * n_target * 500, 4.0),
                           (offset + 6 * n_target * 1000, 3.0)]
    assert grown.total_flops == offset + 6 * n_target * 1000
    report = make_report(runs, SETUP, unigram=5.5)
    # scratch ends at 3.5 after 6·4000·2000 = 48M FLOPs; grown reaches 3.5 half way between its last two points
    reached = offset + 6 * n_target * 750
    assert report["speedup"]["grown-stack"] == pytest.approx(48_000_000 / reached - 1)
    assert report["final_loss"] == {"base": 5.0, "grown-stack": 3.0, "scratch": 3.5, "small-alone": 3.2}
    assert report["best_run"] == "grown-stack" and report["regime"].startswith("target regime")
    assert f"| grown-stack | 3.0000 | {grown.total_flops:.3g} | {report['speedup']['grown-stack']:+.1%} |" \
        in markdown(report)
    assert "Learning rate: fixed: --lr 0.002 for every arm; chosen: grown-stack 0.002, scratch 0.002." in markdown(report)
    # the small model alone beating both: the small-model regime
    runs["small-alone"].curve[-1] = (runs["small-alone"].curve[-1][0], 2.9)
    assert make_report(runs, SETUP, unigram=5.5)["regime"].startswith("small-model regime")
    assert plot(runs, tmp_path / "compare.png", report).read_bytes()[:4] == b"\x89PNG"


def test_regime_is_not_claimed_when_the_small_model_was_skipped(runs):
    """compare --no-small used to print "target regime" for a comparison it never made."""
    del runs["small-alone"]
    report = make_report(runs, SETUP, unigram=5.5)
    assert report["regime"].startswith("regime not measured") and "--no-small" in report["regime"]
    assert "target regime" not in markdown(report)


def test_speedup_is_withheld_when_scratch_has_not_learned(runs):
    """A scratch arm that sits at token frequencies (the reduced compare: flat at 5.24-5.35) makes any speedup
    meaningless: no speedup unless scratch ends LEARNED_MARGIN nats below the unigram model's held-out loss."""
    flat = Run("scratch", 4000, 2000, 48e6, [(0, 6.2), (12e6, 5.35), (24e6, 5.3), (48e6, 5.28)])
    runs["scratch"] = flat
    report = make_report(runs, SETUP, unigram=5.3)
    assert report["speedup"] == {} and report["baseline"]["learned"] is False
    text = markdown(report)
    assert "| grown-stack | 3.0000 |" in text and "withheld (scratch did not learn)" in text
    assert "scratch has NOT learned, so no speedup is reported" in text
    # the same curves with a unigram loss the scratch run clears: the speedup is reported
    learned = make_report(runs, SETUP, unigram=5.28 + LEARNED_MARGIN)
    assert learned["baseline"]["learned"] is True and learned["speedup"]["grown-stack"] is not None
    assert baseline_check(flat, 5.28 + LEARNED_MARGIN - 1e-9)["learned"] is False


def test_unigram_loss_by_hand(tmp_path):
    from hfgrow.eval.tiny import make_tokenizer

    words = "the cat sat on the mat and the dog ran to the log while a bird sang".split()
    docs = [" ".join(words[i % 7 : i % 7 + 5 + i % 4]) for i in range(300)]
    (tmp_path / "train.txt").write_text("\n\n".join(docs[:250]))
    (tmp_path / "eval.txt").write_text("\n\n".join(docs[250:]))
    tok = make_tokenizer(text="\n".join(docs), vocab_size=300)
    got = unigram_loss(tmp_path / "train.txt", tmp_path / "eval.txt", tok, seq_len=16, eval_sequences=4)
    # by hand: a .txt file is one document, its tokens followed by EOS
    from collections import Counter

    def stream(docs):
        return tok("\n\n".join(docs), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    counts, held = Counter(stream(docs[:250])), stream(docs[250:])
    seqs = [held[i * 16 : (i + 1) * 16] for i in range(4)]
    total, vocab = sum(counts.values()), len(tok)
    expected = [-math.log((counts[t] + 1) / (total + vocab)) for s in seqs for t in s[1:]]
    assert got == pytest.approx(sum(expected) / len(expected), rel=1e-9)


class FakeTrainer:
    """Stands in for the subprocess trainer: a run's held-out loss is a function of (model, steps, lr)."""

    def __init__(self, tmp: Path, loss):
        self.tmp, self.loss, self.calls = tmp, loss, []

    def run(self, arm: Arm, run_dir: Path, lr: float, evals: int) -> Path:
        self.calls.append((arm.model, arm.steps, arm.grow, lr))
        fake_run(run_dir, [(0, 6.0), (arm.steps * 512, self.loss(arm, lr))], one_stage(1000))
        return run_dir


def test_every_arm_chooses_its_lr_by_the_same_sweep_rule(tmp_path):
    trainer = FakeTrainer(tmp_path, lambda arm, lr: {"base": {1e-3: 4.0, 3e-3: 3.5, 1e-2: 3.9},
                                                    "target": {1e-3: 4.1, 3e-3: 4.2, 1e-2: 4.0}}[arm.model][lr])
    cache: dict = {}
    grown = Arm("grown-stack", "base", 400, "stack:4@51200", 51200)
    lr, losses, steps, full = choose_lr(trainer, grown, (1e-3, 3e-3, 1e-2), tmp_path, cache)
    # the arm's first 5% of steps (20), its growth (at step 100) not reached: the base model alone
    assert (lr, steps, full) == (3e-3, MIN_SWEEP_STEPS, None) and losses == {1e-3: 4.0, 3e-3: 3.5, 1e-2: 3.9}
    assert trainer.calls == [("base", 20, None, 1e-3), ("base", 20, None, 3e-3), ("base", 20, None, 1e-2)]
    assert choose_lr(trainer, Arm("scratch", "target", 400), (1e-3, 3e-3, 1e-2), tmp_path, cache)[0] == 1e-2
    # an arm whose cut run is the same as one already swept shares it (no new runs)
    calls = len(trainer.calls)
    assert choose_lr(trainer, Arm("grown-zero", "base", 400, "zero:4@51200", 51200), (1e-3, 3e-3, 1e-2), tmp_path,
                     cache)[0] == 3e-3
    assert len(trainer.calls) == calls
    # a growth inside the sweep is part of it (d = 0: the untrained base grown at once); 5% of 1000 steps is 50
    choose_lr(trainer, Arm("grown-untrained", "base", 1000, "stack:4@0", 0), (1e-3,), tmp_path, cache)
    assert trainer.calls[-1] == ("base", 50, "stack:4@0", 1e-3)


def test_a_sweep_that_has_not_learned_runs_the_arm_in_full_at_each_lr(tmp_path):
    """Cut runs all at the unigram plateau (5.2, unigram 5.25: none 0.1 nats below) say nothing about the LR:
    the arm runs in full at each LR, the lowest final loss wins, and that run is the arm's own."""
    plateau = {1e-3: 5.24, 3e-3: 5.20, 1e-2: 5.22}  # after 20 steps: 3e-3 leaves the plateau first...
    final = {1e-3: 3.4, 3e-3: 3.7, 1e-2: 3.9}  # ...but after 400 steps 1e-3 ends lowest
    trainer = FakeTrainer(tmp_path, lambda arm, lr: (plateau if arm.steps < 400 else final)[lr])
    scratch = Arm("scratch", "target", 400)
    lr, losses, steps, full = choose_lr(trainer, scratch, (1e-3, 3e-3, 1e-2), tmp_path, {}, unigram=5.25, evals=20)
    assert (lr, steps, losses) == (1e-3, 400, final)
    assert full == tmp_path / "scratch-full-lr0.001" and collect("scratch", full).final_loss == 3.4
    assert [c[1] for c in trainer.calls] == [20, 20, 20, 400, 400, 400]
    # a cut run that has learned (3.5 <= 5.25 - 0.1) decides on its own
    trainer = FakeTrainer(tmp_path / "b", lambda arm, lr: {1e-3: 4.0, 3e-3: 3.5, 1e-2: 3.9}[lr])
    assert choose_lr(trainer, scratch, (1e-3, 3e-3, 1e-2), tmp_path / "b", {}, unigram=5.25)[2:] == (20, None)


def test_arms_share_the_flops_budget():
    arms, budget = plan_arms(4000, 1000, scratch_tokens=20480, base_fraction=0.25, tokens_per_step=512, factor=4,
                             ops=("stack", "zero"), optimizers=("fresh", "carry"), include_untrained=True,
                             include_small=True)
    by_name = {a.name: a for a in arms}
    assert list(by_name) == ["grown-stack", "grown-stack-carry", "grown-zero", "grown-zero-carry", "scratch",
                             "grown-untrained", "small-alone"]
    assert by_name["grown-zero-carry"].grow == "zero:4@5120" and by_name["grown-zero-carry"].optimizer == "carry"
    grown = by_name["grown-stack"]
    flops = 6 * 1000 * grown.grow_tokens + 6 * 4000 * (grown.steps * 512 - grown.grow_tokens)
    assert flops == pytest.approx(budget["budget_flops"], rel=0.02) and budget["budget_flops"] == 6 * 4000 * 20480
    assert by_name["small-alone"].steps * 512 * 6 * 1000 == budget["budget_flops"]


def test_compare_end_to_end(tmp_path):
    config = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 300, "max_position_embeddings": 128,
              "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = compare(tmp_path / "cmp", config=str(tmp_path / "config.json"), factor=2, scratch_tokens="6k",
                     seq_len=32, batch_size=8, lr=3e-3, eval_points=2, eval_sequences=4, include_untrained=False,
                     include_small=False, quiet=True)
    out = tmp_path / "cmp"
    saved = json.loads((out / "compare.json").read_text())
    assert saved == json.loads(json.dumps(report)) and (out / "compare.png").stat().st_size > 10_000
    assert set(saved["final_loss"]) == {"base", "grown-stack", "scratch"}
    setup = saved["setup"]
    assert setup["scratch_tokens"] == 23 * 256 and setup["base_tokens"] == 6 * 256  # 6k x --base-fraction 0.25
    assert setup["lr"]["rule"] == "fixed: --lr 0.003 for every arm"
    # the grown arm is one run that grew: stage 0 is the report's base, the growth at d tokens
    grown_run = out / "runs" / "grown-stack"
    (growth,) = [r for r in map(json.loads, (grown_run / "log.jsonl").read_text().splitlines()) if r["type"] == "growth"]
    assert growth["tokens"] == setup["base_tokens"] and (growth["layers_before"], growth["layers_after"]) == (2, 4)
    assert not (out / "runs" / "base").exists() and not list((out / "models" / "base").glob("*.safetensors"))
    # equal FLOPs: base phase + grown phase == scratch (within one step's rounding)
    assert saved["total_flops"]["grown-stack"] == pytest.approx(setup["budget_flops"], rel=0.05)
    assert saved["total_flops"]["base"] == 6 * setup["base_params"] * setup["base_tokens"]
    for name, curve in saved["curves"].items():  # every run evaluated before training, from zero FLOPs
        assert curve[0][0] == 0 and 0 < curve[-1][1] < curve[0][1], name
    baseline = saved["baseline"]
    assert baseline["learned"] == (baseline["scratch_final_loss"] <= baseline["unigram_loss"] - LEARNED_MARGIN)
    assert (saved["speedup"] != {}) == baseline["learned"]

    with pytest.raises(HfgrowError, match="not empty"):
        compare(out, config=str(tmp_path / "config.json"), factor=2, quiet=True)
    with pytest.raises(HfgrowError, match="factor 3 does not divide the target.s 4 layers into a whole base model"):
        compare(tmp_path / "cmp2", config=str(tmp_path / "config.json"), factor=3, quiet=True)


def test_compare_tokens_take_counts(tmp_path, capsys):
    code, _, err = run_cli(["compare", tmp_path / "cmp", "--max-tokens", "3X"], capsys)
    assert code == 1 and err.strip() == "error: '3X' is not a valid token count for --max-tokens; write a number with " \
                                        "K/M/B/T, e.g. 1M."
    code, _, err = run_cli(["compare", tmp_path / "cmp", "--lr-grid", "fast"], capsys)
    assert code == 1 and "--lr-grid 'fast'" in err


# --------------------------------------------------------------------------- --op upcycle


TINY_DENSE = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 300, "max_position_embeddings": 128,
              "tie_word_embeddings": False}


def test_upcycle_arms_share_the_active_flops_budget():
    arms, budget = plan_upcycle_arms(1000, 1500, dense_tokens=20480, base_fraction=0.5, tokens_per_step=512,
                                     op="upcycle", experts=8, top_k=2)
    base, dense, moe = arms
    assert (base.name, base.steps, base.export, base.grow) == ("base", 20, True, None)
    assert (dense.name, dense.steps, dense.grow) == ("dense", 40, None)
    # C = 6 x 1000 x 40 x 512; the upcycled arm spends it at 1500 active parameters a token: 26.7 -> 27 steps
    assert budget["budget_flops"] == 6 * 1000 * 40 * 512
    assert (moe.name, moe.steps, moe.grow, moe.grow_tokens, moe.top_k) == ("upcycled", 27, "upcycle:8@0", 0, 2)
    assert abs(6 * 1500 * moe.steps * 512 - budget["budget_flops"]) <= 6 * 1500 * 512 / 2
    assert budget["upcycled_tokens"] == 27 * 512 and budget["base_tokens"] == 20 * 512


def test_compare_upcycle_end_to_end(tmp_path, capsys):
    """The README's `hfgrow compare OUT --op upcycle` on a tiny dense Llama and a tiny budget: the dense model is
    pre-trained, then continued dense and upcycled (Mixtral, 4 experts, top-2) at equal active FLOPs."""
    import matplotlib.pyplot as plt

    from hfgrow.arch.layout import hf_config_from_dict
    from hfgrow.growth.timing import count_params
    from hfgrow.train.runlog import read_run

    (tmp_path / "config.json").write_text(json.dumps(TINY_DENSE))
    out = tmp_path / "upcycle"
    code, stdout, err = run_cli(["compare", out, "--op", "upcycle", "--target", tmp_path / "config.json",
                                 "--max-tokens", "4k", "--seq-len", "32", "--batch-size", "8", "--lr", "3e-3",
                                 "--quiet"], capsys)
    assert code == 0, err
    report = json.loads((out / "compare.json").read_text())
    setup = report["setup"]
    assert (setup["experts"], setup["top_k"], setup["target"]) == (4, 2, "mixtral")
    # the counts: the upcycled arm's run.json records the stage it trained as, active parameters by the one counter
    moe_config = json.loads((out / "runs" / "upcycled" / "grown-1" / "config.json").read_text())  # as upcycled
    counted = count_params(hf_config_from_dict(moe_config))
    assert counted.active == setup["upcycled_active_params"] < counted.total == setup["upcycled_params"]
    per_expert = 3 * 32 * 64
    assert counted.active == counted.total - 2 * (4 - 2) * per_expert  # 2 layers, 2 of 4 experts idle per token
    dense_n = count_params(hf_config_from_dict(TINY_DENSE)).total
    assert setup["dense_params"] == dense_n
    moe_run, dense_run = read_run(out / "runs" / "upcycled"), read_run(out / "runs" / "dense")
    assert moe_run.info["stages"][1]["n_active"] == counted.active
    # equal active FLOPs at the budget, within one step of the upcycled arm
    tokens_per_step = 32 * 8
    assert report["total_flops"]["dense"] == dense_run.flops(dense_run.trained_tokens) == setup["budget_flops"]
    assert report["total_flops"]["upcycled"] == 6.0 * counted.active * moe_run.trained_tokens
    assert abs(report["total_flops"]["upcycled"] - setup["budget_flops"]) <= 6.0 * counted.active * tokens_per_step
    assert moe_run.trained_tokens < dense_run.trained_tokens  # k experts cost more than the MLP: fewer tokens
    # step 0: the upcycled model (Mixtral renormalises the top-k weights) computes the dense checkpoint's function
    assert report["step0_loss"]["upcycled"] == pytest.approx(report["step0_loss"]["dense"], rel=1e-5)
    assert report["step0_loss"]["dense"] == pytest.approx(report["final_loss"]["base"], rel=1e-6)
    assert report["curves"]["dense"][0][0] == 0 and report["curves"]["upcycled"][0][0] == 0
    # the ratio is the two arms' final held-out losses, from their own logs
    final = {name: collect(name, out / "runs" / name).final_loss for name in ("dense", "upcycled")}
    assert report["ratio"]["final_loss"] == pytest.approx(final["upcycled"] / final["dense"], rel=1e-12)
    assert len(report["expert_load"]) == 4 and sum(report["expert_load"]) == pytest.approx(1, abs=1e-3)
    assert report["aux_loss"] > 0
    # the table printed and written, and a figure that loads
    assert (out / "compare.md").read_text() in stdout
    assert f"| upcycled | {final['upcycled']:.4f} |" in stdout and "loss x" in stdout
    image = plt.imread(out / "compare.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500


def test_compare_upcycle_refuses_what_does_not_apply(tmp_path, capsys):
    code, _, err = run_cli(["compare", tmp_path / "a", "--op", "upcycle", "--factor", "2"], capsys)
    assert code == 2 and "--factor does not apply to --op upcycle" in err
    code, _, err = run_cli(["compare", tmp_path / "a", "--op", "stack", "--experts", "8"], capsys)
    assert code == 2 and "--experts is for --op upcycle" in err
    with pytest.raises(HfgrowError, match="an experiment of its own; run it apart from --op stack"):
        compare(tmp_path / "b", ops=("upcycle", "stack"), quiet=True)
    gpt2 = tmp_path / "gpt2.json"
    gpt2.write_text(json.dumps({"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "vocab_size": 300}))
    with pytest.raises(HfgrowError, match="'gpt2' has no mixture-of-experts sibling"):
        compare(tmp_path / "c", ops=("upcycle",), config=str(gpt2), quiet=True)
    with pytest.raises(HfgrowError, match="--top-k must be between 1 and --experts"):
        compare(tmp_path / "d", ops=("upcycle",), experts=4, top_k=5, quiet=True)
    with pytest.raises(HfgrowError, match="--base-fraction must be above 0"):
        compare(tmp_path / "e", ops=("upcycle",), base_fraction=0.0, quiet=True)
    assert not any((tmp_path / name).exists() for name in "bcde")  # refused before anything was written
