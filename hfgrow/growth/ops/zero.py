"""G↑zero: insert identity blocks (LLaMA-Pro / LEMON style). Function-preserving.

A new block is a copy of a neighbouring source block whose output projections — the
attention output projection, the MLP down projection, every expert's (and a shared
expert's) down projection, and the biases of those — are zero. Each sub-layer then adds
exactly zero to the residual stream, so the block is the identity and the grown model
computes the same function as the source.

Where a sub-layer's output is normalised again before the residual add (the post-norms of
Gemma 2/3, OLMo 2/3, EXAONE 4, GLM-4: :func:`hfgrow.arch.roles.post_norms`), zeroed projections
would make the block an identity only on a knife edge: the norm rescales the first small
update of those projections to full size (3 steps at 1e-4 took a trained Gemma-3-shaped
model's held-out loss up by several nats). There the block keeps its projections as copies
and the post-norm's effective gain is zero instead (Gemma's ``1 + w`` at w = -1, OLMo 2's
``w`` at 0; a bias at 0): the sub-layer still adds exactly zero, the gain receives the
gradient of the normalised copy's output and grows smoothly from zero, and the projections
learn once it has.

Placement follows LLaMA Pro by default: with N output and L source layers, one copy is
inserted after every L/(N-L) source layers (spread as evenly as possible when that is
not whole); a pattern can place them anywhere (every repeat of a source layer is new).
"""

from __future__ import annotations

import dataclasses

from hfgrow.errors import HfgrowError
from hfgrow.growth.ops.common import constant, replace
from hfgrow.growth.plan import Plan
from hfgrow.arch.roles import Roles, block_index


def zero_plan(plan: Plan, roles: Roles) -> Plan:
    """Make the plan's new layers (``plan.new_layers``) identities: zero output projections, or zero post-norm gains.

    Example:
        >>> plan = zero_plan(stack_plan(layout, ckpt.tensors, interleave_map(4, 6)), roles)  # pattern.interleave_map
        >>> plan.new_layers
        [2, 5]
    """
    new = set(plan.new_layers)
    found: dict[int, set[str]] = {position: set() for position in new}
    post = {role.post_norm_of for role in roles.block.values() if role.post_norm_of}
    gain = -roles.norm_offset  # the weight at which a norm's effective gain is zero
    tensors = []
    for tensor in plan.tensors:
        position = block_index(tensor.name, roles.prefix)
        if position in new and tensor.sources:
            role = roles.role(tensor.sources[0])
            if role.kind == "unknown" and len(tensor.shape) >= 2:
                raise HfgrowError(
                    f"cannot make an identity block of {roles.model_type}: the role of {tensor.sources[0]} is "
                    f"unknown ({role.reason}), so hfgrow cannot tell whether it writes to the residual stream."
                )
            shape, dtype = tensor.shape, tensor.dtype
            if role.post_norm_of:
                found[position].add(role.post_norm_of)
                value = 0.0 if role.is_bias else gain
                tensor = replace(tensor, lambda shape=shape, dtype=dtype, value=value: constant(shape, dtype, value),
                                 f"{value:g} (zero gain of the post-norm of an identity block's "
                                 f"{'attention' if role.post_norm_of == 'o' else 'MLP'})")
                tensor = dataclasses.replace(tensor, sources=())
            elif role.output_projection and role.kind not in post:
                found[position].add(role.kind)
                tensor = replace(tensor, lambda shape=shape, dtype=dtype: constant(shape, dtype, 0.0),
                                 f"zeros ({role.kind} projection of an identity block)")
                tensor = dataclasses.replace(tensor, sources=())
        tensors.append(tensor)
    for position, kinds in found.items():
        if not {"o", "down"} <= kinds:
            missing = "attention output" if "o" not in kinds else "MLP down"
            raise HfgrowError(
                f"cannot make layer {position} an identity: hfgrow found no {missing} projection in "
                f"{roles.model_type}'s blocks."
            )
    return dataclasses.replace(plan, tensors=tensors, operation=plan.operation.replace(op="zero"))
