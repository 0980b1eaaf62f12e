"""G↑random: new blocks randomly initialised, for an MSG mask ramp.

``style="hfgrow"``: each new block gets fresh values the way transformers' ``_init_weights`` makes
them: weight matrices (and embeddings) normal(0, initializer_range) — GPT-2's residual output
projections scaled by 1/sqrt(2·layers) as its init does —, biases zero, norm weights at the norm's
init value (ones, or zeros for Gemma's ``1 + w`` norms). The recipe asks training to ramp each
sublayer's residual update (``mask.form: sublayer``).

``style="prts"``: as the reference code (tongxuluo/prts ``prts_lit/scaling/msg.py``) does it: the target
model's own init, prts's ``GPT._init_weights`` (normal(0, sqrt(2 / (5·fan_in))), MLP down projections
normal(0, 1 / (sqrt(fan_in)·layers)), biases zero, norms one: :meth:`Roles.prts_init_std`), and the
whole block ramped, ``y = c·block(x) + (1 − c)·x`` (``mask.form: block``). The reference appends
the new layers on top of the source's; :class:`hfgrow.growth.spec.GrowSpec` places them so.

Values are seeded per (seed, tensor name). The grown model is not function-preserving as written: the
recipe records the new layers and the ramp (``mask: {layers, steps, form}``) for training.
"""

from __future__ import annotations

import dataclasses

from hfgrow.errors import HfgrowError
from hfgrow.growth.ops.common import constant, normal, replace
from hfgrow.io import dtypes
from hfgrow.growth.plan import Plan
from hfgrow.growth.recipe import Mask
from hfgrow.io.plan import TensorPlan
from hfgrow.arch.roles import Roles, TensorRole, block_index

def init_tensor(tensor: TensorPlan, role: TensorRole, roles: Roles, seed: int, num_layers: int,
                style: str = "hfgrow") -> TensorPlan:
    """``tensor`` replaced by its init values (computed at write time, seeded by its output name)."""
    shape, dtype, name = tensor.shape, tensor.dtype, tensor.name
    if dtype not in dtypes.FLOAT:
        return tensor
    if role.is_norm:
        value = 0.0 if role.is_bias else roles.norm_init
        make, text = (lambda: constant(shape, dtype, value)), f"init {value:g} ({role.kind})"
    elif role.is_bias or len(shape) < 2:
        if role.kind == "unknown":
            raise HfgrowError(f"cannot tell how transformers initialises {tensor.sources[0]} ({role.reason}).")
        if role.kind == "fixed":
            return tensor
        make, text = (lambda: constant(shape, dtype, 0.0)), "init zeros (bias)"
    else:
        std = roles.prts_init_std(role, shape, num_layers) if style == "prts" else roles.init_std_for(role, num_layers)
        make, text = (lambda: normal(shape, dtype, std, seed, "init", name)), f"init normal(0, {std:.4g})"
    return dataclasses.replace(replace(tensor, make, text), sources=())


def random_plan(plan: Plan, roles: Roles, *, seed: int, mask_steps: int, style: str = "hfgrow") -> Plan:
    """Re-initialise every tensor of the plan's new layers; record the MSG mask (ramp over ``mask_steps``).

    Example:
        >>> plan = random_plan(stack_plan(layout, ckpt.tensors, interleave_map(4, 6)), roles, seed=1, mask_steps=5000)
        >>> plan.operation.mask.layers, plan.operation.mask.steps, plan.operation.mask.form
        ((2, 5), 5000, 'sublayer')
    """
    new = set(plan.new_layers)
    num_layers = len(plan.layer_map) if plan.layer_map else 1
    tensors = []
    for tensor in plan.tensors:
        if block_index(tensor.name, roles.prefix) in new and tensor.sources:
            tensor = init_tensor(tensor, roles.role(tensor.sources[0]), roles, seed, num_layers, style)
        tensors.append(tensor)
    previous = plan.operation.mask or Mask()
    mask = dataclasses.replace(previous, layers=tuple(sorted(new)), steps=mask_steps,
                               form="block" if style == "prts" else "sublayer")
    return dataclasses.replace(plan, tensors=tensors, operation=plan.operation.replace(op="random", mask=mask))
