"""hfgrow.eval.tasks and `hfgrow eval --tasks`: the hand-off to lm-evaluation-harness (faked here)."""

from __future__ import annotations

import sys

import pytest

from helpers.cli import run_cli
from hfgrow.errors import HfgrowError
from hfgrow.eval.tasks import PAPER_TASKS, run_tasks


def test_cli_eval_tasks_without_lm_eval(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` raise ImportError
    code, out, err = run_cli(["eval", str(tmp_path), "--tasks", "piqa"], capsys)
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0
    assert "pip install 'hfgrow[eval]'" in err
    with pytest.raises(HfgrowError, match=r"hfgrow\[eval\]"):
        run_tasks(tmp_path, "paper")


def test_run_tasks_hands_off_to_lm_eval(monkeypatch):
    calls = {}

    class FakeLmEval:
        @staticmethod
        def simple_evaluate(**kwargs):
            calls.update(kwargs)
            return {"results": {t: {"alias": t, "acc,none": 0.5, "acc_stderr,none": 0.01} for t in kwargs["tasks"]}}

    monkeypatch.setitem(sys.modules, "lm_eval", FakeLmEval)
    results = run_tasks("some/model", "paper,piqa", batch_size=2, device="cpu")
    assert calls["model"] == "hf"
    assert calls["model_args"] == "pretrained=some/model,dtype=float32"
    assert calls["tasks"] == list(PAPER_TASKS)  # piqa is in the paper's suite: asked for once
    assert results["piqa"] == {"acc,none": 0.5, "acc_stderr,none": 0.01}
    with pytest.raises(HfgrowError, match="^--tasks is empty"):
        run_tasks("some/model", " , ")
