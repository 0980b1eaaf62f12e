"""Orchestration: source -> layout -> plan -> executor -> card and recipe -> optional push.

Every growth command goes through :func:`grow_model`; operators only supply a function
from the source layout to a plan.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hfgrow.card import human, render_card
from hfgrow.checkpoint import DTYPE_ALIASES, Checkpoint
from hfgrow.errors import HfgrowError
from hfgrow.executor import OutputFolder, check_free_space, check_output_path, parse_size, write_weights
from hfgrow.layout import Layout, check_layer_kinds, open_model
from hfgrow.ops.depth import stack_plan
from hfgrow.pattern import compact, interpolate_map, parse_pattern, stack_map, target_layer_count
from hfgrow.plan import Plan
from hfgrow.recipe import RECIPE_FILE, dump_recipe, make_recipe
from hfgrow.source import Source, open_source

# files carried over from SRC unchanged (tokenizer, chat template, generation settings)
CARRY_OVER = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "merges.txt", "*.tiktoken",
    "chat_template.jinja", "chat_template.json", "generation_config.json",
)


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
            f"params     {human(self.source_params)} -> {human(plan.num_params)} ({plan.num_params:,})",
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


def describe_operation(plan: Plan) -> str:
    op = plan.recipe.get("op", "direct")
    direction = plan.recipe.get("direction", "depth")
    names = {("direct", "depth"): "Gstack / G-up-direct (whole blocks copied)"}
    return names.get((op, direction), f"G-{direction}-{op}")


def resolve_dtype(dtype: str | None) -> str | None:
    """``keep``/None -> None; bfloat16/float16/float32 -> safetensors dtype name."""
    if dtype in (None, "keep"):
        return None
    key = dtype.lower()
    if key not in DTYPE_ALIASES:
        raise HfgrowError(f"unknown dtype '{dtype}'; use keep, bfloat16, float16 or float32.")
    return DTYPE_ALIASES[key]


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


def _copy_carry_over(src: Path, dst: Path) -> list[str]:
    copied = []
    for pattern in CARRY_OVER:
        for item in sorted(src.glob(pattern)):
            if item.is_file():
                shutil.copy2(item, dst / item.name)
                copied.append(item.name)
    return copied


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
        source_params=human(result.source_params),
        target_params=human(plan.num_params),
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
    max_shard = parse_size(max_shard_size)
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
            _numel(info.shape) for name, info in checkpoint.tensors.items() if name not in layout.tied
        )
        result = GrowResult(plan, source, layout, source_params, checkpoint.total_bytes)
        result.command = canonical_command(command_name, source, out_path.name if out_path else "OUT", options)
        if dry_run or out_path is None:
            return result
        check_free_space(out_path.parent, plan.total_bytes)
        with OutputFolder(out_path, overwrite=overwrite) as tmp:
            write_weights(plan, checkpoint, tmp, max_shard, progress=not quiet)
            (tmp / "config.json").write_text(json.dumps(plan.config, indent=2, sort_keys=True) + "\n")
            result.files = _copy_carry_over(source.path, tmp)
            params = dict(options, max_shard_size=max_shard_size)
            recipe = make_recipe(source, params, plan, result.command)
            recipe["command_name"] = command_name
            (tmp / RECIPE_FILE).write_text(dump_recipe(recipe))
            (tmp / "README.md").write_text(_card(result, out_path))
        checkpoint.close()
        result.out = out_path.resolve()
    if push_to:
        from hfgrow.hub import push_folder

        push_folder(result.out, push_to, token=token)
    return result


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


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
    out_dtype = resolve_dtype(dtype)

    def make_plan(layout: Layout, checkpoint: Checkpoint) -> Plan:
        layer_map = depth_map(layout, factor, layers, pattern, order)
        return stack_plan(layout, checkpoint.tensors, layer_map, out_dtype)

    options = {"pattern": None, "dtype": None if out_dtype is None else dtype}
    return grow_model(src, out, make_plan, command_name="stack", options=options, revision=revision, token=token,
                      max_shard_size=max_shard_size, dry_run=dry_run, overwrite=overwrite, quiet=quiet,
                      push_to=push_to)
