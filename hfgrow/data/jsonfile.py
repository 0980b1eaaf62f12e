"""The small JSON files people write and hfgrow reads back (mixtures, laws, observation logs).

One strict reading rule and one way to write:

- :func:`parse_json` refuses a key given twice in one object (plain ``json.loads`` keeps the last,
  silently dropping a domain a person wrote twice);
- :func:`read_json` adds a clear error for a missing file;
- :func:`write_json` writes atomically (a temporary file, then ``os.replace``), so a reader never
  sees half a file;
- :func:`is_number` is the one test for "a finite JSON number" (booleans are not numbers).

Example:
    >>> parse_json('{"a": 1}', "the example")
    {'a': 1}
    >>> is_number(0.5), is_number(True), is_number(float("nan"))
    (True, False, False)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError

__all__ = ["parse_json", "read_json", "write_json", "is_number"]


class _DuplicateKey(ValueError):
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
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise HfgrowError(f"{where} is not valid JSON ({exc.msg}).") from None
    except UnicodeDecodeError:
        raise HfgrowError(f"{where} is not valid JSON (invalid UTF-8).") from None
    except _DuplicateKey as exc:
        raise HfgrowError(f"{where} names '{exc.args[0]}' twice.") from None


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file strictly (see :func:`parse_json`); ``what`` names it in errors ("mixture file").

    Example:
        >>> read_json("missing.json", "law file")
        Traceback (most recent call last):
        hfgrow.errors.HfgrowError: the law file 'missing.json' does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise HfgrowError(f"the {what} '{path}' does not exist.")
    return parse_json(path.read_bytes(), f"the {what} '{path}'")


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically; missing parent folders are created.

    Example:
        >>> write_json({"domains": {"a": {"proportion": 1.0}}}, "runs/mix.json")   # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool).

    Example:
        >>> is_number(3), is_number("3"), is_number(float("inf"))
        (True, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
