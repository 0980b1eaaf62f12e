"""hfgrow.data.tokens: the token folder (writer, format, reader), its sampler, and `hfgrow tokenize`."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import mix_data
from helpers.cli import run_cli
from hfgrow.data.loading import build_data
from hfgrow.data.packing import domain_key, draw_domains
from hfgrow.data.tokenization import token_stream
from hfgrow.data.specs import DomainSpec, open_domain, parse_specs
from hfgrow.data.token_folder import INDEX_FILE, PROGRESS_FILE, TokenFolder, tokenizer_fingerprint
from hfgrow.data.tokens import TokenMixture, permute, tokenize_to_folder
from hfgrow.errors import HfgrowError

ROOT = Path(__file__).resolve().parents[2]
VOCAB = [f"w{i}" for i in range(40)]


def sentences(n_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(6, 30))) for _ in range(n_docs)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    docs_a, docs_b = sentences(400, 1), sentences(150, 2)
    (root / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs_a))
    (root / "b").mkdir()
    (root / "b" / "one.txt").write_text("\n".join(docs_b[:70]))
    (root / "b" / "two.md").write_text("\n".join(docs_b[70:]))
    tok = mix_data.hf_tokenizer(docs_a + docs_b, kind="bpe", vocab_size=200)
    (root / "tok").mkdir()
    tok.save_pretrained(root / "tok")
    specs = parse_specs([f"a={root / 'a.jsonl'}", f"b={root / 'b'}"])
    tokenize_to_folder(specs, tok, root / "out", shard_chars=3000)
    return root, tok, specs, docs_a


# --------------------------------------------------------------------------- the format


def test_the_folder_holds_the_token_stream_of_each_domain(corpus):
    root, tok, specs, docs_a = corpus
    folder = TokenFolder(root / "out")
    assert folder.names == ["a", "b"]
    a = folder.domain("a")
    expected: list[int] = []
    ends = []
    for doc in docs_a:  # independent construction: one tokenizer call per document, then EOS
        expected += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ends.append(len(expected))
    assert a.tokens(0, a.n_tokens).tolist() == expected
    assert a.document_ends().tolist() == ends and a.n_documents == len(docs_a) == 400
    assert len(a.shards) > 5  # several shards: reads across shard boundaries are tested below
    w = a.starts[2] - 3  # a window that straddles two shards
    assert a.tokens(int(w), int(w) + 7).tolist() == expected[int(w) : int(w) + 7]
    b = folder.domain("b")
    b_docs = list(open_domain(DomainSpec("b", str(root / "b"))).texts())
    assert b.tokens(0, b.n_tokens).tolist() == token_stream(tok, b_docs)
    index = json.loads((root / "out" / INDEX_FILE).read_text())
    assert index["dtype"] == "uint16" and a.dtype == np.uint16
    assert index["tokenizer"] == tokenizer_fingerprint(tok, None) | {"name": index["tokenizer"]["name"]}
    assert index["domains"]["a"]["tokens"] == len(expected) and index["domains"]["b"]["documents"] == 2
    assert (root / "out" / "a" / "000000.bin").stat().st_size == 2 * index["domains"]["a"]["shards"][0]["tokens"]
    assert not (root / "out" / PROGRESS_FILE).exists()


def test_large_vocabularies_get_uint32(corpus, tmp_path):
    root, tok, _, docs_a = corpus
    big = mix_data.hf_tokenizer(docs_a[:50], kind="bpe", vocab_size=200)
    big.add_tokens([f"<extra_{i}>" for i in range(70_000)])
    index = tokenize_to_folder(parse_specs([f"a={root / 'a.jsonl'}"]), big, tmp_path / "wide")
    domain = TokenFolder(tmp_path / "wide").domain("a")
    assert index["dtype"] == "uint32" and domain.dtype == np.uint32
    assert domain.tokens(0, 20).tolist() == token_stream(big, docs_a, max_tokens=20)


def test_workers_write_the_same_bytes(corpus, tmp_path):
    root, tok, specs, _ = corpus
    tokenize_to_folder(specs, tok, tmp_path / "two", shard_chars=3000, workers=2)
    for name in ("a", "b"):
        files = sorted(p.name for p in (root / "out" / name).iterdir())
        assert files == sorted(p.name for p in (tmp_path / "two" / name).iterdir())
        for f in files:
            assert (root / "out" / name / f).read_bytes() == (tmp_path / "two" / name / f).read_bytes(), f


def test_killed_tokenize_reruns_to_the_same_folder(corpus, tmp_path):
    root, tok, specs, _ = corpus
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "hfgrow.cli.main", "tokenize", str(out), "--data", f"a={root / 'a.jsonl'}",
            "--data", f"b={root / 'b'}", "--tokenizer", str(root / "tok"), "--shard-size", "3000", "-j", "1", "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "HFGROW_DEBUG_TOKENIZE_KILL_AFTER": "3"}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / PROGRESS_FILE).is_file() and not (out / INDEX_FILE).exists()
    assert len(list((out / "a").glob("*.json"))) == 3
    (out / "a" / "000003.bin.tmp-123").write_bytes(b"half a shard")  # what a kill mid-write leaves
    with pytest.raises(HfgrowError, match="unfinished"):
        parse_specs([str(out)])
    del env["HFGROW_DEBUG_TOKENIZE_KILL_AFTER"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not list(out.rglob("*.tmp-*"))
    for p in (root / "out").rglob("*"):
        if p.is_file() and p.name != INDEX_FILE:
            assert p.read_bytes() == (out / p.relative_to(root / "out")).read_bytes(), p
    done = json.loads((out / INDEX_FILE).read_text())
    assert done["domains"] == json.loads((root / "out" / INDEX_FILE).read_text())["domains"]


def test_tokenize_cli_and_its_refusals(corpus, tmp_path, capsys):
    root, tok, specs, _ = corpus
    out = tmp_path / "cli"
    code, stdout, err = run_cli(["tokenize", out, "--data", f"a={root / 'a.jsonl'}", "--tokenizer", root / "tok",
                                 "-j", "1"], capsys)
    assert code == 0, err
    assert "a: " in stdout and "400 documents" in stdout and f"wrote {out}" in stdout
    code, stdout, err = run_cli(["tokenize", out, "--data", f"a={root / 'a.jsonl'}", "--tokenizer", root / "tok",
                                 "-q"], capsys)
    assert code == 0  # a finished folder of the same request: nothing to do
    cases = [
        ([out, "--data", f"b={root / 'b'}"], "holds tokens of other data"),
        ([root / "b", "--data", f"a={root / 'a.jsonl'}"], "is not a token folder"),
        ([tmp_path / "x", "--data", str(out)], "is a token folder already"),
        ([tmp_path / "y", "--data", f"a={root / 'missing.jsonl'}"], "does not exist"),
    ]
    for args, message in cases:
        code, _, err = run_cli(["tokenize", *args, "--tokenizer", root / "tok", "-q"], capsys)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    code, _, err = run_cli(["compare", tmp_path / "cmp", "--data", out], capsys)
    assert code == 1 and err.strip() == (f"error: '{out}' is a token folder; compare trains its own tokenizer on "
                                         "the text, so give it the text files the folder was made from.")


# --------------------------------------------------------------------------- specs and reading


def test_a_token_folder_stands_for_its_domains(corpus):
    root, _, _, _ = corpus
    out = str(root / "out")
    assert parse_specs([out]) == [DomainSpec("a", out, "a"), DomainSpec("b", out, "b")]
    with pytest.raises(HfgrowError, match="holds 2 domains"):
        parse_specs([f"web={out}"])
    with pytest.raises(HfgrowError, match="given twice"):
        parse_specs([out, f"a={root / 'a.jsonl'}"])
    with pytest.raises(HfgrowError, match="token folder, not text|holds token ids"):
        list(open_domain(parse_specs([out])[0]).texts())


def test_a_token_folder_of_another_tokenizer_is_refused(corpus):
    root, _, _, docs_a = corpus
    other = mix_data.hf_tokenizer(docs_a)  # word-level: another vocabulary
    with pytest.raises(HfgrowError, match="was made with tokenizer .* not this model's tokenizer"):
        build_data(parse_specs([str(root / "out")]), other, 16, eval_sequences=0)


def test_permute_is_a_keyed_bijection():
    for n in (1, 2, 3, 10, 17, 1000, 4099):
        y = permute(np.arange(n), n, (0, 1, 2))
        assert sorted(y.tolist()) == list(range(n)), n
    a, b = permute(np.arange(1000), 1000, (0, 1, 2)), permute(np.arange(1000), 1000, (0, 1, 3))
    assert (a != b).mean() > 0.9 and abs(np.corrcoef(np.arange(1000), a)[0, 1]) < 0.1
    assert permute([5, 7], 1000, (0, 1, 2)).tolist() == a[[5, 7]].tolist()  # any position alone
    big = permute(np.arange(10_000), 10**12, (9,))
    assert len(set(big.tolist())) == 10_000 and big.max() < 10**12


def test_the_global_batch_does_not_depend_on_the_process_count(corpus):
    root, tok, _, _ = corpus
    specs = parse_specs([str(root / "out")])

    def fresh():
        return build_data(specs, tok, 16, seed=3, eval_sequences=2).train

    one = fresh()
    batches = [one.next_batch(8) for _ in range(12)]
    for world in (2, 4):
        ranks = [fresh() for _ in range(world)]
        for b in batches:
            parts = [r.next_batch(8, rank, world) for rank, r in enumerate(ranks)]
            assert [x for p in parts for x in p] == list(b)
    flat = [x for b in batches for x in b]
    assert [i for i, _, _ in flat] == list(range(96))
    assert all(len(s) == 16 for _, _, s in flat)
    assert (batches[0].ids == np.array([s for _, _, s in batches[0]])).all()
    # an independent construction of sequence k: domain drawn from (seed, k), window from its rank in the domain
    windows = {n: TokenFolder(root / "out").domain(n) for n in ("a", "b")}
    choice = draw_domains(3, np.array([0.5, 0.5]), 0, 96)
    for k, (i, name, seq) in enumerate(flat):
        assert name == "ab"[choice[k]]
        j = int((choice[:k] == choice[k]).sum())
        n = windows[name].n_windows(16) - 2
        w = 2 + int(permute([j % n], n, (3, domain_key(name), j // n))[0])
        assert seq == windows[name].window(w, 16).tolist()


def test_eval_windows_are_held_out_and_epochs_cover_every_training_window(corpus):
    root, tok, _, _ = corpus
    data = build_data(parse_specs([str(root / "out")]), tok, 128, seed=0, eval_sequences=3)
    b = TokenFolder(root / "out").domain("b")
    assert data.eval["b"] == [b.window(w, 128).tolist() for w in range(3)]
    n_b = b.n_windows(128) - 3
    seen = [tuple(s) for batch in (data.train.next_batch(10) for _ in range(60)) for _, name, s in batch if name == "b"]
    assert len(seen) > 2 * n_b  # more than two epochs of b
    first_epoch = seen[:n_b]
    assert sorted(first_epoch) == sorted(tuple(b.window(w, 128).tolist()) for w in range(3, 3 + n_b))
    assert seen[n_b : 2 * n_b] != first_epoch  # each epoch in its own order


def test_token_data_resume_is_exact_and_the_mixture_holds(corpus, tmp_path):
    root, tok, _, _ = corpus
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"domains": {"a": 3, "b": 1}}))
    specs = parse_specs([str(root / "out")])

    def fresh():
        return build_data(specs, tok, 16, seed=5, eval_sequences=2, mixture=mix)

    d1 = fresh()
    batches = [d1.train.next_batch(8) for _ in range(50)]
    share_a = sum(name == "a" for b in batches for _, name, _ in b) / 400
    assert 0.68 < share_a < 0.82
    d2 = fresh()
    for _ in range(20):
        d2.train.next_batch(8)
    state = json.loads(json.dumps(d2.train.state_dict()))
    assert state == {"kind": "tokens", "drawn": 160, "domains": {"a": {"taken": state["domains"]["a"]["taken"]},
                                                                  "b": {"taken": 160 - state["domains"]["a"]["taken"]}}}
    d3 = fresh()
    d3.train.load_state_dict(state)
    assert [d3.train.next_batch(8) for _ in range(30)] == batches[20:]
    text = build_data(parse_specs([f"a={root / 'a.jsonl'}"]), tok, 16, eval_sequences=0)
    with pytest.raises(HfgrowError, match="trained on a token folder"):
        text.train.load_state_dict(state)
    with pytest.raises(HfgrowError, match="trained on text data"):
        d3.train.load_state_dict(text.train.state_dict())


def test_zero_proportion_and_explicit_eval_domains(corpus, tmp_path):
    root, tok, _, _ = corpus
    mix = tmp_path / "zero.json"
    mix.write_text(json.dumps({"domains": {"a": 1, "b": 0}}))
    out = str(root / "out")
    data = build_data(parse_specs([out]), tok, 16, eval_sequences=2, mixture=mix)
    assert list(data.train.streams) == ["a"] and len(data.eval["b"]) == 2
    assert {name for _, name, _ in data.train.next_batch(20)} == {"a"}
    # explicit eval data (text) replaces a's held-out split: a then trains from its first window
    data = build_data(parse_specs([out]), tok, 16, eval_sequences=2,
                      eval_domains=parse_specs([f"a={root / 'b'}"]))
    assert data.train.streams["a"].first == 0
    b_text = list(open_domain(DomainSpec("b", str(root / "b"))).texts())
    assert data.eval["a"][0] == token_stream(tok, b_text)[:16]
    with pytest.raises(HfgrowError, match="mixes token folders and text"):
        build_data(parse_specs([out, f"c={root / 'a.jsonl'}"]), tok, 16)
    with pytest.raises(HfgrowError, match="no window of --seq-len .* is left for training"):
        build_data(parse_specs([out]), tok, 16, eval_sequences=10**6)


def test_a_tiny_domain_is_refused(tmp_path):
    docs = ["w1 w2", "w3"]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tok = mix_data.hf_tokenizer(docs + sentences(20, 0))
    tokenize_to_folder(parse_specs([f"t={tmp_path / 't.jsonl'}"]), tok, tmp_path / "o")
    with pytest.raises(HfgrowError, match="fewer than one sequence of --seq-len 64"):
        build_data(parse_specs([str(tmp_path / "o")]), tok, 64)
    (tmp_path / "e.jsonl").write_text(json.dumps({"text": ""}) + "\n")
    with pytest.raises(HfgrowError, match="contains no text"):
        tokenize_to_folder(parse_specs([f"e={tmp_path / 'e.jsonl'}"]), tok, tmp_path / "e")


def test_token_mixture_state_names_are_checked(corpus):
    root, tok, _, _ = corpus
    folder = TokenFolder(root / "out")
    mix = TokenMixture({"a": (folder.domain("a"), 0)}, {"a": 1.0}, 16, 0)
    with pytest.raises(HfgrowError, match="data domains \\(a, b\\) differ from this run's \\(a\\)"):
        mix.load_state_dict({"kind": "tokens", "drawn": 0, "domains": {"a": {"taken": 0}, "b": {"taken": 0}}})
    with pytest.raises(HfgrowError, match="does not split over 3 processes"):
        mix.next_batch(8, 0, 3)


# --------------------------------------------------------------------------- eval and mix entropy read token folders


def test_eval_and_mix_entropy_read_a_token_folder_like_its_text(corpus, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    root, tok, _, _ = corpus
    model = tmp_path / "model"
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=64)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(model)
    tok.save_pretrained(model)
    results = {}
    for label, data in (("text", [f"a={root / 'a.jsonl'}", f"b={root / 'b'}"]), ("tokens", [str(root / "out")])):
        args = ["eval", model, *sum((["--data", d] for d in data), []), "--seq-len", "32", "--max-tokens", "500",
                "--json", "--device", "cpu"]
        code, out, err = run_cli(args, capsys)
        assert code == 0, err
        results[label] = json.loads(out)
        args = ["mix", "entropy", *sum((["--data", d] for d in data), []), "--tokenizer", model, "--seq-len", "64"]
        code, out, err = run_cli(args, capsys)
        assert code == 0, err
        results[label + "-mix"] = out
    assert set(results["text"]["domains"]) == {"a", "b"}
    assert results["text"]["domains"] == results["tokens"]["domains"]
    assert "a " in results["text-mix"] and results["text-mix"] == results["tokens-mix"]
