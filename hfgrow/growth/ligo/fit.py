"""The learning phase of G↑learn (LiGO): fit the growth operator on real text, then write it out.

Only the growth parameters are trained; the source weights stay frozen:

* depth: every grown block's weight of each kind is ``W'_l = Σ_j D[l, j]·W_j`` over the
  source blocks, one D per weight kind, starting at the stacking map (step 0 = Gstack);
* width: expansion matrices per space (:class:`hfgrow.growth.ops.learn.WidthExpansion`), the grown
  weight is ``B_out·W·B_inᵀ``, starting at the function-preserving widening (or LiGO's
  identity-plus-noise).

Each step runs the grown model's skeleton (no weights of its own) with every decoder block
wrapped so that it builds its weights from D, B and the source weights when it runs
(:class:`_GrownBlock`), and back-propagates the language-modeling loss into D and B. With a
:class:`Placement` the grown model is never materialised whole: the frozen float32 source lives
where accelerate puts it — other GPUs, CPU memory, or disk through accelerate's offload — and
each block is recomputed in the backward pass (activation checkpointing), so at most one grown
block's weights exist at a time. Without one, everything sits on the compute device and autograd
keeps every grown weight until the backward pass, as in a plain training step of the grown model.

Memory, with S the source parameter count, g = N/L the depth factor, w the width factor:
  without placement  4·S (frozen source, float32) + about 3·4·S·w²·g (every grown weight and what
                     autograd keeps of it) + the grown model's activations + 16 bytes per entry of B;
  with placement     4·S spread over the map's devices and disk; on the compute device one grown
                     block (≈ 3·4·S·w²/L) + one checkpointed hidden state per grown block
                     (4·batch·seq·H·w·N) + one block's activations + 16 bytes per entry of B.
                     Disk-offloaded source blocks are read twice per grown block per step.
At the end D (small) goes into the recipe and B into ``hfgrow_ligo.safetensors`` next to it,
and the grown model is streamed to disk by the executor like any other plan.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from hfgrow.io.checkpoint import Checkpoint
from hfgrow.errors import HfgrowError
from hfgrow.arch.layout import Layout, context_length, decoder_blocks, hf_config_from_dict, quiet_transformers
from hfgrow.arch.roles import embed_scale_for
from hfgrow.growth.ops.learn import SIDECAR, Coefficients, WidthExpansion, initial_coefficients, kind_members


@dataclass
class LearnReport:
    coefficients: Coefficients
    expansion: WidthExpansion | None = None
    losses: list[float] = field(default_factory=list)  # training loss per step
    step_seconds: list[float] = field(default_factory=list)  # wall time per training step
    eval_before: float = math.nan  # held-out loss at step 0 (= Gstack / the direct widening)
    eval_after: float = math.nan


# ---------------------------------------------------------------- placement of the frozen source


@dataclass(frozen=True)
class Placement:
    """Where the frozen source weights live while the growth is learned.

    ``device_map``: ``"auto"`` (accelerate's :func:`infer_auto_device_map` over the source
    model, GPUs first, then CPU, then disk, within ``max_memory``), one device for everything
    (``"cpu"``, ``"disk"``, ``"cuda:1"``), or a dict from module name to device as accelerate
    writes it. Weights on ``"disk"`` are offloaded to ``offload_folder`` (float32 memory maps,
    accelerate's format) and read back when a block needs them.

    Example:
        >>> Placement("auto", max_memory=parse_max_memory("0=20GiB,cpu=64GiB"), offload_folder=Path("/scratch"))
    """

    device_map: str | dict[str, Any] = "auto"
    max_memory: dict[int | str, int | str] | None = None
    offload_folder: Path | None = None


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """``"0=20GiB,cpu=8GiB"`` -> ``{0: "20GiB", "cpu": "8GiB"}`` (accelerate's max_memory).

    Example:
        >>> parse_max_memory("0=20GiB, cpu=8GiB")
        {0: '20GiB', 'cpu': '8GiB'}
    """
    if not text:
        return None
    result: dict[int | str, str] = {}
    for item in text.split(","):
        device, sep, size = item.strip().partition("=")
        if not sep or not device.strip() or not size.strip():
            raise HfgrowError(f"--max-memory item '{item.strip()}' is not DEVICE=SIZE (e.g. 0=20GiB,cpu=8GiB).")
        device = device.strip()
        result[int(device) if device.isdigit() else device] = size.strip()
    return result


def parse_device_map(text: str | None) -> str | dict[str, Any] | None:
    """``auto``, one device name, or a JSON object / JSON file mapping module names to devices.

    Example:
        >>> parse_device_map('{"model.embed_tokens": "cpu", "model.layers": "disk", "": "cpu"}')["model.layers"]
        'disk'
    """
    if text is None:
        return None
    text = text.strip()
    if text.startswith("{") or text.endswith(".json"):
        try:
            value = json.loads(Path(text).read_text() if text.endswith(".json") else text)
        except (OSError, ValueError) as exc:
            raise HfgrowError(f"--device-map is not a readable JSON object: {exc}") from None
        if not isinstance(value, dict):
            raise HfgrowError("--device-map JSON must be an object {module name: device}.")
        return value
    return text


def _device(name: Any) -> torch.device | str:
    """A device-map value as a torch device (or ``"disk"``); devices this machine lacks are refused."""
    if name == "disk":
        return "disk"
    if isinstance(name, bool) or not isinstance(name, (int, str)):
        raise HfgrowError(f"--device-map value {name!r} is not a device (use cpu, disk, cuda:N or a GPU index).")
    if isinstance(name, int) or name.isdigit():
        name = f"cuda:{int(name)}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HfgrowError(f"--device-map names an unknown device '{name}'.") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise HfgrowError(f"--device-map puts weights on {device}, which this machine does not have.")
    if device.type not in ("cpu", "cuda"):
        raise HfgrowError(f"--device-map device '{name}' is not supported; use cpu, disk or cuda:N.")
    return device


def source_devices(names: list[str], skeleton, placement: Placement) -> dict[str, torch.device | str]:
    """The device (or ``"disk"``) of every source tensor under ``placement``.

    ``skeleton`` is the source model on the meta device (``layout.skeleton``): accelerate sizes it
    for ``device_map="auto"`` without any weights.
    """
    device_map = placement.device_map
    if device_map == "auto":
        from accelerate import infer_auto_device_map

        no_split = list(getattr(skeleton, "_no_split_modules", None) or [])
        try:
            device_map = infer_auto_device_map(skeleton, max_memory=placement.max_memory, dtype=torch.float32,
                                               no_split_module_classes=no_split)
        except (ValueError, KeyError) as exc:
            raise HfgrowError(f"accelerate could not place the source model: {exc}") from None
    elif isinstance(device_map, str):
        device_map = {"": device_map}
    devices: dict[str, torch.device | str] = {}
    for name in names:
        module = max((m for m in device_map if m == "" or name == m or name.startswith(m + ".")), key=len,
                     default=None)
        if module is None:
            raise HfgrowError(f"--device-map places no module holding {name}; add an entry for it (or \"\").")
        devices[name] = _device(device_map[module])
    return devices


class SourceWeights:
    """The frozen source tensors (float32), each on its device or offloaded to disk by accelerate.

    ``get(name)`` returns the tensor on the compute device; ``stack(names)`` the tensors of
    one weight kind stacked (kept stacked on the compute device when all of them live there).
    """

    def __init__(self, load: Callable[[str], torch.Tensor], names: list[str], compute: torch.device,
                 devices: dict[str, torch.device | str] | None = None, offload_folder: Path | None = None):
        from accelerate.utils import OffloadedWeightsLoader, offload_weight, save_offload_index

        self.compute = compute
        self.resident: dict[str, torch.Tensor] = {}
        self._stacks: dict[tuple[str, ...], torch.Tensor] = {}
        self._offload_dir: Path | None = None
        self.disk: OffloadedWeightsLoader | None = None
        devices = devices or {}
        index: dict[str, Any] = {}
        try:
            for name in names:
                device = devices.get(name, compute)
                tensor = load(name).to(torch.float32)
                if device == "disk":
                    if self._offload_dir is None:
                        if offload_folder is None:
                            raise HfgrowError("the device map puts weights on disk; give --offload-folder DIR.")
                        Path(offload_folder).mkdir(parents=True, exist_ok=True)
                        self._offload_dir = Path(tempfile.mkdtemp(prefix="hfgrow-offload-", dir=offload_folder))
                    offload_weight(tensor, name, str(self._offload_dir), index=index)
                else:
                    self.resident[name] = tensor.to(device)
            if index:
                save_offload_index(index, str(self._offload_dir))
                self.disk = OffloadedWeightsLoader(save_folder=str(self._offload_dir))
        except BaseException:  # a failure (or Ctrl-C) while placing leaves no offloaded copies behind
            self.close()
            raise

    def get(self, name: str) -> torch.Tensor:
        tensor = self.resident.get(name)
        if tensor is None:
            tensor = self.disk[name]
        return tensor.to(self.compute, non_blocking=True)

    def stack(self, names: tuple[str, ...]) -> torch.Tensor:
        stacked = self._stacks.get(names)
        if stacked is not None:
            return stacked
        stacked = torch.stack([self.get(name) for name in names])
        if all(name in self.resident and self.resident[name].device == self.compute for name in names):
            self._stacks[names] = stacked  # all local: keep the stack, drop the single copies
            for name in names:
                del self.resident[name]
        return stacked

    def close(self) -> None:
        if self._offload_dir is not None:
            shutil.rmtree(self._offload_dir, ignore_errors=True)
            self._offload_dir = None


# ---------------------------------------------------------------- the parametrised grown model


class _GrownBlock(torch.nn.Module):
    """A grown decoder block whose weights are built from the growth parameters when it runs.

    With ``checkpointing`` the block is re-run in the backward pass, so its weights are not
    kept between the forward and backward passes. Attributes the model reads from its blocks
    (``attention_type``, ...) are forwarded to the wrapped block.
    """

    def __init__(self, block: torch.nn.Module, weights: Callable[[], dict[str, torch.Tensor]], checkpointing: bool):
        super().__init__()
        self.block = block
        self._weights = weights
        self._checkpointing = checkpointing

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["block"], name)

    def _run(self, *args, **kwargs):
        return torch.func.functional_call(self.block, self._weights(), args, kwargs)

    def forward(self, *args, **kwargs):
        if self._checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._run, *args, use_reentrant=False, **kwargs)
        return self._run(*args, **kwargs)


def _sequences(folder: Path, data: list[str], seq_len: int, vocab_size: int | None = None) -> torch.Tensor:
    from transformers import AutoTokenizer

    from hfgrow.data.packing import token_stream
    from hfgrow.data.text import read_documents

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError):
        raise HfgrowError(f"{folder} has no tokenizer; --op learn needs one to read --data.") from None
    documents = [doc for path in data for doc in read_documents(path)]
    ids = token_stream(tokenizer, documents)
    if vocab_size is not None and ids and max(ids) >= vocab_size:
        raise HfgrowError(f"the tokenizer in {folder} gives token id {max(ids)}, but the model has only {vocab_size} "
                          "embeddings; the tokenizer does not belong to this model.")
    count = len(ids) // seq_len
    if count < 2:
        raise HfgrowError(
            f"--data has {len(ids)} tokens, fewer than two sequences of --seq-len {seq_len}; give more text."
        )
    return torch.tensor(ids[: count * seq_len]).view(count, seq_len)


def _renamed_global(name: str, layout: Layout) -> str:
    """The checkpoint tensor for an in-memory global that transformers renames on load (GPT-NeoX keeps
    ``embed_out`` on disk, ``lm_head`` in memory): the one global of the same kind by the name rules."""
    from hfgrow.arch.roles import kind_of

    module, _, param = name.rpartition(".")
    kind = kind_of(module)
    found = [g for g in layout.globals if kind and g.rpartition(".")[2] == param
             and kind_of(g.rpartition(".")[0]) == kind]
    if len(found) != 1:
        raise HfgrowError(f"the grown model's {name} has no tensor in the source checkpoint; --op learn cannot "
                          "build it.")
    return found[0]


def split_sequences(sequences: torch.Tensor, seed: int, eval_sequences: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out, training) sequences: a seeded tenth of them held out, at most ``eval_sequences``."""
    order = list(range(len(sequences)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, len(order) // 10), eval_sequences)
    return sequences[order[:n_eval]], sequences[order[n_eval:]]


def learn_growth(checkpoint: Checkpoint, layout: Layout, grown_config: dict, layer_map: list[int], data: list[str], *, roles=None, expansion: WidthExpansion | None = None,
                 learn_depth: bool = True, steps: int = 100, lr: float = 1e-3, seq_len: int = 256,
                 batch_size: int = 4, seed: int = 0, placement: Placement | None = None, progress: bool = True,
                 eval_sequences: int = 64) -> LearnReport:
    """Train LiGO growth parameters on ``data``: D (``learn_depth``) and the matrices of ``expansion``.

    ``grown_config`` is the grown model's config; ``roles`` (:func:`hfgrow.arch.roles.derive_roles`)
    is needed with ``expansion``; ``placement`` puts the frozen source on devices or disk.

    Example:
        >>> ckpt, layout = open_model(Path("small"))
        >>> report = learn_growth(ckpt, layout, plan.config, [0, 1, 0, 1], ["corpus.txt"])
        >>> report.eval_after < report.eval_before
        True
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    if steps < 0:
        raise HfgrowError(f"--learn-steps must be 0 or more, got {steps}.")
    for flag, value in (("--seq-len", seq_len), ("--batch-size", batch_size)):
        if value < 1:
            raise HfgrowError(f"{flag} must be at least 1, got {value}.")
    torch.manual_seed(seed)
    compute = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    with quiet_transformers(), init_empty_weights():
        grown = AutoModelForCausalLM.from_config(hf_config_from_dict(grown_config)).eval()
    max_len = context_length(grown.config)
    if max_len and seq_len > max_len:
        raise HfgrowError(f"--seq-len {seq_len} is longer than the model's context ({max_len} tokens).")
    for module in grown.modules():  # buffers (rotary tables, masks) are real; parameters stay on meta
        for key, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[key] = buffer.to(compute)

    hint = layout.prefix.rstrip(".").split(".")[-1]
    blocks_name, blocks = decoder_blocks(grown, len(layer_map), hint)
    members = kind_members(layout)
    block_names = {rest for block in blocks for rest, _ in block.named_parameters()}
    unknown = sorted(rest for rest in block_names if rest not in members)
    if unknown:
        raise HfgrowError(
            f"{layout.model_type} stores block weights differently in memory ('{unknown[0]}') than on disk; "
            "--op learn supports models whose in-memory and checkpoint names agree."
        )

    # globals: the grown model's parameters outside the blocks, from the source tensor they grow
    block_prefix = blocks_name + "."
    global_sources: dict[str, str] = {}
    for name, _ in grown.named_parameters():
        if name.startswith(block_prefix):
            continue
        source = name if name in checkpoint.tensors else (roles.tied.get(name) if roles is not None else None)
        if source is None or source not in checkpoint.tensors:
            source = _renamed_global(name, layout)
        global_sources[name] = source

    names = sorted(set(global_sources.values()) | {layout.layer_tensor(j, rest) for rest in block_names
                                                   for j in members[rest]})
    devices = None
    if placement is not None:
        devices = source_devices(names, layout.skeleton, placement)
    weights = SourceWeights(checkpoint.load, names, compute, devices, placement.offload_folder if placement else None)
    stacking = initial_coefficients(layout, layer_map)
    try:
        coefficients = {rest: torch.nn.Parameter(torch.tensor(rows, device=compute), requires_grad=learn_depth)
                        for rest, rows in stacking.items() if rest in block_names}
        if expansion is not None:
            expansion.to(compute)

        embed_factor = 1.0
        if expansion is not None and roles.embed_scale != 1.0:  # Gemma: the model scales by sqrt(new hidden)
            embed_factor = roles.embed_scale / embed_scale_for(grown_config)

        def grow_tensor(x: torch.Tensor, role) -> torch.Tensor:
            if expansion is None:
                return x
            norm = (roles.norm_offset, 0.0 if role.is_bias else roles.norm_init) if role.is_norm else None
            return expansion.expand(x, role, embed_factor if role.kind == "embedding" else 1.0, norm)

        def global_role(name: str, source: str):
            # an untied LM head grown from a tied embedding reads the hidden units
            return roles.lm_head_role() if name != source else roles.role(source)

        frozen: dict[Any, dict[str, torch.Tensor]] | None = None  # weights kept while D and B do not change

        def cached(key: Any, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
            if frozen is None:
                return build()
            if key not in frozen:
                frozen[key] = build()
            return frozen[key]

        def global_weights() -> dict[str, torch.Tensor]:
            return cached("globals", lambda: {name: grow_tensor(weights.get(src), global_role(name, src) if roles else None)
                                              for name, src in global_sources.items()})

        checkpointing = placement is not None
        # Width and depth are both linear, so B_out·(Σ_j D[l,j]·W_j)·B_inᵀ = Σ_j D[l,j]·(B_out·W_j·B_inᵀ). In
        # memory, each step widens the L source layers once and combines the widened ones: L expansions
        # instead of N. With a placement, a block widens its own combination so nothing outlives the block.
        widened: dict[str, torch.Tensor] = {}  # weight kind -> its source layers widened, for this step

        def source_stack(rest: str) -> torch.Tensor:
            names = tuple(layout.layer_tensor(j, rest) for j in members[rest])
            if expansion is None or checkpointing:
                return weights.stack(names)
            if rest not in widened:
                widened[rest] = torch.stack([grow_tensor(weights.get(name), roles.role(name)) for name in names])
            return widened[rest]

        def block_weights(position: int) -> Callable[[], dict[str, torch.Tensor]]:
            source = layer_map[position]
            rests = [rest for rest, _ in blocks[position].named_parameters()]

            def build() -> dict[str, torch.Tensor]:
                result = {}
                for rest in rests:
                    combined = torch.einsum("j,j...->...", coefficients[rest][position], source_stack(rest))
                    if expansion is not None and checkpointing:
                        combined = grow_tensor(combined, roles.role(layout.layer_tensor(source, rest)))
                    result[rest] = combined
                return result

            # with a placement only one block's weights may exist at a time, in evaluation too
            return build if checkpointing else (lambda: cached(position, build))

        for position in range(len(blocks)):
            blocks[position] = _GrownBlock(blocks[position], block_weights(position), checkpointing)

        def loss_on(batch: torch.Tensor) -> torch.Tensor:
            if frozen is None:
                widened.clear()  # D and B changed since the last step
            batch = batch.to(compute)
            return torch.func.functional_call(grown, global_weights(), (batch,),
                                              {"labels": batch, "use_cache": False}).loss

        eval_set, train_set = split_sequences(_sequences(checkpoint.folder, data, seq_len, grown.config.vocab_size),
                                               seed, eval_sequences)
        rng = random.Random(seed)

        def evaluate() -> float:
            nonlocal frozen
            if not len(eval_set):
                return math.nan
            frozen = {}  # build the grown weights once for all held-out batches
            widened.clear()
            try:
                with torch.no_grad():
                    return sum(loss_on(eval_set[i: i + batch_size]).item() * len(eval_set[i: i + batch_size])
                               for i in range(0, len(eval_set), batch_size)) / len(eval_set)
            finally:
                frozen = None

        report = LearnReport(coefficients={}, expansion=expansion)
        report.eval_before = evaluate()
        trained = [p for p in coefficients.values() if p.requires_grad]
        trained += list(expansion.parameters()) if expansion is not None else []
        bar = None
        if steps and trained:
            optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=steps, desc="learning growth (LiGO)", leave=False)
            for _ in range(steps):
                started = time.perf_counter()
                picks = [rng.randrange(len(train_set)) for _ in range(batch_size)]
                loss = loss_on(train_set[picks])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                report.losses.append(loss.item())
                report.step_seconds.append(time.perf_counter() - started)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            if bar is not None:
                bar.close()
        report.eval_after = evaluate()
    finally:
        weights.close()

    report.coefficients = {rest: d.detach().cpu().tolist() for rest, d in coefficients.items()}
    for rest in set(stacking) - set(coefficients):  # buffers stored in the checkpoint: plain stacking copies
        report.coefficients[rest] = stacking[rest]
    if expansion is not None:
        expansion.to("cpu")
    return report


# ---------------------------------------------------------------- the operator


def learn(src: str, out: str | Path | None, *, data: list[str] | None = None, factor: float | None = None,
          layers: int | None = None, pattern: str | None = None, order: str = "stack",
          hidden_size: int | None = None, intermediate_size: int | None = None, num_heads: int | None = None,
          num_kv_heads: int | None = None, width_init: str = "direct", learn_steps: int = 100,
          learn_lr: float = 1e-3, seq_len: int = 256, batch_size: int = 4, seed: int = 0,
          placement: Placement | None = None, coefficients: Coefficients | None = None,
          width_matrices: dict[str, torch.Tensor] | None = None, dtype: str = "keep", revision: str | None = None,
          token=None, max_shard_size: int | str = "5GB", dry_run: bool = False, overwrite: bool = False,
          quiet: bool = False, push_to: str | None = None):
    """G↑learn: grow depth and/or width with LiGO operators learned on ``data`` (or given, for a replay).

    Depth when ``factor``/``layers``/``pattern`` is given, width when ``hidden_size``/... is.

    Example:
        >>> result = learn("./small", "./big", data=["corpus.txt"], factor=4, learn_steps=100)
        >>> result.plan.notes[-1]
        'LiGO: 100 steps on corpus.txt; held-out loss 3.9120 at step 0 -> 3.7010 learned'
        >>> learn("./small", "./wide", data=["corpus.txt"], hidden_size=128, placement=Placement("auto"))
    """
    from hfgrow.growth.pipeline import depth_map, grow_model
    from hfgrow.io import dtypes
    from hfgrow.growth.ops.depth import stack_plan
    from hfgrow.growth.ops.learn import WIDTH_INITS, learned_plan
    from hfgrow.growth.ops.width import resolve_sizes, width_plan
    from hfgrow.arch.roles import derive_roles

    out_dtype = dtypes.from_option(dtype)
    replaying = coefficients is not None
    if not replaying and not dry_run and not data:
        raise HfgrowError("--op learn needs --data: text to learn the growth on.")
    if width_init not in WIDTH_INITS:
        raise HfgrowError(f"unknown --width-init '{width_init}'; use one of {', '.join(WIDTH_INITS)}.")
    depth = factor is not None or layers is not None or pattern is not None
    width = any(v is not None for v in (hidden_size, intermediate_size, num_heads, num_kv_heads))
    if not depth and not width:
        raise HfgrowError("nothing to grow: give --factor, --layers or --pattern (depth) and/or --hidden-size, "
                          "--intermediate-size, --num-heads or --num-kv-heads (width).")

    def make_plan(layout, checkpoint):
        layer_map = depth_map(layout, factor, layers, pattern, order) if depth else list(range(layout.num_layers))
        if depth and pattern is None and len(layer_map) < layout.num_layers:
            raise HfgrowError(f"--factor/--layers would shrink the model from {layout.num_layers} to "
                              f"{len(layer_map)} layers; use --pattern to select layers on purpose.")
        base = stack_plan(layout, checkpoint.tensors, layer_map, out_dtype)
        roles = sizes = expansion = None
        notes = []
        if width:
            roles = derive_roles(layout, checkpoint.tensors)
            init_op = "direct" if width_init == "direct" else "zero"
            sizes = resolve_sizes(roles, hidden_size, intermediate_size, num_heads, num_kv_heads, op=init_op)
            if not sizes.changed:
                raise HfgrowError("the width options give the source's own sizes; nothing to grow in width.")
            expansion = WidthExpansion(roles, sizes, init=width_init, seed=seed)
            if width_matrices is not None:
                try:
                    expansion.load(width_matrices)
                except ValueError as exc:
                    raise HfgrowError(f"{SIDECAR}: {exc}.") from None
            grown_config = width_plan(base, roles, sizes, op="learn", expansion=expansion).config
        else:
            grown_config = base.config
        learned = coefficients
        if replaying:
            initial = initial_coefficients(layout, layer_map)
            if set(initial) - set(learned) or any(len(learned[rest]) != len(rows) or any(
                    len(a) != len(b) for a, b in zip(learned[rest], rows)) for rest, rows in initial.items()):
                raise HfgrowError("the recipe's LiGO coefficients do not fit this source model and layer map.")
        elif dry_run:
            learned = initial_coefficients(layout, layer_map)
            notes.append(f"dry run: the growth is shown at its initial value; {learn_steps} learning steps would "
                         "follow")
        else:
            report = learn_growth(checkpoint, layout, grown_config, layer_map, list(data),
                                  roles=roles, expansion=expansion, learn_depth=depth, steps=learn_steps, lr=learn_lr,
                                  seq_len=seq_len, batch_size=batch_size, seed=seed, placement=placement,
                                  progress=not quiet)
            learned = report.coefficients
            notes.append(f"LiGO: {learn_steps} steps on {', '.join(map(str, data))}; held-out loss "
                         f"{report.eval_before:.4f} at step 0 -> {report.eval_after:.4f} learned")
        plan = learned_plan(layout, checkpoint.tensors, layer_map, learned, out_dtype, base=base)
        if width:
            recipe = plan.recipe
            plan = width_plan(plan, roles, sizes, op="learn", seed=seed, expansion=expansion)
            plan.recipe.update(recipe, width=dict(plan.recipe["width"], init=width_init, matrices=SIDECAR))
            plan.sidecars[SIDECAR] = expansion.state()
        plan.recipe["direction"] = "+".join(d for d, on in (("depth", depth), ("width", width)) if on)
        plan.notes.extend(notes)
        return plan

    options = {"op": "learn", "pattern": None, "hidden_size": hidden_size,
               "intermediate_size": intermediate_size, "num_heads": num_heads, "num_kv_heads": num_kv_heads,
               "width_init": width_init if width and width_init != "direct" else None,
               "data": ",".join(map(str, data or [])) or None, "learn_steps": learn_steps, "learn_lr": learn_lr,
               "seq_len": seq_len, "batch_size": batch_size, "seed": seed,
               "dtype": None if out_dtype is None else dtype}
    if not depth:
        del options["pattern"]
    return grow_model(src, out, make_plan, command_name="grow", options=options, revision=revision, token=token,
                      max_shard_size=max_shard_size, dry_run=dry_run, overwrite=overwrite, quiet=quiet,
                      push_to=push_to)
