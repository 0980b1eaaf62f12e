"""The recipe (``hfgrow.yaml``): what a grown folder was made from and how.

It is the contract between ``grow`` (which writes it), ``grow --recipe`` (which replays it bit for
bit) and training (which reads which layers are new and how to ramp them in). This module is its only
reader and writer: everything else sees the typed :class:`Recipe`.

Format 2 (hfgrow 0.2)::

    format: 2
    hfgrow_version: 0.2.0
    created: 2026-11-27T12:00:00+00:00
    command: grow                      # the growth function that replays it: stack or grow
    command_line: hfgrow grow org/small OUT --op zero --pattern 0,0-1,1 --revision 3f2a...
    source: {repo_id: org/small, revision: main, commit: 3f2a...}   # or {name: small} for a folder
    params: {op: zero, pattern: '0,0-1,1', seed: 0}                  # keyword arguments of `command`
    operation: {op: zero, direction: depth, style: hfgrow, seed: 0, function_preserving: true,
                mask: {layers: [1, 3], steps: 500, form: sublayer}, width: ..., noise: ..., coefficients: ...}
    layer_map: [0, 0, 1, 1]
    new_layers: [1, 3]

A local source is recorded by its folder's *name*, never its path (recipes are published with the
model). Recipes written by hfgrow 0.1 (no ``format`` key, absolute source paths) are read too.

Example:
    >>> recipe = Recipe.read(Path("grown"))
    >>> recipe.layer_map[:4], recipe.operation.function_preserving
    ([0, 1, 2, 3], False)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError

RECIPE_FILE = "hfgrow.yaml"
FORMAT = 2
_HEADER = "# hfgrow recipe: `hfgrow grow --recipe hfgrow.yaml OUT` rebuilds this model.\n"


def hfgrow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hfgrow")
    except PackageNotFoundError:
        return "0+unknown"


def _pair(value: Any) -> tuple[int, int]:
    old, new = value
    return int(old), int(new)


@dataclass(frozen=True)
class SourceRef:
    """Where a model came from: a Hub repo (pinned to a commit) or a local folder, by name."""

    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    name: str | None = None  # a local folder's name: never its path
    adapter: SourceRef | None = None  # a PEFT adapter that was merged into this base first
    path: str | None = None  # only read from 0.1 recipes, which recorded absolute paths; never written

    @property
    def display(self) -> str:
        return self.repo_id or self.name or "a local folder"

    @classmethod
    def from_source(cls, source) -> SourceRef:
        """From a resolved :class:`hfgrow.io.source.Source`."""
        adapter = cls.from_source(source.adapter) if source.adapter is not None else None
        if source.repo_id:
            return cls(repo_id=source.repo_id, revision=source.revision, commit=source.commit, adapter=adapter)
        return cls(name=Path(source.path).name, adapter=adapter)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in (("repo_id", self.repo_id), ("revision", self.revision), ("commit", self.commit),
                                  ("name", self.name)) if v is not None}
        if self.adapter is not None:
            data["adapter"] = self.adapter.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceRef:
        for key in ("repo_id", "revision", "commit", "name", "path"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ValueError(f"source {key} is not a string")
        adapter = data.get("adapter")
        if isinstance(adapter, dict) and "spec" in adapter:  # 0.1: {spec, commit} of a Hub adapter
            adapter = {"repo_id": adapter["spec"], "commit": adapter.get("commit")}
        path = data.get("path")
        return cls(repo_id=data.get("repo_id"), revision=data.get("revision"), commit=data.get("commit"),
                   name=data.get("name") or (Path(path).name if path else None),
                   adapter=cls.from_dict(adapter) if isinstance(adapter, dict) else None, path=path)


@dataclass(frozen=True)
class WidthMask:
    """The new width units a MSG ramp scales: each grown space's (old, new) size and the new heads."""

    hidden: tuple[int, int] | None = None
    ffn: dict[str, tuple[int, int]] = field(default_factory=dict)  # FFN config key -> (old, new)
    new_heads: tuple[int, ...] = ()
    new_kv_heads: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"hidden_size": list(self.hidden)} if self.hidden else {}
        data.update({key: list(pair) for key, pair in self.ffn.items()})
        return data | {"new_heads": list(self.new_heads), "new_kv_heads": list(self.new_kv_heads)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WidthMask:
        rest = {k: v for k, v in data.items() if k not in ("hidden_size", "new_heads", "new_kv_heads")}
        return cls(hidden=_pair(data["hidden_size"]) if data.get("hidden_size") else None,
                   ffn={key: _pair(pair) for key, pair in rest.items()},
                   new_heads=tuple(int(h) for h in data.get("new_heads") or ()),
                   new_kv_heads=tuple(int(h) for h in data.get("new_kv_heads") or ()))


#: grow's default MSG ramp takes this fraction of the training run (its stages together), fitted when training starts
RAMP_FRACTION = 0.1
#: how a recipe writes that default length in place of a number of steps
DEFAULT_RAMP = f"{RAMP_FRACTION:.0%} of the training run"


@dataclass(frozen=True)
class Mask:
    """MSG: new structure is scaled by c, which ramps 0 -> 1 over ``steps`` training steps.

    ``form`` is where c applies to new layers: ``sublayer`` (each attention/MLP residual update,
    ``h = x + c·attn(norm x)``, ``y = h + c·mlp(norm h)``) or ``block`` (the whole block,
    ``y = c·block(x) + (1 − c)·x``: the reference code's ``MsgBlock``).

    With new width units (``width``), three more fields say how the ramp runs:

    ``stages``
        the width spaces (``ffn``, ``hidden``, ``heads``) ramped together in each stage; the stages run one
        after another, each over ``steps`` steps (c of a space is 0 before its stage, ``(t − t0)/steps``
        during it, 1 after). One stage with every space: all ramp together over ``steps``.
    ``units_at``
        ``readers``: new heads and FFN units are scaled where they are read (the input columns of the
        attention output and MLP down projections); ``writers``: every projection that writes new units has
        its output scaled (q/k/v rows of new heads, up/gate rows of new FFN units), as the reference code's
        ``MsgLayer`` does. New hidden units are scaled where they are written in both (embedding, every
        sublayer's residual update, the hidden-size norms' outputs).
    ``norm_stats``
        ``fill``: a norm over grown units sees, in place of the new units, values with the source units'
        statistics, blended into the real values as c grows; ``masked``: MSG's mask-weighted statistics,
        those of x·m over Σm units, then ``·m`` (prts ``MsgNorm``: ``norm(x·m)·sqrt(Σm / n)·m``; a LayerNorm
        centres by the mask-weighted mean), m being the space's per-unit mask (:mod:`hfgrow.train.msg`).

    Recipes without these fields (hfgrow 0.1, or depth-only masks) read as hfgrow's ramp: one stage,
    ``readers``, ``fill``.

    ``steps_given`` says whether ``steps`` was chosen (``grow --mask-steps``) or is grow's default: training
    keeps a chosen length and fits a default one to the run (:func:`hfgrow.train.args.fit_ramp`: the ramp
    takes :data:`RAMP_FRACTION` of the run). Written only when false, with ``steps`` then written as that
    rule (:data:`DEFAULT_RAMP`); recipes without it read as chosen (the ramp they always had).
    """

    layers: tuple[int, ...] = ()
    steps: int = 0
    width: WidthMask | None = None
    form: str = "sublayer"
    stages: tuple[tuple[str, ...], ...] = (("ffn", "hidden", "heads"),)
    units_at: str = "readers"
    norm_stats: str = "fill"
    steps_given: bool = True

    def to_dict(self) -> dict[str, Any]:
        steps = self.steps if self.steps_given else DEFAULT_RAMP  # grow's default is fitted when training starts
        data: dict[str, Any] = {"layers": list(self.layers), "steps": steps, "form": self.form}
        if not self.steps_given:
            data["steps_given"] = False
        if self.width is not None:
            data["width"] = self.width.to_dict()
            data.update(stages=[list(stage) for stage in self.stages], units_at=self.units_at,
                        norm_stats=self.norm_stats)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mask:
        width = data.get("width")
        stages = data.get("stages")
        steps = data.get("steps")
        given = data.get("steps_given") is not False and not isinstance(steps, str)
        return cls(layers=tuple(int(i) for i in data.get("layers") or ()),
                   steps=0 if isinstance(steps, str) else int(steps or 0),
                   width=WidthMask.from_dict(width) if isinstance(width, dict) else None,
                   form=str(data.get("form") or "sublayer"),
                   stages=tuple(tuple(str(s) for s in stage) for stage in stages) if stages else cls.stages,
                   units_at=str(data.get("units_at") or cls.units_at),
                   norm_stats=str(data.get("norm_stats") or cls.norm_stats),
                   steps_given=given)


@dataclass(frozen=True)
class WidthRecord:
    """How the width grew: the operator, each space's (old, new) size, and LiGO's start and matrices file."""

    op: str
    sizes: dict[str, tuple[int, int]]  # hidden_size, num_attention_heads, num_key_value_heads, FFN keys
    head_dim: int
    function_preserving: bool
    init: str | None = None
    matrices: str | None = None  # the sidecar file with LiGO's learned width matrices

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, **{key: list(pair) for key, pair in self.sizes.items()},
                                "head_dim": self.head_dim, "function_preserving": self.function_preserving}
        return data | {k: v for k, v in (("init", self.init), ("matrices", self.matrices)) if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WidthRecord:
        scalars = ("op", "head_dim", "function_preserving", "init", "matrices")
        return cls(op=str(data.get("op", "direct")), head_dim=int(data.get("head_dim") or 0),
                   sizes={key: _pair(pair) for key, pair in data.items() if key not in scalars},
                   function_preserving=bool(data.get("function_preserving")), init=data.get("init"),
                   matrices=data.get("matrices"))


@dataclass(frozen=True)
class Noise:
    """Symmetry-breaking noise W <- (1-alpha)·W + alpha·eps and the two standard deviations used."""

    alpha: float
    std_output_projections: float
    std_other: float


@dataclass(frozen=True)
class Operation:
    """What the operators did to the source. Operators fill it in as they transform a plan.

    ``op`` is the operator's name in :mod:`hfgrow.growth.registry` (recipes before 0.3 say ``direct`` for
    ``stack``; the registry reads both), which also names it for cards (``registry.describe``).
    """

    op: str = "stack"
    direction: str = "depth"  # depth, width, depth+width or experts
    style: str = "hfgrow"  # hfgrow (this tool's variants) or prts (the papers' reference code)
    seed: int = 0
    function_preserving: bool = False
    width: WidthRecord | None = None
    mask: Mask | None = None
    noise: Noise | None = None
    coefficients: dict[str, list[list[float]]] | None = None  # LiGO depth: D per weight kind
    experts: dict[str, Any] | None = None  # upcycling: target type, experts, top-k, variant, router, scaling

    def replace(self, **changes: Any) -> Operation:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "direction": self.direction, "style": self.style, "seed": self.seed,
                                "function_preserving": self.function_preserving}
        if self.width is not None:
            data["width"] = self.width.to_dict()
        if self.mask is not None:
            data["mask"] = self.mask.to_dict()
        if self.noise is not None:
            data["noise"] = dataclasses.asdict(self.noise)
        if self.coefficients is not None:
            data["coefficients"] = self.coefficients
        if self.experts is not None:
            data["experts"] = dict(self.experts)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Operation:
        width, mask, noise = data.get("width"), data.get("mask"), data.get("noise")
        experts = data.get("experts")
        return cls(op=str(data.get("op", "stack")), direction=str(data.get("direction", "depth")),
                   style=str(data.get("style", "hfgrow")), seed=int(data.get("seed") or 0),
                   function_preserving=bool(data.get("function_preserving")),
                   width=WidthRecord.from_dict(width) if isinstance(width, dict) else None,
                   mask=Mask.from_dict(mask) if isinstance(mask, dict) else None,
                   noise=Noise(**noise) if isinstance(noise, dict) else None,
                   coefficients=data.get("coefficients"), experts=dict(experts) if isinstance(experts, dict) else None)


@dataclass(frozen=True)
class Recipe:
    """A grown folder's recipe. ``params`` are the keyword arguments of ``command`` that replay it."""

    command: str  # "stack" or "grow": the growth function
    params: dict[str, Any]
    source: SourceRef
    operation: Operation
    layer_map: list[int] | None = None
    new_layers: list[int] = field(default_factory=list)
    command_line: str = ""
    hfgrow_version: str = field(default_factory=hfgrow_version)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    format: int = FORMAT

    # ------------------------------------------------------------------ writing

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "hfgrow_version": self.hfgrow_version, "created": self.created,
            "command": self.command, "command_line": self.command_line, "source": self.source.to_dict(),
            "params": {k: v for k, v in self.params.items() if v is not None},
            "operation": self.operation.to_dict(), "layer_map": self.layer_map, "new_layers": list(self.new_layers),
        }

    def to_yaml(self) -> str:
        import yaml

        return _HEADER + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    def write(self, folder: Path) -> Path:
        from hfgrow.io.output import atomic_write

        return atomic_write(Path(folder) / RECIPE_FILE, self.to_yaml())

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "recipe") -> Recipe:
        """Parse format 2, or a 0.1 recipe (``command_name``, width sizes flat in ``operation.width``)."""
        try:
            if not isinstance(data.get("source"), dict) or not isinstance(data.get("params"), dict):
                raise ValueError("no source/params")
            command = data.get("command") if data.get("format") else data.get("command_name", "stack")
            operation = dict(data.get("operation") or {})
            if not data.get("format") and isinstance(operation.get("mask"), dict) and "layers" not in operation["mask"]:
                operation["mask"] = dict(operation["mask"], layers=[])  # 0.1 width-only masks
            return cls(
                command=str(command), params=dict(data["params"]), source=SourceRef.from_dict(data["source"]),
                operation=Operation.from_dict(operation),
                layer_map=[int(i) for i in data["layer_map"]] if data.get("layer_map") is not None else None,
                new_layers=[int(i) for i in data.get("new_layers") or []],
                command_line=str(data.get("command_line") or data.get("command") or ""),
                hfgrow_version=str(data.get("hfgrow_version", "0.1")), created=str(data.get("created", "")),
                format=int(data.get("format") or 1),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HfgrowError(f"{where} is not an hfgrow recipe ({exc}).") from None

    @classmethod
    def read(cls, path: Path) -> Recipe | None:
        """The recipe in a file, or in ``folder/hfgrow.yaml``; None when a folder has none.

        Raises:
            HfgrowError: the file exists but is not a recipe.
        """
        import yaml

        from hfgrow.io.folder import Folder, read_user_file

        path = Path(path)
        if path.is_dir():
            if Folder(path).find(RECIPE_FILE, "the recipe") is None:
                return None
            text = Folder(path).read_bytes(RECIPE_FILE, "the recipe")
            path = path / RECIPE_FILE
        else:
            text = read_user_file(path, "recipe")
        try:
            data = yaml.safe_load(text.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
            raise HfgrowError(f"cannot read recipe {path}: {first}.") from None
        if not isinstance(data, dict):
            raise HfgrowError(f"{path} is not an hfgrow recipe.")
        return cls.from_dict(data, str(path))
