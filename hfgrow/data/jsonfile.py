"""The small JSON files people write and hfgrow reads back (mixtures, laws, observation logs).

One strict reading rule, on top of the read gateway (:mod:`hfgrow.io.folder`: regular files only, sizes
bounded, nesting too deep is a sentence):

- :func:`parse_json` refuses a key given twice in one object (plain ``json.loads`` keeps the last,
  silently dropping a domain a person wrote twice);
- :func:`read_json` reads a file a user named through the gateway;
- :func:`is_number` is the one test for "a finite JSON number" (booleans are not numbers).

Writing goes through :func:`hfgrow.io.output.atomic_write`.

Example:
    >>> parse_json('{"a": 1}', "the example")
    {'a': 1}
    >>> is_number(0.5), is_number(True), is_number(float("nan"))
    (True, False, False)
"""

from __future__ import annotations

import math
import os
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.io.folder import parse_bounded_json, read_user_file

__all__ = ["parse_json", "read_json", "is_number"]


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_json(text: bytes | str, where: str) -> Any:
    """Parse JSON text, refusing an object that names a key twice; ``where`` starts the error sentence.

    Raises:
        HfgrowError: ``<where> is not valid JSON (...).`` or ``<where> names 'k' twice.``

    Example:
        >>> parse_json('{"a": 1, "a": 2}', "mix.json")
        Traceback (most recent call last):
        hfgrow.errors.HfgrowError: mix.json names 'a' twice.
    """
    try:
        return parse_bounded_json(text, where, None, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise HfgrowError(f"{where} names '{exc.args[0]}' twice.") from None


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file a user named strictly (see :func:`parse_json`); ``what`` names it in errors ("mixture file").

    Example:
        >>> read_json("missing.json", "law file")
        Traceback (most recent call last):
        hfgrow.errors.HfgrowError: the law file 'missing.json' does not exist.
    """
    return parse_json(read_user_file(path, what), f"the {what} '{path}'")


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool).

    Example:
        >>> is_number(3), is_number("3"), is_number(float("inf"))
        (True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
