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


def test_demo_checks_what_it_claims(tmp_path, capsys):
    """hfgrow demo exits 0 and prints the values its check measured; the check itself is tested on the kept folders:
    layer count, transformers' loading report, every layer bit for bit its source layer, a finite loss (equal to a
    plain forward on the tokenizer's own stream) -- and it catches a changed layer and a missing weight."""
    import math

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from helpers.cli import run_cli
    from hfgrow.eval.tiny import check_stacked

    code, out, err = run_cli(["demo", "--out", tmp_path / "d", "--factor", "2"], capsys)
    assert code == 0, err
    small, grown = tmp_path / "d" / "small", tmp_path / "d" / "grown"
    layer_map = [0, 1, 2, 3, 0, 1, 2, 3]
    check = check_stacked(small, grown, layer_map)
    assert check.ok and check.layers == 8 == check.expected_layers
    assert check.load_issues == {} and check.differing_layers == [] and check.differing_globals == []
    tokenizer = AutoTokenizer.from_pretrained(grown)
    ids = torch.tensor([tokenizer(DEMO_TEXT)["input_ids"] + [tokenizer.eos_token_id]])
    with torch.no_grad():
        by_hand = AutoModelForCausalLM.from_pretrained(grown)(input_ids=ids, labels=ids).loss.item()
    assert math.isfinite(check.loss) and abs(check.loss - by_hand) < 1e-5
    assert f"   layers          8 (4 x 2 = 8)" in out and f"   loss            {check.loss:.3f} " in out
    assert "   layers          8 of 8 bit for bit the source layer they copy" in out

    weights = load_file(grown / "model.safetensors")
    weights["model.layers.5.self_attn.q_proj.weight"][0, 0] += 1.0
    save_file(weights, grown / "model.safetensors", metadata={"format": "pt"})
    changed = check_stacked(small, grown, layer_map)
    assert not changed.ok and changed.differing_layers == [5] and changed.load_issues == {}
    del weights["model.layers.6.mlp.up_proj.weight"]
    save_file(weights, grown / "model.safetensors", metadata={"format": "pt"})
    missing = check_stacked(small, grown, layer_map)
    assert not missing.ok and missing.load_issues["missing_keys"] == ["model.layers.6.mlp.up_proj.weight"]
