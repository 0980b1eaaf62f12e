"""BiMix end to end: two domains -> `hfgrow mix entropy` -> hfgrow.continue with the mixture -> fit-format logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hfgrow.mix.law import load_observations
from hfgrow.eval.tiny import make_model, make_tokenizer, python_docs_corpus, tiny_llama_config
from hfgrow.cli.main import main


def test_entropy_mixture_drives_training_and_logs_observations(tmp_path):
    docs = python_docs_corpus(max_chars=80_000)
    prose = tmp_path / "prose.txt"
    prose.write_text("\n\n".join(docs))
    code = tmp_path / "code.txt"
    code.write_text(Path(json.__file__).read_text() + Path(subprocess.__file__).read_text()[:40_000])
    model = tmp_path / "model"
    tokenizer = make_tokenizer(model, text=prose.read_text()[:40_000] + code.read_text()[:20_000], vocab_size=256)
    make_model(model, tiny_llama_config(layers=2, vocab_size=len(tokenizer)), tokenizer=False)  # a row per token

    mix = tmp_path / "mix.json"
    try:
        main(["mix", "entropy", "--data", f"prose={prose}", "--data", f"code={code}", "--tokenizer", str(model),
              "--seq-len", "64", "--out", str(mix)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    mixture = json.loads(mix.read_text())
    proportions = {name: d["proportion"] for name, d in mixture["domains"].items()}
    assert abs(sum(proportions.values()) - 1) < 1e-9 and set(proportions) == {"prose", "code"}

    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "hfgrow.continue", "--model", str(model), "--data", f"prose={prose}",
                    "--data", f"code={code}", "--mixture", str(mix), "--output-dir", str(run), "--seq-len", "32",
                    "--batch-size", "4", "--max-steps", "6", "--eval-steps", "3", "--eval-sequences", "4",
                    "--save-steps", "100", "--no-export"], check=True, capture_output=True, text=True)
    observations = load_observations([run / "eval_observations.jsonl"])
    assert {o.domain for o in observations} == {"prose", "code"}
    assert {o.step for o in observations} == {3, 6}
    for o in observations:
        assert o.mixture == proportions or all(abs(o.mixture[k] - proportions[k]) < 1e-6 for k in proportions)
        assert 0 < o.loss < 10
