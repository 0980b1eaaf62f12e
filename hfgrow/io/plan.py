"""A plan: for every output tensor, which source tensors and what transform.

Operators build plans and do no I/O; :mod:`hfgrow.io.executor` writes any plan.
A tensor with ``transform=None`` and the same dtype as its single source is copied
as raw bytes; anything else goes through torch, one tensor at a time.

Example:
    >>> plan = Plan(tensors=[TensorPlan("model.norm.weight", "BF16", (2048,), ("model.norm.weight",))])
    >>> plan.total_bytes
    4096
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from hfgrow.io import dtypes

if TYPE_CHECKING:
    import torch


class Transform(Protocol):
    """Turns the source tensors of one output tensor into that tensor (on CPU)."""

    def __call__(self, *sources: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Fn:
    """A transform from a plain function plus a short human description (for --dry-run)."""

    fn: Callable[..., torch.Tensor]
    text: str

    def __call__(self, *sources: torch.Tensor) -> torch.Tensor:
        return self.fn(*sources)

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class TensorPlan:
    name: str
    dtype: str  # safetensors dtype of the output
    shape: tuple[int, ...]
    sources: tuple[str, ...]
    transform: Transform | None = None

    @property
    def nbytes(self) -> int:
        return dtypes.nbytes(self.dtype, self.shape)


@dataclass
class Plan:
    """Everything the executor needs, plus what the card, recipe and --dry-run report."""

    tensors: list[TensorPlan]
    config: dict[str, Any] = field(default_factory=dict)
    layer_map: list[int] | None = None
    new_layers: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # recipe fields specific to the operator (op name, parameters, mask metadata, ...)
    recipe: dict[str, Any] = field(default_factory=dict)
    # extra safetensors files written next to the recipe (file name -> tensors), e.g. learned LiGO matrices
    sidecars: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def num_params(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)
