"""hfgrow.mix.counts: token counts, entropies and the entropy mixture, against plain-Python references.

Everything is offline: tokenizers are trained here on a few KB of text (tests/helpers/mix_data.py).
"""

from __future__ import annotations

import doctest
import json
import math
import random
from collections import Counter

import pytest

from helpers import mix_data as helpers
from hfgrow.data.mixture import read_mixture, write_mixture
from hfgrow.data.tokenization import token_stream
from hfgrow.data.text import DocPart, iter_txt
from hfgrow.errors import HfgrowError
from hfgrow.mix import counts as mix

VOCAB = [f"w{i}" for i in range(300)]


def test_doctests():
    result = doctest.testmod(mix)
    assert result.failed == 0 and result.attempted >= 5


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
    assert token_stream(tok, docs) == stream  # the project's one rule, built independently above
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
    pieces = list(iter_txt(path, piece_bytes=97))
    assert len(pieces) > 20 and "".join(pieces) == text
    assert all(isinstance(p, DocPart) for p in pieces[:-1]) and not isinstance(pieces[-1], DocPart)
    whole = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    c = mix.count_domain(iter(pieces), tok, seq_len=50, batch_chars=300)
    uni, bi = reference_counts(whole, 50)
    assert c.tokens == len(whole) and c.bigrams() == dict(bi)


def test_entropy_mixture_is_softmax_and_is_read_back_by_training(tmp_path):
    stats = {"a": {"se": 5.0, "je": 9.0, "ce": 3.0, "tokens": 10}, "b": {"se": 6.0, "je": 8.0, "ce": 4.0, "tokens": 20}}
    for measure in mix.MEASURES:
        m = mix.entropy_mixture(stats, measure)
        ea, eb = math.exp(stats["a"][measure]), math.exp(stats["b"][measure])
        assert m["measure"] == measure
        assert m["domains"]["a"]["proportion"] == pytest.approx(ea / (ea + eb), rel=1e-14)
        assert set(m["domains"]["a"]) == {"proportion", "se", "je", "ce", "tokens"}
    write_mixture(m, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == m
    assert read_mixture(tmp_path / "m.json", ["b", "a"]) == pytest.approx(
        {"b": m["domains"]["b"]["proportion"], "a": m["domains"]["a"]["proportion"]}, rel=1e-15)


def test_entropy_mixture_base_and_temperature_by_hand():
    """BiMix's rule r_i = exp(H_i / T) / Σ_j exp(H_j / T), worked out by hand for two domains whose CE differ by
    2 nats: r_a = 1 / (1 + e^-2) = 0.880797 in nats (T = 1, the default); in bits the difference is
    2 / ln 2 = 2.885390 bits, so r_a = 1 / (1 + e^-2.885390) = 0.947119; with T = 2 in nats it is
    1 / (1 + e^-1) = 0.731059. The issue's case: a difference of ln(0.906/0.094) = 2.2658 nats gives 0.906 in
    nats and 1 / (1 + e^-(2.2658 / ln 2)) = 0.963 in bits."""
    stats = {"a": {"se": 5.0, "je": 9.0, "ce": 3.0, "tokens": 10}, "b": {"se": 6.0, "je": 8.0, "ce": 1.0, "tokens": 20}}
    nats = mix.entropy_mixture(stats)
    assert (nats["rule"], nats["log_base"], nats["temperature"]) == ("softmax", "e", 1.0)
    assert nats["domains"]["a"]["proportion"] == pytest.approx(0.8807970779778823, rel=1e-12)
    assert nats["domains"]["a"]["ce"] == 3.0  # entropies are reported in the mixture's base
    bits = mix.entropy_mixture(stats, log_base="2")
    assert bits["domains"]["a"]["proportion"] == pytest.approx(0.9471195, rel=1e-6)
    assert bits["domains"]["a"]["ce"] == pytest.approx(3.0 / math.log(2), rel=1e-14)
    assert mix.entropy_mixture(stats, temperature=2.0)["domains"]["a"]["proportion"] == pytest.approx(0.7310586, rel=1e-6)
    # bits are nats at temperature ln 2
    assert mix.entropy_mixture(stats, temperature=math.log(2))["domains"]["a"]["proportion"] == pytest.approx(
        bits["domains"]["a"]["proportion"], rel=1e-12)
    issue = {"a": {"se": 1, "je": 1, "ce": math.log(0.906 / 0.094), "tokens": 1}, "b": {"se": 1, "je": 1, "ce": 0.0}}
    assert mix.entropy_mixture(issue)["domains"]["a"]["proportion"] == pytest.approx(0.906, abs=5e-4)
    assert mix.entropy_mixture(issue, log_base="2")["domains"]["a"]["proportion"] == pytest.approx(0.963, abs=5e-4)


def test_entropy_mixture_errors():
    with pytest.raises(HfgrowError, match="^unknown log base '10'"):
        mix.entropy_mixture({"a": {"se": 1, "je": 1, "ce": 1}, "b": {"se": 1, "je": 1, "ce": 1}}, log_base="10")
    with pytest.raises(HfgrowError, match="^the temperature must be a positive number"):
        mix.entropy_mixture({"a": {"se": 1, "je": 1, "ce": 1}, "b": {"se": 1, "je": 1, "ce": 1}}, temperature=0.0)
    with pytest.raises(HfgrowError, match="^a mixture needs at least 2 domains"):
        mix.entropy_mixture({"a": {"se": 1, "je": 1, "ce": 1, "tokens": 3}})
    with pytest.raises(HfgrowError, match="^domain 'a' is empty"):
        mix.entropy_mixture({"a": mix.count_ids([], 4, 4), "b": mix.count_ids([[1, 2]], 4, 4)})
    with pytest.raises(HfgrowError, match="^unknown measure 'xe'"):
        mix.entropy_mixture({"a": {"se": 1, "je": 1, "ce": 1}, "b": {"se": 1, "je": 1, "ce": 1}}, "xe")
    with pytest.raises(HfgrowError, match=r"^domain 'a': the domain has no bigrams"):
        mix.entropy_mixture({"a": mix.count_ids([[1]], vocab_size=4, seq_len=2), "b": mix.count_ids([[1, 2]], 4, 4)})


def test_the_cli_measure_choices_are_the_measures():
    from hfgrow.cli.mix import MEASURE_CHOICES

    assert MEASURE_CHOICES == mix.MEASURES
