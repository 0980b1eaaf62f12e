"""Orchestration: source -> layout -> plan -> executor -> card and recipe -> optional push.

Every growth command goes through :func:`grow_model`; operators only supply a function
from the source layout to a plan.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hfgrow.growth.card import render_card
from hfgrow.units import format_count, parse_bytes
from hfgrow.io import dtypes
from hfgrow.io.checkpoint import Checkpoint
from hfgrow.errors import HfgrowError
from hfgrow.io.files import copy_carry_over
from hfgrow.io.executor import OutputFolder, check_free_space, check_output_path, write_weights
from hfgrow.arch.layout import Layout, check_layer_kinds, open_model
from hfgrow.growth.ops.depth import stack_plan
from hfgrow.growth.pattern import compact, interpolate_map, parse_pattern, stack_map, target_layer_count
from hfgrow.io.plan import Plan
from hfgrow.growth.recipe import RECIPE_FILE, dump_recipe, make_recipe
from hfgrow.io.source import Source, open_source

@dataclass
class GrowResult:
    """What a growth command did (or, with ``dry_run``, would do)."""

    plan: Plan
    source: Source
    layout: Layout
    source_params: int
    source_bytes: int
    out: Path | None = None
    command: str = ""
    files: list[str] = field(default_factory=list)

    def report(self) -> str:
        """Human-readable summary of the plan: what --dry-run prints."""
        plan, layout = self.plan, self.layout
        byte_copies = sum(1 for t in plan.tensors if t.transform is None)
        lines = [
            f"source     {self.source.display}" + (f" @ {self.source.commit[:12]}" if self.source.commit else ""),
            f"model      {layout.architecture} ({layout.model_type}), {layout.num_layers} layers under '{layout.prefix}'",
            f"operation  {describe_operation(plan)}",
            f"layers     {layout.num_layers} -> {len(plan.layer_map) if plan.layer_map else layout.num_layers}",
        ]
        if plan.layer_map:
            lines.append(f"layer map  {compact(plan.layer_map)}")
            lines.append("           " + " ".join(f"{i}<-{s}" for i, s in enumerate(plan.layer_map)))
        if plan.new_layers:
            lines.append(f"new layers {compact(plan.new_layers)}")
        lines += [
            f"params     {format_count(self.source_params)} -> {format_count(plan.num_params)} ({plan.num_params:,})",
            f"bytes      {plan.total_bytes / 1e9:.3f} GB to write in {len(plan.tensors)} tensors "
            f"({byte_copies} byte copies, {len(plan.tensors) - byte_copies} computed)",
        ]
        transforms: dict[str, int] = {}
        for tensor in plan.tensors:
            if tensor.transform is not None:
                text = tensor.transform.describe()
                transforms[text] = transforms.get(text, 0) + 1
        for text, count in transforms.items():
            lines.append(f"transform  {count} x {text}")
        changed = {k: v for k, v in plan.config.items() if layout.config.get(k) != v}
        for key, value in changed.items():
            shown = json.dumps(value)
            lines.append(f"config     {key} = {shown if len(shown) < 100 else shown[:97] + '...'}")
        lines += [f"note       {note}" for note in plan.notes]
        if self.out is not None:
            lines.append(f"written    {self.out}")
        return "\n".join(lines)


OPERATOR_NAMES = {
    ("direct", "depth"): "Gstack / G-up-direct (whole blocks copied)",
    ("zero", "depth"): "G-up-zero (identity blocks: output projections zeroed, LLaMA-Pro style)",
    ("random", "depth"): "G-up-random (new blocks randomly initialised, for an MSG mask ramp)",
    ("learn", "depth"): "G-up-learn (LiGO: learned combinations of source blocks)",
    ("direct", "width"): "G-right-direct (neuron splitting: HyperCloning / Net2Net)",
    ("zero", "width"): "G-right-zero (new units: random fan-in, zero fan-out)",
    ("random", "width"): "G-right-random (new units randomly initialised, for an MSG mask ramp)",
}


def describe_operation(plan: Plan) -> str:
    """The operator(s) a plan applies, by name (e.g. ``G-up-zero (...) + G-right-direct (...)``)."""
    recipe = plan.recipe
    op = recipe.get("op", "direct")
    direction = recipe.get("direction", "depth")
    parts = []
    for part in ("depth", "width"):
        if part in direction.split("+"):
            part_op = recipe.get(f"{part}_op") or op
            parts.append(OPERATOR_NAMES.get((part_op, part), f"G-{part}-{part_op}"))
    text = " + ".join(parts) or f"G-{direction}-{op}"
    noise = recipe.get("noise")
    if isinstance(noise, dict) and noise.get("alpha"):
        text += f" + noise (alpha {noise['alpha']:g})"
    return text


def depth_map(layout: Layout, factor: float | None, layers: int | None, pattern: str | None,
              order: str = "stack") -> list[int]:
    """The output layer map from exactly one of factor/layers/pattern and the order."""
    if pattern is not None:
        if factor is not None or layers is not None:
            raise HfgrowError("give a --pattern or a --factor/--layers, not both.")
        return parse_pattern(pattern, layout.num_layers)
    target = target_layer_count(layout.num_layers, factor, layers)
    if order == "stack":
        return stack_map(layout.num_layers, target)
    if order == "interpolate":
        return interpolate_map(layout.num_layers, target)
    raise HfgrowError(f"unknown --order '{order}'; use stack or interpolate.")


def canonical_command(name: str, source: Source, out: Path | str, options: dict[str, Any]) -> str:
    """The exact CLI command that reproduces a run (source pinned to its commit when known)."""
    argv = ["hfgrow", name, source.repo_id or str(source.path), str(out)]
    if source.repo_id and source.commit:
        argv += ["--revision", source.commit]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return shlex.join(argv)


def _card(result: GrowResult, out: Path) -> str:
    plan, source, layout = result.plan, result.source, result.layout
    base_url = f"https://huggingface.co/{source.repo_id}" if source.repo_id else str(source.path)
    op = plan.recipe.get("op", "direct")
    return render_card(
        "grown.md",
        base_model=source.repo_id,
        # A grown model reuses its base's weights re-arranged, as mergekit passthrough
        # "self-merges" (e.g. SOLAR-style depth up-scaling) do; the Hub labels those merges.
        relation="merge",
        tags=["hfgrow", "model-growth", f"grow-{op}", layout.model_type],
        model_name=out.name,
        base_display=source.display,
        base_url=base_url,
        base_commit=source.commit,
        operator_name=describe_operation(plan),
        preserving=bool(plan.recipe.get("function_preserving")),
        architecture=layout.architecture,
        source_layers=layout.num_layers,
        target_layers=len(plan.layer_map) if plan.layer_map else layout.num_layers,
        source_params=format_count(result.source_params),
        target_params=format_count(plan.num_params),
        layer_pattern=compact(plan.layer_map) if plan.layer_map else None,
        notes=plan.notes,
        command=result.command,
    )


def grow_model(src: str, out: str | Path | None, make_plan: Callable[[Layout, Checkpoint], Plan], *,
               command_name: str, options: dict[str, Any], revision: str | None = None, token=None,
               max_shard_size: int | str = "5GB", dry_run: bool = False, overwrite: bool = False,
               quiet: bool = False, push_to: str | None = None) -> GrowResult:
    """Run one growth operation end to end. Operators only supply ``make_plan``.

    ``options`` are the operator's parameters as CLI option names; they go into the
    recipe and the reproducing command.
    """
    max_shard = parse_bytes(max_shard_size, "shard size")
    out_path = Path(out).expanduser() if out is not None else None
    with open_source(src, revision=revision, token=token, progress=not quiet) as source:
        if out_path is not None and not dry_run:
            check_output_path(out_path, [source.path], overwrite)
        checkpoint, layout = open_model(source.path)
        plan = make_plan(layout, checkpoint)
        if plan.layer_map is not None:
            check_layer_kinds(layout, plan.config, plan.layer_map)
            if "pattern" in options:  # the reproducing command pins the exact layer map
                options = dict(options, pattern=compact(plan.layer_map))
        source_params = sum(
            math.prod(info.shape) for name, info in checkpoint.tensors.items() if name not in layout.tied
        )
        result = GrowResult(plan, source, layout, source_params, checkpoint.total_bytes)
        result.command = canonical_command(command_name, source, out_path.name if out_path else "OUT", options)
        if dry_run or out_path is None:
            return result
        check_free_space(out_path.parent, plan.total_bytes)
        with OutputFolder(out_path, overwrite=overwrite) as tmp:
            write_weights(plan, checkpoint, tmp, max_shard, progress=not quiet)
            (tmp / "config.json").write_text(json.dumps(plan.config, indent=2, sort_keys=True) + "\n")
            result.files = copy_carry_over(source.path, tmp)
            params = dict(options, max_shard_size=max_shard_size)
            recipe = make_recipe(source, params, plan, result.command)
            recipe["command_name"] = command_name
            (tmp / RECIPE_FILE).write_text(dump_recipe(recipe))
            for name, tensors in plan.sidecars.items():
                save_file(tensors, str(tmp / name), metadata={"format": "pt", "producer": "hfgrow"})
            (tmp / "README.md").write_text(_card(result, out_path))
        checkpoint.close()
        result.out = out_path.resolve()
    if push_to:
        from hfgrow.io.hub import push_folder

        push_folder(result.out, push_to, token=token)
    return result


def stack(src: str, out: str | Path | None, *, factor: float | None = None, layers: int | None = None,
          pattern: str | None = None, order: str = "stack", dtype: str = "keep", revision: str | None = None,
          token=None, max_shard_size: int | str = "5GB", dry_run: bool = False, overwrite: bool = False,
          quiet: bool = False, push_to: str | None = None) -> GrowResult:
    """Gstack: repeat the source's decoder blocks (``--factor 4`` by default) and write OUT.

    Example:
        >>> result = stack("TinyLlama/TinyLlama_v1.1", "tinyllama-88l", factor=4)
        >>> result.plan.layer_map[:3], len(result.plan.layer_map)
        ([0, 1, 2], 88)
        >>> print(stack("./small", None, pattern="0-1,2-5*5,4-5", dry_run=True).report())
    """
    out_dtype = dtypes.from_option(dtype)

    def make_plan(layout: Layout, checkpoint: Checkpoint) -> Plan:
        layer_map = depth_map(layout, factor, layers, pattern, order)
        if pattern is None and len(layer_map) < layout.num_layers:
            raise HfgrowError(f"--factor/--layers would shrink the model from {layout.num_layers} to "
                              f"{len(layer_map)} layers; use --pattern to select layers on purpose.")
        return stack_plan(layout, checkpoint.tensors, layer_map, out_dtype)

    options = {"pattern": None, "dtype": None if out_dtype is None else dtype}
    return grow_model(src, out, make_plan, command_name="stack", options=options, revision=revision, token=token,
                      max_shard_size=max_shard_size, dry_run=dry_run, overwrite=overwrite, quiet=quiet,
                      push_to=push_to)


GROW_OPS = ("direct", "zero", "random")
ORDERS = ("stack", "interpolate", "interleave")


def grow(src: str, out: str | Path | None, *, op: str = "direct", width_op: str | None = None,
         factor: float | None = None, layers: int | None = None, pattern: str | None = None,
         order: str | None = None, hidden_size: int | None = None, intermediate_size: int | None = None,
         num_heads: int | None = None, num_kv_heads: int | None = None, noise: float | None = None, seed: int = 0,
         mask_steps: int | None = None, dtype: str = "keep", revision: str | None = None, token=None,
         max_shard_size: int | str = "5GB", dry_run: bool = False, overwrite: bool = False, quiet: bool = False,
         push_to: str | None = None) -> GrowResult:
    """Grow SRC in depth (``factor``/``layers``/``pattern``), width (``hidden_size``/...), or both.

    ``op`` is the operator: ``direct`` (Gstack in depth, neuron splitting in width),
    ``zero`` (identity blocks / zero fan-out units: function-preserving) or ``random``
    (randomly initialised blocks/units with an MSG mask recorded in the recipe);
    ``width_op`` overrides it for the width part (e.g. ``op="zero", width_op="direct"``).
    ``order`` places depth copies: ``stack`` (default for direct), ``interleave``
    (LLaMA Pro, default for zero/random) or ``interpolate``. ``noise`` (alpha in [0, 1))
    blends every weight matrix with seeded noise. Everything random is seeded by ``seed``.

    Example:
        >>> grow("./small-12l", "./deep", op="zero", layers=16).plan.layer_map[:8]   # LLaMA Pro
        [0, 1, 2, 2, 3, 4, 5, 5]
        >>> grow("./small", "./wide", hidden_size=4096, intermediate_size=11264).plan.config["hidden_size"]
        4096
        >>> grow("./small", "./both", op="zero", width_op="direct", factor=2, hidden_size=4096)
    """
    from hfgrow.growth.ops.depth import stack_plan
    from hfgrow.growth.ops.noise import check_alpha, noise_plan
    from hfgrow.growth.ops.random_init import DEFAULT_MASK_STEPS, random_plan
    from hfgrow.growth.ops.width import resolve_sizes, width_plan
    from hfgrow.growth.ops.zero import interleave_map, zero_plan
    from hfgrow.arch.roles import derive_roles

    width_op = width_op or op
    for name, value in (("--op", op), ("--width-op", width_op)):
        if value not in GROW_OPS:
            raise HfgrowError(f"unknown {name} '{value}'; use one of {', '.join(GROW_OPS)}.")
    if noise is not None:
        check_alpha(noise)
    depth = factor is not None or layers is not None or pattern is not None
    width = any(v is not None for v in (hidden_size, intermediate_size, num_heads, num_kv_heads))
    if not depth and not width:
        raise HfgrowError("nothing to grow: give --factor, --layers or --pattern (depth) and/or --hidden-size, "
                          "--intermediate-size, --num-heads or --num-kv-heads (width).")
    if order is None:
        order = "stack" if op == "direct" else "interleave"
    if order not in ORDERS:
        raise HfgrowError(f"unknown --order '{order}'; use one of {', '.join(ORDERS)}.")
    masked = (op == "random" and depth) or (width and width_op == "random")
    if masked:
        mask_steps = DEFAULT_MASK_STEPS if mask_steps is None else mask_steps
        if mask_steps < 1:
            raise HfgrowError(f"--mask-steps must be positive, got {mask_steps}.")
    elif mask_steps is not None:
        raise HfgrowError("--mask-steps applies to --op random (new layers or units ramped in by an MSG mask).")
    out_dtype = dtypes.from_option(dtype)

    def make_plan(layout: Layout, checkpoint: Checkpoint) -> Plan:
        roles = derive_roles(layout, checkpoint.tensors)
        if not depth:
            layer_map = list(range(layout.num_layers))
        elif pattern is None and order == "interleave":
            layer_map = interleave_map(layout.num_layers, target_layer_count(layout.num_layers, factor, layers))
        else:
            layer_map = depth_map(layout, factor, layers, pattern, order if order != "interleave" else "stack")
        plan = stack_plan(layout, checkpoint.tensors, layer_map, out_dtype)
        # zero blocks are identities, so the function is kept iff the original layers appear in order
        originals = [src for i, src in enumerate(layer_map) if src not in layer_map[:i]]
        preserving = not depth or (op == "zero" and originals == list(range(layout.num_layers)))
        sizes = None
        if width:
            sizes = resolve_sizes(roles, hidden_size, intermediate_size, num_heads, num_kv_heads, op=width_op)
            plan = width_plan(plan, roles, sizes, op=width_op, seed=seed)
            preserving = preserving and plan.recipe.get("width", {}).get("function_preserving", True)
        if depth and op == "zero":
            plan = zero_plan(plan, roles)
        elif depth and op == "random":
            plan = random_plan(plan, roles, seed=seed, mask_steps=mask_steps)
            plan.notes.append(f"new layers {compact(plan.new_layers)} are random: ramp their residual contribution "
                              f"0 -> 1 over {mask_steps} steps (MSG; recorded in hfgrow.yaml)")
        if noise:
            plan = noise_plan(plan, roles, noise, seed=seed, hidden_size=sizes.hidden[1] if sizes else None)
        if width and width_op == "random":
            plan.recipe["mask"] = dict(plan.recipe.get("mask") or {}, steps=mask_steps)
            plan.notes.append(f"new width units are random; continue.py ramps them in over {mask_steps} steps "
                              "(MSG; mask.width in hfgrow.yaml)")
        directions = [d for d, on in (("depth", depth), ("width", width)) if on]
        plan.recipe.update(
            op=op, direction="+".join(directions), function_preserving=bool(preserving and not noise),
            seed=seed,
        )
        if depth:
            plan.recipe.update(depth_op=op, depth={"op": op, "factor": factor, "layers": layers, "pattern": pattern,
                                                   "order": order})
        if width:
            plan.recipe["width_op"] = width_op
        return plan

    options: dict[str, Any] = {"op": op, "width_op": width_op if width and width_op != op else None}
    if depth:
        options["pattern"] = None  # grow_model pins the exact layer map here
        if order != ("stack" if op == "direct" else "interleave"):
            options["order"] = order
    options.update(hidden_size=hidden_size, intermediate_size=intermediate_size, num_heads=num_heads,
                   num_kv_heads=num_kv_heads, noise=noise or None, seed=seed,
                   mask_steps=mask_steps if masked else None,
                   dtype=None if out_dtype is None else dtype)
    return grow_model(src, out, make_plan, command_name="grow", options=options, revision=revision, token=token,
                      max_shard_size=max_shard_size, dry_run=dry_run, overwrite=overwrite, quiet=quiet,
                      push_to=push_to)


_REPLAY_PARAMS = {"op", "width_op", "pattern", "order", "hidden_size", "intermediate_size", "num_heads",
                  "num_kv_heads", "noise", "seed", "mask_steps", "dtype"}


def replay(recipe_path: str | Path, out: str | Path | None, *, token=None, max_shard_size: int | str | None = None,
           dry_run: bool = False, overwrite: bool = False, quiet: bool = False,
           push_to: str | None = None) -> GrowResult:
    """Rebuild a grown model from its recipe (``hfgrow.yaml`` or a folder holding one).

    The source is taken from the recipe (Hub repo pinned to the recorded commit, or the
    local path) and every parameter, the layer map and the seed are reused, so the output
    tensors are identical, bit for bit, to the original run's.

    Example:
        >>> replay("grown/hfgrow.yaml", "grown-again").out
        PosixPath('/abs/grown-again')
    """
    from hfgrow.growth.recipe import load_recipe

    recipe = load_recipe(Path(recipe_path))
    if recipe is None:
        raise HfgrowError(f"{recipe_path} holds no hfgrow recipe ({RECIPE_FILE}).")
    name = recipe.get("command_name") or (shlex.split(recipe.get("command", "hfgrow stack"))[1:2] or ["stack"])[0]
    source = recipe["source"]
    if isinstance(source.get("adapter"), dict):
        src, revision = source["adapter"]["spec"], source["adapter"].get("commit")
    elif source.get("repo_id"):
        src, revision = source["repo_id"], source.get("commit") or source.get("revision")
    else:
        src, revision = source.get("path") or source.get("spec"), None
    if not src:
        raise HfgrowError(f"{recipe_path} does not say which model it was grown from.")
    params = {key: value for key, value in recipe["params"].items() if key in _REPLAY_PARAMS}
    shard = max_shard_size or recipe["params"].get("max_shard_size") or "5GB"
    common = dict(revision=revision, token=token, max_shard_size=shard, dry_run=dry_run, overwrite=overwrite,
                  quiet=quiet, push_to=push_to)
    if name == "stack":
        return stack(src, out, pattern=params.get("pattern"), dtype=params.get("dtype") or "keep", **common)
    operation = recipe.get("operation") or {}
    if name == "grow" and operation.get("op") == "learn":
        return _replay_learn(Path(recipe_path), operation, recipe["params"], src, out, common)
    if name == "grow":
        params.setdefault("dtype", "keep")
        return grow(src, out, **params, **common)
    raise HfgrowError(f"the recipe was written by `hfgrow {name}`; replay supports recipes of stack and grow.")


def _replay_learn(recipe_path: Path, operation: dict[str, Any], params: dict[str, Any], src: str, out,
                  common: dict[str, Any]) -> GrowResult:
    """G↑learn from its recipe: D from the recipe, width matrices from the file next to it."""
    from hfgrow.growth.ligo.fit import learn
    from hfgrow.growth.ops.learn import SIDECAR

    width = {key: params.get(key) for key in ("hidden_size", "intermediate_size", "num_heads", "num_kv_heads")}
    matrices = None
    if any(value is not None for value in width.values()):
        sidecar = (recipe_path if recipe_path.is_dir() else recipe_path.parent) / operation.get("width", {}).get(
            "matrices", SIDECAR)
        try:
            matrices = load_file(str(sidecar))
        except (OSError, SafetensorError) as exc:
            raise HfgrowError(f"cannot read the learned width matrices {sidecar}: {exc}") from None
    return learn(src, out, coefficients=operation["coefficients"], pattern=params.get("pattern"),
                 width_init=params.get("width_init") or "direct", width_matrices=matrices, seed=params.get("seed", 0),
                 dtype=params.get("dtype") or "keep", **width, **common)
