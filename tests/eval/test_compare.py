"""hfgrow compare: the speedup arithmetic, and a micro end-to-end run through continue.py."""

from __future__ import annotations

import json

import pytest

from hfgrow.eval.compare import Run, compare, flops_to_reach, speedup
from hfgrow.errors import HfgrowError


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


def test_compare_end_to_end(tmp_path):
    config = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 300, "max_position_embeddings": 128,
              "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = compare(tmp_path / "cmp", config=str(tmp_path / "config.json"), factor=2, scratch_tokens=12_000,
                     seq_len=32, batch_size=8, eval_points=3, eval_sequences=8, quiet=True)
    out = tmp_path / "cmp"
    assert (out / "compare.png").stat().st_size > 10_000
    saved = json.loads((out / "compare.json").read_text())
    assert set(saved["final_loss"]) == {"base", "grown-direct", "scratch", "grown-untrained", "small-alone"}
    setup = saved["setup"]
    # equal FLOPs: base phase + grown phase == scratch == small alone (within one step's rounding)
    budget = setup["budget_flops"]
    for name in ("grown-direct", "scratch", "small-alone"):
        assert saved["total_flops"][name] == pytest.approx(budget, rel=0.05), name
    base_tokens = saved["runs"]["base"]["tokens"]
    assert saved["runs"]["grown-direct"]["flops_offset"] == 6 * setup["base_params"] * base_tokens
    assert base_tokens == pytest.approx(setup["base_tokens"], rel=0.1)
    assert setup["base_params"] < setup["target_params"]
    for name, loss in saved["final_loss"].items():
        assert 0 < loss < 10, name
    assert "grown-direct" in (out / "compare.md").read_text()
    assert report["regime"]

    with pytest.raises(HfgrowError, match="not empty"):
        compare(out, config=str(tmp_path / "config.json"), factor=2, quiet=True)
    with pytest.raises(HfgrowError, match="not divisible"):
        compare(tmp_path / "cmp2", config=str(tmp_path / "config.json"), factor=3, quiet=True)
