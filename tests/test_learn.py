"""G↑learn (LiGO depth): init equals Gstack, the math of the combination, learning helps, replay."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import hfgrow
from hfgrow.checkpoint import Checkpoint
from hfgrow.errors import HfgrowError
from hfgrow.ligo import learn, learn_coefficients
from hfgrow.layout import open_model
from hfgrow.ops.depth import stack_plan
from hfgrow.ops.learn import initial_coefficients, learned_plan
from hfgrow.executor import materialize
from hfgrow.tiny import make_model, make_tokenizer, pretrain_tiny, python_docs_corpus, tiny_llama_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-layer Llama trained briefly on the pydoc topics, plus held-in/held-out text files."""
    root = tmp_path_factory.mktemp("ligo")
    docs = python_docs_corpus(max_chars=150_000)
    src = root / "src"
    make_model(src, tiny_llama_config(layers=2, hidden_size=64, intermediate_size=128), tokenizer=False)
    make_tokenizer(src, text="\n".join(docs[:40]), vocab_size=256)
    pretrain_tiny(src, docs, steps=120)
    data = root / "train.txt"
    data.write_text("\n\n".join(docs[: len(docs) // 2]))
    return src, data, root


def test_initial_coefficients_are_gstack(trained, tmp_path):
    src, data, _ = trained
    ligo = learn(str(src), tmp_path / "ligo", data=[str(data)], factor=2, learn_steps=0, quiet=True)
    gstack = hfgrow.stack(str(src), tmp_path / "gstack", factor=2, quiet=True)
    a, b = Checkpoint.open(tmp_path / "ligo"), Checkpoint.open(tmp_path / "gstack")
    assert set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        assert torch.equal(a.load(name), b.load(name)), name
    assert ligo.plan.layer_map == gstack.plan.layer_map

    # the parametrised grown model at D = stacking map computes exactly Gstack's loss
    checkpoint, layout = open_model(src)
    layer_map = [0, 1, 0, 1]
    config = stack_plan(layout, checkpoint.tensors, layer_map).config
    report = learn_coefficients(src, layout, config, layer_map, [str(data)], steps=0, seq_len=64, progress=False)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "gstack").eval()
    from hfgrow.ligo import _sequences
    import random

    sequences = _sequences(src, [str(data)], 64)
    order = list(range(len(sequences)))
    random.Random(0).shuffle(order)
    eval_set = sequences[order[: min(max(1, len(order) // 10), 64)]]
    with torch.no_grad():
        expected = sum(model(eval_set[i:i + 4], labels=eval_set[i:i + 4]).loss.item() * len(eval_set[i:i + 4])
                       for i in range(0, len(eval_set), 4)) / len(eval_set)
    assert report.eval_before == pytest.approx(expected, abs=1e-5)


def test_combination_math(trained):
    src, _, _ = trained
    checkpoint, layout = open_model(src)
    layer_map = [0, 1, 0, 1]
    coefficients = initial_coefficients(layout, layer_map)
    rest = "self_attn.q_proj.weight"
    coefficients[rest][2] = [0.25, 0.75]
    plan = learned_plan(layout, checkpoint.tensors, layer_map, coefficients)
    target = next(t for t in plan.tensors if t.name == f"model.layers.2.{rest}")
    got = materialize(target, checkpoint)
    w0, w1 = checkpoint.load(f"model.layers.0.{rest}"), checkpoint.load(f"model.layers.1.{rest}")
    torch.testing.assert_close(got, 0.25 * w0 + 0.75 * w1, rtol=0, atol=1e-7)
    untouched = next(t for t in plan.tensors if t.name == f"model.layers.3.{rest}")
    assert untouched.transform is None and untouched.sources == (f"model.layers.1.{rest}",)


def test_learning_lowers_held_out_loss_and_replays(trained, tmp_path):
    src, data, _ = trained
    result = learn(str(src), tmp_path / "out", data=[str(data)], factor=2, learn_steps=30, learn_lr=1e-2,
                   seq_len=64, batch_size=8, seed=0, quiet=True)
    note = result.plan.notes[0]
    before, after = (float(x) for x in note.split("held-out loss ")[1].replace(" at Gstack init -> ", " ")
                     .replace(" learned", "").split())
    assert after < before - 0.01, note
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]

    recipe = hfgrow.recipe.load_recipe(tmp_path / "out")
    coefficients = recipe["operation"]["coefficients"]
    assert any(row != [1.0, 0.0] and row != [0.0, 1.0] for rows in coefficients.values() for row in rows)
    hfgrow.replay(tmp_path / "out", tmp_path / "replay", quiet=True)
    a, b = Checkpoint.open(tmp_path / "out"), Checkpoint.open(tmp_path / "replay")
    for name in a.tensors:
        assert torch.equal(a.load(name), b.load(name)), name


def test_learn_needs_data(trained, tmp_path):
    src, _, _ = trained
    with pytest.raises(HfgrowError, match="needs --data"):
        learn(str(src), tmp_path / "x", factor=2, quiet=True)
    with pytest.raises(HfgrowError, match="fewer than two sequences"):
        tiny = tmp_path / "tiny.txt"
        tiny.write_text("too short")
        learn(str(src), tmp_path / "y", data=[str(tiny)], factor=2, quiet=True)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
