"""Growth inside a training run: ``--grow OP:FACTOR@WHEN``, the stages it makes, and what survives a growth.

The paper's procedure (Du et al. 2024) as one run: train the small model for d tokens, grow it, train the
grown model to the end of the budget. ``--grow stack:4@10B`` grows ×4 with Gstack once the run has seen
10B tokens; ``--grow`` may repeat (``stack:2@5B --grow stack:2@20B``). Each growth starts a new *stage*.

This module owns the parts that are not the training loop itself (:mod:`hfgrow.train.loop` runs the
growth point in order):

* the ``--grow`` syntax (:func:`parse_grow`) and its growth operators (:func:`grow_spec`, the same
  :class:`hfgrow.growth.spec.GrowSpec` that ``hfgrow stack`` / ``hfgrow grow`` build);
* the stage plan (:func:`plan_stages`): at which optimizer step each growth happens, and every stage's
  layer and parameter count, from the config alone (checked before any process group or data exists);
  ``WHEN = auto`` is the paper's growth-timing law (:func:`hfgrow.growth.timing.growth_tokens`);
* the run folder's stage folders (:func:`stage_folder`, :func:`grown_folder`), written once on every disk
  that holds ``--output-dir`` (:func:`write_on_each_disk`: nodes with disks of their own each get a copy);
* the optimizer state at a growth with ``--grow-optimizer carry`` (:func:`carry_moments`): AdamW's moments
  of each source block go to its copies through the grown recipe's layer map.

Example:
    >>> g = parse_grow("stack:2@10240")
    >>> g.op, g.factor, g.tokens
    ('stack', 2.0, 10240)
    >>> plan = plan_stages(config, [g], tokens_per_step=512, max_steps=40)
    >>> [(s.start_step, s.layers) for s in plan.stages]
    [(0, 2), (20, 4)]
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hfgrow.errors import HfgrowError
from hfgrow.growth import registry
from hfgrow.growth.timing import LAW_MIN_PARAMS
from hfgrow.units import format_count, parse_count

OPTIMIZER_MODES = ("fresh", "carry")
AUTO_MIN_PARAMS = LAW_MIN_PARAMS  # the growth-timing law's smallest model (410M): `auto` is refused below it
_GROW = re.compile(r"^(?P<op>[a-z]+):(?P<factor>[0-9.]+)@(?P<when>.+)$")


@dataclass(frozen=True)
class GrowArg:
    """One ``--grow OP:FACTOR@WHEN``: ``tokens`` is None for ``auto`` (resolved by :func:`plan_stages`)."""

    op: str
    factor: float
    tokens: int | None
    text: str

    @property
    def auto(self) -> bool:
        return self.tokens is None


def parse_grow(text: str) -> GrowArg:
    """``OP:FACTOR@WHEN``: OP a depth operator of :mod:`hfgrow.growth.registry`, FACTOR > 1, WHEN a token count (``250k``, ``1e7``, ``10B``) or auto.

    Raises:
        HfgrowError: one sentence saying which part is wrong.

    Example:
        >>> parse_grow("zero:1.5@1e7").tokens, parse_grow("stack:4@auto").auto
        (10000000, True)
    """
    match = _GROW.match(text.strip())
    if not match:
        raise HfgrowError(f"--grow {text!r}: write OP:FACTOR@WHEN, e.g. stack:4@10B or stack:4@auto.")
    op, when = match.group("op"), match.group("when")
    choices = ", ".join(registry.names(in_run=True))
    try:
        entry = registry.get(op)
    except HfgrowError:
        raise HfgrowError(f"--grow {text!r}: unknown operator {op!r}; use one of {choices}.") from None
    if entry.in_run is not None:
        raise HfgrowError(f"--grow {op}: {entry.in_run}")
    if "depth" not in entry.names and entry.base is None and entry.spec is None:
        raise HfgrowError(f"--grow {text!r}: {op} has no depth form; use one of {choices}.")
    op = entry.name
    try:
        factor = float(match.group("factor"))
    except ValueError:
        factor = math.nan
    if entry.spec is not None and (not math.isfinite(factor) or factor != int(factor) or factor < 2):
        raise HfgrowError(f"--grow {text!r}: for {op} FACTOR is the number of experts, a whole number of 2 or more.")
    if not math.isfinite(factor) or factor <= 1:
        raise HfgrowError(f"--grow {text!r}: the factor must be a number above 1 (the layer count is multiplied by it).")
    tokens = None if when == "auto" else parse_count(when, f"growth point in --grow {text!r}", "10B", minimum=0)
    return GrowArg(op, factor, tokens, text.strip())


def grow_spec(op: str, factor: float, seed: int = 0, style: str = "hfgrow", top_k: int = 2):
    """The :class:`~hfgrow.growth.spec.GrowSpec` of a ``--grow`` operator: what ``hfgrow stack`` / ``grow`` build
    (``style``: ``--grow-style``, the same as ``grow --style``). Gstack and its placements (the copies left whole)
    are replayed by ``hfgrow stack``. An operator with a spec of its own (``upcycle``) takes FACTOR as its expert
    count and ``top_k`` (``--grow-top-k``), and turns on its router's load-balancing loss.

    Example:
        >>> grow_spec("stack", 4).command, grow_spec("zero", 2).op
        ('stack', 'zero')
    """
    from hfgrow.growth.spec import Depth, GrowSpec

    entry = registry.get(op)
    if entry.spec is not None:
        return entry.spec()(experts=int(factor), top_k=top_k, seed=seed, router_logits=True)
    spec = GrowSpec(op=op, depth=Depth(factor=factor), seed=seed, style=style)
    if registry.get(spec.op).depth_plan is None and not spec.masked:  # Gstack and placements: `hfgrow stack`
        return GrowSpec(op=spec.op, depth=spec.depth, command="stack", style=style)
    return spec


@dataclass(frozen=True)
class Stage:
    """A stretch of the run trained at one size; stage k > 0 starts with growth ``growth``."""

    index: int
    start_step: int
    layers: int
    n_params: int
    n_active: int | None = None  # parameters one token uses, when fewer than n_params (mixture of experts)
    growth: GrowArg | None = None

    def to_dict(self, tokens_per_step: int) -> dict[str, Any]:
        data: dict[str, Any] = {"stage": self.index, "start_step": self.start_step,
                                "start_tokens": self.start_step * tokens_per_step, "layers": self.layers,
                                "n_params": self.n_params}
        if self.n_active is not None and self.n_active != self.n_params:
            data["n_active"] = self.n_active  # FLOPs count these (runlog.RunRecord.flops)
        if self.growth is not None:
            data.update(grow=f"{self.growth.op}:{self.growth.factor:g}@{self.start_step * tokens_per_step}",
                        op=self.growth.op, factor=self.growth.factor, requested=self.growth.text)
        return data


@dataclass
class StagePlan:
    """The stages of a run, in order (one stage when nothing grows)."""

    stages: list[Stage]
    tokens_per_step: int
    notes: list[str] = field(default_factory=list)  # what `auto` chose, said once by the main process

    @property
    def final_params(self) -> int:
        return self.stages[-1].n_params

    def growth_before(self, step: int, stage: int) -> Stage | None:
        """The stage that starts before optimizer step ``step`` (0-based) when the run is in ``stage``."""
        nxt = self.stages[stage + 1] if stage + 1 < len(self.stages) else None
        return nxt if nxt is not None and nxt.start_step == step else None

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict(self.tokens_per_step) for s in self.stages]


def _count(config: dict[str, Any]) -> tuple[int, int]:
    """(parameters, parameters one token uses: a mixture of experts counts the top-k experts of each layer)."""
    from hfgrow.arch.layout import hf_config_from_dict
    from hfgrow.growth.timing import count_params

    counted = count_params(hf_config_from_dict(config))
    return counted.total, counted.active


def _resolve_auto(grow: GrowArg, final_params: int, budget: int) -> tuple[int, str]:
    """WHEN = auto: the paper's growth timing d for the final model and the run's budget, or a refusal."""
    from hfgrow.growth.timing import growth_tokens

    d = growth_tokens(final_params, 6.0 * final_params * budget)
    law = (f"the growth-timing law gives d = {format_count(d, 2)} tokens for N = {format_count(final_params)} "
           f"parameters and D = {format_count(budget)} tokens")
    if final_params < AUTO_MIN_PARAMS:
        raise HfgrowError(f"--grow {grow.text}: {law}, but the final model has {format_count(final_params)} "
                          f"parameters, below the smallest the paper measured ({format_count(AUTO_MIN_PARAMS)}), where "
                          "the law is an extrapolation that means nothing; give the growth point as a token count.")
    if d >= budget:
        raise HfgrowError(f"--grow {grow.text}: {law}, which is not below the budget: at this budget the law says "
                          "not to grow; train longer or give the growth point as a token count.")
    return int(round(d)), law


def plan_stages(config: dict[str, Any], grows: list[GrowArg], *, tokens_per_step: int, max_steps: int,
                seed: int = 0, style: str = "hfgrow", top_k: int = 2) -> StagePlan:
    """Every stage of a run: growth steps and sizes, checked from the config alone.

    A growth at T tokens happens once the run has seen at least T tokens: after ⌈T / tokens per step⌉
    optimizer steps (``start_step``, the 0-based step it comes before), so the small model trains on at
    least T tokens; ``stack:2@1k`` at 256 tokens per step grows after step 4 (1,024 tokens), not after
    step 3 (768).

    Raises:
        HfgrowError: a growth at or past the end of the run, two at the same step, ``auto`` where the law
            does not apply (see :func:`_resolve_auto`), or an operator the architecture refuses.
    """
    from hfgrow.arch.layout import config_for_layers, hf_config_from_dict, text_config

    hf_config = hf_config_from_dict(config)
    layers = getattr(text_config(hf_config),
                     "num_hidden_layers", None)
    if grows and not isinstance(layers, int):
        raise HfgrowError(f"--grow: the '{config.get('model_type')}' config has no num_hidden_layers to grow.")
    if any(g.auto for g in grows) and len(grows) > 1:
        raise HfgrowError("--grow ...@auto times one growth (the paper's law); give token counts for a multi-stage "
                          "schedule.")
    budget = max_steps * tokens_per_step
    stages = [Stage(0, 0, layers or 0, *_count(config))]
    configs, notes = [config], []
    for grow in grows:
        spec = grow_spec(grow.op, grow.factor, seed, style, top_k)
        try:
            if hasattr(spec, "grown_config"):  # an operator of its own (upcycling): same layers, a new config
                configs.append(spec.grown_config(configs[-1]))
                layer_count = stages[-1].layers
            else:
                layer_map = spec.depth.layer_map(stages[-1].layers, spec.default_order)
                configs.append(config_for_layers(configs[-1], layer_map))
                layer_count = len(layer_map)
        except HfgrowError as exc:  # the operator's own check (e.g. a factor that gives no whole layer count)
            raise HfgrowError(f"--grow {grow.text} (of {stages[-1].layers} layers): {exc}") from None
        if layer_count <= stages[-1].layers and not hasattr(spec, "grown_config"):
            raise HfgrowError(f"--grow {grow.text} turns {stages[-1].layers} layers into {layer_count}; a growth must "
                              "add layers (give a factor that does, e.g. 2).")
        total, active = _count(configs[-1])
        stages.append(Stage(len(stages), -1, layer_count, total, active, grow))
    resolved = []
    for stage in stages[1:]:
        tokens = stage.growth.tokens
        if stage.growth.auto:
            tokens, law = _resolve_auto(stage.growth, stages[-1].n_params, budget)
            notes.append(f"--grow {stage.growth.text}: {law}; the run grows after step "
                         f"{math.ceil(tokens / tokens_per_step):,} ({math.ceil(tokens / tokens_per_step) * tokens_per_step:,}"
                         " tokens).")
        step = math.ceil(tokens / tokens_per_step)
        if step >= max_steps:
            raise HfgrowError(f"--grow {stage.growth.text}: the run ends after {budget:,} tokens ({max_steps:,} steps of "
                              f"{tokens_per_step:,}), before that growth point; grow earlier or train longer.")
        if resolved and step <= resolved[-1].start_step:
            raise HfgrowError(f"--grow {stage.growth.text} is not after the growth before it (step {step:,} vs "
                              f"{resolved[-1].start_step:,}); give growth points in increasing order.")
        resolved.append(dataclasses.replace(stage, start_step=step))
    return StagePlan([stages[0], *resolved], tokens_per_step, notes)


# ---------------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------------


def stage_folder(run_dir: Path, stage: int) -> Path:
    """``RUN/stage-K``: the model as stage K ended (the small model of a growth), an ordinary HF folder."""
    return Path(run_dir) / f"stage-{stage}"


def grown_folder(run_dir: Path, stage: int) -> Path:
    """``RUN/grown-K``: stage K's model as the operator made it (recipe included); stage K starts from it."""
    return Path(run_dir) / f"grown-{stage}"


# ---------------------------------------------------------------------------------------------
# Nodes with disks of their own
# ---------------------------------------------------------------------------------------------

CHUNK_BYTES = 256 * 2**20  # the weights go to another node's process in pieces of at most this size


def writes_output(accelerator, out: Path) -> bool:
    """Whether this process writes what the run keeps in ``out`` (stage folders, checkpoints): one process for
    each disk. Every process must call it.

    The nodes of a run share ``--output-dir`` (a network file system) or each have their own (local disks), and
    no node can compare its path with another's. So each node's local main process leaves an empty marker
    ``.hfgrow-disk-TOKEN-RANK`` in its ``out`` (TOKEN: random, from the main process, new at every call), and
    once every marker is written looks up the markers of the local main processes ranked before it, by name: a
    name never looked up before is asked of the disk itself, not a cache. It writes when it finds none: the main
    process always, another node only where no earlier node writes. No two processes ever write the same path;
    a shared folder is written once.

    Raises:
        HfgrowError: on every process, when a marker cannot be written (the first such error).
    """
    import secrets

    from accelerate.utils import broadcast_object_list, gather_object

    from hfgrow.io.output import atomic_write

    if accelerator.num_processes == 1:
        return True
    rank, local_main = accelerator.process_index, accelerator.is_local_main_process
    token = broadcast_object_list([secrets.token_hex(8) if accelerator.is_main_process else None])[0]
    marker = Path(out) / f".hfgrow-disk-{token}-{rank}"
    error = None
    if local_main:
        try:
            atomic_write(marker, b"")
        except HfgrowError as exc:
            error = str(exc)
    found = gather_object([(rank if local_main else None, error)])  # also the barrier: every marker is written
    _raise_first([e for _, e in found])
    writes = local_main and not any((Path(out) / f".hfgrow-disk-{token}-{r}").exists()
                                    for r, _ in found if r is not None and r < rank)
    accelerator.wait_for_everyone()  # every lookup is done: the markers go
    if local_main:
        marker.unlink(missing_ok=True)
    return writes


def _raise_first(errors: list[str | None]) -> None:
    """The first error some process met, raised as an HfgrowError (every process calls it with the same list)."""
    error = next((e for e in errors if e is not None), None)
    if error is not None:
        raise HfgrowError(error)


def write_on_each_disk(accelerator, out: Path, work: Callable[[dict, Any], None], weights: dict,
                       note: Callable[[], Any]) -> None:
    """Run ``work(weights, note())`` once on every disk that holds ``out`` (:func:`writes_output`), so every node
    can load what it writes whether or not the nodes share the folder; every process must call it.

    ``weights``: the full weights, where the process has them (DDP: every process; FSDP2 or DeepSpeed ZeRO-3:
    the main one only, where they are gathered); a node that writes without them gets them from the main process
    (:func:`_send_weights`). ``note()`` makes something small that only the main process can (the stage card,
    built from the run log only it writes); it runs there and its result is sent to the others. The work must be
    deterministic (a seeded growth), so every node writes the same folder. An HfgrowError in the note or in any
    writer is raised on every process (none waits forever); all return after every writer is done.
    """
    from accelerate.utils import broadcast_object_list, gather_object

    made, error = None, None
    if accelerator.is_main_process:
        try:
            made = note()
        except HfgrowError as exc:
            error = str(exc)
    distributed = accelerator.num_processes > 1
    if distributed:
        made, error = broadcast_object_list([made, error])
    _raise_first([error])
    writes = writes_output(accelerator, out)
    if distributed:
        weights = _send_weights(accelerator, weights, writes)
    error = None
    if writes:
        try:
            work(weights, made)
        except HfgrowError as exc:
            error = str(exc)
    _raise_first(gather_object([error]) if distributed else [error])


def byte_chunks(sizes: list[int], chunk: int):
    """The tensors of ``sizes`` bytes as one byte stream cut into chunks of ``chunk`` bytes (the last shorter):
    for each chunk, its pieces as (tensor index, offset in the tensor, offset in the chunk, length).

    Example:
        >>> list(byte_chunks([3, 5], 4))
        [[(0, 0, 0, 3), (1, 0, 3, 1)], [(1, 1, 0, 4)]]
    """
    pieces, filled = [], 0
    for index, size in enumerate(sizes):
        offset = 0
        while offset < size:
            length = min(size - offset, chunk - filled)
            pieces.append((index, offset, filled, length))
            offset, filled = offset + length, filled + length
            if filled == chunk:
                yield pieces
                pieces, filled = [], 0
    if pieces:
        yield pieces


def copy_pieces(pieces: list[tuple[int, int, int, int]], data: list, chunk, *, to_chunk: bool) -> None:
    """Copy one chunk's ``pieces`` (:func:`byte_chunks`) from the tensors' bytes ``data`` into ``chunk`` or back."""
    for index, offset, at, length in pieces:
        if to_chunk:
            chunk[at : at + length].copy_(data[index][offset : offset + length])
        else:
            data[index][offset : offset + length].copy_(chunk[at : at + length])


def _send_weights(accelerator, weights: dict, writes: bool) -> dict:
    """``weights`` on every writing process: the main process sends them to the writers that lack them (nodes
    with disks of their own under FSDP2 or DeepSpeed ZeRO-3) over a process group of just those, as raw bytes
    in chunks of :data:`CHUNK_BYTES` on the accelerator's device (NCCL sends device memory); names, shapes and
    dtypes go first as one small object. Others get ``weights`` back as they were."""
    import torch
    import torch.distributed as dist
    from accelerate.utils import gather_object

    rank = accelerator.process_index
    lacking = [r for r, (w, has) in enumerate(gather_object([(writes, bool(weights))])) if w and not has]
    if not lacking:
        return weights
    ranks = [0, *lacking]
    group = dist.new_group(ranks)  # every process takes part in making it
    if rank not in ranks:
        return weights
    try:
        layout = [[(name, tuple(t.shape), t.dtype) for name, t in weights.items()] if rank == 0 else None]
        dist.broadcast_object_list(layout, src=0, group=group, device=accelerator.device)
        if rank == 0:
            tensors = [t.detach().to("cpu").contiguous() for t in weights.values()]
        else:
            tensors = [torch.empty(shape, dtype=dtype) for _, shape, dtype in layout[0]]
        data = [t.reshape(-1).view(torch.uint8) for t in tensors]  # each tensor's bytes, shared with it
        buffer = torch.empty(min(CHUNK_BYTES, max(1, sum(d.numel() for d in data))), dtype=torch.uint8,
                             device=accelerator.device)
        for pieces in byte_chunks([d.numel() for d in data], CHUNK_BYTES):
            chunk = buffer[: pieces[-1][2] + pieces[-1][3]]
            if rank == 0:
                copy_pieces(pieces, data, chunk, to_chunk=True)
            dist.broadcast(chunk, src=0, group=group)
            if rank != 0:
                copy_pieces(pieces, data, chunk, to_chunk=False)
    finally:
        dist.destroy_process_group(group)
    return weights if rank == 0 else {name: t for (name, _, _), t in zip(layout[0], tensors)}


# ---------------------------------------------------------------------------------------------
# Optimizer state across a growth
# ---------------------------------------------------------------------------------------------


def layer_source(prefix: str, layer_map: list[int]) -> Callable[[str], tuple[str, int | None]]:
    """name in the grown model -> (name in the source model, output layer or None outside the blocks).

    Example:
        >>> layer_source("model.layers.", [0, 1, 0, 1])("model.layers.3.mlp.up_proj.weight")
        ('model.layers.1.mlp.up_proj.weight', 3)
    """
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.(.+)$")

    def source(name: str) -> tuple[str, int | None]:
        match = pattern.match(name)
        if not match:
            return name, None
        layer = int(match.group(1))
        return f"{prefix}{layer_map[layer]}.{match.group(2)}", layer

    return source


def carry_moments(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], *, prefix: str,
                  layer_map: list[int], zeroed: set[int]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """AdamW state for the grown model: each parameter gets its source parameter's moments and step count.

    ``old`` and ``new`` are full optimizer states by parameter name (``{name: {"step", "exp_avg",
    "exp_avg_sq"}}``; ``new`` gives the shapes). Parameters of the layers in ``zeroed`` (new blocks of
    ``zero``/``random`` growth) get zero moments; their step count is kept too. Returns the state and the
    names that had no source (zero moments, step kept from the rest).

    Example:
        >>> state, missing = carry_moments(old, new, prefix="model.layers.", layer_map=[0, 1, 0, 1], zeroed=set())
        >>> torch.equal(state["model.layers.2.mlp.up_proj.weight"]["exp_avg"],
        ...             old["model.layers.0.mlp.up_proj.weight"]["exp_avg"])
        True
    """
    import torch

    source = layer_source(prefix, layer_map)
    steps = [s["step"] for s in old.values() if "step" in s]
    any_step = steps[0] if steps else None
    carried, missing = {}, []
    for name, template in new.items():
        src, layer = source(name)
        found = old.get(src)
        if found is None or layer in zeroed:
            if found is None:
                missing.append(name)
            step = (found or {}).get("step", any_step)
            carried[name] = {k: (torch.zeros_like(v) if k != "step" else (step.clone() if step is not None else v))
                             for k, v in template.items()}
        else:
            carried[name] = {k: v.clone() for k, v in found.items()}
    return carried, missing


def full_optimizer_state(model, optimizer, distributed: bool) -> dict[str, Any]:
    """The optimizer's whole state by parameter name, on the main process (every process must call it).

    torch's distributed state-dict API gathers it from FSDP2 shards, DDP or a plain module alike.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=distributed))


def load_optimizer_state(model, optimizer, state: dict[str, Any], distributed: bool) -> None:
    """Load a full optimizer state (given on the main process) into every process's optimizer (its shards)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=distributed))


def carry_upcycled(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]],
                   experts: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """AdamW state for an upcycled model (``--grow upcycle:E@WHEN --grow-optimizer carry``): every expert gets the
    moments of the MLP units it was made from (its slice, under fine-grained experts), the shared expert those of
    the MLP it repeats, every other parameter its own; the routers start fresh (zero moments, step kept).

    ``old``/``new`` are full optimizer states by in-memory parameter name; ``experts`` is the grown recipe's
    ``operation.experts``. transformers holds a layer's experts fused (``mlp.experts.gate_up_proj``: E x
    [gate; up] x hidden, ``mlp.experts.down_proj``: E x hidden x units). Returns the state and the names that got
    zero moments because nothing matched (routers are not listed).

    Example:
        >>> state, missing = carry_upcycled(old, new, {"experts": 4, "granularity": 1, "expert_size": 64})
        >>> torch.equal(state["model.layers.0.mlp.experts.down_proj"]["exp_avg"][2],
        ...             old["model.layers.0.mlp.down_proj.weight"]["exp_avg"])
        True
    """
    import torch

    steps = [s["step"] for s in old.values() if "step" in s]
    carried, missing = {}, []
    for name, template in new.items():
        if name in old:
            carried[name] = {k: v.clone() for k, v in old[name].items()}
            continue
        made = {key: _upcycled_moment(name, key, old, value, experts) for key, value in template.items()
                if key != "step"}
        carried[name] = {key: (steps[0].clone() if steps else value) if key == "step"
                         else made[key].to(value.dtype).reshape(value.shape) if made[key] is not None
                         else torch.zeros_like(value) for key, value in template.items()}
        if made.get("exp_avg") is None and not _ROUTER.search(name):
            missing.append(name)
    return carried, missing


_FUSED_EXPERTS = re.compile(r"^(?P<layer>.*\.)mlp\.experts\.(?P<kind>gate_up_proj|down_proj)$")
_SHARED_EXPERT = re.compile(r"^(?P<layer>.*\.)mlp\.shared_expert\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$")
_ROUTER = re.compile(r"\.mlp\.(gate|shared_expert_gate)\.weight$")


def _upcycled_moment(name: str, key: str, old: dict[str, dict[str, Any]], like, experts: dict[str, Any]):
    """Moment ``key`` of the upcycled parameter ``name`` built from the dense MLP's (None: nothing it came from).

    Expert j holds slice j mod G (of ``expert_size`` units) of the dense MLP: gate and up rows stacked as
    transformers fuses them, down's columns; a shared expert repeats the whole MLP to its width (``like``)."""
    import torch

    E, G, m = experts["experts"], experts["granularity"], experts["expert_size"]

    def dense(layer: str, proj: str):
        found = old.get(f"{layer}mlp.{proj}.weight")
        return found[key] if found is not None else None

    fused, shared = _FUSED_EXPERTS.match(name), _SHARED_EXPERT.match(name)
    if fused and fused["kind"] == "gate_up_proj":
        gate, up = dense(fused["layer"], "gate_proj"), dense(fused["layer"], "up_proj")
        if gate is None or up is None:
            return None
        return torch.stack([torch.cat([gate.narrow(0, (j % G) * m, m), up.narrow(0, (j % G) * m, m)])
                            for j in range(E)])
    if fused:
        down = dense(fused["layer"], "down_proj")
        return None if down is None else torch.stack([down.narrow(1, (j % G) * m, m) for j in range(E)])
    if shared:
        source = dense(shared["layer"], shared["proj"])
        if source is None:
            return None
        dim = 1 if shared["proj"] == "down_proj" else 0
        return torch.cat([source] * (like.shape[dim] // source.shape[dim]), dim=dim)
    return None


def expert_load(router_logits, top_k: int):
    """Share of the routed (token, slot) pairs each expert received, over every MoE layer (sums to 1; 1/E each
    when balanced). ``router_logits``: one (tokens, E) tensor per layer, as transformers' MoE models return them.

    Example:
        >>> expert_load((torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]),), top_k=1).tolist()
        [0.5, 0.0, 0.5]
    """
    import torch

    counts = None
    for logits in router_logits:
        chosen = torch.topk(logits.detach().float(), top_k, dim=-1).indices.flatten()
        layer = torch.bincount(chosen, minlength=logits.shape[-1]).float()
        counts = layer if counts is None else counts + layer
    return counts / counts.sum()
