"""``hfgrow grow --op learn``: LiGO as a growth for the pipeline (fit the operator, then write it out).

:class:`LearnSpec` is to LiGO what :class:`hfgrow.growth.spec.GrowSpec` is to the fixed operators: the
validated options and the plan they build. The plan applies the learned operator (D in the recipe, the
width matrices in ``hfgrow_ligo.safetensors`` beside it), so a replay rebuilds the model without training.

Example:
    >>> result = learn("./small", "./big", data=["corpus.txt"], factor=4, learn_steps=100)
    >>> result.plan.notes[-1]
    'LiGO: 100 steps on corpus.txt; held-out loss 3.9120 at step 0 -> 3.7010 kept (step 100)'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.growth.ligo.fit import DEFAULT_LR, FitSettings, learn_growth
from hfgrow.growth.ligo.placement import Placement
from hfgrow.growth.ops.learn import (SIDECAR, WIDTH_INITS, Coefficients, LigoWidthExpansion, WidthExpansion,
                                     initial_coefficients, learned_plan, learned_width_plan)
from hfgrow.data.specs import published_spec
from hfgrow.arch.pattern import compact
from hfgrow.growth.pipeline import GrowResult, WriteOptions, grow_model
from hfgrow.growth.spec import STYLES, Depth, Width, nothing_to_grow
from hfgrow.io import dtypes


def read_matrices(path: Path) -> dict[str, Any]:
    """LiGO's learned width matrices from the sidecar file a grown folder carries."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise HfgrowError(f"cannot read the learned width matrices {path}: {exc}") from None


@dataclass(frozen=True)
class LearnSpec:
    """G-learn in depth and/or width: what to grow, the text to learn on and how long, or (for a replay)
    the learned operator itself (``coefficients``, ``width_matrices``).

    Depth is the same under both styles (one D per weight kind, starting at the stacking map, as prts
    ligo.py's WQ, WK, ... W_proj). Width: ``style="hfgrow"`` learns :class:`WidthExpansion` (read and write
    matrices per space, whole heads, norms gathered, starting at ``width_init``: ``direct`` by default);
    ``style="prts"`` learns :class:`LigoWidthExpansion`, the reference code's parameterisation and start.
    """

    depth: Depth = field(default_factory=Depth)
    width: Width = field(default_factory=Width)
    data: tuple[str, ...] = ()
    fit: FitSettings = field(default_factory=FitSettings)
    width_init: str | None = None  # hfgrow style only; None: direct
    style: str = "hfgrow"
    placement: Placement | None = None
    dtype: str = "keep"
    coefficients: Coefficients | None = None
    width_matrices: dict[str, Any] | None = None
    dry_run: bool = False
    progress: bool = True
    command: str = "grow"

    def __post_init__(self) -> None:
        if not self.depth.given and not self.width.given:
            raise nothing_to_grow()
        if self.style not in STYLES:
            raise HfgrowError(f"unknown --style '{self.style}'; use one of {', '.join(STYLES)}.")
        if self.width_init is not None and self.width_init not in WIDTH_INITS:
            raise HfgrowError(f"unknown --width-init '{self.width_init}'; use one of {', '.join(WIDTH_INITS)}.")
        if self.width_init is not None and self.style == "prts":
            raise HfgrowError("--width-init is for --style hfgrow; --style prts starts LiGO's width matrices as the "
                              "reference code does, at [I; N(0, 1/new)].")
        if self.coefficients is None and not self.dry_run and not self.data:
            raise HfgrowError("--op learn needs --data: text to learn the growth on.")
        dtypes.from_option(self.dtype)

    @property
    def init(self) -> str:
        """Where the width matrices start: ``direct``, ``identity`` (hfgrow style) or ``ligo`` (prts style)."""
        return "ligo" if self.style == "prts" else self.width_init or "direct"

    def params(self, plan) -> dict[str, Any]:
        params: dict[str, Any] = {"op": "learn"}
        if self.depth.given:
            params["pattern"] = compact(plan.layer_map)
        params.update({k: v for k, v in self.width.params().items() if v is not None})
        if self.width.given and self.width_init not in (None, "direct"):
            params["width_init"] = self.width_init
        if self.style != "hfgrow":
            params["style"] = self.style
        params.update(data=[published_spec(d) for d in self.data] or None, learn_steps=self.fit.steps, learn_lr=self.fit.lr,
                      seq_len=self.fit.seq_len, batch_size=self.fit.batch_size, seed=self.fit.seed,
                      dtype=self.dtype if self.dtype != "keep" else None)
        return {k: v for k, v in params.items() if v is not None}

    def plan(self, layout, checkpoint):
        from hfgrow.arch.roles import derive_roles
        from hfgrow.growth.ops.depth import stack_plan
        from hfgrow.growth.ops.width import resolve_sizes, widen_config

        layer_map = self.depth.layer_map(layout.num_layers, "stack")
        base = stack_plan(layout, checkpoint.tensors, layer_map, dtypes.from_option(self.dtype))
        roles = sizes = expansion = None
        grown_config = base.config
        if self.width.given:
            roles = derive_roles(layout, checkpoint.tensors)
            w = self.width
            # LiGO's matrices place no head (prts) and the direct start splits any; the identity start keeps
            # source heads in their key/value groups
            sizes = resolve_sizes(roles, w.hidden_size, w.intermediate_size, w.num_heads, w.num_kv_heads,
                                  op="zero" if self.init == "identity" else "direct")
            if not sizes.changed:
                raise HfgrowError("the width options give the source's own sizes; nothing to grow in width.")
            if self.style == "prts":
                expansion = LigoWidthExpansion(roles, sizes, seed=self.fit.seed)
            else:
                expansion = WidthExpansion(roles, sizes, init=self.init, seed=self.fit.seed)
            if self.width_matrices is not None:
                try:
                    expansion.load(self.width_matrices)
                except ValueError as exc:
                    raise HfgrowError(f"{SIDECAR}: {exc}.") from None
            grown_config = widen_config(base.config, roles, sizes, "learn").config
        coefficients, notes = self._coefficients(layout, checkpoint, layer_map, grown_config, roles, expansion)
        plan = learned_plan(layout, checkpoint.tensors, layer_map, coefficients, dtypes.from_option(self.dtype),
                            base=base)
        if self.width.given:
            plan = learned_width_plan(plan, roles, sizes, expansion, self.init)
        direction = "+".join(d for d, on in (("depth", self.depth.given), ("width", self.width.given)) if on)
        plan.operation = plan.operation.replace(direction=direction, seed=self.fit.seed, style=self.style)
        plan.notes.extend(notes)
        return plan

    def _coefficients(self, layout, checkpoint, layer_map, grown_config, roles, expansion):
        """D: given (replay), at its start (dry run), or learned on the data."""
        initial = initial_coefficients(layout, layer_map)
        if self.coefficients is not None:
            learned = self.coefficients
            if set(initial) - set(learned) or any(len(learned[rest]) != len(rows) or any(
                    len(a) != len(b) for a, b in zip(learned[rest], rows)) for rest, rows in initial.items()):
                raise HfgrowError("the recipe's LiGO coefficients do not fit this source model and layer map.")
            return learned, []
        if self.dry_run:
            return initial, [f"dry run: the growth is shown at its initial value; {self.fit.steps} learning steps "
                             "would follow"]
        report = learn_growth(checkpoint, layout, grown_config, layer_map, list(self.data), self.fit, roles=roles,
                              expansion=expansion, learn_depth=self.depth.given, placement=self.placement,
                              progress=self.progress)
        return report.coefficients, [report.summary(", ".join(published_spec(d) for d in self.data))]


def learn(src: str, out: str | Path | None = None, *, data: list[str] | str | None = None,
          factor: float | None = None, layers: int | None = None, pattern: str | None = None, order: str = "stack",
          hidden_size: int | None = None, intermediate_size: int | None = None, num_heads: int | None = None,
          num_kv_heads: int | None = None, width_init: str | None = None, style: str = "hfgrow",
          learn_steps: int = 100, learn_lr: float = DEFAULT_LR, seq_len: int = 256, batch_size: int = 4, seed: int = 0,
          placement: Placement | None = None, coefficients: Coefficients | None = None,
          width_matrices: dict[str, Any] | None = None, dtype: str = "keep", op: str = "learn",
          **options: Any) -> GrowResult:
    """G-learn: grow depth and/or width with LiGO operators learned on ``data`` (or given, for a replay).

    Depth when ``factor``/``layers``/``pattern`` is given, width when ``hidden_size``/... is. ``style`` picks
    the width parameterisation (:class:`LearnSpec`). ``options`` are :class:`~hfgrow.growth.pipeline.WriteOptions`
    fields.

    Example:
        >>> learn("./small", "./wide", data=["corpus.txt"], hidden_size=128, placement=Placement("auto"))
    """
    if op != "learn":
        raise HfgrowError(f"learn() grows with --op learn, not '{op}'.")
    if isinstance(data, str):  # 0.1 recipes joined the files with commas
        data = data.split(",")
    write = WriteOptions(**options)
    spec = LearnSpec(depth=Depth(factor, layers, pattern, order), width=Width(hidden_size, intermediate_size,
                                                                              num_heads, num_kv_heads),
                     data=tuple(map(str, data or ())), fit=FitSettings(learn_steps, learn_lr, seq_len, batch_size, seed),
                     width_init=width_init, style=style, placement=placement, dtype=dtype, coefficients=coefficients,
                     width_matrices=width_matrices, dry_run=write.dry_run, progress=not write.quiet)
    return grow_model(src, out, spec, write)
