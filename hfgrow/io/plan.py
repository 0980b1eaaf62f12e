"""The write plan: for every output tensor, which source tensors and what transform.

This is the seam between the pure growth operators (:mod:`hfgrow.growth.ops`, which build lists of
``TensorPlan`` and do no I/O) and :mod:`hfgrow.io.executor` (which writes any such list). A tensor with
``transform=None`` and the same dtype and shape as its single source is copied as raw bytes; anything
else goes through torch, one tensor at a time.

Example:
    >>> tensor = TensorPlan("model.norm.weight", "BF16", (2048,), ("model.norm.weight",))
    >>> tensor.nbytes, total_bytes([tensor, tensor])
    (4096, 8192)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

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


def total_bytes(tensors: Iterable[TensorPlan]) -> int:
    """Bytes of data the tensors occupy once written."""
    return sum(t.nbytes for t in tensors)
