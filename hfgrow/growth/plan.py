"""A growth plan: the tensors to write (for the executor) and what the card and recipe report about them.

Operators take a plan and return a new one (``dataclasses.replace``); none does I/O. The pipeline
(:mod:`hfgrow.growth.pipeline`) hands ``plan.tensors`` to :mod:`hfgrow.io.executor`, writes
``plan.config`` as config.json and records ``plan.operation`` in the recipe.

Example:
    >>> plan = stack_plan(layout, ckpt.tensors, [0, 1, 0, 1])
    >>> plan.new_layers, plan.operation.op, plan.total_bytes
    ([2, 3], 'stack', 1048576)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hfgrow.growth.recipe import Operation
from hfgrow.io import dtypes
from hfgrow.io.plan import TensorPlan, total_bytes

if TYPE_CHECKING:
    import torch


@dataclass
class Plan:
    """Everything the executor needs, plus what the card, recipe and ``--dry-run`` report."""

    tensors: list[TensorPlan]
    config: dict[str, Any] = field(default_factory=dict)
    layer_map: list[int] | None = None
    new_layers: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # what the user should hear about even with --quiet (one ``warning: ...`` line each; the card lists them too)
    warnings: list[str] = field(default_factory=list)
    operation: Operation = field(default_factory=Operation)
    # extra safetensors files written next to the recipe (file name -> tensors), e.g. learned LiGO matrices
    sidecars: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return total_bytes(self.tensors)

    @property
    def num_params(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)


def rounding_cast(plan, checkpoint) -> str | None:
    """Why ``--dtype`` makes a function-preserving growth inexact: it rounds source weights (e.g. F32 -> BF16).

    Example:
        >>> rounding_cast(plan, checkpoint)            # a float32 source grown with --dtype bfloat16
        'casting the F32 source weights to BF16 rounds them: the grown model matches its source only to BF16 ...'
    """
    casts = sorted({(checkpoint.tensors[t.sources[0]].dtype, t.dtype) for t in plan.tensors
                    if t.sources and t.sources[0] in checkpoint.tensors
                    and dtypes.cast_rounds(checkpoint.tensors[t.sources[0]].dtype, t.dtype)})
    if not casts:
        return None
    source, output = casts[0]
    return (f"casting the {source} source weights to {output} rounds them: the grown model matches its source only "
            f"to {output} rounding, so it is not function-preserving (recipe: function_preserving false; verify "
            "--expect preserved fails); --dtype keep or float32 keeps the function")
