"""The growth pipeline: resolve SRC -> read its layout -> build a plan -> write it -> card and recipe -> push.

Every growth command (``stack``, ``grow``, ``grow --op learn``, a recipe replay) goes through
:func:`grow_model`. What varies is the *growth*: any object with a ``command`` name, a
``plan(layout, checkpoint)`` method and a ``params(plan)`` method (:class:`hfgrow.growth.spec.GrowSpec`,
LiGO's :class:`hfgrow.growth.ligo.operator.LearnSpec`).

Example:
    >>> result = stack("TinyLlama/TinyLlama_v1.1", "tinyllama-88l", factor=4)
    >>> result.plan.layer_map[:3], len(result.plan.layer_map)
    ([0, 1, 2], 88)
    >>> grow("./small", "./wide", hidden_size=4096).recipe.operation.function_preserving
    True
"""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from hfgrow.arch.layout import Layout, check_grown, open_model
from hfgrow.console import log, progress
from hfgrow.errors import HfgrowError
from hfgrow.growth.card import grown_card
from hfgrow.arch.pattern import compact
from hfgrow.growth.plan import Plan
from hfgrow.growth.recipe import Recipe, SourceRef
from hfgrow.growth.registry import describe
from hfgrow.growth.spec import Depth, GrowSpec, Width
from hfgrow.io.checkpoint import Checkpoint
from hfgrow.io.executor import SAFETENSORS_INDEX, copies_bytes, write_weights
from hfgrow.io.output import OutputFolder, atomic_write, check_free_space, check_output_path
from hfgrow.io.files import carry_over_files, copy_carry_over
from hfgrow.io.source import Source, open_source
from hfgrow.units import format_bytes, format_count, parse_bytes


class Growth(Protocol):
    """What :func:`grow_model` needs from an operator."""

    command: str  # the function that replays it: "stack" or "grow"

    def plan(self, layout: Layout, checkpoint: Checkpoint) -> Plan: ...

    def params(self, plan: Plan) -> dict[str, Any]: ...


@dataclass(frozen=True)
class WriteOptions:
    """How OUT is written and where SRC comes from; shared by every growth command."""

    max_shard_size: int | str = "5GB"
    dry_run: bool = False
    overwrite: bool = False
    quiet: bool = False
    push_to: str | None = None
    revision: str | None = None
    token: str | None = None


def command_line(command: str, source: SourceRef, out: str, params: dict[str, Any]) -> str:
    """The CLI command that reproduces a run (a Hub source pinned to its commit, a folder by its name)."""
    argv = ["hfgrow", command, source.repo_id or source.name or "SRC", out]
    if source.repo_id and source.commit:
        argv += ["--revision", source.commit]
    for key, value in params.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, (list, tuple)) else [value]  # a repeatable option: once per value
        argv += [flag] if value is True else [part for item in values for part in (flag, str(item))]
    return shlex.join(argv)


def config_value_text(value: Any) -> str:
    """A config value as the report shows it: JSON, and a long list in full but folded, each run of equal items
    as ``item*n`` and a repeating period as ``(...)*k`` (nothing is cut off).

    Example:
        >>> config_value_text(["a", "a", "b"]), config_value_text(4)
        ('["a", "a", "b"]', '4')
        >>> config_value_text((["sliding_attention"] * 3 + ["full_attention"]) * 12)
        '("sliding_attention"*3, "full_attention")*12'
    """
    shown = json.dumps(value)
    if not isinstance(value, list) or len(shown) < 100 or not value:
        return shown
    items = [json.dumps(v) for v in value]
    period = next(p for p in range(1, len(items) + 1) if len(items) % p == 0 and items == items[:p] * (len(items) // p))
    runs: list[list] = []
    for item in items[:period]:
        if runs and runs[-1][0] == item:
            runs[-1][1] += 1
        else:
            runs.append([item, 1])
    body = ", ".join(item if n == 1 else f"{item}*{n}" for item, n in runs)
    repeats = len(items) // period
    return f"({body})" + (f"*{repeats}" if repeats > 1 else "")


@dataclass
class GrowResult:
    """What a growth command did (or, with ``dry_run``, would do)."""

    plan: Plan
    source: Source
    layout: Layout
    recipe: Recipe
    source_params: int
    byte_copies: int  # tensors the executor copies byte for byte (its own decision, see copies_bytes)
    out: Path | None = None
    files: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        return self.recipe.command_line

    def report(self) -> str:
        """Human-readable summary of the plan: what --dry-run prints."""
        plan, layout = self.plan, self.layout
        lines = [
            f"source     {self.source.display}" + (f" @ {self.source.commit[:12]}" if self.source.commit else ""),
            f"model      {layout.architecture} ({layout.model_type}), {layout.num_layers} layers under '{layout.prefix}'",
            f"operation  {describe(plan.operation)}",
            f"layers     {layout.num_layers} -> {len(plan.layer_map) if plan.layer_map else layout.num_layers}",
        ]
        if plan.layer_map:
            lines.append(f"layer map  {compact(plan.layer_map)}")
            lines.append("           " + " ".join(f"{i}<-{s}" for i, s in enumerate(plan.layer_map)))
        if plan.new_layers:
            lines.append(f"new layers {compact(plan.new_layers)}")
        computed = len(plan.tensors) - self.byte_copies
        lines += [
            f"params     {format_count(self.source_params)} -> {format_count(plan.num_params)} ({plan.num_params:,})",
            f"bytes      {format_bytes(plan.total_bytes)} to write in {len(plan.tensors)} tensors "
            f"({self.byte_copies} byte copies, {computed} computed)",
        ]
        transforms: dict[str, int] = {}
        for tensor in plan.tensors:
            if tensor.transform is not None:
                text = tensor.transform.describe()
                transforms[text] = transforms.get(text, 0) + 1
        lines += [f"transform  {count} x {text}" for text, count in transforms.items()]
        for key, value in plan.config.items():
            if layout.config.get(key) != value:
                lines.append(f"config     {key} = {config_value_text(value)}")
        lines += [f"note       {note}" for note in plan.notes]
        if self.out is not None:
            lines.append(f"written    {self.out}")
        return "\n".join(lines)


def _write(out: Path, options: WriteOptions, prepared, early: Plan | None = None,
           early_checkpoint: Checkpoint | None = None) -> tuple[GrowResult, Checkpoint]:
    """Weights, config, carried-over files, recipe, sidecars and card into a temporary folder, renamed at the end.

    ``prepared()`` gives the checked plan (:func:`_prepare`). With ``early`` (a plan of byte copies made from the
    headers alone, :func:`_header_plan`), a forked copy of this process writes its weights while ``prepared`` runs
    here; they are kept only when the checked plan has exactly the same tensors, else written again. A check that
    fails raises here, inside the temporary folder's block: the writer is stopped, the folder removed and OUT left
    as it was (nothing about the write is said before the checks pass, so a refused input is one line).
    """
    with OutputFolder(out) as tmp:
        writer = None
        if early is not None:
            check_free_space(out.parent, early.total_bytes)
            writer = _EarlyWriter(early, early_checkpoint, tmp, options.max_shard_size)
        try:
            result, checkpoint = prepared()
            plan = result.plan
            same = writer is not None and _tensor_keys(plan) == _tensor_keys(early)
            if writer is not None and not (same and writer.wait(plan, out, options)):
                # the headers misled the early plan (or its writer failed): its weights go, the checked plan's come
                writer.stop()
                for path in list(tmp.glob("*.safetensors")) + list(tmp.glob(SAFETENSORS_INDEX)):
                    path.unlink()
                same = False
        finally:
            if writer is not None:
                writer.stop()
        if not same:
            check_free_space(out.parent, plan.total_bytes)
            _say_writing(plan, out, options)
            write_weights(plan.tensors, checkpoint, tmp, options.max_shard_size, progress=not options.quiet)
        atomic_write(tmp / "config.json", json.dumps(plan.config, indent=2, sort_keys=True) + "\n")
        result.files = copy_carry_over(result.source.path, tmp)
        result.recipe.write(tmp)
        for name, tensors in plan.sidecars.items():
            from safetensors.torch import save_file  # imports torch: only plans with sidecars have tensors here

            save_file(tensors, str(tmp / name), metadata={"format": "pt", "producer": "hfgrow"})
        atomic_write(tmp / "README.md", grown_card(
            plan=plan, recipe=result.recipe, layout=result.layout, model_name=out.name,
            operator_name=describe(plan.operation), source_params=result.source_params))
    return result, checkpoint


class _EarlyWriter:
    """The early plan's weights, written by a forked copy of this process: byte copies need no torch, and in a
    process of their own they do not wait for the interpreter lock the checks hold (a thread did, and wrote half
    as fast on a loaded machine)."""

    def __init__(self, plan: Plan, checkpoint: Checkpoint, folder: Path, max_shard_size: int | str):
        self.folder, self.code = folder, None
        self.pid = os.fork()
        if self.pid == 0:  # the child: write, and leave without running anything of the parent's
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                write_weights(plan.tensors, checkpoint, folder, max_shard_size)
                code = 0
            except BaseException:  # noqa: BLE001 - the parent writes again and reports the error properly
                pass
            finally:
                os._exit(code)

    def _poll(self, block: bool) -> bool:
        """Whether the writer has ended (its exit code in ``code``)."""
        if self.code is None:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code is not None

    def wait(self, plan: Plan, out: Path, options: WriteOptions) -> bool:
        """Wait for the writer (a progress bar of the bytes on disk unless quiet); whether it wrote everything."""
        import time

        if not options.quiet and not self._poll(block=False):
            _say_writing(plan, out, options)
            with progress(total=plan.total_bytes, desc="writing", unit="B", unit_scale=True) as bar:
                while not self._poll(block=False):
                    done = sum(p.stat().st_size for p in self.folder.glob("*.safetensors"))
                    bar.update(max(0, min(done, plan.total_bytes) - bar.n))
                    time.sleep(0.2)
        return self._poll(block=True) and self.code == 0

    def stop(self) -> None:
        """End the writer now if it still runs (a failed check, Ctrl-C)."""
        if self.code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._poll(block=True)


def _say_writing(plan: Plan, out: Path, options: WriteOptions) -> None:
    if not options.quiet:  # the longest phase of a big growth: say what it is before the bar starts
        log.info(f"writing {format_bytes(plan.total_bytes)} in {len(plan.tensors)} tensors to {out} ...")


def _tensor_keys(plan: Plan) -> list[tuple]:
    """What the weight files of a plan of byte copies are made of, in order: equal keys, equal files."""
    return [(t.name, t.dtype, tuple(t.shape), tuple(t.sources), t.transform is None) for t in plan.tensors]


def _can_fork() -> bool:
    """Whether the early writer (a fork) may run here: only in a plain process, as the CLI's is before it imports
    torch; never in a training run (threads, a GPU context) or where there is no fork."""
    import threading

    return hasattr(os, "fork") and "torch" not in sys.modules and threading.active_count() == 1


def _header_plan(growth: Growth, folder: Path, options: WriteOptions) -> tuple[Plan, Checkpoint] | None:
    """The plan from config.json and the safetensors headers alone (no transformers, no torch), when it is a plan
    of byte copies for a plain layout (:func:`hfgrow.arch.layout.header_layout`); None otherwise, and whenever
    making it fails (the full path then says why). Its weights may be written before the checks finish
    (:func:`_write`); nothing of it is kept unless the checked plan has the same tensors."""
    from hfgrow.arch.layout import header_layout, read_config

    try:
        config = read_config(folder)
        checkpoint = Checkpoint.open(folder)
        layout = header_layout(config, checkpoint)
        if layout is None:
            return None
        _preflight(growth, layout, checkpoint, None, options)  # the tensor count, before a large plan is built
        plan = growth.plan(layout, checkpoint)
    except Exception:  # noqa: BLE001 - anything odd: take the checked path, which reports it properly
        return None
    if any(not copies_bytes(t, checkpoint) for t in plan.tensors) or plan.sidecars:
        return None
    return plan, checkpoint


#: The most tensors one plan may hold (each is a small object in memory; the largest MoE checkpoints have ~100k).
MAX_TENSORS = 2_000_000


def _preflight(growth: Growth, layout: Layout, checkpoint: Checkpoint, out: Path | None,
               options: WriteOptions) -> None:
    """Sizes from header arithmetic, before anything large is built: the tensor count of the plan and, when
    writing, the disk space a depth growth needs (width growth is sized exactly once planned)."""
    depth = getattr(growth, "depth", None)
    if depth is None or not depth.given:
        return
    layer_map = depth.layer_map(layout.num_layers, getattr(growth, "default_order", "stack"))
    block_tensors = [len(layout.layers[src]) for src in layer_map]
    count = len(layout.globals) + sum(block_tensors) + sum(len(names) for names in layout.extra_layers)
    if count > MAX_TENSORS:
        raise HfgrowError(f"the output would have {count:,} tensors; hfgrow plans at most {MAX_TENSORS:,}.")
    if out is None or options.dry_run:
        return
    tensors = checkpoint.tensors
    layer_bytes = [sum(tensors[layout.layer_tensor(i, rest)].nbytes for rest in names)
                   for i, names in enumerate(layout.layers)]
    in_blocks = sum(layer_bytes)
    others = sum(info.nbytes for name, info in tensors.items() if name not in layout.tied) - in_blocks
    check_free_space(out.parent, others + sum(layer_bytes[src] for src in layer_map))


def _prepare(growth: Growth, source: Source, out: Path | None, options: WriteOptions) -> tuple[GrowResult, Checkpoint]:
    """Open SRC (config checked, tensor table, layout on the meta skeleton), check what OUT will carry, plan, and
    check the plan's output on the grown skeleton: everything before the first byte of a checked write."""
    checkpoint, layout = open_model(source.path)
    carry_over_files(source.path)  # every file OUT will carry is checked before the output is put in place
    _preflight(growth, layout, checkpoint, out, options)
    plan = growth.plan(layout, checkpoint)
    check_grown(layout, plan.config, plan.layer_map, {t.name: t.shape for t in plan.tensors})
    for warning in plan.warnings:  # before the (long) writing, and also with --quiet
        log.warning(warning)
    params = dict(growth.params(plan), max_shard_size=options.max_shard_size)
    ref = SourceRef.from_source(source)
    recipe = Recipe(command=growth.command, params=params, source=ref, operation=plan.operation,
                    layer_map=plan.layer_map, new_layers=list(plan.new_layers),
                    command_line=command_line(growth.command, ref, out.name if out else "OUT", growth.params(plan)))
    source_params = sum(math.prod(info.shape) for name, info in checkpoint.tensors.items() if name not in layout.tied)
    byte_copies = sum(copies_bytes(tensor, checkpoint) for tensor in plan.tensors)
    return GrowResult(plan, source, layout, recipe, source_params, byte_copies), checkpoint


def grow_model(src: str, out: str | Path | None, growth: Growth, options: WriteOptions = WriteOptions()) -> GrowResult:
    """Run one growth end to end: the only place that opens a source and writes a grown folder.

    Example:
        >>> grow_model("./small", "./big", GrowSpec(depth=Depth(factor=4)), WriteOptions(quiet=True)).out
        PosixPath('/abs/big')
    """
    parse_bytes(options.max_shard_size, "shard size")
    out_path = Path(out).expanduser() if out is not None else None
    writing = out_path is not None and not options.dry_run
    with open_source(src, revision=options.revision, token=options.token, progress=not options.quiet) as source:
        if writing:
            check_output_path(out_path, [source.path], options.overwrite)
        early = _header_plan(growth, source.path, options) if writing and _can_fork() else None
        log.debug("the weights are written while the plan is checked (early writer)" if early is not None else
                  "the plan is checked, then written" if writing else "nothing is written")
        if early is None:
            prepared = _prepare(growth, source, out_path, options)
            try:
                if not writing:
                    return prepared[0]
                result, checkpoint = _write(out_path, options, lambda: prepared)
            finally:
                prepared[1].close()
        else:
            # the bytes start moving now; transformers, the skeleton and every check run alongside
            try:
                result, checkpoint = _write(out_path, options, partial(_prepare, growth, source, out_path, options),
                                            *early)
            finally:
                early[1].close()
            checkpoint.close()
        result.out = out_path.resolve()
    if options.push_to:
        from hfgrow.io.hub import push_folder

        push_folder(result.out, options.push_to, token=options.token)
    return result


def stack(src: str, out: str | Path | None = None, *, factor: float | None = None, layers: int | None = None,
          pattern: str | None = None, order: str = "stack", dtype: str = "keep", **options: Any) -> GrowResult:
    """Gstack: repeat the source's decoder blocks (``factor=4`` when no factor, layers or pattern is given).

    ``options`` are :class:`WriteOptions` fields: ``max_shard_size``, ``dry_run``, ``overwrite``, ``quiet``,
    ``push_to``, ``revision``, ``token``.

    Example:
        >>> print(stack("./small", None, pattern="0-1,2-5*5,4-5", dry_run=True).report())
    """
    if factor is None and layers is None and pattern is None:
        factor = 4
    if order not in ("stack", "interpolate"):
        raise HfgrowError(f"unknown --order '{order}'; use stack or interpolate.")
    spec = GrowSpec(op="stack", depth=Depth(factor, layers, pattern, order), dtype=dtype, command="stack")
    return grow_model(src, out, spec, WriteOptions(**options))


def grow(src: str, out: str | Path | None = None, *, op: str = "stack", width_op: str | None = None,
         factor: float | None = None, layers: int | None = None, pattern: str | None = None,
         order: str | None = None, hidden_size: int | None = None, intermediate_size: int | None = None,
         num_heads: int | None = None, num_kv_heads: int | None = None, noise: float | None = None, seed: int = 0,
         mask_steps: int | None = None, style: str = "hfgrow", dtype: str = "keep", keep_tied: bool = False,
         **options: Any) -> GrowResult:
    """Grow SRC in depth (``factor``/``layers``/``pattern``), width (``hidden_size``/...), or both.

    ``op`` is the operator (a name in :mod:`hfgrow.growth.registry`): ``stack`` (Gstack in depth, neuron
    splitting in width; the old name ``direct`` still reads), ``zero`` (identity
    blocks / zero fan-out units: function-preserving) or ``random`` (randomly initialised blocks/units
    with an MSG mask recorded in the recipe); ``width_op`` overrides it for the width part. ``order``
    places depth copies: ``stack`` (default for stack), ``interleave`` (LLaMA Pro, default for
    zero/random) or ``interpolate``. ``noise`` (alpha in [0, 1)) blends every weight matrix with seeded
    noise. Everything random is seeded by ``seed``. ``keep_tied`` (width ``zero``) keeps tied embeddings tied.
    ``options`` are :class:`WriteOptions` fields.

    Example:
        >>> grow("./small-12l", "./deep", op="zero", layers=16).plan.layer_map[:8]   # LLaMA Pro
        [0, 1, 2, 2, 3, 4, 5, 5]
        >>> grow("./small", "./both", op="zero", width_op="stack", factor=2, hidden_size=4096)
    """
    spec = GrowSpec(op=op, width_op=width_op, depth=Depth(factor, layers, pattern, order),
                    width=Width(hidden_size, intermediate_size, num_heads, num_kv_heads), noise=noise, seed=seed,
                    mask_steps=mask_steps, style=style, dtype=dtype, keep_tied=keep_tied)
    return grow_model(src, out, spec, WriteOptions(**options))


def run_spec(spec_class: type, src: str, out: str | Path | None = None, **kwargs: Any) -> GrowResult:
    """Run an operator that is a growth of its own (a :mod:`hfgrow.growth.registry` entry with a ``spec``, e.g.
    upcycling): ``kwargs`` are the spec's fields and :class:`WriteOptions` fields.

    Example:
        >>> run_spec(UpcycleSpec, "./small", "./moe", experts=8, top_k=2, quiet=True).plan.config["model_type"]
        'mixtral'
    """
    write = {key: kwargs.pop(key) for key in list(kwargs) if key in WriteOptions.__dataclass_fields__}
    return grow_model(src, out, spec_class(**kwargs), WriteOptions(**write))


def upcycle(src: str, out: str | Path | None = None, *, experts: int = 8, top_k: int = 2, to: str | None = None,
            granularity: int = 1, drop_rate: float = 0.0, shared_experts: int | None = None,
            router: str | None = None, router_std: float | None = None, norm_topk_prob: bool | None = None,
            router_logits: bool = False, noise: float | None = None, seed: int = 0, dtype: str = "keep",
            **options: Any) -> GrowResult:
    """Dense to mixture-of-experts: every MLP of SRC becomes ``experts`` experts and a router, written as the MoE
    sibling of SRC's family in transformers (``to``: the target model type). ``options`` are :class:`WriteOptions`
    fields. See :class:`hfgrow.growth.ops.upcycle.UpcycleSpec` for the variants.

    Example:
        >>> upcycle("./llama-small", "./moe", experts=8, top_k=2).recipe.operation.function_preserving
        True
    """
    from hfgrow.growth.ops.upcycle import UpcycleSpec

    return run_spec(UpcycleSpec, src, out, experts=experts, top_k=top_k, to=to, granularity=granularity,
                    drop_rate=drop_rate, shared_experts=shared_experts, router=router, router_std=router_std,
                    norm_topk_prob=norm_topk_prob, router_logits=router_logits, noise=noise, seed=seed, dtype=dtype,
                    **options)
