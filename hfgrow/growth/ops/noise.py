"""Symmetry-breaking noise for any operator (Stacking paper §5.2): W <- (1-α)·W + α·ε.

ε ~ N(0, 1/(d·l²)) for attention output and MLP down projections and N(0, 2/(5d))
for every other weight matrix (embeddings and LM head included), with d the output
hidden size and l the output layer count. Vectors (norm weights, biases) are left alone.
ε is seeded per (seed, tensor name), so replaying a recipe reproduces it bit for bit.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from hfgrow.errors import HfgrowError
from hfgrow.growth.ops.common import build, compute_dtype, generator, then
from hfgrow.io import dtypes
from hfgrow.growth.plan import Plan
from hfgrow.growth.recipe import Noise
from hfgrow.arch.roles import Roles


def check_alpha(alpha: float) -> None:
    if not (0.0 <= alpha < 1.0) or math.isnan(alpha):
        raise HfgrowError(f"--noise must be in [0, 1), got {alpha}.")


def noise_stds(hidden_size: int, num_layers: int) -> tuple[float, float]:
    """(std for output projections, std elsewhere).

    Example:
        >>> noise_stds(2048, 22)
        (0.0010044..., 0.013975...)
    """
    return math.sqrt(1.0 / (hidden_size * num_layers**2)), math.sqrt(2.0 / (5.0 * hidden_size))


def noise_plan(plan: Plan, roles: Roles, alpha: float, *, seed: int = 0, hidden_size: int | None = None,
               num_layers: int | None = None) -> Plan:
    """Blend every weight matrix of ``plan`` with seeded Gaussian noise of weight ``alpha``. A tensor's role is
    its source tensor's (an upcycled expert's down projection is the dense MLP's); ``num_layers`` is the output's
    layer count when the plan has no layer map."""
    check_alpha(alpha)
    if alpha == 0.0:
        return plan
    d = hidden_size or roles.hidden_size
    layers = num_layers or (len(plan.layer_map) if plan.layer_map else 1)
    out_std, other_std = noise_stds(d, layers)
    tensors = []
    for tensor in plan.tensors:
        if tensor.dtype in dtypes.FLOAT and len(tensor.shape) >= 2:
            std = out_std if roles.role(tensor.sources[0] if tensor.sources else tensor.name).output_projection \
                else other_std
            shape, dtype, name = tensor.shape, tensor.dtype, tensor.name

            def fn(x: torch.Tensor, std=std, shape=shape, dtype=dtype, name=name) -> torch.Tensor:
                cdt = compute_dtype(x.dtype)

                def rows(start: int, stop: int) -> torch.Tensor:
                    eps = torch.randn((stop - start, *shape[1:]), generator=generator(seed, "noise", name, start),
                                      dtype=cdt)
                    return x[start:stop].to(cdt) * (1.0 - alpha) + eps * (alpha * std)
                return build(shape, dtype, rows)

            tensor = then(tensor, fn, f"noise α={alpha:g} (std {std:.3g})")
        tensors.append(tensor)
    operation = plan.operation.replace(noise=Noise(alpha, out_std, other_std), function_preserving=False)
    return dataclasses.replace(plan, tensors=tensors, operation=operation,
                               notes=plan.notes + [f"noise α={alpha:g} added to every weight matrix"])
