"""The recipe's function_preserving agrees with `hfgrow verify --expect preserved` on bf16 output (issue 15).

A widening multiplies weights by 1/copies (neuron splitting) or sqrt(old/new) (G-right-zero's RMSNorm
rescale). Stored in bf16 such a product is rounded unless the factor is a power of two, and the grown
model then misses its source's logits by far more than verify's tolerance. So each case below grows a
bf16 model, asks verify, and checks that the recipe, the card and a `warning:` line say the same thing.
"""

from __future__ import annotations

import pytest
import torch

from hfgrow.eval.tiny import make_model, tiny_llama_config
from hfgrow.growth.pipeline import grow
from hfgrow.growth.recipe import Recipe
from hfgrow.growth.verify import verify
from helpers.cli import run_cli

# (grow keyword arguments, whether the bf16 output keeps the function, why): the factors are worked out by hand
CASES = {
    # x2 everywhere: reads of split units x 1/2, exact in bf16
    "direct hidden x2": (dict(op="direct", hidden_size=128), True),
    # 64 -> 96 hidden (6 heads, 3 key/value): half the units copied twice, scaled copies sqrt(1.5/2) and 1/(2·s)
    "direct hidden x1.5": (dict(op="direct", hidden_size=96, num_heads=6, num_kv_heads=3), False),
    # FFN 128 -> 384: every unit copied 3 times, its readers x 1/3
    "direct FFN x3": (dict(op="direct", intermediate_size=384), False),
    # FFN 128 -> 256: readers x 1/2
    "direct FFN x2": (dict(op="direct", intermediate_size=256), True),
    # new hidden units stay zero; RMSNorm weights x sqrt(64/128) = 0.7071...: rounded
    "zero hidden x2": (dict(op="zero", hidden_size=128), False),
    # 64 -> 256: RMSNorm weights x sqrt(1/4) = 1/2, exact
    "zero hidden x4": (dict(op="zero", hidden_size=256), True),
    # new FFN units and heads: zero fan-out, nothing rescaled
    "zero FFN": (dict(op="zero", intermediate_size=384), True),
    "zero heads": (dict(op="zero", num_heads=8, num_kv_heads=4, hidden_size=64), True),
    # random new units: never preserving, whatever the dtype
    "random hidden": (dict(op="random", hidden_size=128), False),
    # identity blocks: zeroed output projections, exact in any dtype
    "zero depth": (dict(op="zero", factor=2), True),
    "zero depth + direct hidden x2": (dict(op="zero", width_op="direct", factor=2, hidden_size=128), True),
}


@pytest.fixture(scope="module")
def bf16_source(tmp_path_factory):
    src = tmp_path_factory.mktemp("bf16") / "src"
    # initializer_range 0.2: logits of a few units, so rounding shows against verify's tolerance
    make_model(src, tiny_llama_config(layers=2, initializer_range=0.2), dtype=torch.bfloat16)
    return src


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_recipe_agrees_with_verify(case, bf16_source, tmp_path, capsys):
    kwargs, expected = CASES[case]
    capsys.readouterr()
    result = grow(str(bf16_source), tmp_path / "out", quiet=True, **kwargs)
    err = capsys.readouterr().err
    check = verify(str(bf16_source), str(tmp_path / "out"))
    assert check.preserved == expected, check.report()
    recipe = Recipe.read(tmp_path / "out")
    assert recipe.operation.function_preserving == expected == result.recipe.operation.function_preserving
    card = (tmp_path / "out" / "README.md").read_text()
    assert ("computes the\nsame function as its source" in card) == expected
    rounding = [line for line in err.splitlines() if "rounding" in line]
    if expected or kwargs["op"] == "random":
        assert rounding == []
    else:  # the one line the user sees at grow time, with the fix
        assert len(rounding) == 1 and rounding[0].startswith("warning: BF16 output rounds ")
        assert "--dtype float32 keeps the function" in rounding[0]
        # ... and the fix works: float32 output of the same growth verifies
        grow(str(bf16_source), tmp_path / "f32", quiet=True, dtype="float32", **kwargs)
        assert verify(str(bf16_source), str(tmp_path / "f32")).preserved
        assert Recipe.read(tmp_path / "f32").operation.function_preserving


def test_casting_a_float32_source_to_bf16_is_not_preserving(tmp_path, capsys):
    """--dtype bfloat16 rounds every float32 source weight, so even identity blocks are inexact (verify agrees)."""
    src = tmp_path / "src"
    make_model(src, tiny_llama_config(layers=2, initializer_range=0.2))
    capsys.readouterr()
    code, _, err = run_cli(["grow", src, tmp_path / "out", "--op", "zero", "--factor", "2", "--dtype", "bfloat16",
                            "-q"], capsys)
    assert code == 0
    assert err.startswith("warning: casting the F32 source weights to BF16 rounds them") and err.count("\n") == 1
    assert not Recipe.read(tmp_path / "out").operation.function_preserving
    assert not verify(str(src), str(tmp_path / "out")).preserved
    code, _, err = run_cli(["verify", src, tmp_path / "out", "--expect", "preserved"], capsys)
    assert code == 1
