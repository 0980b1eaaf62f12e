"""hfgrow.eval.loss and `hfgrow eval --data`: sliding-window loss checked against independent computations."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from helpers.cli import run_cli
from hfgrow.errors import HfgrowError
from hfgrow.eval.tiny import tiny_llama_config
from hfgrow.data.tokenization import token_stream
from hfgrow.eval.loss import evaluate_loss, sliding_window_nll, window_plan

WORDS = "the cat dog sat ran on a mat log and then slept barked quietly loudly today".split()


def tiny_model(vocab_size: int = 40, seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_llama_config(layers=2, vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                               max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def random_ids(n: int, vocab: int = 40, seed: int = 1) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


def sentence(i: int, n_words: int = 12) -> str:
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(n_words))


# --------------------------------------------------------------------------- window bookkeeping


@pytest.mark.parametrize("n, seq_len, stride", [(50, 16, 8), (50, 16, 5), (17, 16, 1), (64, 16, 16), (2, 2, 1)])
def test_windows_score_each_token_once(n, seq_len, stride):
    scored = [t for _, end, first in window_plan(n, seq_len, stride) for t in range(first, end)]
    if stride < seq_len:
        assert scored == list(range(1, n))  # every token but the first, exactly once, in order
    else:
        assert scored == [t for t in range(n) if t % seq_len]  # chunk starts have no context
    for begin, end, first in window_plan(n, seq_len, stride):
        assert end - begin <= seq_len and begin < first < end or first == end


@pytest.mark.parametrize("seq_len, stride", [(1, 1), (8, 0), (8, 9)])
def test_window_settings_rejected(seq_len, stride):
    with pytest.raises(HfgrowError):
        window_plan(10, seq_len, stride)


# --------------------------------------------------------------------------- loss values


def test_stride_equal_seq_len_is_plain_chunked_loss(model):
    ids = random_ids(50)
    seq_len = 16
    # by hand: independent chunks of 16 (the last one 2 tokens), each scoring len − 1 tokens
    nll_sum, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids), seq_len):
            chunk = torch.tensor([ids[start : start + seq_len]])
            if chunk.shape[1] < 2:
                continue
            loss = model(input_ids=chunk, labels=chunk).loss.item()  # HF's own mean over len − 1
            nll_sum += loss * (chunk.shape[1] - 1)
            count += chunk.shape[1] - 1
    got_nll, got_count = sliding_window_nll(model, ids, seq_len=seq_len, stride=seq_len, batch_size=3)
    assert got_count == count == 50 - 4  # 4 chunks, the first token of each is unscored
    assert got_nll / got_count == pytest.approx(nll_sum / count, rel=1e-5)


def test_single_window_equals_full_sequence_loss(model):
    ids = random_ids(30, seed=2)
    with torch.no_grad():
        full = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    nll, count = sliding_window_nll(model, ids, seq_len=64, stride=8)
    assert count == 29
    assert nll / count == pytest.approx(full, rel=1e-5)


def test_sliding_window_matches_brute_force_per_token(model):
    """stride < seq_len: each token once, each with exactly the context its window gives it."""
    ids = random_ids(41, seed=3)
    seq_len, stride = 12, 5
    expected, n_expected = 0.0, 0
    prev_end = 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + seq_len, len(ids))
            for t in range(max(prev_end, begin + 1), end):
                context = torch.tensor([ids[begin:t]])  # the window's tokens before t
                logits = model(input_ids=context).logits[0, -1]
                expected -= torch.log_softmax(logits.float(), -1)[ids[t]].item()
                n_expected += 1
            prev_end = end
            if end == len(ids):
                break
    for batch_size in (1, 4):
        nll, count = sliding_window_nll(model, ids, seq_len=seq_len, stride=stride, batch_size=batch_size)
        assert count == n_expected == len(ids) - 1
        assert nll == pytest.approx(expected, rel=1e-5)


def test_context_changes_loss(model):
    """Sanity: a shorter stride (more context) gives a different number than plain chunks."""
    ids = random_ids(60, seed=4)
    chunked = sliding_window_nll(model, ids, seq_len=10, stride=10)
    sliding = sliding_window_nll(model, ids, seq_len=10, stride=3)
    assert sliding[1] == 59 and chunked[1] == 54
    assert sliding[0] / sliding[1] != pytest.approx(chunked[0] / chunked[1], rel=1e-6)


# --------------------------------------------------------------------------- documents and domains


def test_evaluate_loss_per_domain_counts_every_token_once(model, tmp_path):
    tok = tiny_tokenizer()
    web = [sentence(i) for i in range(6)]
    code = [sentence(i, 20) for i in range(10, 13)]
    (tmp_path / "web.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in web))
    (tmp_path / "code.txt").write_text(code[0])
    result = evaluate_loss(
        model, {"web": tmp_path / "web.jsonl", "code": [tmp_path / "code.txt", *code[1:]]},
        seq_len=16, stride=6, batch_size=2, tokenizer=tok,
    )
    streams = {"web": token_stream(tok, web), "code": token_stream(tok, code)}
    assert set(result.domains) == {"web", "code"}
    for name, stream in streams.items():
        assert result.domains[name].tokens == len(stream) - 1
        nll, count = sliding_window_nll(model, stream, 16, 6)
        assert result.domains[name].loss == pytest.approx(nll / count, rel=1e-6)
    assert result.tokens == sum(len(s) - 1 for s in streams.values())
    weighted = sum(r.loss * r.tokens for r in result.domains.values()) / result.tokens
    assert result.loss == pytest.approx(weighted, rel=1e-9)
    assert result.perplexity == pytest.approx(math.exp(result.loss))


def test_evaluate_loss_token_ids_and_errors(model):
    ids = random_ids(20, seed=5)
    result = evaluate_loss(model, ids, seq_len=8, stride=8)
    assert result.tokens == 20 - 3 and not result.domains
    # default window: the model's context (max_position_embeddings 128, via arch.layout.context_length)
    assert evaluate_loss(model, ids).seq_len == 128
    with pytest.raises(HfgrowError, match="fewer than 2 tokens"):
        evaluate_loss(model, [7], seq_len=8)
    with pytest.raises(HfgrowError, match="tokenizer"):
        evaluate_loss(model, "the cat sat", seq_len=8)
    with pytest.raises(HfgrowError, match="does not exist"):
        evaluate_loss(model, "missing_file.jsonl", seq_len=8)


# --------------------------------------------------------------------------- the command


def test_cli_eval_json_per_domain(saved_model, tmp_path, capsys):
    (tmp_path / "web.jsonl").write_text("".join(json.dumps({"text": sentence(i)}) + "\n" for i in range(5)))
    (tmp_path / "code.txt").write_text(sentence(9, 40))
    code, out, err = run_cli(
        ["eval", str(saved_model), "--data", f"web={tmp_path / 'web.jsonl'}", "--data", str(tmp_path / "code.txt"),
         "--seq-len", "16", "--stride", "8", "--json"],
        capsys,
    )
    assert code == 0, err
    data = json.loads(out)
    assert set(data["domains"]) == {"web", "code"}
    # the token-stream rule: every document followed by EOS, no BOS; the first token is unscored
    assert data["domains"]["code"]["tokens"] == 40 + 1 - 1  # 40 words, EOS
    assert data["domains"]["web"]["tokens"] == 5 * (12 + 1) - 1  # 5 docs of 12 words, each with its EOS
    assert data["tokens"] == data["domains"]["web"]["tokens"] + data["domains"]["code"]["tokens"]
    assert data["seq_len"] == 16 and data["stride"] == 8


def test_cli_eval_human_table(saved_model, tmp_path, capsys):
    (tmp_path / "valid.txt").write_text(sentence(3, 30))
    code, out, err = run_cli(["eval", str(saved_model), "--data", str(tmp_path / "valid.txt"), "--seq-len", "8"], capsys)
    assert code == 0, err
    assert "valid" in out and "loss" in out and "ppl" in out
    assert "seq_len 8, stride 4" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--data", "missing.txt"], "does not exist"),
        ([], "nothing to do"),
        (["--data", "{txt}", "--seq-len", "8", "--stride", "9"], "--stride"),
        (["--data", "{txt}", "--data", "{txt}"], "the data name 'v' is given twice"),
        (["--data", "hf:"], "is not of the form hf:DATASET"),
    ],
)
def test_cli_eval_bad_input(saved_model, tmp_path, capsys, argv, needle):
    (tmp_path / "v.txt").write_text("the cat sat on the mat")
    argv = [a.replace("{txt}", str(tmp_path / "v.txt")) for a in argv]
    code, out, err = run_cli(["eval", str(saved_model), *argv], capsys)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_cli_eval_names_and_opens_data_through_the_one_spec_parser(saved_model, tmp_path, capsys, monkeypatch):
    import gzip

    with gzip.open(tmp_path / "web.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"story": sentence(i)}) + "\n" for i in range(3)))  # --text-field is for every --data

    def load_dataset(name, config, split, streaming):
        assert (name, config, split, streaming) == ("org/stories", None, "test", True)
        return [{"story": sentence(7)}, {"story": sentence(8)}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    code, out, err = run_cli(["eval", str(saved_model), "--data", str(tmp_path / "web.jsonl.gz"), "--data",
                              "hf:org/stories::test", "--text-field", "story", "--seq-len", "16", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert set(data["domains"]) == {"web", "stories"}  # web.jsonl.gz -> web, hf:org/stories -> stories
    assert data["domains"]["web"]["tokens"] == 3 * (12 + 1) - 1
    assert data["domains"]["stories"]["tokens"] == 2 * (12 + 1) - 1


def test_cli_document_text_that_looks_like_a_file_name_is_text(saved_model, tmp_path, capsys):
    (tmp_path / "odd.jsonl").write_text(json.dumps({"text": "notes.txt"}) + "\n" + json.dumps({"text": "the cat"}) + "\n")
    code, out, err = run_cli(["eval", str(saved_model), "--data", str(tmp_path / "odd.jsonl"), "--seq-len", "8", "--json"], capsys)
    assert code == 0, err
    # "notes" "." "txt" (unk), EOS, "the" "cat", EOS; the first token is unscored
    assert json.loads(out)["tokens"] == 3 + 1 + 2 + 1 - 1
