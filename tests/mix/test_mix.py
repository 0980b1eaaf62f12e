"""BiMix (hfgrow.mix.bimix, `hfgrow mix`): counts, entropies, readers, law fit, optimisation, CLI.

Everything is offline: tokenizers are trained here on a few KB of text (tests/helpers/mix_data.py).
"""

from __future__ import annotations

import gzip
import json
import math
import random
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from helpers import mix_data as helpers
from hfgrow.errors import HfgrowError
from hfgrow.mix import bimix as mix

VOCAB = [f"w{i}" for i in range(300)]


# ---------------------------------------------------------------------------------------------
# independent reference: plain Python over a token list


def reference_counts(stream: list[int], seq_len: int) -> tuple[Counter, Counter]:
    """Unigrams, and bigrams inside each consecutive seq_len slice of the stream."""
    uni = Counter(stream)
    bi: Counter = Counter()
    for start in range(0, len(stream), seq_len):
        seq = stream[start : start + seq_len]
        bi.update(zip(seq, seq[1:]))
    return uni, bi


def reference_entropies(uni: Counter, bi: Counter) -> dict[str, float]:
    n = sum(uni.values())
    m = sum(bi.values())
    row: Counter = Counter()
    for (a, _), c in bi.items():
        row[a] += c
    se = -sum(c / n * math.log(c / n) for c in uni.values())
    je = -sum(c / m * math.log(c / m) for c in bi.values())
    ce = -sum(c / m * math.log(c / row[a]) for (a, _), c in bi.items())
    return {"se": se, "je": je, "ce": ce}


# ---------------------------------------------------------------------------------------------
# counting and entropies


def test_entropies_hand_computed_literal():
    # stream 0 1 0 | 1 1 with seq_len 3: the boundary pair (0, 1) between positions 2 and 3 is not a bigram.
    # unigrams {0: 2, 1: 3}        SE = -(0.4 ln 0.4 + 0.6 ln 0.6)
    # bigrams {01, 10, 11} once     JE = ln 3
    # rows: 0 -> {1}; 1 -> {0, 1}    CE = -(1/3 ln 1 + 2/3 ln 1/2) = (2/3) ln 2
    c = mix.count_ids([[0, 1, 0, 1, 1]], vocab_size=2, seq_len=3)
    assert c.bigrams() == {(0, 1): 1, (1, 0): 1, (1, 1): 1}
    assert (c.tokens, c.sequences, c.n_bigrams) == (5, 2, 3)
    h = mix.entropies(c)
    assert h["se"] == pytest.approx(0.6730116670092565, abs=1e-12)
    assert h["je"] == pytest.approx(1.0986122886681098, abs=1e-12)
    assert h["ce"] == pytest.approx(0.46209812037329684, abs=1e-12)
    # without the cut the pair is counted: (0, 1) twice
    assert mix.count_ids([[0, 1, 0, 1, 1]], vocab_size=2, seq_len=5).bigrams()[(0, 1)] == 2


@pytest.mark.parametrize("seq_len", [2, 3, 7, 64, 1024])
def test_counts_and_entropies_match_python_counter(seq_len):
    rng = random.Random(seq_len)
    vocab = 50
    stream = [min(int(rng.paretovariate(1.0)), vocab - 1) for _ in range(5000)]
    # feed in ragged chunks, and flush often to exercise the merge of partial tables
    chunks, i = [], 0
    while i < len(stream):
        k = rng.choice([1, 2, 5, 13, 200, 999])
        chunks.append(stream[i : i + k])
        i += k
    counter = mix.TokenCounter(vocab, seq_len, flush_keys=300)
    for ch in chunks:
        counter.add(ch)
    c = counter.finish()
    uni, bi = reference_counts(stream, seq_len)
    assert c.bigrams() == dict(bi)
    assert {i: int(n) for i, n in enumerate(c.unigram) if n} == dict(uni)
    assert c.tokens == len(stream) and c.n_bigrams == c.tokens - c.sequences
    got, want = mix.entropies(c), reference_entropies(uni, bi)
    for k in ("se", "je", "ce"):
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12)


def test_count_ids_max_tokens_cuts_exactly():
    c = mix.count_ids([[1, 2, 3], [4, 5, 6]], vocab_size=8, seq_len=4, max_tokens=5)
    assert c.tokens == 5 and c.bigrams() == {(1, 2): 1, (2, 3): 1, (3, 4): 1}


def test_count_domain_joins_documents_with_eos_and_splits_sequences():
    docs = [helpers.words_text(i, 37 + 11 * i, VOCAB[:40]) for i in range(12)]
    tok = helpers.hf_tokenizer(docs)
    eos = tok.eos_token_id
    stream: list[int] = []
    for d in docs:
        stream += tok(d, add_special_tokens=False)["input_ids"] + [eos]
    for seq_len in (4, 33):
        c = mix.count_domain(iter(docs), tok, seq_len=seq_len, batch_chars=200)
        uni, bi = reference_counts(stream, seq_len)
        assert c.tokens == len(stream) and c.documents == len(docs)
        assert c.bigrams() == dict(bi)
        assert mix.entropies(c) == pytest.approx(reference_entropies(uni, bi), rel=1e-12)
    c = mix.count_domain(iter(docs), tok, seq_len=8, max_tokens=101, batch_chars=50)
    uni, bi = reference_counts(stream[:101], 8)
    assert c.tokens == 101 and c.bigrams() == dict(bi) and c.documents == stream[:101].count(eos)


def test_count_domain_same_ids_as_tokenizer_call_with_special_token_text():
    tok = helpers.hf_tokenizer(["a b c </s> d"])
    text = "a b </s> c d"  # "</s>" in the text is the EOS token, as with tokenizer(text)
    c = mix.count_domain([text], tok, seq_len=100)
    ids = tok([text], add_special_tokens=False)["input_ids"][0] + [tok.eos_token_id]
    assert c.bigrams() == dict(reference_counts(ids, 100)[1])


def test_txt_pieces_give_the_same_tokens_as_the_whole_file(tmp_path):
    text = (helpers.CODE_SNIPPET + helpers.words_text(3, 400, VOCAB[:60])) * 6
    tok = helpers.hf_tokenizer([text], kind="bpe", vocab_size=400)
    path = tmp_path / "code.txt"
    path.write_text(text)
    pieces = list(mix.iter_txt(path, piece_chars=97))
    assert len(pieces) > 20 and "".join(pieces) == text
    assert all(isinstance(p, mix.DocPart) for p in pieces[:-1]) and not isinstance(pieces[-1], mix.DocPart)
    whole = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    c = mix.count_domain(mix.iter_domain_texts(str(path), piece_chars=97), tok, seq_len=50, batch_chars=300)
    uni, bi = reference_counts(whole, 50)
    assert c.tokens == len(whole) and c.bigrams() == dict(bi)


def test_entropy_mixture_is_softmax_and_roundtrips(tmp_path):
    stats = {"a": {"se": 5.0, "je": 9.0, "ce": 3.0, "tokens": 10}, "b": {"se": 6.0, "je": 8.0, "ce": 4.0, "tokens": 20}}
    for measure in ("se", "je", "ce"):
        m = mix.entropy_mixture(stats, measure)
        ea, eb = math.exp(stats["a"][measure]), math.exp(stats["b"][measure])
        assert m["measure"] == measure
        assert m["domains"]["a"]["proportion"] == pytest.approx(ea / (ea + eb), rel=1e-14)
        assert set(m["domains"]["a"]) == {"proportion", "se", "je", "ce", "tokens"}
    mix.save_mixture(m, tmp_path / "m.json")
    assert mix.load_mixture(tmp_path / "m.json") == m


# ---------------------------------------------------------------------------------------------
# readers


def test_readers_jsonl_folder_gz_and_errors(tmp_path):
    folder = tmp_path / "dom"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jsonl").write_text('{"text": "one"}\n\n{"text": ""}\n{"text": "two", "id": 3}\n')
    with gzip.open(folder / "sub" / "b.txt.gz", "wt") as f:
        f.write("three\nfour\n")
    (folder / "notes.csv").write_text("skipped,in,folders\n")
    (folder / ".hidden.txt").write_text("hidden")
    assert list(mix.iter_domain_texts(str(folder))) == ["one", "two", "three\nfour\n"]
    with pytest.raises(HfgrowError, match="does not exist"):
        mix.iter_domain_texts(str(tmp_path / "nope.txt"))
    with pytest.raises(HfgrowError, match="Unknown file type"):
        mix.iter_domain_texts(str(folder / "notes.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HfgrowError, match="holds no"):
        mix.iter_domain_texts(str(tmp_path / "empty"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(HfgrowError, match=r"bad.jsonl:2 has no \"text\" field"):
        list(mix.iter_domain_texts(str(bad)))


def test_reader_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["x y", None, "", "z"], "n": [1, 2, 3, 4]}), tmp_path / "d.parquet")
    assert list(mix.iter_domain_texts(str(tmp_path / "d.parquet"))) == ["x y", "z"]


def test_reader_hf_dataset_streams_with_datasets(monkeypatch):
    calls = []

    def load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([{"text": "alpha"}, {"text": ""}, {"text": "beta"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert list(mix.iter_domain_texts("hf:org/data:cfg:validation")) == ["alpha", "beta"]
    assert calls == [("org/data", "cfg", "validation", True)]
    with pytest.raises(HfgrowError, match="not of the form"):
        mix.iter_domain_texts("hf:")


# ---------------------------------------------------------------------------------------------
# the law

TRUE = {  # A, alpha, B, beta, C
    "web": (2.0, 0.08, 30.0, 0.45, 1.0),
    "code": (1.2, 0.20, 12.0, 0.60, 1.3),
    "books": (2.6, 0.05, 50.0, 0.35, 0.8),
}


def true_loss(domain, r, s):
    A, a, B, b, C = TRUE[domain]
    return A / r**a * (B / s**b + C)


MIXTURES = [
    (1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.2, 0.6, 0.2), (0.2, 0.2, 0.6), (0.5, 0.4, 0.1),
    (0.1, 0.3, 0.6), (0.4, 0.1, 0.5), (0.7, 0.15, 0.15), (0.15, 0.7, 0.15), (0.3, 0.5, 0.2),
]  # fmt: skip
STEPS = [round(100 * 2 ** (k / 2)) for k in range(19)]  # 100 ... 51200


def synthetic_observations(noise=0.01, seed=0):
    """Every mixture evaluated on every domain at every step, loss × (1 + noise·N(0, 1))."""
    rng = np.random.default_rng(seed)
    out = []
    for m in MIXTURES:
        mixture = dict(zip(TRUE, m))
        for s in STEPS:
            for d in TRUE:
                loss = true_loss(d, mixture[d], s) * (1 + noise * rng.standard_normal())
                out.append(mix.Observation(mixture, float(s), d, float(loss)))
    return out


def test_fit_recovers_known_law_and_predicts_held_out_points_within_1pct():
    obs = synthetic_observations()
    train, held = mix.split_holdout(obs, 0.2, by="mixture", seed=0)  # 2 of 10 mixtures unseen
    assert held and train
    law = mix.fit_law(train)
    for d, (A, a, B, b, C) in TRUE.items():
        fit = law.domains[d]
        assert fit.fit["r2"] > 0.99 and fit.fit["mre"] < 0.012
        assert fit.alpha == pytest.approx(a, abs=0.02)
        assert fit.beta == pytest.approx(b, abs=0.05)
        # (A, B, C) is known only up to (A k, B/k, C/k): compare the products the data fixes
        assert fit.A * fit.C == pytest.approx(A * C, rel=0.05)
        assert fit.A * fit.B == pytest.approx(A * B, rel=0.3)
    for o in held:  # unseen mixtures, every step: against the noise-free truth
        assert law.predict(o.domain, o.proportion, o.step) == pytest.approx(true_loss(o.domain, o.proportion, o.step), rel=0.01)
    # extrapolation to 4x the longest run: within 1.5%
    for d in TRUE:
        for r in (0.1, 0.3, 0.8):
            assert law.predict(d, r, 4 * STEPS[-1]) == pytest.approx(true_loss(d, r, 4 * STEPS[-1]), rel=0.015)


def test_fit_law_holdout_reports_and_law_json_roundtrips(tmp_path):
    law = mix.fit_law(synthetic_observations(noise=0.0), holdout=0.3, holdout_by="step")
    for d in TRUE:
        assert law.domains[d].fit["holdout"]["mre"] < 1e-6  # exact data: exact fit
    mix.save_law(law, tmp_path / "law.json")
    again = mix.load_law(tmp_path / "law.json")
    for d in TRUE:
        assert again.predict(d, 0.25, 3000) == pytest.approx(law.predict(d, 0.25, 3000), rel=1e-15)
        assert again.predict(d, 0.25, 3000) == pytest.approx(true_loss(d, 0.25, 3000), rel=1e-6)


def test_optimize_two_domains_matches_analytic_optimum():
    # L_i = A_i r_i^-α K with K = B S^-β + C equal for both domains (equal B, C, β, α).
    # Minimise Σ A_i K r_i^-α subject to Σ r_i = 1: Lagrange gives α A_i K r_i^(-α-1) = λ, so
    # r_i = (α A_i K / λ)^(1/(1+α)) ∝ A_i^(1/(1+α)); K and λ cancel when normalising.
    alpha = 0.3
    law = mix.Law({"a": mix.DomainLaw(1.5, alpha, 7.0, 0.4, 0.9), "b": mix.DomainLaw(4.0, alpha, 7.0, 0.4, 0.9)})
    r = mix.optimize_mixture(law, 5000, floor=1e-3)
    wa, wb = 1.5 ** (1 / (1 + alpha)), 4.0 ** (1 / (1 + alpha))
    assert r["a"] == pytest.approx(wa / (wa + wb), abs=1e-3)
    assert r["b"] == pytest.approx(wb / (wa + wb), abs=1e-3)
    assert abs(r["a"] - wa / (wa + wb)) < 1e-9  # in fact exact
    assert sum(r.values()) == pytest.approx(1.0, abs=1e-12)


def test_optimize_general_law_beats_every_feasible_mixture_and_respects_floor():
    law = mix.Law({name: mix.DomainLaw(*p) for name, p in TRUE.items()} | {"tiny": mix.DomainLaw(1.0, 0.0005, 1.0, 0.5, 1.0)})
    floor = 0.01
    r = mix.optimize_mixture(law, 20000, floor=floor)
    assert min(r.values()) >= floor - 1e-15 and sum(r.values()) == pytest.approx(1.0, abs=1e-12)
    assert r["tiny"] == pytest.approx(floor)  # gains almost nothing from data: held at the floor
    best = law.total(r, 20000)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        x = rng.dirichlet(np.ones(4)) * (1 - 4 * floor) + floor
        assert law.total(dict(zip(law.domains, x)), 20000) >= best - 1e-12
    from scipy.optimize import minimize

    names = list(law.domains)
    res = minimize(lambda x: law.total(dict(zip(names, x)), 20000), np.full(4, 0.25), method="SLSQP",
                   bounds=[(floor, 1)] * 4, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}], options={"ftol": 1e-14})
    assert np.allclose(res.x, [r[n] for n in names], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# the command line


def run_cli(args, capsys):
    from hfgrow.cli.main import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


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
    code, stdout, err = run_cli(["mix", "entropy", "--domain", f"a={domains / 'a.txt'}", "--domain", f"b={domains / 'b.jsonl'}",
                                 "--tokenizer", str(domains / "tok"), "--seq-len", "128", "--out", str(out)], capsys)
    assert code == 0, err
    m = mix.load_mixture(out)
    assert m["measure"] == "ce" and set(m["domains"]) == {"a", "b"}
    a, b = m["domains"]["a"], m["domains"]["b"]
    assert b["se"] > a["se"]  # b draws from more words, more evenly
    assert a["proportion"] == pytest.approx(1 / (1 + math.exp(b["ce"] - a["ce"])), rel=1e-12)
    for name in ("a", "b"):
        d = m["domains"][name]
        assert set(d) == {"proportion", "se", "je", "ce", "tokens"} and d["tokens"] > 3000
        assert f"{d['ce']:.4f}" in stdout
    assert "SE" in stdout and "proportion" not in err


def test_cli_fit_and_optimize(tmp_path, capsys):
    log = tmp_path / "eval.jsonl"
    mix.save_observations(synthetic_observations(), log)
    code, stdout, err = run_cli(["mix", "fit", str(log), "--holdout", "0.3", "--out", str(tmp_path / "law.json")], capsys)
    assert code == 0, err
    assert "holdout R2" in stdout and all(d in stdout for d in TRUE)
    code, stdout, err = run_cli(["mix", "optimize", str(tmp_path / "law.json"), "--steps", "20000", "--out", str(tmp_path / "opt.json")], capsys)
    assert code == 0, err
    m = mix.load_mixture(tmp_path / "opt.json")
    assert m["measure"] == "law" and set(m["domains"]) == set(TRUE)
    law = mix.load_law(tmp_path / "law.json")
    assert m["domains"]["code"]["proportion"] == pytest.approx(mix.optimize_mixture(law, 20000)["code"], abs=1e-12)


def write(path: Path, text: str) -> None:
    path.write_text(text)


def _obs_line(mixture, step, domain, loss):
    return json.dumps({"mixture": mixture, "step": step, "domain": domain, "loss": loss}) + "\n"


BAD = {
    "empty domain": (lambda d: write(d / "e.txt", "") or ["entropy", "--domain", f"a={d / 'a.txt'}", "--domain", f"e={d / 'e.txt'}"], "empty"),
    "single domain": (lambda d: ["entropy", "--domain", f"a={d / 'a.txt'}"], "at least 2 domains"),
    "duplicate names": (lambda d: ["entropy", "--domain", f"a={d / 'a.txt'}", "--domain", f"a={d / 'b.jsonl'}"], "twice"),
    "unknown file type": (lambda d: write(d / "x.csv", "a,b") or ["entropy", "--domain", f"a={d / 'a.txt'}", "--domain", f"x={d / 'x.csv'}"], "Unknown file type"),
    "missing file": (lambda d: ["entropy", "--domain", f"a={d / 'a.txt'}", "--domain", f"m={d / 'missing.txt'}"], "does not exist"),
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


def test_mixture_validation_errors(tmp_path):
    good = {"measure": "ce", "domains": {"a": {"proportion": 0.4}, "b": {"proportion": 0.6}}}
    mix.validate_mixture(good)
    p = tmp_path / "m.json"
    p.write_text('{"measure": "ce", "domains": {"a": {"proportion": 0.5}, "a": {"proportion": 0.5}}}')
    with pytest.raises(HfgrowError, match="twice"):
        mix.load_mixture(p)
    with pytest.raises(HfgrowError, match="sum to"):
        mix.validate_mixture({"domains": {"a": {"proportion": 0.4}, "b": {"proportion": 0.5}}})
    with pytest.raises(HfgrowError, match="no positive proportion"):
        mix.validate_mixture({"domains": {"a": {"proportion": 0.0}, "b": {"proportion": 1.0}}})
    with pytest.raises(HfgrowError, match="at least 2"):
        mix.entropy_mixture({"a": {"se": 1, "je": 1, "ce": 1, "tokens": 3}})
    with pytest.raises(HfgrowError, match="empty"):
        mix.entropy_mixture({"a": mix.count_ids([], 4, 4), "b": mix.count_ids([[1, 2]], 4, 4)})
