"""hfgrow.data.mixture: the one mixture-file reader, validator and writer (forms accepted and refused)."""

from __future__ import annotations

import doctest
import json
from fractions import Fraction

import pytest

from hfgrow.data import jsonfile, mixture
from hfgrow.data.mixture import read_mixture, validate_mixture, write_mixture
from helpers.errors import raises


def test_doctests():
    for module in (mixture, jsonfile):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted >= 2, module.__name__


# every accepted form, with the proportions worked out by hand (exact fractions)
ACCEPTED = {
    "what hfgrow writes": (
        {"measure": "ce", "domains": {"a": {"proportion": 0.25, "ce": 3.1, "tokens": 9}, "b": {"proportion": 0.75}}},
        {"a": Fraction(1, 4), "b": Fraction(3, 4)},
    ),
    "bare numbers": ({"domains": {"a": 0.7, "b": 0.3}}, {"a": Fraction(7, 10), "b": Fraction(3, 10)}),
    "weights, normalised": ({"domains": {"a": {"proportion": 3}, "b": 1}}, {"a": Fraction(3, 4), "b": Fraction(1, 4)}),
    "zero: not trained on": ({"domains": {"a": 2, "b": 0, "c": 6}}, {"a": Fraction(1, 4), "b": 0, "c": Fraction(3, 4)}),
    "one domain": ({"domains": {"only": {"proportion": 5}}}, {"only": 1}),
    "other top-level keys": ({"measure": "law", "steps": 100, "domains": {"a": 1, "b": 1}}, {"a": Fraction(1, 2), "b": Fraction(1, 2)}),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_forms(case):
    obj, expected = ACCEPTED[case]
    got = validate_mixture(obj)
    assert list(got) == list(expected)  # file order
    for name, r in expected.items():
        assert got[name] == pytest.approx(float(r), abs=1e-15)


REFUSED = {
    "not an object": ([1, 2], 'the mixture is not a mixture: it needs a "domains" object.'),
    "no domains": ({"measure": "ce"}, 'the mixture is not a mixture: it needs a "domains" object.'),
    "domains a list": ({"domains": [0.5, 0.5]}, 'the mixture is not a mixture: it needs a "domains" object.'),
    "measure not a string": ({"measure": 1, "domains": {"a": 1}}, 'the mixture has a "measure" that is not a string.'),
    "empty domains": ({"domains": {}}, "the mixture names no domain."),
    "empty name": ({"domains": {"": 1}}, "the mixture has a domain with an empty name."),
    "entry without proportion": ({"domains": {"a": {"ce": 1.0}}}, 'the mixture gives domain \'a\' no "proportion".'),
    "negative": ({"domains": {"a": 1, "b": -0.5}}, "the mixture gives domain 'b' a proportion that is not a number ≥ 0."),
    "string": ({"domains": {"a": "0.5"}}, "the mixture gives domain 'a' a proportion that is not a number ≥ 0."),
    "boolean": ({"domains": {"a": True}}, "the mixture gives domain 'a' a proportion that is not a number ≥ 0."),
    "nan": ({"domains": {"a": float("nan")}}, "the mixture gives domain 'a' a proportion that is not a number ≥ 0."),
    "infinite": ({"domains": {"a": {"proportion": float("inf")}}}, "the mixture gives domain 'a' a proportion that is not a number ≥ 0."),
    "all zero": ({"domains": {"a": 0, "b": 0.0}}, "the mixture gives every domain proportion 0; at least one must be positive."),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_forms(case):
    obj, message = REFUSED[case]
    with raises(message):
        validate_mixture(obj)


def test_read_mixture_against_training_domains(tmp_path):
    path = tmp_path / "mix.json"
    path.write_text(json.dumps({"domains": {"code": 1, "web": {"proportion": 3}, "held": 0}}))
    assert read_mixture(path) == {"code": 0.25, "web": 0.75, "held": 0.0}
    assert list(read_mixture(path, ["web", "held", "code"])) == ["web", "held", "code"]  # the domains' order
    with raises(f"the mixture file '{path}' names unknown domain 'held'; the --data domains are 'web', 'code'."):
        read_mixture(path, ["web", "code"])
    with raises(f"the mixture file '{path}' gives no proportion for domain 'books'."):
        read_mixture(path, ["web", "code", "held", "books"])


def test_read_mixture_file_errors(tmp_path):
    with raises(f"the mixture file '{tmp_path / 'nope.json'}' does not exist."):
        read_mixture(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with raises(f"the mixture file '{bad}' is not valid JSON (Expecting property name enclosed in double quotes at line 1)."):
        read_mixture(bad)
    bad.write_text('{"domains": {"a": {"proportion": 0.5}, "a": {"proportion": 0.5}}}')
    with raises(f"the mixture file '{bad}' names 'a' twice."):
        read_mixture(bad)
    bad.write_text('{"domains": {"a": -1}}')
    with raises(f"the mixture file '{bad}' gives domain 'a' a proportion that is not a number ≥ 0."):
        read_mixture(bad)


def test_write_mixture_is_atomic_validated_and_round_trips(tmp_path):
    obj = {"measure": "ce", "domains": {"a": {"proportion": 0.4, "se": 1.5}, "b": {"proportion": 0.6, "se": 2.5}}}
    path = tmp_path / "sub" / "mix.json"
    write_mixture(obj, path)
    assert json.loads(path.read_text()) == obj  # written as given, entropies kept
    assert read_mixture(path) == pytest.approx({"a": 0.4, "b": 0.6}, abs=1e-15)
    assert [p.name for p in path.parent.iterdir()] == ["mix.json"]  # no temporary file left
    with raises("the mixture gives domain 'a' a proportion that is not a number ≥ 0."):
        write_mixture({"domains": {"a": {"proportion": -1}}}, tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()
