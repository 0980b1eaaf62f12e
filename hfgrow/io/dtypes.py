"""Tensor dtypes, by their safetensors names (``BF16``, ``F32``, ...): the one table hfgrow keeps.

Plans, headers and recipes speak safetensors names; ``--dtype`` and ``config.json`` speak torch names
(``bfloat16``); torch itself is imported only by :func:`to_torch` / :func:`from_torch`, so reading a
header or printing a plan needs no torch.

Example:
    >>> itemsize("BF16"), nbytes("BF16", (2048, 5632)), from_option("bf16"), config_name("F16")
    (2, 23068672, 'BF16', 'float16')
"""

from __future__ import annotations

import math
from typing import Any

from hfgrow.errors import HfgrowError

# safetensors name -> (bytes per element, torch attribute name)
_TABLE: dict[str, tuple[int, str]] = {
    "F64": (8, "float64"),
    "F32": (4, "float32"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "I64": (8, "int64"),
    "I32": (4, "int32"),
    "I16": (2, "int16"),
    "I8": (1, "int8"),
    "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
    "F8_E4M3": (1, "float8_e4m3fn"),
    "F8_E5M2": (1, "float8_e5m2"),
}
#: Every safetensors dtype hfgrow reads and writes.
SUPPORTED = frozenset(_TABLE)
#: Floating-point dtypes that ``--dtype`` converts and growth operators compute on.
FLOAT = frozenset({"F64", "F32", "F16", "BF16"})
#: What ``--dtype`` accepts besides ``keep`` (torch names), and the short aliases people type.
OUTPUT_CHOICES = ("bfloat16", "float16", "float32")
_ALIASES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "bf16": "BF16", "fp16": "F16", "fp32": "F32"}


def itemsize(dtype: str) -> int:
    """Bytes per element of a safetensors dtype."""
    return _TABLE[dtype][0]


def nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of ``dtype`` and ``shape`` occupies."""
    return math.prod(shape) * _TABLE[dtype][0]


def from_option(name: str | None) -> str | None:
    """``--dtype`` value -> safetensors name; ``keep`` or None -> None (keep each tensor's own dtype).

    Raises:
        HfgrowError: an unknown name.
    """
    if name is None or name == "keep":
        return None
    dtype = _ALIASES.get(name.lower())
    if dtype is None:
        raise HfgrowError(f"unknown dtype '{name}'; use keep, {', '.join(OUTPUT_CHOICES)}.")
    return dtype


def config_name(dtype: str) -> str:
    """The name ``config.json`` (and torch) uses for a safetensors dtype: ``BF16`` -> ``bfloat16``."""
    return _TABLE[dtype][1]


def to_torch(dtype: str) -> Any:
    """The torch dtype of a safetensors name."""
    import torch

    return getattr(torch, _TABLE[dtype][1])


def from_torch(torch_dtype: Any) -> str | None:
    """The safetensors name of a torch dtype (None when safetensors has no such dtype)."""
    name = str(torch_dtype).removeprefix("torch.")
    return next((st for st, (_, attr) in _TABLE.items() if attr == name), None)


def float_output(dtype: str, requested: str | None) -> str:
    """The output dtype of a source tensor: ``requested`` for floating tensors, its own dtype otherwise."""
    return requested if requested and dtype in FLOAT else dtype


def cast_rounds(source: str, output: str) -> bool:
    """Whether casting values of dtype ``source`` to ``output`` can change them (safetensors names).

    Example:
        >>> cast_rounds("F32", "BF16"), cast_rounds("BF16", "F32"), cast_rounds("F16", "F16")
        (True, False, False)
    """
    return source != output and not (output == "F64" or (output == "F32" and source in ("BF16", "F16")))
