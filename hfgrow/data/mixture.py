"""Mixture files: the one reader, validator and writer of a data mixture.

A mixture file is JSON::

    {"measure": "ce",                      # optional: how the proportions were made (se/je/ce/law/...)
     "domains": {"web":  {"proportion": 0.7, "se": 7.1, "tokens": 123},   # what hfgrow writes
                 "code": 0.3,                                               # shorthand, by hand
                 "eval": 0}}                                                # not trained on

The rules, the same for every reader and writer (``hfgrow mix`` writes through
:func:`write_mixture`, ``hfgrow train --mixture`` reads through :func:`read_mixture`):

- a domain's entry is ``{"proportion": r, ...}`` (other keys, like entropies or predicted losses,
  are for people and are kept) or a bare number ``r``: the shorthand is unambiguous, so a
  hand-written file need not spell out ``"proportion"``;
- ``r`` is a finite number ≥ 0; **zero is allowed** and means "not trained on" (training then
  holds all of that domain out for evaluation); at least one ``r`` must be positive;
- proportions are **normalised on read**, so ``3`` and ``1`` mean 0.75 and 0.25 (hfgrow itself
  always writes proportions that sum to 1);
- a name given twice, an empty name, a non-number (booleans included), NaN, infinity and
  negative values are refused with one sentence.

Example:
    >>> validate_mixture({"domains": {"web": {"proportion": 3}, "code": 1, "eval": 0}})
    {'web': 0.75, 'code': 0.25, 'eval': 0.0}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from hfgrow.data.jsonfile import is_number, read_json
from hfgrow.io.output import atomic_write
from hfgrow.errors import HfgrowError

__all__ = ["validate_mixture", "read_mixture", "write_mixture"]


def _proportion(entry: Any) -> Any:
    return entry.get("proportion") if isinstance(entry, dict) else entry


def validate_mixture(obj: Any, where: str = "mixture") -> dict[str, float]:
    """Check a mixture object against the rules above; return its normalised proportions, in file order.

    ``where`` names the object in errors (``"mixture file 'mix.json'"``).

    Raises:
        HfgrowError: one sentence naming the first problem found.

    Example:
        >>> validate_mixture({"domains": {"a": {"proportion": 0.5}, "b": -0.5}})
        Traceback (most recent call last):
        hfgrow.errors.HfgrowError: the mixture gives domain 'b' a proportion that is not a number ≥ 0.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("domains"), dict):
        raise HfgrowError(f'the {where} is not a mixture: it needs a "domains" object.')
    if not isinstance(obj.get("measure", ""), str):
        raise HfgrowError(f'the {where} has a "measure" that is not a string.')
    domains = obj["domains"]
    if not domains:
        raise HfgrowError(f"the {where} names no domain.")
    props: dict[str, float] = {}
    for name, entry in domains.items():
        if not name:
            raise HfgrowError(f"the {where} has a domain with an empty name.")
        r = _proportion(entry)
        if isinstance(entry, dict) and "proportion" not in entry:
            raise HfgrowError(f'the {where} gives domain \'{name}\' no "proportion".')
        if not is_number(r) or r < 0:
            raise HfgrowError(f"the {where} gives domain '{name}' a proportion that is not a number ≥ 0.")
        props[name] = float(r)
    total = sum(props.values())
    if total <= 0:
        raise HfgrowError(f"the {where} gives every domain proportion 0; at least one must be positive.")
    return {name: r / total for name, r in props.items()}


def read_mixture(path: str | os.PathLike, domain_names: Sequence[str] | None = None) -> dict[str, float]:
    """Read and validate a mixture file; return ``{name: proportion}`` normalised to sum to 1.

    With ``domain_names`` (the training domains) every name of the file must be one of them and
    each of them must have a proportion; the result then follows their order.

    Raises:
        HfgrowError: a missing or invalid file, an unknown domain, a domain without a proportion,
            or no positive proportion among ``domain_names``.

    Example:
        >>> read_mixture("mix.json", ["web", "code"])                    # doctest: +SKIP
        {'web': 0.7, 'code': 0.3}
    """
    where = f"mixture file '{path}'"
    props = validate_mixture(read_json(path, "mixture file"), where)
    if domain_names is None:
        return props
    names = list(domain_names)
    unknown = [k for k in props if k not in names]
    if unknown:
        raise HfgrowError(
            f"the {where} names unknown domain '{unknown[0]}'; the --data domains are {', '.join(map(repr, names))}."
        )
    missing = [k for k in names if k not in props]
    if missing:
        raise HfgrowError(f"the {where} gives no proportion for domain '{missing[0]}'.")
    return {k: props[k] for k in names}


def write_mixture(obj: dict, path: str | os.PathLike) -> None:
    """Validate a mixture object and write it as JSON, atomically (the object is written as given).

    Example:
        >>> write_mixture({"measure": "ce", "domains": {"a": {"proportion": 1.0}}}, "mix.json")  # doctest: +SKIP
    """
    validate_mixture(obj)
    atomic_write(path, obj)
