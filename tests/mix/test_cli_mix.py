"""`hfgrow mix entropy|fit|optimize`: outputs, one-line errors, and what `mix fit --help` imports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import mix_data as helpers
from helpers.cli import run_cli
from helpers.mix_data import TRUE_LAW, synthetic_observations
from hfgrow.data.mixture import read_mixture
from hfgrow.mix.law import Observation, load_law, save_observations
from hfgrow.mix.optimize import optimize_mixture

VOCAB = [f"w{i}" for i in range(300)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def domains(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a = helpers.words_text(0, 3000, VOCAB[:80])
    b = helpers.words_text(1, 3000, VOCAB, zipf=0.5)
    (tmp_path / "a.txt").write_text(a)
    with open(tmp_path / "b.jsonl", "w") as f:
        for i in range(0, len(b), 400):
            f.write(json.dumps({"text": b[i : i + 400]}) + "\n")
    helpers.save_tokenizer(tmp_path / "tok", [a, b])
    return tmp_path


def test_cli_entropy_writes_a_valid_mixture(domains, capsys):
    out = domains / "mix.json"
    code, stdout, err = run_cli(["mix", "entropy", "--data", f"a={domains / 'a.txt'}", "--data", f"b={domains / 'b.jsonl'}",
                                 "--tokenizer", str(domains / "tok"), "--seq-len", "128", "--out", str(out)], capsys)
    assert code == 0, err
    m = json.loads(out.read_text())
    assert m["measure"] == "ce" and set(m["domains"]) == {"a", "b"}
    a, b = m["domains"]["a"], m["domains"]["b"]
    assert b["se"] > a["se"]  # b draws from more words, more evenly
    assert a["proportion"] == pytest.approx(1 / (1 + math.exp(b["ce"] - a["ce"])), rel=1e-12)
    assert read_mixture(out, ["a", "b"]) == pytest.approx({"a": a["proportion"], "b": b["proportion"]}, rel=1e-15)
    for name in ("a", "b"):
        d = m["domains"][name]
        assert set(d) == {"proportion", "se", "je", "ce", "tokens"} and d["tokens"] > 3000
        assert f"{d['ce']:.4f}" in stdout
    assert "SE (nats)" in stdout and "proportion" not in err
    assert (m["rule"], m["log_base"], m["temperature"]) == ("softmax", "e", 1.0)


def test_cli_entropy_takes_the_old_domain_spelling_with_a_warning(domains, capsys):
    """--domain (0.2) still works for one release and says it is now --data; the mixture is the same."""
    new, old = domains / "new.json", domains / "old.json"
    common = ["--tokenizer", str(domains / "tok"), "--seq-len", "128"]
    assert run_cli(["mix", "entropy", "--data", f"a={domains / 'a.txt'}", "--data", f"b={domains / 'b.jsonl'}",
                    *common, "--out", new], capsys)[0] == 0
    code, _, err = run_cli(["mix", "entropy", "--domain", f"a={domains / 'a.txt'}", "--domain",
                            f"b={domains / 'b.jsonl'}", *common, "--out", old], capsys)
    assert code == 0 and "warning: --domain is now --data" in err
    assert json.loads(old.read_text()) == json.loads(new.read_text())


def test_cli_entropy_base_and_temperature_are_explicit(domains, capsys):
    """--log-base 2 and --temperature 0.5 are recorded; the proportions follow softmax(H_bits / 0.5), checked
    against the nats entropies the default run writes (H_bits = H_nats / ln 2)."""
    args = ["mix", "entropy", "--data", f"a={domains / 'a.txt'}", "--data", f"b={domains / 'b.jsonl'}",
            "--tokenizer", str(domains / "tok"), "--seq-len", "128"]
    assert run_cli([*args, "--out", str(domains / "nats.json")], capsys)[0] == 0
    code, stdout, err = run_cli([*args, "--log-base", "2", "--temperature", "0.5", "--out", str(domains / "bits.json")],
                                capsys)
    assert code == 0, err
    nats, bits = (json.loads((domains / f"{n}.json").read_text()) for n in ("nats", "bits"))
    assert (bits["log_base"], bits["temperature"]) == ("2", 0.5) and "CE (bits)" in stdout
    ca, cb = (nats["domains"][d]["ce"] / math.log(2) for d in ("a", "b"))
    assert bits["domains"]["a"]["ce"] == pytest.approx(ca, rel=1e-12)
    assert bits["domains"]["a"]["proportion"] == pytest.approx(1 / (1 + math.exp((cb - ca) / 0.5)), rel=1e-12)


def test_cli_fit_and_optimize(tmp_path, capsys):
    log = tmp_path / "eval.jsonl"
    save_observations(synthetic_observations(), log)
    code, stdout, err = run_cli(["mix", "fit", str(log), "--holdout", "0.3", "--out", str(tmp_path / "law.json")], capsys)
    assert code == 0, err
    assert "holdout R2" in stdout and all(d in stdout for d in TRUE_LAW)
    code, stdout, err = run_cli(["mix", "optimize", str(tmp_path / "law.json"), "--steps", "20000", "--out", str(tmp_path / "opt.json")], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "opt.json").read_text())
    assert m["measure"] == "law" and set(m["domains"]) == set(TRUE_LAW)
    law = load_law(tmp_path / "law.json")
    assert m["domains"]["code"]["proportion"] == pytest.approx(optimize_mixture(law, 20000)["code"], abs=1e-12)


def write(path: Path, text: str) -> None:
    path.write_text(text)


def _obs_line(mixture, step, domain, loss):
    return json.dumps({"mixture": mixture, "step": step, "domain": domain, "loss": loss}) + "\n"


BAD = {
    "empty domain": (lambda d: write(d / "e.txt", "") or ["entropy", "--data", f"a={d / 'a.txt'}", "--data", f"e={d / 'e.txt'}"], "empty"),
    "single domain": (lambda d: ["entropy", "--data", f"a={d / 'a.txt'}"], "at least 2 domains"),
    "duplicate names": (lambda d: ["entropy", "--data", f"a={d / 'a.txt'}", "--data", f"a={d / 'b.jsonl'}"], "twice"),
    "no name": (lambda d: ["entropy", "--data", f"a={d / 'a.txt'}", "--data", str(d / "b.jsonl")], "has no name"),
    "unknown file type": (lambda d: write(d / "x.csv", "a,b") or ["entropy", "--data", f"a={d / 'a.txt'}", "--data", f"x={d / 'x.csv'}"], "unknown file type"),
    "missing file": (lambda d: ["entropy", "--data", f"a={d / 'a.txt'}", "--data", f"m={d / 'missing.txt'}"], "does not exist"),
    "too few observations": (
        lambda d: write(d / "few.jsonl", "".join(_obs_line({"a": 0.5, "b": 0.5}, s, "a", 3.0 - s / 1e4) for s in (100, 200, 300, 400)))
        or ["fit", str(d / "few.jsonl")],
        "at least 5",
    ),
    "proportions not summing to 1": (
        lambda d: write(d / "sum.jsonl", _obs_line({"a": 0.5, "b": 0.4}, 100, "a", 3.0)) or ["fit", str(d / "sum.jsonl")],
        "sum to 0.9",
    ),
    "law with a single domain": (
        lambda d: write(d / "law.json", json.dumps({"domains": {"a": {"A": 1, "alpha": 0.1, "B": 1, "beta": 0.5, "C": 1}}}))
        or ["optimize", str(d / "law.json"), "--steps", "100"],
        "at least 2 domains",
    ),
    "missing log": (lambda d: ["fit", str(d / "nope.jsonl")], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_cli_bad_input_is_one_line_and_exit_1(case, domains, capsys):
    make_args, needle = BAD[case]
    args = make_args(domains)
    if args[0] == "entropy":
        args += ["--tokenizer", str(domains / "tok")]
    code, stdout, err = run_cli(["mix", *args], capsys)
    assert code == 1, (case, stdout, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (case, err)
    message = lines[0][len("error: "):]
    assert not message[0].isupper() and message.endswith("."), message  # the project's error style


@pytest.mark.parametrize("command", ["fit", "optimize"])
def test_fit_and_optimize_help_import_neither_torch_nor_transformers(command):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "hfgrow.cli.main", "mix", command, "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "click" in imported  # the import log was read
    assert not {name for name in imported if name.split(".")[0] in ("torch", "transformers")}


# ---------------------------------------------------------------- issue 15: fits and extrapolations to distrust


def short_runs(tmp_path: Path) -> Path:
    """Three mixtures evaluated at steps 1-6 only, on a pure power law in s: the loss never levels off, so
    the fitted floor A·C collapses to ~0 (the degenerate fit the issue reported: A 1.96e-11, C pinned)."""
    log = tmp_path / "short.jsonl"
    obs = [Observation({"a": r, "b": 1 - r}, float(s), d, 5.0 * (r if d == "a" else 1 - r) ** -0.1 * s ** -0.3)
           for r in (0.2, 0.5, 0.8) for s in range(1, 7) for d in ("a", "b")]
    save_observations(obs, log)
    return log


def test_fit_reports_what_the_data_fix_and_warns_about_a_degenerate_floor(tmp_path, capsys):
    code, stdout, err = run_cli(["mix", "fit", str(short_runs(tmp_path)), "--out", str(tmp_path / "law.json")], capsys)
    assert code == 0, err
    law = load_law(tmp_path / "law.json")
    # the table shows the gauge-free products, A*B and A*C, and the observed steps
    header, *rows = stdout.splitlines()[:3]
    assert header.split() == ["domain", "n", "steps", "alpha", "beta", "A*B", "A*C", "(floor)", "R2", "mean", "rel",
                              "err"]
    a = law.domains["a"]
    assert rows[0].split()[:7] == ["a", "18", "1-6", f"{a.alpha:.4g}", f"{a.beta:.4g}", f"{a.A * a.B:.4g}",
                                   f"{a.A * a.C:.4g}"]
    assert "compare those with the paper's tables" in stdout
    # the data are 5·r^-0.1·s^-0.3 exactly: A*B recovers 5, and the floor is ~0, under 1% of the lowest loss
    lowest = 5.0 * 0.8 ** -0.1 * 6 ** -0.3  # domain a's lowest observed loss: r = 0.8, s = 6
    assert a.A * a.B == pytest.approx(5.0, rel=1e-4) and a.A * a.C < 0.01 * lowest
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and all("has a loss floor A·C" in w and "cannot be extrapolated" in w for w in warnings)


def test_fit_warns_when_the_law_explains_little(tmp_path, capsys):
    """Losses that do not follow the law (noise of ±20% around 3): R² near 0, far under the 0.9 threshold."""
    rng = __import__("random").Random(0)
    obs = [Observation({"a": r, "b": 1 - r}, float(s), "a", 3.0 * (1 + 0.2 * rng.uniform(-1, 1)))
           for r in (0.3, 0.7) for s in (100, 200, 400, 800, 1600)]
    save_observations(obs, tmp_path / "noise.jsonl")
    code, _, err = run_cli(["mix", "fit", str(tmp_path / "noise.jsonl"), "--holdout", "0.2", "--holdout-by",
                            "random"], capsys)
    assert code == 0
    poor = [line for line in err.splitlines() if line.startswith("warning: the fit of domain 'a' is poor (R² ")]
    assert len(poor) == 1 and "BiMix reports R² 0.97-0.99 and ~0.2%" in poor[0]
    # the synthetic law of the other tests (1% noise, runs of 100-51,200 steps) fits well: no warning
    save_observations(synthetic_observations(), tmp_path / "good.jsonl")
    code, _, err = run_cli(["mix", "fit", str(tmp_path / "good.jsonl"), "--holdout", "0.3"], capsys)
    assert code == 0 and "warning" not in err


def test_optimize_warns_far_outside_the_fitted_steps(tmp_path, capsys):
    save_observations(synthetic_observations(), tmp_path / "good.jsonl")  # longest run: 51,200 steps
    assert run_cli(["mix", "fit", str(tmp_path / "good.jsonl"), "--out", str(tmp_path / "law.json")], capsys)[0] == 0
    code, _, err = run_cli(["mix", "optimize", str(tmp_path / "law.json"), "--steps", "512000"], capsys)
    assert code == 0 and err == ""  # 10x: the limit, no warning
    code, _, err = run_cli(["mix", "optimize", str(tmp_path / "law.json"), "--steps", "1e6"], capsys)
    assert code == 0
    # 1e6 / 51,200 = 19.5x; an error of 0.05 in beta scales the reducible loss by 19.53^0.05 = 1.16
    assert err == ("warning: --steps 1,000,000 is 20x the longest run the law was fitted on (51,200 steps), more "
                   "than 10x: an error of 0.05 in a fitted beta changes the predicted loss above the floor by a "
                   "factor 1.16 there; fit the law on runs of at least 100,000 steps.\n")
    # the case: runs of <= 6 steps optimised for 50,000 steps; the degenerate floors are repeated too
    assert run_cli(["mix", "fit", str(short_runs(tmp_path)), "--out", str(tmp_path / "short.json")], capsys)[0] == 0
    code, _, err = run_cli(["mix", "optimize", str(tmp_path / "short.json"), "--steps", "50000"], capsys)
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 3 and sum("has a loss floor" in line for line in lines) == 2
    assert lines[-1].startswith("warning: --steps 50,000 is 8,333x the longest run the law was fitted on (6 steps)")
