"""A growth plan: the tensors to write (for the executor) and what the card and recipe report about them.

Operators take a plan and return a new one (``dataclasses.replace``); none does I/O. The pipeline
(:mod:`hfgrow.growth.pipeline`) hands ``plan.tensors`` to :mod:`hfgrow.io.executor`, writes
``plan.config`` as config.json and records ``plan.operation`` in the recipe.

Example:
    >>> plan = stack_plan(layout, ckpt.tensors, [0, 1, 0, 1])
    >>> plan.new_layers, plan.operation.op, plan.total_bytes
    ([2, 3], 'direct', 1048576)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hfgrow.growth.recipe import Operation
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
