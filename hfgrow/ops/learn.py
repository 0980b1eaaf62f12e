"""G↑learn (LiGO depth): every grown block is a learned linear combination of source blocks.

For each weight kind k (a tensor name inside a block, e.g. ``self_attn.q_proj.weight``)
the grown block ``l`` gets ``W'_l[k] = Σ_j D_k[l, j] · W_j[k]`` over the source blocks j
that have that tensor. ``D_k`` starts as the stacking map (one-hot rows), so the initial
plan is exactly Gstack; :mod:`hfgrow.ligo` learns D, and this module turns D into a plan
whose transforms the executor streams like any other (nothing here does I/O).
"""

from __future__ import annotations

from typing import Mapping

import torch

from hfgrow.checkpoint import TensorInfo
from hfgrow.layout import Layout
from hfgrow.ops.depth import output_dtype, stack_plan
from hfgrow.plan import Fn, Plan, TensorPlan

Coefficients = dict[str, list[list[float]]]  # weight kind -> D (grown layers x source layers of that kind)


def kind_members(layout: Layout) -> dict[str, list[int]]:
    """For each weight kind, the source layers that have it (dense and MoE blocks differ).

    Example:
        >>> kind_members(layout)["mlp.up_proj.weight"]
        [0, 1, 2, 3]
    """
    members: dict[str, list[int]] = {}
    for index, names in enumerate(layout.layers):
        for rest in names:
            members.setdefault(rest, []).append(index)
    return members


def initial_coefficients(layout: Layout, layer_map: list[int]) -> Coefficients:
    """D at its LiGO initialisation: row l is one-hot at the source layer Gstack copies to l.

    Example:
        >>> initial_coefficients(layout, [0, 1, 0, 1])["mlp.up_proj.weight"]
        [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    """
    coefficients: Coefficients = {}
    for rest, members in kind_members(layout).items():
        rows = []
        for src in layer_map:
            if rest in layout.layers[src]:
                rows.append([1.0 if j == src else 0.0 for j in members])
            else:
                rows.append([0.0] * len(members))
        coefficients[rest] = rows
    return coefficients


def _combine(row: tuple[float, ...]):
    def combine(*weights: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(weights[0].shape, dtype=torch.float32)
        for c, w in zip(row, weights):
            if c != 0.0:
                total.add_(w.float(), alpha=c)
        return total

    return combine


def learned_plan(layout: Layout, tensors: Mapping[str, TensorInfo], layer_map: list[int],
                 coefficients: Coefficients, dtype: str | None = None) -> Plan:
    """The plan for learned depth growth: block structure from ``layer_map``, values from D.

    A row that is exactly one-hot stays a byte copy; other rows are computed in float32
    from the source tensors with non-zero coefficients, then cast.
    """
    base = stack_plan(layout, tensors, layer_map, dtype)  # config, layer map, checks
    members = kind_members(layout)
    learned: dict[str, TensorPlan] = {}
    for position, src in enumerate(layer_map):
        for rest in layout.layers[src]:
            row = coefficients[rest][position]
            info = tensors[layout.layer_tensor(src, rest)]
            name = layout.layer_tensor(position, rest)
            out_dtype = output_dtype(info, dtype)
            nonzero = [(c, j) for c, j in zip(row, members[rest]) if c != 0.0]
            if len(nonzero) == 1 and nonzero[0] == (1.0, src):
                continue  # exactly the Gstack copy: stays a byte copy
            sources = tuple(layout.layer_tensor(j, rest) for _, j in nonzero) or (info.name,)
            weights = tuple(c for c, _ in nonzero) or (0.0,)
            text = "learned combination of source layers (LiGO)"
            learned[name] = TensorPlan(name, out_dtype, info.shape, sources, Fn(_combine(weights), text))
    return Plan(
        tensors=[learned.get(t.name, t) for t in base.tensors],
        config=base.config,
        layer_map=base.layer_map,
        new_layers=base.new_layers,
        recipe={"op": "learn", "direction": "depth", "coefficients": coefficients},
    )
