"""Continued pre-training of a (grown) causal LM: one readable training loop on accelerate.

    accelerate launch [--config_file configs/X.yaml] hfgrow/continue.py \\
        --model OUT --data web=data/web.jsonl --data code=data/code/ --output-dir RUN \\
        --seq-len 2048 --batch-size 8 --grad-accum 16 --max-tokens 2e9

(``hfgrow train ...`` runs the same thing through accelerate's launcher.)

Recipe defaults (Du et al. 2024, "Stacking Your Transformers", §4.2; ../shared/REFERENCE.md §1):
fresh AdamW (betas 0.9/0.95, weight decay 0.1, grad clip 1.0), linear warmup then cosine decay to
10% of the max LR. The max LR is set by model size when --lr is not given: 6e-4 at ≤410M
parameters, 3e-4 at 1.1B, 1.6e-4 at 3B, 1e-4 at ≥7B, interpolated linearly in log(params) vs
log(lr) between those points (total parameter count, embeddings included). The paper warms up for
3000 steps of ~2M-token batches; the default here is min(3000, 5% of the steps).

Everything distributed goes through accelerate (DDP, FSDP2, DeepSpeed: see configs/README.md).
Every process builds the same global batch from the same deterministic data stream and trains on
its own slice, so results do not depend on the process count, and the data position saved in
checkpoints is one small JSON dict.

Outputs in --output-dir: log.jsonl (one line per step and per eval), eval_observations.jsonl
(BiMix observation format), run.json, checkpoint-N/ (accelerate state + hfgrow_state.json), and at
the end final/ (an ordinary Hugging Face model folder with an updated model card).
"""

from __future__ import annotations

import os
import sys

import argparse
import json
import math
import re
import shutil
import signal
import time
from functools import partial
from pathlib import Path

from hfgrow.errors import HfgrowError
from hfgrow.io.executor import swap_into_place
from hfgrow.arch.layout import context_length, decoder_blocks

STATE_FILE = "hfgrow_state.json"  # written last into a checkpoint: its presence marks it complete
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
LR_BY_SIZE = [(410e6, 6e-4), (1.1e9, 3e-4), (3e9, 1.6e-4), (7e9, 1e-4)]  # (params, max LR), paper §4.2


# ---------------------------------------------------------------------------------------------
# Small pure helpers (imported by tests and export)
# ---------------------------------------------------------------------------------------------


def default_lr(n_params: float) -> float:
    """Max LR for a model size, log-log interpolated between the paper's four points, clamped.

    Example:
        >>> round(default_lr(1.1e9), 6), default_lr(100e6), default_lr(70e9)
        (0.0003, 0.0006, 0.0001)
    """
    pts = LR_BY_SIZE
    if n_params <= pts[0][0]:
        return pts[0][1]
    if n_params >= pts[-1][0]:
        return pts[-1][1]
    for (n0, l0), (n1, l1) in zip(pts, pts[1:]):
        if n_params <= n1:
            t = (math.log(n_params) - math.log(n0)) / (math.log(n1) - math.log(n0))
            return math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0)))
    return pts[-1][1]


def lr_at(step: int, max_lr: float, min_lr: float, warmup: int, max_steps: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from ``max_lr`` to ``min_lr`` (nanoGPT)."""
    if warmup > 0 and step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= max_steps:
        return min_lr
    span = max(1, max_steps - warmup)
    ratio = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def read_recipe(model: str):
    """The grown model's recipe (None when it has none); a Hub model's travels with it."""
    from hfgrow.growth.recipe import RECIPE_FILE, Recipe

    folder = Path(model)
    if not folder.is_dir():
        try:
            from huggingface_hub import hf_hub_download

            folder = Path(hf_hub_download(model, RECIPE_FILE)).parent
        except Exception:  # noqa: BLE001 - offline, no such file, not a repo: no recipe
            return None
    return Recipe.read(folder)


def sublayer_outputs(model, blocks, indices) -> dict[int, list | None]:
    """Per block, the modules whose outputs are its attention's and its MLP's residual updates (None: not found).

    The attention and the MLP are the block's children holding its "o" and "down" output projections
    (:func:`hfgrow.arch.roles.kind_of`); a child that adds the residual itself (BLOOM, MPT) is replaced by that
    projection. One no-grad forward pass on two tokens shows whether a module takes such an output as its
    input (a post-norm as in Gemma 2 and OLMo 2, or a dropout); the residual update is then that module's output.
    """
    import torch

    from hfgrow.arch.roles import adds_residual, kind_of

    found, calls, hooks = {}, {}, []
    if any(hasattr(p, "ds_id") for p in model.parameters()):  # DeepSpeed ZeRO-3 partitioned weights: no probe
        return {i: None for i in indices}

    def record(log, module, args, kwargs, output):
        log.append((module, args[0] if args else kwargs.get("hidden_states"),
                    output[0] if isinstance(output, tuple) else output))

    for i in indices:
        block, starts = blocks[i], []
        for kind in ("o", "down"):
            paths = [p for p, _ in [*block.named_modules(), *block.named_parameters()] if p and kind_of(p) == kind]
            child = block.get_submodule(paths[0].split(".")[0]) if paths else None
            if child is not None and adds_residual(child):
                child = dict(block.named_modules()).get(paths[0])
            starts.append(child)
        found[i] = starts if None not in starts and starts[0] is not starts[1] else None
        if found[i]:
            calls[i] = []
            hooks += [m.register_forward_hook(partial(record, calls[i]), with_kwargs=True) for m in block.modules()
                      if m is not block]
    if hooks:
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(input_ids=torch.tensor([[0, 1]], device=next(model.parameters()).device))
        finally:
            for h in hooks:
                h.remove()
            model.train(training)
    for i, starts in found.items():
        tails = []
        for tail in starts or []:
            out = next((o for m, _, o in calls[i] if m is tail), None)
            if out is None:  # not called on the probe
                tails = None
                break
            seen = {tail}
            while True:  # follow the modules that take the output as their input
                nxt = next(((m, o) for m, x, o in calls[i] if x is out and m not in seen), None)
                if nxt is None:
                    break
                tail, out = nxt
                seen.add(tail)
            tails.append(tail)
        found[i] = tails or None
    return found


class MaskRamp:
    """MSG's masks (Yao et al. 2023): new structure is scaled by c, which ramps 0 -> 1 over ``steps`` steps.

    * New layers (``layers``, ``grow --op random`` in depth): each sublayer's residual update is scaled,
      h = x + c·attn(norm x), y = h + c·mlp(norm h) (parallel blocks: y = x + c·attn + c·mlp), by forward
      hooks on the modules :func:`sublayer_outputs` finds. A block where they are not found ramps as a whole,
      y = x + c·(block(x) − x), which is said once on stderr.
    * New width (``width``: the recipe's mask.width from ``grow --op random --hidden-size ...``): new heads'
      outputs and new FFN units' activations (the input columns of the o and down projections; in fused MoE
      experts, their activation's output) are scaled by c, and so are new hidden units wherever they are
      written: embedding outputs, every sublayer's residual update and the hidden-size norms' outputs. A norm
      over grown units (the hidden units; OLMo 2's q/k norms over all heads) sees, in place of the new units,
      values with the source units' mean and variance (exactly so for two or more new units), blended into
      the real values as c grows: at c = 0 its statistics are the source units' own, as with MSG's masked
      norm statistics. New key/value heads only serve new query heads, so need no mask.

    ``set_step(s)`` sets c = s / steps and removes every hook once c reaches 1, leaving the plain model. At
    c = 0 the model computes what the model without the new structure computes (up to float rounding in the
    norms' statistics when the hidden size grew).
    """

    def __init__(self, model, layers: list[int], steps: int, width: dict | None = None):
        import torch

        from hfgrow.arch.roles import head_geometry, kind_of

        _, blocks = decoder_blocks(model)
        bad = [i for i in layers if not 0 <= int(i) < len(blocks)]
        if bad:
            raise HfgrowError(f"the recipe masks layer {bad[0]}, but the model has {len(blocks)} layers.")
        self.steps = max(1, int(steps))
        self.c = torch.zeros(())  # a tensor, so torch.compile does not recompile as c changes
        self._c_on: dict = {(self.c.device, self.c.dtype): self.c}  # c per (device, dtype), filled in place
        self.handles: list = []
        self.new: dict[tuple[str, int], torch.Tensor] = {}  # (space, size) -> which units of that size are new
        width = dict(width or {})
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        q_heads, kv_heads, head_dim = head_geometry(cfg)
        for space, listed in (("q", width.pop("new_heads", None)), ("kv", width.pop("new_kv_heads", None))):
            if listed:  # heads of head_dim units each
                heads = q_heads if space == "q" else kv_heads
                units = torch.arange(heads * head_dim) // head_dim
                self.new[space, heads * head_dim] = torch.isin(units, torch.tensor(listed))
        for key, (old, new) in width.items():  # hidden_size and the FFN sizes: new units come last
            if new != old:
                self.new["hidden" if key == "hidden_size" else "ffn", new] = torch.arange(new) >= old
        # (space, size) -> (new units, fill pattern), built here so the hooks only look them up (no
        # data-dependent Python in a compiled graph); _on holds their copies per device, made on first use
        self._patterns = {key: self._pattern(new) for key, new in self.new.items()}
        self._on: dict = {}
        spaces = {space for space, _ in self.new}
        layers = {int(i) for i in layers}
        outputs: dict = {}  # module -> what scales its output: "layer" (c) and/or spaces whose new units get c

        def scale_output(module, *what):
            outputs.setdefault(module, set()).update(what)

        def scale_input(module, space):
            self.handles.append(module.register_forward_pre_hook(partial(self._mask_input, space)))

        whole = []
        targets = range(len(blocks)) if "hidden" in spaces else sorted(layers)
        for i, tails in sublayer_outputs(model, blocks, targets).items():
            what = ({"layer"} if i in layers else set()) | ({"hidden"} & spaces)
            if tails is None:
                whole.append(i)
                self.handles.append(blocks[i].register_forward_hook(partial(self._ramp_block, what), with_kwargs=True))
            for tail in tails or []:
                scale_output(tail, *what)
        for path, module in model.named_modules():
            kind = kind_of(path) if path else None
            norm_space = {"norm": "hidden", "q_norm": "q", "k_norm": "kv"}.get(kind)
            weight = getattr(module, "weight", None)
            if kind in ("embedding", "positions", "proj_in") and "hidden" in spaces:
                scale_output(module, "hidden")
            elif norm_space in spaces and (weight is None or (norm_space, getattr(weight, "ds_numel", None)
                                                               or weight.numel()) in self.new):
                # a norm without weights (OLMo) is hooked too: its hooks skip inputs of another size
                self.handles.append(module.register_forward_pre_hook(partial(self._norm_input, norm_space)))
                if norm_space == "hidden":
                    scale_output(module, "hidden")
            elif kind == "o" and "q" in spaces:  # its input columns are the heads
                scale_input(module, "q")
            elif kind == "down" and "ffn" in spaces:  # its input columns are the FFN units
                scale_input(module, "ffn")
            elif "ffn" in spaces and any(kind_of(f"{path}.{n}") == "down" for n, _ in module.named_parameters(recurse=False)):
                for child in module.children():  # fused experts: their activation's output is the FFN units
                    scale_output(child, "ffn")
        for module, what in outputs.items():
            self.handles.append(module.register_forward_hook(partial(self._scale_output, frozenset(what))))
        if whole and int(os.environ.get("RANK", "0")) == 0:
            print(f"warning: no attention/MLP found in layers {whole}; the MSG mask ramps each of them as a whole "
                  "block, y = x + c·(block(x) − x).", file=sys.stderr)

    # -- hooks

    @staticmethod
    def _pattern(new):
        """(new units, fill pattern): the pattern has mean 0 and mean square 1 over the new units."""
        import torch

        k = int(new.sum())
        pattern = torch.zeros(len(new))
        if k > 1:
            ramp = torch.arange(k) - (k - 1) / 2
            pattern[new] = ramp / ramp.square().mean().sqrt()
        return new, pattern

    def _units(self, space: str, x):
        """(new units, fill pattern) for x's last dimension, on x's device; None when nothing there is new."""
        key = (space, x.shape[-1], x.device)
        if key not in self._on:
            units = self._patterns.get(key[:2])
            self._on[key] = None if units is None else (units[0].to(x.device), units[1].to(x.device))
        return self._on[key]

    def _c(self, x):
        """c on x's device and dtype (one copy each, updated in place by set_step: no host sync per call)."""
        key = (x.device, x.dtype)
        if key not in self._c_on:
            self._c_on[key] = self.c.to(x.device, x.dtype)
        return self._c_on[key]

    def _mask(self, space: str, x):
        """x × (c on the new units of ``space``, 1 elsewhere)."""
        import torch

        units = self._units(space, x)
        return x if units is None else x * torch.where(units[0], self._c(x), 1.0)

    def _scale_output(self, what, module, args, output):
        y = output[0] if isinstance(output, tuple) else output
        for space in what:
            y = y * self._c(y) if space == "layer" else self._mask(space, y)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    def _ramp_block(self, what, module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        y = output[0] if isinstance(output, tuple) else output
        y = x + self._scale_output(what, module, args, y - x)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    def _mask_input(self, space, module, args):
        return (self._mask(space, args[0]), *args[1:])

    def _norm_input(self, space, module, args):
        """The new units replaced by fill + c·(x − fill), fill having the source units' mean and variance."""
        import torch

        x, units = args[0], self._units(space, args[0])
        if units is None:
            return None
        new, pattern = units
        old = (~new).to(torch.float32)
        xf = x.float()
        mean = (xf * old).sum(-1, keepdim=True) / old.sum()
        var = ((xf - mean).square() * old).sum(-1, keepdim=True) / old.sum()
        fill = mean + var.clamp_min(torch.finfo(torch.float32).tiny).sqrt() * pattern
        blended = torch.where(new, fill + self._c(xf) * (xf - fill), xf)
        return (blended.to(x.dtype), *args[1:])

    # -- the ramp

    @property
    def active(self) -> bool:
        return bool(self.handles)

    def set_step(self, step: int) -> float:
        value = min(1.0, step / self.steps)
        for c in self._c_on.values():
            c.fill_(value)
        if value >= 1.0:
            self.remove()
        return value

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path, bool]]:
    """(step, path, complete) for every checkpoint-N folder, oldest first."""
    found = []
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p, (p / STATE_FILE).is_file()))
    return sorted(found)


def read_checkpoint_state(path: Path) -> dict:
    try:
        state = json.loads((path / STATE_FILE).read_text())
        int(state["step"])
        state["data"]["domains"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HfgrowError(
            f"checkpoint {path} is corrupt ({STATE_FILE}: {type(exc).__name__}); delete it to resume "
            "from an earlier one."
        ) from None
    return state


def _truncate_jsonl(path: Path, max_step: int) -> None:
    """Drop log lines past ``max_step`` (written after the checkpoint we resume from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except ValueError:
            continue  # a line cut by the kill
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def report_to(args: argparse.Namespace) -> list[str]:
    """Trackers besides log.jsonl (which is always written) from --report-to."""
    names = [t.strip().lower() for v in args.report_to for t in v.split(",") if t.strip()]
    return [t for t in names if t not in ("jsonl", "none")]


def _cpu_only_multiprocess() -> bool:
    """Several processes (torchrun env) on a machine without GPU-like devices: gloo on CPU.

    ``accelerate launch --multi_gpu`` (or configs/multi_cpu.yaml) starts the processes through
    torchrun but does not tell them to use the CPU; without this they would each train alone.
    """
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    acc = getattr(torch, "accelerator", None)
    has_device = acc.is_available() if acc is not None else torch.cuda.is_available()
    if has_device:
        return False
    for var, what in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(var, "false").lower() == "true":
            raise HfgrowError(f"{what} needs GPUs and none is visible; on CPU use configs/multi_cpu.yaml.")
    return True


def _debug_kill(var: str, step: int) -> None:
    """Fault injection for tests: HFGROW_DEBUG_KILL_AT_STEP / HFGROW_DEBUG_KILL_IN_SAVE = N."""
    if os.environ.get(var) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="continue.py",
        description="Continued pre-training of a (grown) causal LM with accelerate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--model", required=True, help="grown model folder (or Hub repo id)")
    a("--data", action="append", default=[], metavar="[NAME=]PATH|hf:NAME[:CONFIG][:SPLIT]",
      help="training data, repeat for several domains")
    a("--output-dir", required=True, help="run folder: logs, checkpoints, final/ export")
    a("--mixture", help="mixture JSON {'domains': {NAME: {'proportion': R}}} (default: equal weights)")
    a("--eval-data", action="append", default=[], metavar="[NAME=]PATH",
      help="eval data; a NAME of a --data domain replaces its held-out split")
    a("--eval-sequences", type=int, default=16, help="held-out eval sequences per domain (0: no eval)")
    a("--text-field", default="text", help="JSONL / parquet / dataset text field")
    a("--seq-len", type=int, help="sequence length (default min(2048, model context))")
    a("--batch-size", type=int, default=8, help="sequences per device per micro-step")
    a("--grad-accum", type=int, default=1, help="micro-steps per optimizer step")
    a("--max-steps", type=int, help="optimizer steps")
    a("--max-tokens", type=float, help="training tokens (alternative to --max-steps)")
    a("--lr", type=float, help="max LR (default: by model size, see module doc)")
    a("--min-lr", type=float, help="final LR of the cosine (default 10%% of --lr)")
    a("--warmup-steps", type=int, help="linear warmup steps (default min(3000, 5%% of steps))")
    a("--weight-decay", type=float, default=0.1)
    a("--beta1", type=float, default=0.9)
    a("--beta2", type=float, default=0.95)
    a("--grad-clip", type=float, default=1.0, help="clip the global grad norm (0: off)")
    a("--save-steps", type=int, default=1000, help="checkpoint every N steps (and at the end)")
    a("--keep-checkpoints", type=int, default=0, help="keep only the N newest checkpoints (0: all)")
    a("--eval-steps", type=int, default=500, help="evaluate every N steps (and at the end)")
    a("--resume", action="store_true", help="continue from the latest complete checkpoint in --output-dir")
    a("--seed", type=int, default=0)
    a("--train", choices=["all", "new", "lora"], default="all",
      help="all parameters, only the layers the grow step added, or LoRA adapters")
    a("--lora-r", type=int, default=16)
    a("--lora-alpha", type=float, default=32.0)
    a("--gradient-checkpointing", action="store_true")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--push-to", metavar="REPO_ID", help="push final/ to this Hub repo")
    a("--base-model-id", help="Hub id of the grown model for the card (default: --model)")
    a("--report-to", action="append", default=[], metavar="jsonl|tensorboard|wandb|...",
      help="trackers besides log.jsonl (always written); repeat or comma-separate")
    a("--no-export", action="store_true", help="skip writing final/ at the end")
    a("--max-shard-size", default="5GB")
    return p


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def preflight(args: argparse.Namespace) -> dict:
    """Every cheap input check (no tokenizing, no process group): one clear HfgrowError each.

    ``hfgrow train`` runs it before starting the launcher; ``run`` runs it first too.
    """
    from transformers import AutoConfig

    from hfgrow.data.mixture import read_mixture
    from hfgrow.data.specs import open_domain, parse_specs

    out = Path(args.output_dir)
    positive = {"--batch-size": args.batch_size, "--grad-accum": args.grad_accum,
                "--save-steps": args.save_steps, "--eval-steps": args.eval_steps}
    for flag, value in positive.items():
        if value is None or value < 1:
            raise HfgrowError(f"{flag} must be at least 1 (got {value}).")
    for flag, value in (("--lr", args.lr), ("--min-lr", args.min_lr), ("--warmup-steps", args.warmup_steps),
                        ("--weight-decay", args.weight_decay), ("--grad-clip", args.grad_clip)):
        if value is not None and value < 0:
            raise HfgrowError(f"{flag} cannot be negative (got {value}).")
    if args.max_steps is None and args.max_tokens is None:
        raise HfgrowError("give --max-steps or --max-tokens.")
    if (args.max_steps is not None and args.max_steps < 1) or (args.max_tokens is not None and args.max_tokens <= 0):
        raise HfgrowError("--max-steps / --max-tokens must be positive.")
    try:
        config = AutoConfig.from_pretrained(args.model)
    except Exception as exc:  # noqa: BLE001 - missing folder, bad config, offline
        raise HfgrowError(f"cannot load model {args.model!r}: {str(exc).splitlines()[0]}") from None
    context = context_length(config)
    seq_len = args.seq_len or min(2048, context or 2048)
    if seq_len < 2:
        raise HfgrowError("--seq-len must be at least 2.")
    if context and seq_len > context:
        raise HfgrowError(f"--seq-len {seq_len} is larger than the model's context ({context} positions).")
    recipe = read_recipe(args.model)
    new_layers = list(recipe.new_layers) if recipe else []
    if args.train == "new" and not new_layers:
        raise HfgrowError(
            f"this model has no recorded new layers (no new_layers in {args.model}/hfgrow.yaml), "
            "so --train new has nothing to train; use --train all or lora."
        )
    mask = recipe.operation.mask if recipe else None
    specs = parse_specs(args.data)
    if not specs:
        raise HfgrowError("no training data: give at least one --data PATH or NAME=PATH.")
    eval_specs = parse_specs(args.eval_data) if args.eval_data else []
    for spec in specs + eval_specs:
        open_domain(spec, args.text_field)  # missing files, empty folders, missing `datasets`
    if args.mixture:
        read_mixture(args.mixture, [d.name for d in specs])

    trackers = report_to(args)
    if trackers:
        from accelerate.tracking import get_available_trackers
        from accelerate.utils import LoggerType

        known = {str(t.value) if hasattr(t, "value") else str(t) for t in LoggerType}
        available = {str(t.value) if hasattr(t, "value") else str(t) for t in get_available_trackers()}
        for t in trackers:
            if t not in known:
                raise HfgrowError(f"--report-to {t}: unknown tracker; choose from jsonl, {', '.join(sorted(known))}.")
            if t not in available and t != "all":
                raise HfgrowError(f"--report-to {t}: its package is not installed (pip install {t}).")

    ckpts = list_checkpoints(out)
    resume_from, resume_state = None, None
    if ckpts and not args.resume:
        raise HfgrowError(f"{out} already has checkpoints; pass --resume to continue that run or pick another --output-dir.")
    if args.resume:
        complete = [c for c in ckpts if c[2]]
        if complete:
            resume_from = complete[-1][1]
            resume_state = read_checkpoint_state(resume_from)
    return {
        "config": config, "seq_len": seq_len, "new_layers": new_layers,
        "mask_layers": list(mask.layers) if mask else [],
        "mask_steps": mask.steps if mask else 0, "mask_width": mask.width.to_dict() if mask and mask.width else None,
        "specs": specs, "eval_specs": eval_specs, "resume_from": resume_from, "resume_state": resume_state,
    }


def run(args: argparse.Namespace) -> Path | None:
    import torch
    from transformers import AutoTokenizer

    from hfgrow.data.packing import build_data

    out = Path(args.output_dir)
    pre = preflight(args)
    config, seq_len, new_layers = pre["config"], pre["seq_len"], pre["new_layers"]
    mask_layers, mask_steps, mask_width = pre["mask_layers"], pre["mask_steps"], pre["mask_width"]
    specs, eval_specs = pre["specs"], pre["eval_specs"]
    resume_from, resume_state = pre["resume_from"], pre["resume_state"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    except Exception as exc:  # noqa: BLE001
        raise HfgrowError(f"cannot load the tokenizer of {args.model!r}: {str(exc).splitlines()[0]}") from None
    data = build_data(specs, tokenizer, seq_len, seed=args.seed, eval_sequences=args.eval_sequences,
                      eval_domains=eval_specs, mixture=args.mixture, text_field=args.text_field)

    # --- accelerate
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    trackers = report_to(args)
    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, log_with=trackers or None,
                              project_dir=str(out), cpu=_cpu_only_multiprocess())
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    set_seed(args.seed)
    if main:
        out.mkdir(parents=True, exist_ok=True)

    # --- model
    from transformers import AutoModelForCausalLM

    export_dtype = str(getattr(config, "dtype", None) or "float32").replace("torch.", "")
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    n_params = sum(p.numel() for p in model.parameters())
    max_lr = args.lr if args.lr is not None else default_lr(n_params)
    min_lr = args.min_lr if args.min_lr is not None else 0.1 * max_lr
    if args.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora_cfg = None
    if args.train == "new":
        _, blocks = decoder_blocks(model)
        bad = [i for i in new_layers if not 0 <= i < len(blocks)]
        if bad:
            raise HfgrowError(f"the recipe lists new layer {bad[0]}, but the model has {len(blocks)} layers.")
        model.requires_grad_(False)
        for i in new_layers:
            blocks[i].requires_grad_(True)
    elif args.train == "lora":
        from peft import LoraConfig, get_peft_model

        lora_cfg = dict(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                        target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, LoraConfig(**lora_cfg))
    masked = (mask_layers or mask_width) and mask_steps > 0  # hooked after LoRA wraps the projections
    mask = MaskRamp(model, mask_layers, mask_steps, mask_width) if masked else None
    if args.compile:
        model = torch.compile(model)

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for _, p in named if p.dim() >= 2], "weight_decay": args.weight_decay},
        {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=max_lr,
                                  betas=(args.beta1, args.beta2), eps=1e-8,
                                  fused=accelerator.device.type == "cuda" or None)
    ds_plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds_plugin is not None:  # no dataloader is prepared: tell DeepSpeed the micro-batch size
        ds_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = args.batch_size
        ds_plugin.deepspeed_config["gradient_clipping"] = args.grad_clip
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # --- schedule
    global_micro = args.batch_size * world
    tokens_per_step = global_micro * args.grad_accum * seq_len
    max_steps = args.max_steps or max(1, math.ceil(args.max_tokens / tokens_per_step))
    warmup = args.warmup_steps if args.warmup_steps is not None else min(3000, math.ceil(0.05 * max_steps))

    # --- resume
    start_step = 0
    if resume_from is not None:
        if int(resume_state["step"]) > max_steps:
            raise HfgrowError(f"checkpoint {resume_from} is at step {resume_state['step']}, past --max-steps {max_steps}.")
        try:
            accelerator.load_state(str(resume_from))
        except Exception as exc:  # noqa: BLE001 - truncated safetensors, bad pickle, shape mismatch
            raise HfgrowError(
                f"checkpoint {resume_from} is corrupt or does not fit this model "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); delete it to resume from an earlier one."
            ) from None
        data.train.load_state_dict(resume_state["data"])
        start_step = int(resume_state["step"])
        before = resume_state.get("run") or {}
        now = {"seq_len": seq_len, "tokens_per_step": global_micro * args.grad_accum * seq_len,
               "data": {d.name: d.spec for d in specs}, "seed": args.seed, "train": args.train}
        changed = [k for k, v in now.items() if k in before and before[k] != v]
        if changed and main:
            print(f"warning: resuming with a different {', '.join(changed)} than {resume_from} was trained with.",
                  file=sys.stderr)
        if main:
            _truncate_jsonl(out / "log.jsonl", start_step)
            _truncate_jsonl(out / "eval_observations.jsonl", start_step)
    elif args.resume and main:
        print(f"--resume: no complete checkpoint in {out}; starting from the beginning.", file=sys.stderr)

    local = Path(args.model).is_dir()
    model_ref = str(Path(args.model).resolve()) if local else args.model
    base_id = Path(model_ref).name if local else args.model  # a Hub id when the model came from the Hub
    run_info = {
        "model": model_ref, "base_model_id": args.base_model_id or base_id, "train": args.train,
        "lora": lora_cfg, "n_params": n_params, "seq_len": seq_len, "batch_size": args.batch_size,
        "grad_accum": args.grad_accum, "world_size": world, "tokens_per_step": tokens_per_step,
        "max_steps": max_steps, "max_lr": max_lr, "min_lr": min_lr, "warmup_steps": warmup,
        "weight_decay": args.weight_decay, "grad_clip": args.grad_clip, "seed": args.seed,
        "data": {d.name: d.spec for d in data.specs}, "mixture": data.weights,
        "eval_data": {d.name: d.spec for d in eval_specs}, "export_dtype": export_dtype,
        "use_cache": use_cache, "new_layers": new_layers,
        "mask": {"layers": mask_layers, "steps": mask_steps, "width": mask_width} if mask else None,
        "mixed_precision": accelerator.mixed_precision, "distributed_type": str(accelerator.distributed_type),
    }
    if main:
        (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
    if trackers:
        accelerator.init_trackers("hfgrow", config={k: v for k, v in run_info.items()
                                                    if isinstance(v, (int, float, str, bool))})
    log_file = open(out / "log.jsonl", "a") if main else None
    obs_file = open(out / "eval_observations.jsonl", "a") if main else None
    last = {"loss": None, "eval": {}}

    def log(record: dict) -> None:
        if main:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if trackers:
            accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record["step"])

    def evaluate(step: int) -> dict[str, float]:
        if not data.eval:
            return {}
        model.eval()
        losses = {}
        with torch.no_grad():
            for name, seqs in data.eval.items():
                batches = [seqs[i : i + args.batch_size] for i in range(0, len(seqs), args.batch_size)]
                per_rank = math.ceil(len(batches) / world)  # same number of forwards on every rank
                total = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
                for j in range(per_rank):
                    k = j * world + rank
                    batch, weight = (batches[k], 1.0) if k < len(batches) else (batches[0], 0.0)
                    ids = torch.tensor(batch, dtype=torch.long, device=accelerator.device)
                    loss = model(input_ids=ids, labels=ids).loss.double()
                    total += torch.stack([loss * len(batch) * weight, total.new_tensor(len(batch) * weight)])
                total = accelerator.reduce(total, "sum")
                losses[name] = (total[0] / total[1]).item()
        model.train()
        tokens = step * tokens_per_step
        log({"type": "eval", "step": step, "tokens": tokens, "losses": losses,
             "eval_loss": sum(losses.values()) / len(losses)})
        if main:
            mix = {n: w for n, w in data.weights.items() if w > 0}
            for name, value in losses.items():
                if name in mix:
                    obs_file.write(json.dumps({"mixture": mix, "step": step, "domain": name, "loss": value}) + "\n")
            obs_file.flush()
        last["eval"] = losses
        return losses

    def save_checkpoint(step: int) -> Path:
        final = out / f"checkpoint-{step}"
        tmp = out / f".tmp-checkpoint-{step}"
        if main and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if main:
            _debug_kill("HFGROW_DEBUG_KILL_IN_SAVE", step)
            state = {"step": step, "tokens": step * tokens_per_step, "data": data.train.state_dict(),
                     "run": run_info, "last_loss": last["loss"], "last_eval": last["eval"]}
            with open(tmp / STATE_FILE, "w") as fh:
                json.dump(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            swap_into_place(tmp, final)  # the final step may be saved twice after a resume: never in place
            if args.keep_checkpoints > 0:
                for _, path, _complete in list_checkpoints(out)[: -args.keep_checkpoints]:
                    shutil.rmtree(path, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    # --- the loop
    from tqdm.auto import tqdm

    seen_ids: list[int] = []
    n_seen = 0
    bar = tqdm(total=max_steps, initial=start_step, disable=not main, dynamic_ncols=True, desc="train")
    model.train()
    last_ckpt = resume_from if start_step else None
    for step in range(start_step, max_steps):
        t0 = time.perf_counter()
        lr = lr_at(step, max_lr, min_lr, warmup, max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        mask_c = mask.set_step(step) if mask is not None and mask.active else None
        loss_sum = torch.zeros((), device=accelerator.device)
        grad_norm = None
        for _ in range(args.grad_accum):
            batch = data.train.next_batch(global_micro, rank, world)  # this rank's part of the global batch
            n_seen += len(batch)
            if len(seen_ids) < 4096:  # a sample of which global sequences this rank trained on
                seen_ids.extend(i for i, _, _ in batch)
            ids = torch.tensor([seq for _, _, seq in batch], dtype=torch.long, device=accelerator.device)
            with accelerator.accumulate(model):
                loss = model(input_ids=ids, labels=ids).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(trainable, args.grad_clip if args.grad_clip > 0 else math.inf)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        loss_value = accelerator.reduce(loss_sum / args.grad_accum, "mean").item()
        if not math.isfinite(loss_value):
            raise HfgrowError(f"the loss became {loss_value} at step {step + 1}; lower --lr or check the data.")
        done = step + 1
        dt = time.perf_counter() - t0
        record = {"type": "train", "step": done, "loss": loss_value, "lr": lr,
                  "grad_norm": float(grad_norm) if grad_norm is not None else None,
                  "tokens": done * tokens_per_step, "tokens_per_s": tokens_per_step / dt, "time": time.time()}
        if mask_c is not None:
            record["mask_c"] = mask_c
        log(record)
        last["loss"] = loss_value
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_step / dt:,.0f}")
        if done % args.eval_steps == 0 or done == max_steps:
            evaluate(done)
        if done % args.save_steps == 0 or done == max_steps:
            last_ckpt = save_checkpoint(done)
        _debug_kill("HFGROW_DEBUG_KILL_AT_STEP", done)
    bar.close()

    ranks_dir = out / "ranks"
    ranks_dir.mkdir(parents=True, exist_ok=True)
    (ranks_dir / f"rank-{rank:05d}.json").write_text(json.dumps(
        {"rank": rank, "world_size": world, "sequences": n_seen, "ids": seen_ids[:4096]}) + "\n")
    if main:
        log_file.close()
        obs_file.close()
    if trackers:
        accelerator.end_training()
    if mask is not None:
        if mask.active and main:
            print(f"warning: training stopped at step {max_steps}, before the MSG mask ramp reached 1 (step "
                  f"{mask_steps}); the exported model uses the new layers/units at full strength.", file=sys.stderr)
        mask.remove()

    final_dir = None
    if not args.no_export and last_ckpt is not None:
        if main:
            from hfgrow.train.export import export_checkpoint

            final_dir = export_checkpoint(last_ckpt, out / "final", replace=True,
                                          max_shard_size=args.max_shard_size)
            print(f"exported {final_dir}", file=sys.stderr)
            if args.push_to:
                from hfgrow.train.export import push

                push(final_dir, args.push_to)
        accelerator.wait_for_everyone()
    return final_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except HfgrowError as exc:
        if int(os.environ.get("RANK", "0")) == 0:  # every rank fails the same way; say it once
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the latest complete checkpoint is intact (use --resume).", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
