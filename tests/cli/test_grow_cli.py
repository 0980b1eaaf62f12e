"""The growth commands' CLI: the dry-run summary reports what the executor does; options that do not apply to
the chosen mode are refused in one line."""

from __future__ import annotations

import re

import pytest

from hfgrow.eval.tiny import make_model, tiny_llama_config
from helpers.cli import run_cli


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "small"
    make_model(folder, tiny_llama_config(layers=2))  # float32 weights
    return folder


def counts(out: str) -> tuple[int, int]:
    copies, computed = re.search(r"\((\d+) byte copies, (\d+) computed\)", out).groups()
    return int(copies), int(computed)


def test_dry_run_counts_what_the_executor_does(small, capsys):
    code, out, _ = run_cli(["stack", small, "--factor", "2", "--dry-run"], capsys)
    assert code == 0 and counts(out)[1] == 0  # same dtype: every tensor is a byte copy
    code, out, _ = run_cli(["stack", small, "--factor", "2", "--dtype", "bfloat16", "--dry-run"], capsys)
    # float32 -> bfloat16: every tensor is converted, none can be copied byte for byte (0.1 said "39 byte copies")
    assert code == 0 and counts(out)[0] == 0 and counts(out)[1] > 0
    code, out, _ = run_cli(["stack", small, "--factor", "2", "--max-shard-size", "2GiB", "--dry-run"], capsys)
    assert code == 0 and "dry run: nothing written." in out


@pytest.mark.parametrize("argv, message", [
    (["grow", "SRC", "OUT", "--op", "learn", "--factor", "2", "--noise", "0.1"], "--noise does not apply to --op learn"),
    (["grow", "SRC", "OUT", "--factor", "2", "--learn-steps", "5"], "--learn-steps is for --op learn"),
    (["grow", "--recipe", "RECIPE", "OUT", "--factor", "2"], "--factor cannot be combined with --recipe"),
    (["stack", "SRC", "OUT", "--max-shard-size", "5 bananas"], "is not a valid size"),
    (["grow", "SRC", "OUT", "--op", "random", "--factor", "2", "--mask-steps", "lots"], "is not a valid count"),
])
def test_options_that_do_not_apply_are_refused(small, tmp_path, capsys, argv, message):
    recipe = tmp_path / "hfgrow.yaml"
    recipe.write_text("format: 2\n")
    argv = [{"SRC": small, "OUT": tmp_path / "out", "RECIPE": recipe}.get(a, a) for a in argv]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_counts_accept_suffixes(small, tmp_path, capsys):
    code, _, _ = run_cli(["grow", small, tmp_path / "msg", "--op", "random", "--layers", "3", "--mask-steps", "2k",
                          "-q"], capsys)
    assert code == 0
    from hfgrow.growth.recipe import Recipe

    assert Recipe.read(tmp_path / "msg").operation.mask.steps == 2000


def test_width_options_that_change_nothing_are_refused_in_one_line(small, tmp_path, capsys):
    """--hidden-size equal to the model's own used to end in an AttributeError traceback."""
    hidden = tiny_llama_config(layers=2).hidden_size
    code, _, err = run_cli(["grow", small, tmp_path / "out", "--op", "stack", "--hidden-size", hidden], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip() == (f"error: the width options give the model's own sizes (hidden {hidden}); nothing to widen: "
                           "give a larger --hidden-size, --intermediate-size or --num-heads.")
    assert not (tmp_path / "out").exists()
