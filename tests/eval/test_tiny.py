"""hfgrow.eval.tiny: the models the demo, compare and the tests build have tokenizers that fit them (issue 15).

make_model used to train a byte-level tokenizer of 257 ids (256 bytes + end of text) for a 256-row embedding,
which training then refused. A tokenizer that fits gives no id of vocab_size or more, on any text.
"""

from __future__ import annotations

import pytest

from hfgrow.data.tokenization import tokenizer_vocab_size
from hfgrow.eval.tiny import BYTE_LEVEL_VOCAB, DEMO_TEXT, make_model, make_tokenizer, tiny_llama_config

# text with characters the tokenizer never saw (accents, CJK, emoji): a byte-level tokenizer spells them in
# bytes, a smaller one maps them to <unk>; neither may give an id past the embedding
UNSEEN = "naïve café 日本語 🙂 \x00\x7f"


@pytest.mark.parametrize("vocab_size", [64, 128, 256, BYTE_LEVEL_VOCAB, 300, 1024])
def test_make_tokenizer_never_exceeds_its_vocabulary(vocab_size):
    tokenizer = make_tokenizer(vocab_size=vocab_size)
    assert tokenizer_vocab_size(tokenizer) <= vocab_size
    ids = tokenizer(DEMO_TEXT + UNSEEN)["input_ids"]
    assert max(ids) < vocab_size and tokenizer.eos_token_id < vocab_size
    if vocab_size >= BYTE_LEVEL_VOCAB:  # byte-level: every text round-trips
        assert tokenizer.decode(tokenizer(UNSEEN)["input_ids"]) == UNSEEN
    else:
        assert tokenizer.unk_token_id is not None and tokenizer.unk_token_id in tokenizer(UNSEEN)["input_ids"]


@pytest.mark.parametrize("vocab_size", [128, 256, 300])
def test_make_model_writes_a_tokenizer_the_model_can_embed(vocab_size, tmp_path):
    """What training checks (hfgrow.train.args: len(tokenizer) <= embedding rows), for the sizes the demo (256),
    the family tests (128) and the LiGO tests (300) use."""
    from transformers import AutoTokenizer

    make_model(tmp_path / "m", tiny_llama_config(layers=1, vocab_size=vocab_size))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "m")
    assert len(tokenizer) <= vocab_size and tokenizer_vocab_size(tokenizer) <= vocab_size


def test_demo_runs(capsys):
    from helpers.cli import run_cli

    code, out, err = run_cli(["demo"], capsys)
    assert code == 0, err
    assert out.rstrip().endswith("demo ok")
