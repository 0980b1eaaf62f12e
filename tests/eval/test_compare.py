"""hfgrow compare: the FLOPs bookkeeping in process (run logs -> curves, speedup, regime), and one short real run."""

from __future__ import annotations

import json

import pytest
from helpers.cli import run_cli

from hfgrow.errors import HfgrowError
from hfgrow.eval.compare import Run, collect, compare, flops_to_reach, make_report, markdown, plot, speedup
from hfgrow.train.runlog import RunLog


def test_flops_to_reach_and_speedup():
    assert flops_to_reach([(0, 5.0), (10, 4.0), (20, 3.0)], 3.5) == pytest.approx(15.0)
    assert flops_to_reach([(0, 5.0), (10, 4.0)], 3.0) is None
    assert flops_to_reach([(4, 2.0)], 3.0) == 4
    scratch = Run("scratch", params=10, tokens=100, curve=[(3000.0, 4.0), (6000.0, 3.0)])
    grown = Run("grown", params=10, tokens=80, flops_offset=600.0, curve=[(2000.0, 3.5), (4000.0, 2.5)])
    # grown reaches 3.0 at 3000 FLOPs; scratch spent 6000: sp = 6000/3000 - 1
    assert speedup(scratch, grown) == pytest.approx(1.0)
    slow = Run("slow", params=10, tokens=100, curve=[(6000.0, 3.5)])
    assert speedup(scratch, slow) is None


def fake_run(folder, evals: list[tuple[int, float]]) -> None:
    """A run folder as training writes it: an eval record per (tokens, loss), train records up to the last."""
    with RunLog(folder, resume_step=None, write=True) as log:
        for step, (tokens, loss) in enumerate(evals):
            if step:
                log.train({"step": step, "loss": loss + 0.1, "tokens": tokens})
            log.eval(step, tokens, {"text": loss}, mixture={"text": 1.0})


def test_bookkeeping_from_run_logs(tmp_path):
    n_base, n_target = 1_000, 4_000
    fake_run(tmp_path / "base", [(0, 6.0), (500, 5.0)])
    fake_run(tmp_path / "grown", [(0, 5.2), (500, 4.0), (1000, 3.0)])
    fake_run(tmp_path / "scratch", [(0, 6.0), (1000, 4.5), (2000, 3.5)])
    fake_run(tmp_path / "small", [(0, 6.0), (4000, 3.6), (8000, 3.2)])
    base = collect("base", tmp_path / "base", n_base)
    assert base.tokens == 500 and base.total_flops == 6 * n_base * 500
    offset = base.total_flops
    grown = collect("grown-direct", tmp_path / "grown", n_target, offset)
    # each point: the base phase's FLOPs + 6·N·tokens of this run
    assert grown.curve == [(offset, 5.2), (offset + 6 * n_target * 500, 4.0), (offset + 6 * n_target * 1000, 3.0)]
    runs = {"base": base, "grown-direct": grown, "scratch": collect("scratch", tmp_path / "scratch", n_target),
            "small-alone": collect("small-alone", tmp_path / "small", n_base)}
    report = make_report(runs, {"target_params": n_target, "base_params": n_base, "factor": 4,
                                "budget_flops": 6 * n_target * 2000, "scratch_tokens": 2000, "base_tokens": 500})
    # scratch ends at 3.5 after 6·4000·2000 = 48M FLOPs; grown reaches 3.5 half way between its last two points
    reached = offset + 6 * n_target * 750
    assert report["speedup"]["grown-direct"] == pytest.approx(48_000_000 / reached - 1)
    assert report["final_loss"] == {"base": 5.0, "grown-direct": 3.0, "scratch": 3.5, "small-alone": 3.2}
    assert report["best_run"] == "grown-direct" and report["regime"].startswith("target regime")
    # the small model alone beating both: the small-model regime
    runs["small-alone"] = collect("small-alone", tmp_path / "small", n_base)
    runs["small-alone"].curve[-1] = (runs["small-alone"].curve[-1][0], 2.9)
    assert make_report(runs, report["setup"])["regime"].startswith("small-model regime")
    assert f"| grown-direct | 3.0000 | {grown.total_flops:.3g} | {report['speedup']['grown-direct']:+.1%} |" \
        in markdown(report)
    assert plot(runs, tmp_path / "compare.png", report).read_bytes()[:4] == b"\x89PNG"


def test_compare_end_to_end(tmp_path):
    config = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 300, "max_position_embeddings": 128,
              "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = compare(tmp_path / "cmp", config=str(tmp_path / "config.json"), factor=2, scratch_tokens="6k",
                     seq_len=32, batch_size=8, eval_points=2, eval_sequences=4, include_untrained=False,
                     include_small=False, quiet=True)
    out = tmp_path / "cmp"
    saved = json.loads((out / "compare.json").read_text())
    assert saved == json.loads(json.dumps(report)) and (out / "compare.png").stat().st_size > 10_000
    assert set(saved["final_loss"]) == {"base", "grown-direct", "scratch"}
    setup = saved["setup"]
    assert setup["scratch_tokens"] == 6000 and setup["base_tokens"] == 1500  # 6k x --base-fraction 0.25
    # equal FLOPs: base phase + grown phase == scratch (within one step's rounding)
    assert saved["total_flops"]["grown-direct"] == pytest.approx(setup["budget_flops"], rel=0.05)
    assert saved["runs"]["grown-direct"]["flops_offset"] == 6 * setup["base_params"] * saved["runs"]["base"]["tokens"]
    for name, curve in saved["curves"].items():  # every run evaluated before training, at its FLOPs offset
        assert curve[0][0] == saved["runs"][name]["flops_offset"] and 0 < curve[-1][1] < curve[0][1], name

    with pytest.raises(HfgrowError, match="not empty"):
        compare(out, config=str(tmp_path / "config.json"), factor=2, quiet=True)
    with pytest.raises(HfgrowError, match="not divisible"):
        compare(tmp_path / "cmp2", config=str(tmp_path / "config.json"), factor=3, quiet=True)


def test_compare_tokens_take_counts(tmp_path, capsys):
    code, _, err = run_cli(["compare", tmp_path / "cmp", "--tokens", "3X"], capsys)
    assert code == 1 and err.strip() == "error: '3X' is not a valid token count for --tokens; write a number with " \
                                        "K/M/B/T, e.g. 1M."
