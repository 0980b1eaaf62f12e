"""hfgrow.continue's options: help that shows only real defaults, token counts with units, a help without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hfgrow.train.config import build_parser

REQUIRED = ["--model", "m", "--data", "d.txt", "--output-dir", "run"]


def test_help_shows_only_real_defaults():
    text = build_parser().format_help()
    for absent in ("(default: None)", "(default: False)", "(default: [])"):
        assert absent not in text
    for shown in ("per micro-step (default: 8)", "(default: 0.1)", "(default: 5GB)", "(default: all)"):
        assert shown in " ".join(text.split()), shown
    assert "accelerate launch -m hfgrow.continue" in text  # the examples name the installed form


@pytest.mark.parametrize("given, tokens", [("2B", 2_000_000_000), ("2e9", 2_000_000_000), ("500M", 500_000_000),
                                           ("250k", 250_000), ("1_000", 1000)])
def test_max_tokens_takes_counts(given, tokens):
    assert build_parser().parse_args([*REQUIRED, "--max-tokens", given]).max_tokens == tokens


@pytest.mark.parametrize("given", ["2X", "0", "nan"])
def test_bad_max_tokens_is_one_line(given, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*REQUIRED, "--max-tokens", given])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: argument --max-tokens: ")
    assert f"'{given}' is not a valid token count" in err[0] and err[0].endswith("(hfgrow.continue -h lists the options)")


def test_train_help_lists_the_training_options_without_importing_torch():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "hfgrow.cli.main", "train", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hfgrow.continue options:" in proc.stdout and "--max-tokens N" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "hfgrow.train.config" in imported  # the importtime listing is there to be read
    assert not {"torch", "transformers"} & imported
