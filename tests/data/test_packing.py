"""hfgrow.data.packing: the one token-stream rule, and packing/mixing/resuming training sequences."""

from __future__ import annotations

import json
import random

import pytest

from helpers import mix_data
import numpy as np

from hfgrow.data import packing
from hfgrow.data.loading import build_data
from hfgrow.data.packing import domain_key, draw_domains
from hfgrow.data.tokenization import Tokenize, batch_encoder, eos_id, token_stream
from hfgrow.data.specs import DomainSpec, open_domain, parse_specs
from hfgrow.data.text import DocPart
from hfgrow.errors import HfgrowError

VOCAB = [f"w{i}" for i in range(40)]


def word_tokenizer():
    """Word-level tokenizer with fixed ids: <pad> 0, <s> 1, </s> 2, <unk> 3, then the words in order."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "the": 4, "cat": 5, "a": 6, "dog": 7, "sat": 8}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


# --------------------------------------------------------------------------- the token-stream rule


def test_token_stream_is_eos_after_every_document_and_no_bos():
    tok = word_tokenizer()
    # by hand: "the cat" -> 4 5, then EOS 2; "a dog sat" -> 6 7 8, then EOS 2. The tokenizer has a
    # BOS (<s> = 1) and it is not added: training packs the same stream without BOS.
    assert token_stream(tok, ["the cat", "a dog sat"]) == [4, 5, 2, 6, 7, 8, 2]
    # a DocPart goes on in the next text: no EOS after it
    assert token_stream(tok, [DocPart("the "), "cat", "a"]) == [4, 5, 2, 6, 2]
    assert token_stream(tok, []) == []


def test_token_stream_matches_the_tokenizer_document_by_document():
    docs = [mix_data.words_text(i, 5 + 9 * i, VOCAB) for i in range(40)]
    tok = mix_data.hf_tokenizer(docs, kind="bpe", vocab_size=300)
    expected: list[int] = []
    for doc in docs:  # independent construction: one tokenizer call per document, then EOS
        expected += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert token_stream(tok, docs) == expected
    assert token_stream(tok, iter(docs), max_tokens=123) == expected[:123]


def test_token_stream_stops_reading_at_max_tokens():
    tok = word_tokenizer()
    read = []

    def docs():
        for i in range(1000):
            read.append(i)
            yield "the cat sat"

    assert token_stream(tok, docs(), max_tokens=10) == [4, 5, 8, 2] * 2 + [4, 5]
    assert len(read) < 100  # a batch or two, not the whole domain


def test_tokenize_per_text_and_ends():
    tokenize = Tokenize(word_tokenizer())
    assert tokenize.per_text(["the cat", DocPart("a "), "dog"]) == [[4, 5, 2], [6], [7, 2]]
    assert tokenize(["the cat", "a"], ends=[False, True]) == [4, 5, 6, 2]


def test_batch_encoder_equals_the_tokenizer_call():
    tok = mix_data.hf_tokenizer(["a b c </s> d"])
    texts = ["a b </s> c d", "d c", ""]  # "</s>" in a text is the EOS token, as with tokenizer(text)
    assert batch_encoder(tok)(texts) == tok(texts, add_special_tokens=False)["input_ids"]
    tok.backend_tokenizer.enable_truncation(max_length=2)  # __call__ switches it off; so must the encoder
    assert batch_encoder(tok)(texts) == tok(texts, add_special_tokens=False)["input_ids"]
    assert len(batch_encoder(tok)(texts)[0]) == 5


def test_eos_id_of_hf_and_bare_tokenizers():
    assert eos_id(word_tokenizer()) == 2
    bare = mix_data.train_tokenizer(["a b c"])  # a tokenizers.Tokenizer: no eos_token_id attribute
    assert eos_id(bare) == bare.token_to_id("</s>")
    assert Tokenize(bare)(["a b"]) == [*bare.encode("a b", add_special_tokens=False).ids, bare.token_to_id("</s>")]
    no_eos = mix_data.hf_tokenizer(["a b"])
    no_eos.eos_token = None
    with pytest.raises(HfgrowError, match="^the tokenizer has no EOS token to end documents with; give it one"):
        token_stream(no_eos, ["a"])


def test_pieces_of_a_long_text_file_tokenize_like_the_whole_file(tmp_path):
    text = (mix_data.CODE_SNIPPET + mix_data.words_text(3, 400, VOCAB)) * 120  # ~300 KB: several pieces
    tok = mix_data.hf_tokenizer([text[:50_000]], kind="bpe", vocab_size=400)
    (tmp_path / "code.txt").write_text(text)
    texts = list(open_domain(DomainSpec("code", str(tmp_path / "code.txt"))).texts())
    assert len(texts) > 1
    whole = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert token_stream(tok, texts) == whole


# --------------------------------------------------------------------------- packing and mixing


def sentences(n_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(6, 14))) for _ in range(n_docs)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("packing")
    docs_a, docs_b = sentences(300, 1), sentences(120, 2)
    (root / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs_a))
    (root / "b").mkdir()
    (root / "b" / "one.txt").write_text("\n".join(docs_b[:60]))
    (root / "b" / "two.md").write_text("\n".join(docs_b[60:]))
    return root, mix_data.hf_tokenizer(docs_a + docs_b)


def test_data_pipeline_mixture_determinism_and_resume(corpus):
    root, tok = corpus
    specs = parse_specs([f"a={root / 'a.jsonl'}", f"b={root / 'b'}"])
    mix = root / "mix.json"
    mix.write_text(json.dumps({"measure": "ce", "domains": {"a": {"proportion": 3}, "b": {"proportion": 1}}}))

    def fresh():
        return build_data(specs, tok, 32, seed=5, eval_sequences=3, mixture=mix)

    d1 = fresh()
    assert d1.weights == {"a": 0.75, "b": 0.25}
    assert {k: len(v) for k, v in d1.eval.items()} == {"a": 3, "b": 3}
    batches = [d1.train.next_batch(8) for _ in range(60)]
    seqs = [s for b in batches for s in b]
    assert all(len(s[2]) == 32 for s in seqs)  # packed, no padding
    share_a = sum(s[1] == "a" for s in seqs) / len(seqs)
    assert 0.68 < share_a < 0.82
    eos = tok.eos_token_id
    assert sum(t == eos for s in seqs for t in s[2]) > 50  # documents joined with EOS
    held_out = {tuple(s) for v in d1.eval.values() for s in v}
    assert not held_out & {tuple(s[2]) for s in seqs[:20]}  # eval never trained on (first epoch)

    d2 = fresh()
    for _ in range(25):
        d2.train.next_batch(8)
    state = json.loads(json.dumps(d2.train.state_dict()))  # JSON round trip, as in checkpoints
    d3 = fresh()
    d3.train.load_state_dict(state)
    after = [d3.train.next_batch(8) for _ in range(35)]
    assert after == batches[25:]  # loops over epochs too (b is small)
    assert any(s.epoch > 0 for s in d3.train.streams.values())


def test_the_packed_stream_is_the_token_stream(corpus):
    root, tok = corpus
    data = build_data(parse_specs([f"b={root / 'b'}"]), tok, 16, eval_sequences=2, shuffle_docs=1)  # file order
    docs = list(open_domain(DomainSpec("b", str(root / "b"))).texts())
    stream = token_stream(tok, docs)
    packed = [t for s in data.eval["b"] for t in s] + [t for _, _, s in data.train.next_batch(10) for t in s]
    assert packed == stream[: len(packed)]


def test_zero_proportion_domain_is_only_held_out(corpus):
    root, tok = corpus
    mix = root / "zero.json"
    mix.write_text(json.dumps({"domains": {"a": 1, "b": 0}}))
    data = build_data(parse_specs([f"a={root / 'a.jsonl'}", f"b={root / 'b'}"]), tok, 32, eval_sequences=2, mixture=mix)
    assert data.weights == {"a": 1.0, "b": 0.0}
    assert list(data.train.streams) == ["a"] and len(data.eval["b"]) == 2
    assert {name for _, name, _ in data.train.next_batch(20)} == {"a"}


def test_bad_mixture_for_the_training_domains(corpus):
    root, tok = corpus
    mix = root / "web.json"
    mix.write_text(json.dumps({"domains": {"a": 1, "web": 1}}))
    with pytest.raises(HfgrowError, match="names unknown domain 'web'"):
        build_data(parse_specs([f"a={root / 'a.jsonl'}"]), tok, 32, mixture=mix)


# --------------------------------------------------------------------------- shuffling (text path)


def packed(data, n_batches: int, size: int = 4) -> list[int]:
    return [t for _ in range(n_batches) for _, _, seq in data.train.next_batch(size) for t in seq]


def test_documents_are_shuffled_by_the_seed(corpus):
    root, tok = corpus
    specs = parse_specs([f"a={root / 'a.jsonl'}"])
    first = {seed: build_data(specs, tok, 32, seed=seed, eval_sequences=0).train.next_batch(8) for seed in (0, 1)}
    again = build_data(specs, tok, 32, seed=0, eval_sequences=0).train.next_batch(8)
    assert first[0] == again and first[0] != first[1]
    in_order = build_data(specs, tok, 32, seed=0, eval_sequences=0, shuffle_docs=1).train.next_batch(8)
    docs = list(open_domain(DomainSpec("a", str(root / "a.jsonl"))).texts())
    assert [t for _, _, s in in_order for t in s] == token_stream(tok, docs)[: 8 * 32]
    assert first[0] != in_order


def test_the_shuffled_stream_is_each_block_in_its_seeded_order(corpus):
    root, tok = corpus
    docs = list(open_domain(DomainSpec("a", str(root / "a.jsonl"))).texts())  # 300 documents
    data = build_data(parse_specs([f"a={root / 'a.jsonl'}"]), tok, 32, seed=7, eval_sequences=0, shuffle_docs=64)
    # independent construction: blocks of 64 documents, block b of epoch e in rng([seed, key, e, b]) order
    expected: list[str] = []
    for epoch in range(6):
        for b, lo in enumerate(range(0, len(docs), 64)):
            block = docs[lo : lo + 64]
            order = np.random.default_rng([7, domain_key("a"), epoch, b]).permutation(len(block))
            expected += [block[i] for i in order]
    stream = token_stream(tok, expected)
    got = packed(data, 120)  # over four epochs
    assert len(got) > len(token_stream(tok, docs)) and got == stream[: len(got)]


def test_resume_is_exact_inside_a_shuffle_block_and_a_long_document(tmp_path, monkeypatch):
    monkeypatch.setattr(packing, "SHUFFLE_CHARS", 3000)  # so a 200 KB text file streams through alone
    docs = sentences(200, 3)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    long_text = mix_data.words_text(5, 40_000, VOCAB)
    (tmp_path / "d" / "b.txt").write_text(long_text)
    tok = mix_data.hf_tokenizer(docs + [long_text[:5000]])
    specs = parse_specs([f"d={tmp_path / 'd'}"])

    def fresh():
        return build_data(specs, tok, 64, seed=2, eval_sequences=0, shuffle_docs=16)

    ref = packed(fresh(), 200)
    whole = token_stream(tok, [long_text])  # the long document, EOS at its end, never cut apart
    start = next(i for i in range(len(ref)) if ref[i : i + len(whole)] == whole)
    epoch = len(token_stream(tok, docs)) + len(whole)
    assert 0 < start < 50 * 256 < start + len(whole) and 180 * 256 > epoch
    for n in (3, 50, 180):  # inside a block of documents, inside the long document, in the second epoch
        d = fresh()
        before = packed(d, n)
        state = json.loads(json.dumps(d.train.state_dict()))
        resumed = fresh()
        resumed.train.load_state_dict(state)
        assert before + packed(resumed, 200 - n) == ref, n


def test_domain_draws_depend_only_on_seed_and_index():
    p = np.array([0.2, 0.3, 0.5])
    whole = draw_domains(4, p, 0, 3000)
    assert (np.concatenate([draw_domains(4, p, k, 7) for k in range(0, 2996, 7)])[:2996] == whole[:2996]).all()
    assert (draw_domains(4, p, 1020, 10) == whole[1020:1030]).all()  # across a block boundary
    assert abs((whole == 2).mean() - 0.5) < 0.04 and (draw_domains(5, p, 0, 3000) != whole).any()


def test_text_batches_carry_an_id_array_and_split_over_ranks(corpus):
    root, tok = corpus
    specs = parse_specs([f"a={root / 'a.jsonl'}", f"b={root / 'b'}"])
    whole = build_data(specs, tok, 32, seed=1, eval_sequences=0).train.next_batch(8)
    assert (whole.ids == np.array([s for _, _, s in whole])).all() and whole.ids.shape == (8, 32)
    parts = [build_data(specs, tok, 32, seed=1, eval_sequences=0).train.next_batch(8, r, 4) for r in range(4)]
    assert [x for p in parts for x in p] == list(whole)
