"""The growth operators, one entry each: the only place that knows an operator by name.

Every command reads operators from here (mergekit's merge-method registry is the model): ``hfgrow grow --op``
and ``--width-op``, ``hfgrow train --grow OP:FACTOR@WHEN``, ``hfgrow compare --op``, recipe replay, the model
card and the dry-run report. An entry holds the operator's one name, its placement default, its plan function,
whether it masks (MSG), whether it preserves the function, and its card text. Adding an operator is one module
(its plan function) plus one :func:`register` call; no command changes.

Old names are aliases: ``direct`` (the paper's G-direct) is ``stack`` now; :func:`resolve` says so once.

Example:
    >>> get("stack").order, get("zero").preserves, get("random").masks
    ('stack', True, True)
    >>> get("direct").name                     # an old name still reads
    'stack'
    >>> describe(Operation(op="zero", direction="depth"))
    'G-up-zero (identity blocks: output projections zeroed, LLaMA-Pro style)'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from hfgrow.errors import HfgrowError

#: what a depth plan function is given: the stacked plan, the source's roles and the growth spec; it returns the plan
DepthPlan = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class Operator:
    """One growth operator.

    ``names`` holds the card/summary name of each direction it grows (``depth``, ``width``, ``experts``).
    ``depth_plan`` transforms the stacked plan of a depth growth (None: the copies stay whole blocks, Gstack);
    ``width_kind`` is the unit rule of :func:`hfgrow.growth.ops.width.width_plan` for its width form (None: no
    width form). ``spec`` returns the class of an operator that is a growth of its own (built from its recipe
    parameters, e.g. upcycling) instead of a :class:`~hfgrow.growth.spec.GrowSpec` one. ``custom`` marks an
    operator with its own command-line options and loop (LiGO). ``base`` makes an entry a placement of another
    operator (``interpolate`` is ``stack`` placed 0,0,1,1,...).
    """

    name: str
    help: str
    names: Mapping[str, str] = field(default_factory=dict)
    layer_map_text: str = "output layer i is a copy of source layer pattern[i]"
    order: str = "interleave"  # where depth copies go by default: stack, interleave or interpolate
    prts_order: str | None = None  # ... under --style prts, when it differs
    masks: bool = False  # its new parts are random and training ramps them in (MSG)
    preserves: bool = False  # its depth form keeps the function while the source layers keep their order
    carry_new_layers: bool = True  # --grow-optimizer carry gives new layers their source layer's moments
    depth_plan: DepthPlan | None = None
    width_kind: str | None = None
    in_run: str | None = None  # None: usable as --grow; else why not (one sentence)
    spec: Callable[[], type] | None = None
    custom: bool = False
    base: str | None = None
    aliases: tuple[str, ...] = ()
    card: str = ("Growing a trained small model and continuing pre-training reaches a given loss with much less "
                 "compute than training the large model from scratch: about 50% in \"Stacking Your Transformers\" "
                 "(Du et al., NeurIPS 2024, arXiv:2405.15319), where Gstack (stacking the whole small model g times, "
                 "g = 4) was the best of the growth operators tested.")  # the card's "Why grow" paragraph


_REGISTRY: dict[str, Operator] = {}
_ALIASES: dict[str, str] = {}


def register(operator: Operator) -> Operator:
    """Add ``operator`` (or replace the entry of its name); returns it.

    Example:
        >>> register(Operator("halve", "halve the new layers' output projections", {"depth": "G-up-halve"},
        ...                   depth_plan=halve_plan))
    """
    _REGISTRY[operator.name] = operator
    for alias in operator.aliases:
        _ALIASES[alias] = operator.name
    return operator


def unregister(name: str) -> None:
    """Remove an entry (tests that registered a toy operator clean up with it)."""
    operator = _REGISTRY.pop(name, None)
    for alias in operator.aliases if operator else ():
        _ALIASES.pop(alias, None)


def names(*, depth: bool = False, width: bool = False, in_run: bool = False, public: bool = True) -> list[str]:
    """The operators' names in registration order, filtered by what they can do."""
    return [op.name for op in _REGISTRY.values()
            if (not depth or "depth" in op.names or op.base) and (not width or op.width_kind)
            and (not in_run or op.in_run is None) and (not public or not op.base or in_run)]


def resolve(name: str, flag: str = "--op") -> tuple[Operator, str | None]:
    """The entry for ``name`` and, for an old name, the one-line deprecation note to show.

    Raises:
        HfgrowError: no operator has that name.
    """
    if name in _REGISTRY:
        return _REGISTRY[name], None
    if name in _ALIASES:
        new = _ALIASES[name]
        return _REGISTRY[new], (f"note: {flag} {name} is now called {flag} {new}; the old name is accepted "
                                "for one more release.")
    raise HfgrowError(f"unknown {flag} '{name}'; use one of {', '.join(names())}.")


def get(name: str, flag: str = "--op") -> Operator:
    """The entry for ``name`` (an old name reads as its new one, silently: recipes carry old names)."""
    return resolve(name, flag)[0]


def describe(operation) -> str:
    """The operator(s) of a :class:`~hfgrow.growth.recipe.Operation` by name, as cards and reports show them
    (``G-up-zero (...) + G-right-direct (...)``)."""
    parts = []
    for part in operation.direction.split("+"):
        op = operation.width.op if part == "width" and operation.width else operation.op
        entry = _REGISTRY.get(_ALIASES.get(op, op))
        parts.append(entry.names.get(part, f"G-{part}-{op}") if entry else f"G-{part}-{op}")
    text = " + ".join(parts)
    experts = getattr(operation, "experts", None)
    if experts:
        text += f": {experts.get('variant', '')}".rstrip(": ")
    if operation.noise is not None and operation.noise.alpha:
        text += f" + noise (alpha {operation.noise.alpha:g})"
    if operation.style == "prts":
        text += " [--style prts: as the reference code runs it]"
    return text


def layer_map_text(operation) -> str:
    """The card's sentence for what the layer map means under ``operation`` (widened copies under width growth).

    Example:
        >>> layer_map_text(Operation(op="zero", direction="depth"))[:52]
        'output layer i is a copy of source layer pattern[i];'
    """
    entry = _REGISTRY.get(_ALIASES.get(operation.op, operation.op)) or _REGISTRY["stack"]
    return entry.layer_map_text + ("; every layer is then widened" if "width" in operation.direction else "")


# ------------------------------------------------------------------------------------------- the built-in operators


def _zero_plan(plan, roles, spec):
    from hfgrow.growth.ops.zero import zero_plan

    return zero_plan(plan, roles)


def _random_plan(plan, roles, spec):
    from hfgrow.arch.pattern import compact
    from hfgrow.growth.ops.random_init import random_plan

    steps = spec.ramp_steps
    plan = random_plan(plan, roles, seed=spec.seed, mask_steps=steps, style=spec.style)
    ramp = "the whole block, y = c*block(x) + (1-c)*x" if spec.style == "prts" else "each sublayer's update"
    plan.notes.append(f"new layers {compact(plan.new_layers)} are random: ramp {ramp}, c 0 -> 1 over "
                      f"{spec.ramp_text} (MSG; recorded in hfgrow.yaml)")
    return plan


def _upcycle_spec():
    from hfgrow.growth.ops.upcycle import UpcycleSpec

    return UpcycleSpec


_STACK_NAMES = {"depth": "Gstack / G-up-direct (whole blocks copied)",
                "width": "G-right-direct (neuron splitting: HyperCloning / Net2Net)"}

register(Operator(
    "stack", "Gstack in depth (whole blocks copied), neuron splitting in width (HyperCloning / Net2Net)",
    _STACK_NAMES, order="stack", width_kind="direct", aliases=("direct",)))
register(Operator(
    "interpolate", "Gstack placed in place: each layer repeated (0,0,1,1,...)", _STACK_NAMES,
    order="interpolate", width_kind="direct", base="stack"))
register(Operator(
    "zero", "identity blocks / zero fan-out units (function-preserving)",
    {"depth": "G-up-zero (identity blocks: output projections zeroed, LLaMA-Pro style)",
     "width": "G-right-zero (new units: random fan-in, zero fan-out)"},
    layer_map_text="output layer i is a copy of source layer pattern[i]; the repeats (the new layers) have their "
                   "attention output and MLP down projections zeroed, so each starts as an identity block",
    preserves=True, carry_new_layers=False, depth_plan=_zero_plan, width_kind="zero"))
register(Operator(
    "random", "random init + MSG mask",
    {"depth": "G-up-random (new blocks randomly initialised, for an MSG mask ramp)",
     "width": "G-right-random (new units randomly initialised, for an MSG mask ramp)"},
    layer_map_text="output layer i takes the place of source layer pattern[i]: its first occurrence is a copy, the "
                   "repeats (the new layers) are randomly initialised blocks of its kind",
    prts_order="stack", masks=True, carry_new_layers=False, depth_plan=_random_plan, width_kind="random"))
register(Operator(
    "learn", "LiGO: depth and width operators learned on --data",
    {"depth": "G-up-learn (LiGO: learned combinations of source blocks)",
     "width": "G-right-learn (LiGO: learned expansion matrices)"},
    layer_map_text="output layer i has the block kind of source layer pattern[i]; its weights are a learned "
                   "combination of the source layers (LiGO, coefficients in hfgrow.yaml) that starts as a copy of "
                   "that layer",
    order="stack", custom=True,
    in_run="LiGO learns its operator on data with a loop of its own; grow with `hfgrow grow --op learn` and train "
           "the result with --model."))
register(Operator(
    "upcycle", "dense to mixture-of-experts: every MLP becomes E experts and a router (hfgrow upcycle)",
    {"experts": "upcycling (every MLP becomes experts and a router)"},
    layer_map_text="output layer i is source layer i with its MLP turned into experts and a router",
    spec=_upcycle_spec,
    card="Upcycling a trained dense model into a mixture of experts and continuing pre-training costs a fraction of "
         "training the MoE from scratch: Sparse Upcycling (Komatsuzaki et al., ICLR 2023) beat continued dense "
         "training at about half the original cost, Drop-Upcycling (Nakamura et al., ICLR 2025) matched a 13B "
         "dense model at about a quarter of its FLOPs, and Qwen1.5-MoE-A2.7B was upcycled from Qwen-1.8B with "
         "fine-grained experts.",
))
