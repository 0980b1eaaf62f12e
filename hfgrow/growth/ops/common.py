"""Helpers shared by the operators: seeded generators, chunked tensor building, transform composition.

Random values are drawn from a ``torch.Generator`` seeded from a hash of (seed, purpose,
tensor name, chunk start), so a tensor's values depend only on those — not on the order
tensors are written in, the shard size, or which other tensors exist. Tensors are built
in row chunks of a fixed number of elements (a constant, so chunk boundaries — and hence
the random streams — depend only on the shape): working memory stays at one output
tensor plus one float32 chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable

import torch

from hfgrow.io import dtypes
from hfgrow.io.plan import Fn, TensorPlan

# elements per working chunk (float32: 16 MiB). Changing it changes random streams: keep it fixed.
CHUNK_ELEMENTS = 1 << 22


def generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and ``keys`` (e.g. a purpose and a tensor name).

    Example:
        >>> a = torch.randn(3, generator=generator(0, "noise", "w"))
        >>> torch.equal(a, torch.randn(3, generator=generator(0, "noise", "w")))
        True
    """
    text = "\x1f".join([str(seed), *map(str, keys)])
    digest = hashlib.sha256(text.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def row_chunks(shape: tuple[int, ...]):
    """(start, stop) ranges over the first dimension, each about CHUNK_ELEMENTS elements."""
    if not shape:
        yield 0, 1
        return
    row = 1
    for dim in shape[1:]:
        row *= dim
    step = max(1, CHUNK_ELEMENTS // max(1, row))
    for start in range(0, shape[0], step):
        yield start, min(shape[0], start + step)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def build(shape: tuple[int, ...], dtype: str, rows: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """A tensor of ``shape``/``dtype`` (safetensors name) filled chunk by chunk from ``rows(start, stop)``."""
    out = torch.empty(shape, dtype=dtypes.to_torch(dtype))
    if not shape:
        out.copy_(rows(0, 1).reshape(()))
        return out
    for start, stop in row_chunks(shape):
        out[start:stop] = rows(start, stop)
    return out


def normal(shape: tuple[int, ...], dtype: str, std: float, seed: int, *keys: object) -> torch.Tensor:
    """N(0, std²) values, seeded per (seed, keys, chunk)."""
    def rows(start: int, stop: int) -> torch.Tensor:
        gen = generator(seed, *keys, start)
        return torch.randn((stop - start, *shape[1:]), generator=gen) * std
    return build(shape, dtype, rows)


def constant(shape: tuple[int, ...], dtype: str, value: float) -> torch.Tensor:
    return torch.full(shape, value, dtype=dtypes.to_torch(dtype))


def then(tensor: TensorPlan, fn: Callable[[torch.Tensor], torch.Tensor], text: str,
         shape: tuple[int, ...] | None = None) -> TensorPlan:
    """``tensor`` with ``fn`` applied after its current transform (and a new shape if given)."""
    previous = tensor.transform

    if previous is None:
        def run(*sources: torch.Tensor) -> torch.Tensor:
            return fn(sources[0])
        description = text
    else:
        def run(*sources: torch.Tensor) -> torch.Tensor:
            return fn(previous(*sources))
        description = f"{previous.describe()}, then {text}"
    return dataclasses.replace(tensor, transform=Fn(run, description), shape=tuple(shape or tensor.shape))


def replace(tensor: TensorPlan, make: Callable[[], torch.Tensor], text: str) -> TensorPlan:
    """``tensor`` computed from scratch by ``make()`` (its source is not read for the values)."""
    return dataclasses.replace(tensor, transform=Fn(lambda *sources: make(), text))
