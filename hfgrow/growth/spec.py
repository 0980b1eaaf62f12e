"""What to grow: the validated options of ``stack`` and ``grow``, and the plan they build.

A :class:`GrowSpec` is checked once, when it is made (the library and the CLI share these checks), and
then turns any source layout into a :class:`~hfgrow.growth.plan.Plan` by chaining the pure operators
of :mod:`hfgrow.growth.ops`. ``params(plan)`` gives the keyword arguments that replay it, with the
layer map pinned as a pattern.

Example:
    >>> spec = GrowSpec(op="zero", depth=Depth(factor=2))     # op: a name in hfgrow.growth.registry
    >>> plan = spec.plan(layout, checkpoint)
    >>> plan.layer_map, plan.operation.function_preserving
    ([0, 0, 1, 1], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.arch.pattern import compact, interleave_map, interpolate_map, parse_pattern, stack_map, target_layer_count
from hfgrow.growth import registry
from hfgrow.growth.plan import rounding_cast
from hfgrow.growth.recipe import DEFAULT_RAMP
from hfgrow.io import dtypes

ORDERS = ("stack", "interpolate", "interleave")
STYLES = ("hfgrow", "prts")
DEFAULT_MASK_STEPS = 0  # grow's default ramp has no number of steps: training fits it (10% of the run)


@dataclass(frozen=True)
class Depth:
    """Depth growth: exactly one of ``factor``, ``layers`` or ``pattern``, and where copies go (``order``)."""

    factor: float | None = None
    layers: int | None = None
    pattern: str | None = None
    order: str | None = None  # None: the operator's own default

    def __post_init__(self) -> None:
        if self.pattern is not None and (self.factor is not None or self.layers is not None):
            raise HfgrowError("give a --pattern or a --factor/--layers, not both.")
        if self.factor is not None and self.layers is not None:
            raise HfgrowError("give either --factor or --layers, not both.")
        if self.factor is not None and (not math.isfinite(self.factor) or self.factor <= 0):
            raise HfgrowError(f"--factor must be a positive number, got {self.factor}.")
        if self.layers is not None and self.layers < 1:
            raise HfgrowError(f"--layers must be positive, got {self.layers}.")
        if self.order is not None and self.order not in ORDERS:
            raise HfgrowError(f"unknown --order '{self.order}'; use one of {', '.join(ORDERS)}.")

    @property
    def given(self) -> bool:
        return self.factor is not None or self.layers is not None or self.pattern is not None

    def layer_map(self, num_layers: int, default_order: str = "stack") -> list[int]:
        """Output layer -> source layer. Identity when no depth growth is asked for."""
        if not self.given:
            return list(range(num_layers))
        if self.pattern is not None:
            return parse_pattern(self.pattern, num_layers)
        target = target_layer_count(num_layers, self.factor, self.layers)
        if target < num_layers:
            raise HfgrowError(f"--factor/--layers would shrink the model from {num_layers} to {target} layers; "
                              "use --pattern to select layers on purpose.")
        order = self.order or default_order
        if order == "interleave":
            return interleave_map(num_layers, target)
        return (interpolate_map if order == "interpolate" else stack_map)(num_layers, target)


@dataclass(frozen=True)
class Width:
    """Width growth targets; sizes not given follow the hidden size (head_dim stays fixed)."""

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None

    def __post_init__(self) -> None:
        for flag, value in self.flags().items():
            if value is not None and value < 1:
                raise HfgrowError(f"{flag} must be positive, got {value}.")

    def flags(self) -> dict[str, int | None]:
        return {"--hidden-size": self.hidden_size, "--intermediate-size": self.intermediate_size,
                "--num-heads": self.num_heads, "--num-kv-heads": self.num_kv_heads}

    @property
    def given(self) -> bool:
        return any(value is not None for value in self.flags().values())

    def params(self) -> dict[str, int | None]:
        return {"hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                "num_heads": self.num_heads, "num_kv_heads": self.num_kv_heads}


def nothing_to_grow() -> HfgrowError:
    return HfgrowError("nothing to grow: give --factor, --layers or --pattern (depth) and/or --hidden-size, "
                       "--intermediate-size, --num-heads or --num-kv-heads (width).")


@dataclass(frozen=True)
class GrowSpec:
    """One growth: the operator for depth (``op``) and width (``width_op``, default ``op``), their targets,
    optional noise, the seed of everything random, the MSG ramp length for random parts, the output dtype.

    ``style`` picks each operator's variant: ``hfgrow`` (this tool's) or ``prts`` (exactly as the reference
    code of Du et al. 2024 runs it; README's "The paper's operators and hfgrow's" lists them). The two differ
    for G-up-random (placement on top, prts's init, whole-block ramp), G-right-direct (bert2BERT's copies drawn with replacement),
    G-right-zero and G-right-random; Gstack, G-up-zero and noise are the same under both.

    ``command`` is the function that replays it: ``stack`` (Gstack only) or ``grow``. ``op`` and ``width_op`` are
    operator names of :mod:`hfgrow.growth.registry` (old names read as their new ones; a placement entry such as
    ``interpolate`` becomes its operator with that placement).
    """

    op: str = "stack"
    width_op: str | None = None
    depth: Depth = field(default_factory=Depth)
    width: Width = field(default_factory=Width)
    noise: float | None = None
    seed: int = 0
    mask_steps: int | None = None
    style: str = "hfgrow"
    dtype: str = "keep"
    command: str = "grow"
    keep_tied: bool = False  # G-right-zero: tied embeddings stay tied (new hidden units zero in the embedding)

    def __post_init__(self) -> None:
        entry = registry.get(self.op)
        if entry.base is not None:  # a placement of another operator
            object.__setattr__(self, "depth", replace(self.depth, order=self.depth.order or entry.order))
            entry = registry.get(entry.base)
        object.__setattr__(self, "op", entry.name)
        if self.width_op is not None:
            object.__setattr__(self, "width_op", registry.get(self.width_op, "--width-op").name)
        for flag, value in (("--op", self.op), ("--width-op", self.resolved_width_op)):
            if registry.get(value).custom or registry.get(value).spec is not None:
                raise HfgrowError(f"{flag} {value} is an operator of its own; it does not combine with the others.")
        if self.depth.given and "depth" not in entry.names:
            raise HfgrowError(f"--op {self.op} has no depth form.")
        if self.width.given and registry.get(self.resolved_width_op).width_kind is None:
            raise HfgrowError(f"--op {self.resolved_width_op} has no width form; choose --width-op.")
        if self.style not in STYLES:
            raise HfgrowError(f"unknown --style '{self.style}'; use one of {', '.join(STYLES)}.")
        if self.noise is not None and not (0.0 <= self.noise < 1.0):
            raise HfgrowError(f"--noise must be in [0, 1), got {self.noise}.")
        if not self.depth.given and not self.width.given:
            raise nothing_to_grow()
        if self.masked:
            if self.mask_steps is not None and self.mask_steps < 1:
                raise HfgrowError(f"--mask-steps must be positive, got {self.mask_steps}.")
        elif self.mask_steps is not None:
            raise HfgrowError("--mask-steps applies to --op random (new layers or units ramped in by an MSG mask).")
        if self.keep_tied and (not self.width.given or self.resolved_width_op != "zero"):
            raise HfgrowError("--keep-tied is for width growth with --op zero or --width-op zero (new hidden units "
                              "zero in the tied embedding).")
        dtypes.from_option(self.dtype)

    @property
    def masked(self) -> bool:
        """Whether the result has random parts that training ramps in (MSG)."""
        return ((registry.get(self.op).masks and self.depth.given)
                or (self.width.given and registry.get(self.resolved_width_op).masks))

    @property
    def resolved_width_op(self) -> str:
        return self.width_op or self.op

    @property
    def default_order(self) -> str:
        """The operator's placement: Gstack stacks; prts's MSG appends new random layers on top
        (tongxuluo/prts ``prts_lit/scaling/msg.py``: layers src_depth..trg_depth-1); zero and random interleave
        copies (LLaMA Pro)."""
        entry = registry.get(self.op)
        return entry.prts_order if self.style == "prts" and entry.prts_order else entry.order

    @property
    def ramp_steps(self) -> int:
        """Steps of the MSG ramp recorded for random parts (grow's default unless --mask-steps)."""
        return self.mask_steps if self.mask_steps is not None else DEFAULT_MASK_STEPS

    @property
    def ramp_text(self) -> str:
        return f"{self.mask_steps} steps" if self.mask_steps is not None else f"{DEFAULT_RAMP} (grow's default)"

    def params(self, plan) -> dict[str, Any]:
        """The keyword arguments of ``command`` that rebuild ``plan`` (the layer map pinned as a pattern)."""
        params: dict[str, Any] = {}
        if self.command == "grow":
            params["op"] = self.op
            if self.width.given and self.resolved_width_op != self.op:
                params["width_op"] = self.width_op
        if self.depth.given:
            params["pattern"] = compact(plan.layer_map)
        if self.command == "grow":
            params.update({k: v for k, v in self.width.params().items() if v is not None})
            params.update(noise=self.noise or None, seed=self.seed, mask_steps=self.mask_steps,
                          style=self.style if self.style != "hfgrow" else None, keep_tied=self.keep_tied or None)
        params["dtype"] = self.dtype if self.dtype != "keep" else None
        return {k: v for k, v in params.items() if v is not None}

    def plan(self, layout, checkpoint):
        """The plan for ``layout`` (a :class:`hfgrow.arch.layout.Layout`) and its checkpoint's tensor table."""
        from hfgrow.arch.layout import fit_layer_kinds, follow_packed_layers, set_config_value
        from hfgrow.growth.ops.depth import stack_plan

        layer_map = self.depth.layer_map(layout.num_layers, self.default_order)
        # a config that places layer kinds by a rule: rewrite the rule, or (--factor/--layers) stack each kind
        fit = fit_layer_kinds(layout, layer_map, rearrange=self.depth.given and self.depth.pattern is None)
        plan = stack_plan(layout, checkpoint.tensors, fit.layer_map, dtypes.from_option(self.dtype))
        for key, value in fit.changes.items():
            set_config_value(plan.config, key, value)
        if fit.note:
            plan.notes.append(fit.note)
        if self.depth.given:  # globals holding one slice per layer follow the map too
            plan.tensors = follow_packed_layers(plan.tensors, layout, checkpoint.tensors, plan.config, plan.layer_map)
        if registry.get(self.op).depth_plan is None and not self.width.given and not self.noise:
            plan.operation = plan.operation.replace(op=self.op, style=self.style)
            return plan  # Gstack and friends: whole blocks copied, no roles needed
        return self._transform(plan, layout, checkpoint)

    def _transform(self, plan, layout, checkpoint):
        from hfgrow.arch.roles import derive_roles
        from hfgrow.growth.ops.noise import noise_plan
        from hfgrow.growth.ops.width import resolve_sizes, width_plan

        roles = derive_roles(layout, checkpoint.tensors)
        depth, width = self.depth.given, self.width.given
        entry, width_kind = registry.get(self.op), registry.get(self.resolved_width_op).width_kind
        # e.g. identity blocks keep the function iff the original layers still appear in their order
        originals = [src for i, src in enumerate(plan.layer_map) if src not in plan.layer_map[:i]]
        preserving = not depth or (entry.preserves and originals == list(range(layout.num_layers)))
        steps, length = self.ramp_steps, self.ramp_text
        sizes = None
        if width:
            w = self.width
            sizes = resolve_sizes(roles, w.hidden_size, w.intermediate_size, w.num_heads, w.num_kv_heads,
                                  op=width_kind)
            if not sizes.changed:
                raise HfgrowError(f"the width options give the model's own sizes (hidden {sizes.hidden[0]}); nothing "
                                  "to widen: give a larger --hidden-size, --intermediate-size or --num-heads.")
            plan = width_plan(plan, roles, sizes, op=width_kind, seed=self.seed, style=self.style,
                              keep_tied=self.keep_tied)
            preserving = preserving and plan.operation.width.function_preserving
        if depth and entry.depth_plan is not None:
            plan = entry.depth_plan(plan, roles, self)
        if self.noise:
            plan = noise_plan(plan, roles, self.noise, seed=self.seed, hidden_size=sizes.hidden[1] if sizes else None)
        if width and registry.get(self.resolved_width_op).masks:
            mask = plan.operation.mask
            plan.operation = plan.operation.replace(mask=replace(mask, steps=steps))
            each = f"{steps} steps each" if self.mask_steps is not None else f"sharing {length}"
            staged = f"FFN, hidden, then heads, {each}" if self.style == "prts" else f"over {length}"
            plan.notes.append(f"new width units are random; training ramps them in ({staged}; MSG; mask in "
                              "hfgrow.yaml)")
        if self.masked and plan.operation.mask is not None:  # training fits a default ramp length to the run
            plan.operation = plan.operation.replace(mask=replace(plan.operation.mask,
                                                                 steps_given=self.mask_steps is not None))
        direction = "+".join(d for d, on in (("depth", depth), ("width", width)) if on)
        preserving = bool(preserving and not self.noise)
        if preserving and (caveat := rounding_cast(plan, checkpoint)):
            preserving = False
            plan.warnings.append(caveat)
        plan.operation = plan.operation.replace(op=self.op, direction=direction, seed=self.seed, style=self.style,
                                                function_preserving=preserving)
        return plan
