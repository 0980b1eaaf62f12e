"""The token stream follows the tokenizer's convention (issue 25): BOS before every document where the tokenizer adds
one (Gemma, Llama), EOS after it, in training (text and token folders), eval, tokenize, mix entropy, LiGO and verify.

The fixture that matters: a Gemma-3-shaped model (post-norms, sliding/full layer_types, GQA 4:1, tied embeddings)
with a tokenizer whose post-processor adds BOS. The independent reference is the tokenizer's own call
(``tokenizer(doc)["input_ids"]``, specials included) plus EOS, and a plain forward.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hfgrow.data.tokenization import Tokenize, document_prefix, token_stream
from hfgrow.errors import HfgrowError
from hfgrow.eval.tiny import make_model, make_tokenizer, python_docs_corpus, tiny_gemma3_config

SEQ, N_EVAL = 64, 4
TOL = 1e-4  # float32 forwards of the same windows, batched differently


def reference_stream(tokenizer, documents, n_tokens: int) -> list[int]:
    """The tokenizer's own ids of each document (its specials: BOS), then EOS; the first n_tokens."""
    ids: list[int] = []
    for doc in documents:
        ids += tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) >= n_tokens:
            break
    return ids[:n_tokens]


def reference_loss(model_dir: Path, documents) -> float:
    """Mean loss over the first N_EVAL windows of SEQ tokens of the reference stream: one plain forward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor(reference_stream(tokenizer, documents, N_EVAL * SEQ)).view(N_EVAL, SEQ)
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).loss.item()


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """A 4-layer Gemma-3-shaped model whose tokenizer adds BOS, and 40 real documents as jsonl."""
    root = tmp_path_factory.mktemp("bos")
    documents = python_docs_corpus(max_chars=60_000)[:40]
    tokenizer = make_tokenizer(root / "gemma", text="\n".join(documents), vocab_size=512, bos=True)
    config = tiny_gemma3_config(layers=4, vocab_size=512, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.eos_token_id)
    make_model(root / "gemma", config, tokenizer=False)
    with open(root / "web.jsonl", "w") as fh:
        for doc in documents:
            fh.write(json.dumps({"text": doc}) + "\n")
    return root, documents, tokenizer


def test_document_prefix_is_what_the_tokenizer_adds():
    with_bos, plain = make_tokenizer(vocab_size=300, bos=True), make_tokenizer(vocab_size=300)
    bos = with_bos.convert_tokens_to_ids("<bos>")
    assert document_prefix(with_bos) == [bos] and with_bos("a b")["input_ids"][0] == bos
    assert document_prefix(with_bos.backend_tokenizer) == [bos]  # a bare tokenizers.Tokenizer
    assert document_prefix(plain) == [] == document_prefix(plain.backend_tokenizer)


def test_stream_rule_bos_before_each_document_and_none_inside_pieces(tmp_path):
    from hfgrow.data.text import DocMiddle, DocPart, DocRest, iter_txt_from

    tok = make_tokenizer(vocab_size=300, bos=True)
    bos, eos = tok.bos_token_id, tok.eos_token_id

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    stream = Tokenize(tok)(["a b", DocPart("c "), DocMiddle("d "), DocRest("e"), "f"])
    assert stream == [bos, *ids("a b"), eos, bos, *ids("c "), *ids("d "), *ids("e"), eos, bos, *ids("f"), eos]
    assert token_stream(tok, ["x y", "z"]) == tok("x y")["input_ids"] + [eos] + tok("z")["input_ids"] + [eos]
    # a long plain-text file comes in pieces: the first starts the document, the last ends it; reading from
    # inside the file (a resumed or split stream), the first piece goes on from the previous one
    (tmp_path / "a.txt").write_text(("word " * 30 + "\n") * 40)
    pieces = [p for p, _ in iter_txt_from(tmp_path / "a.txt", 0, piece_bytes=256)]
    assert len(pieces) >= 3 and type(pieces[0]) is DocPart and type(pieces[-1]) is DocRest
    assert all(type(p) is DocMiddle for p in pieces[1:-1])
    inside = [p for p, _ in iter_txt_from(tmp_path / "a.txt", 310, piece_bytes=256)]
    assert isinstance(inside[0], DocRest)
    assert Tokenize(tok)(pieces) == [bos, *ids("".join(pieces)), eos]  # one document: one BOS, one EOS


def step0_loss(run: Path) -> float:
    record = next(r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == "eval")
    assert record["step"] == 0
    return record["losses"]["web"]


def test_training_step0_equals_the_tokenizers_own_evaluation(gemma):
    """Text and a token folder: training's held-out loss before any step is the loss of the first windows of the
    stream the tokenizer itself makes (BOS included), within TOL; without BOS it would be far off."""
    from helpers.launch import launch_continue

    root, documents, tokenizer = gemma
    want = reference_loss(root / "gemma", documents)
    common = ["--model", str(root / "gemma"), "--seq-len", str(SEQ), "--eval-sequences", str(N_EVAL),
              "--max-steps", "1", "--batch-size", "2", "--no-export"]
    launch_continue([*common, "--data", f"web={root / 'web.jsonl'}", "--output-dir", str(root / "run-text")])
    assert abs(step0_loss(root / "run-text") - want) < TOL

    from hfgrow.data.specs import parse_specs
    from hfgrow.data.tokens import tokenize_to_folder

    index = tokenize_to_folder(parse_specs([f"web={root / 'web.jsonl'}"]), tokenizer, root / "tok")
    assert index["tokenizer"]["bos"] == [tokenizer.bos_token_id]
    assert json.loads((root / "tok" / "tokens.json").read_text())["tokenizer"]["bos"] == [tokenizer.bos_token_id]
    launch_continue([*common, "--data", f"web={root / 'tok'}", "--output-dir", str(root / "run-tok")])
    assert abs(step0_loss(root / "run-tok") - want) < TOL
    # the stream without BOS (the old rule) gives another loss: the check above can tell them apart
    from transformers import AutoModelForCausalLM

    plain = []
    for doc in documents:
        plain += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    x = torch.tensor(plain[: N_EVAL * SEQ]).view(N_EVAL, SEQ)
    with torch.no_grad():
        old = AutoModelForCausalLM.from_pretrained(root / "gemma").eval()(input_ids=x, labels=x).loss.item()
    assert abs(old - want) > 10 * TOL, (old, want)


def test_token_folder_of_the_other_convention_is_refused(gemma, tmp_path):
    """A folder written without BOS (before tokens.json recorded it, or with a tokenizer that adds none) is refused
    for a tokenizer that adds BOS, in one sentence that says what to do."""
    import shutil

    from hfgrow.data.loading import build_data
    from hfgrow.data.specs import parse_specs
    from hfgrow.data.tokens import tokenize_to_folder

    root, _, tokenizer = gemma
    shutil.copytree(root / "tok", tmp_path / "old") if (root / "tok").exists() else \
        tokenize_to_folder(parse_specs([f"web={root / 'web.jsonl'}"]), tokenizer, tmp_path / "old")
    index = json.loads((tmp_path / "old" / "tokens.json").read_text())
    del index["tokenizer"]["bos"]  # what an older hfgrow wrote
    (tmp_path / "old" / "tokens.json").write_text(json.dumps(index))
    with pytest.raises(HfgrowError, match=r"starts every document with no BOS, but this model's tokenizer starts "
                                          r"them with BOS id \d+; run hfgrow tokenize again"):
        build_data(parse_specs([f"web={tmp_path / 'old'}"]), tokenizer, SEQ, eval_sequences=2)


def test_eval_entropy_ligo_and_verify_read_the_same_stream(gemma):
    """hfgrow eval (chunked: stride = seq-len) gives the reference loss; mix entropy counts one BOS per document;
    LiGO's data and verify's text are the same stream."""
    from transformers import AutoModelForCausalLM

    from hfgrow.eval.loss import evaluate_loss
    from hfgrow.mix.counts import count_domain

    root, documents, tokenizer = gemma
    model = AutoModelForCausalLM.from_pretrained(root / "gemma", dtype=torch.float32).eval()
    got = evaluate_loss(model, {"web": str(root / "web.jsonl")}, seq_len=SEQ, stride=SEQ, tokenizer=tokenizer,
                        max_tokens=N_EVAL * SEQ).loss
    assert abs(got - reference_loss(root / "gemma", documents)) < TOL

    counts = count_domain(iter(documents[:5]), tokenizer, seq_len=SEQ)
    reference = [t for doc in documents[:5] for t in tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]]
    assert counts.tokens == len(reference) and counts.documents == 5
    assert np.array_equal(counts.unigram, np.bincount(reference, minlength=counts.vocab_size))
    assert counts.unigram[tokenizer.bos_token_id] == 5

    from hfgrow.growth.verify import _token_ids

    ids = _token_ids(documents[0], [root / "gemma"], 512, 256)
    assert ids[0].tolist() == reference_stream(tokenizer, documents[:1], 256)


def test_a_long_text_split_over_shards_has_one_bos(gemma, tmp_path):
    """A plain-text file is one document read in pieces; cut over several token-folder shards (and read by the
    text path, whose eval split may end inside it) it still starts with one BOS and ends with one EOS."""
    from hfgrow.data.specs import open_domain, parse_specs
    from hfgrow.data.token_folder import TokenFolder
    from hfgrow.data.tokens import tokenize_to_folder

    _, documents, tokenizer = gemma
    text = "\n".join(documents) * 4  # ~240k characters: several 64 KiB pieces
    (tmp_path / "book.txt").write_text(text)
    want = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    specs = parse_specs([f"book={tmp_path / 'book.txt'}"])
    index = tokenize_to_folder(specs, tokenizer, tmp_path / "tok", shard_chars=50_000)
    assert len(index["domains"]["book"]["shards"]) >= 2  # the second starts inside the document
    domain = TokenFolder(tmp_path / "tok").domain("book")
    assert domain.tokens(0, domain.n_tokens).tolist() == want
    assert token_stream(tokenizer, open_domain(specs[0]).texts()) == want
