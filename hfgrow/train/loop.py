"""Continued pre-training of a (grown) causal LM: one training loop on accelerate, read top to bottom.

    accelerate launch -m hfgrow.continue --model grown/ --data web=data/web.jsonl --data code=data/code/ \\
        --output-dir RUN --seq-len 2048 --batch-size 8 --grad-accum 16 --max-tokens 2B

``hfgrow train ...`` runs the same through accelerate's launcher after checking the arguments and the
machine; in a clone, ``accelerate launch hfgrow/continue.py ...`` works too.

:func:`run` is the whole run: set up (checks, data, model, optimizer, schedule, resume), evaluate at
step 0, loop (train step, log, evaluate, checkpoint), export ``final/``. Each piece has one owner:
options and checks :mod:`~hfgrow.train.args`, the LR :mod:`~hfgrow.train.schedule`, MSG masks
:mod:`~hfgrow.train.msg`, checkpoints :mod:`~hfgrow.train.checkpoints`, records
:mod:`~hfgrow.train.runlog`, the model folder :mod:`~hfgrow.train.export`.

Everything distributed goes through accelerate (DDP, FSDP2, DeepSpeed: see configs/README.md).
Every process builds the same global batch from the same deterministic data stream and trains on
its own slice, so results do not depend on the process count, and the data position saved in
checkpoints is one small JSON dict.

With ``--grow OP:FACTOR@WHEN`` the run grows the model on the way (:mod:`~hfgrow.train.growth`): at the
growth point it evaluates, writes the model as ``stage-K/`` (an ordinary model folder, kept), grows it with
the growth pipeline every ``hfgrow stack``/``grow`` uses into ``grown-K+1/``, loads that, builds AdamW
again (fresh, or with the moments carried through the layer map) and goes on; see :func:`grow`.

Outputs in --output-dir: run.json, log.jsonl (one line per step, per eval and per growth),
eval_observations.jsonl (BiMix observation format), checkpoint-N/ (accelerate state + hfgrow_state.json,
which records the stage), ranks/ (which sequences each process trained on), stage-K/ and grown-K/ with
--grow and, unless --no-export, final/: an ordinary Hugging Face model folder with its model card.

Example:
    >>> from hfgrow.train.loop import main
    >>> main(["--model", "grown", "--data", "corpus.jsonl", "--output-dir", "run", "--max-steps", "100"])
    0
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.io.folder import Folder
from hfgrow.train import checkpoints
from hfgrow.train.args import Setup, build_parser, preflight
from hfgrow.train.growth import Stage, StagePlan, expert_load
from hfgrow.train.launch import PARENT_ENV
from hfgrow.train.kernels import prepare_model, resolve as resolve_speed
from hfgrow.train.runlog import RunLog
from hfgrow.train.schedule import Schedule, describe_warmup, steps_for
from hfgrow.units import counted


def _rank() -> int:
    """This process's rank, known before accelerate starts (torchrun sets RANK)."""
    return int(os.environ.get("RANK", "0"))


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------


def _cpu_only_multiprocess() -> bool:
    """Several processes (torchrun env) on a machine without GPU-like devices: gloo on CPU.

    ``accelerate launch --multi_gpu`` (or configs/multi_cpu.yaml) starts the processes through
    torchrun but does not tell them to use the CPU; without this they would each train alone.
    FSDP2 is allowed (see :func:`_fsdp2_on_cpu`); FSDP1 and DeepSpeed need GPUs.
    """
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    acc = getattr(torch, "accelerator", None)
    has_device = acc.is_available() if acc is not None else torch.cuda.is_available()
    if has_device:
        return False
    if _fsdp_requested() and os.environ.get("FSDP_VERSION", "1") != "2":
        raise HfgrowError("FSDP1 needs GPUs and none is visible; on CPU use configs/fsdp2_cpu.yaml (FSDP2) or "
                          "configs/multi_cpu.yaml.")
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise HfgrowError("DeepSpeed needs GPUs and none is visible; on CPU use configs/multi_cpu.yaml.")
    return True


def _fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def _fsdp2_on_cpu(accelerator) -> None:
    """Under an FSDP2 config on a machine without GPUs, make accelerate take its FSDP2 path over gloo.

    torch's ``fully_shard`` runs on the CPU with gloo, but accelerate (1.15) turns FSDP on only for GPU-type
    process groups (``AcceleratorState.__init__`` checks ``distributed_type in [MULTI_GPU, MULTI_XPU, ...]``,
    which has no ``MULTI_CPU``), so a CPU run under an FSDP config would silently be DDP. Here the CPU process
    group accelerate set up (gloo) is kept and its state says FSDP, with the plugin it builds from the
    launcher's settings; ``prepare`` (``fully_shard``), ``save_state``/``load_state`` (sharded checkpoints) and
    ``get_state_dict`` are then accelerate's own FSDP2 code. For testing and debugging FSDP2 runs without GPUs.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if not (_fsdp_requested() and accelerator.distributed_type == DistributedType.MULTI_CPU):
        return
    plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* settings, as accelerate builds it
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    # both: AcceleratorState copies PartialState's fields every time it is instantiated
    PartialState().distributed_type = DistributedType.FSDP
    accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin


@dataclass
class ModelInfo:
    """What the run and the export need to know about the model besides its weights."""

    n_params: int
    use_cache: bool | None
    export_dtype: str
    lora: dict[str, Any] | None
    mask: Any  # hfgrow.train.msg.MaskRamp | None


def load_model(args: argparse.Namespace, setup: Setup, folder: Path, ramp, *, random_init: bool = False):
    """The model to train (float32 master weights), with the parts to train selected and the MSG ramp hooked.

    ``folder`` is the model the stage starts from (``--model``, or a grown stage's folder) and ``ramp`` the MSG
    mask it ramps (:func:`stage_ramp`; None when nothing ramps); ``random_init``: ``folder`` has no weights, so
    the model is the architecture's own random initialisation (seeded by ``--seed``, the same on every process).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hfgrow.arch.layout import decoder_blocks
    from hfgrow.train.msg import MaskRamp

    export_dtype = str(getattr(setup.config, "dtype", None) or "float32").replace("torch.", "")
    Folder(folder).check_links()  # transformers opens the folder's files on its own
    try:
        if random_init:
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
        else:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - truncated weights, a pickle carrying code, a config transformers rejects
        import pickle

        why = ("a pickled weight file holds code or objects that torch refuses to load safely (nothing of it was run)"
               if isinstance(exc, pickle.UnpicklingError) else " ".join(str(exc).split())[:200].rstrip("."))
        raise HfgrowError(f"cannot load the model in {folder}: {why}.") from None
    use_cache = getattr(model.config, "use_cache", None)
    model.config.use_cache = False
    n_params = sum(p.numel() for p in model.parameters())
    if args.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = None
    if args.train == "new":
        _, blocks = decoder_blocks(model)
        bad = [i for i in setup.new_layers if not 0 <= i < len(blocks)]
        if bad:
            raise HfgrowError(f"the recipe lists new layer {bad[0]}, but the model has {len(blocks)} layers.")
        model.requires_grad_(False)
        for i in setup.new_layers:
            blocks[i].requires_grad_(True)
    elif args.train == "lora":
        from peft import LoraConfig, get_peft_model

        lora = dict(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                    task_type="CAUSAL_LM")
        model = get_peft_model(model, LoraConfig(**lora))
    mask = MaskRamp(model, ramp) if ramp is not None else None  # after LoRA wraps the projections
    model = prepare_model(model, resolve_speed(args))  # kernels, float8, compile: again for every grown model
    return model, ModelInfo(n_params, use_cache, export_dtype, lora, mask)


def stage_ramp(setup: Setup, recipe, stage: int, steps_left: int):
    """The MSG mask a stage ramps: the run's (fitted by preflight) in stage 0; in a stage grown during the run,
    its recipe's with :func:`~hfgrow.train.args.fit_ramp`'s rule over the ``steps_left`` of the run (a ramp
    still running at the end is a warning there, never a refusal mid-run)."""
    from hfgrow.train.args import fit_ramp, recorded_mask

    from hfgrow.train.msg import ramp_length

    if not stage:
        mask = setup.mask
    else:
        mask, warning = fit_ramp(recorded_mask(recipe), steps_left, exports=False)
        if warning and _rank() == 0:
            print(warning, file=sys.stderr)
    if mask is not None and _rank() == 0:
        what = " and ".join(w for w, on in (("new layers", mask.layers), ("new units", mask.width)) if on)
        print(f"MSG mask ramp: the {what} are scaled by c = 0 -> 1 over the first {counted(ramp_length(mask), 'step')}"
              + (f" of stage {stage}" if stage else ""), file=sys.stderr)
    return mask


def make_optimizer(model, args: argparse.Namespace, accelerator, lr: float):
    """Fresh AdamW (the paper: optimizer state does not survive growth); no weight decay on norms and biases."""
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for _, p in named if p.dim() >= 2], "weight_decay": args.weight_decay},
        {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0},
    ]
    ds_plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds_plugin is not None:  # no dataloader is prepared: tell DeepSpeed the micro-batch size
        ds_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = args.batch_size
        ds_plugin.deepspeed_config["gradient_clipping"] = args.grad_clip
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(args.beta1, args.beta2),
                             eps=1e-8, fused=accelerator.device.type == "cuda" or None)


def describe_run(args: argparse.Namespace, setup: Setup, source, info: ModelInfo, data, schedule: Schedule,
                 accelerator, tokens_per_step: int, plan: StagePlan) -> dict[str, Any]:
    """run.json (and every checkpoint's hfgrow_state.json): the run's settings, with no path of this machine.

    ``model`` is a Hub id or a folder name (it reaches the card); ``model_spec`` is what to open again to
    export: a Hub id, or for a local folder its path relative to the run folder (``model_folder`` true), so
    the run and its model can move together. Local data are recorded relative to the run folder too;
    ``data_parts`` names the domain of a token folder each data name reads."""
    from hfgrow.growth.recipe import SourceRef

    ref = SourceRef.from_source(source)
    local = Path(args.model).expanduser().is_dir()
    here = Path(args.output_dir).expanduser().resolve()

    def relative(spec: str) -> str:
        path = Path(spec).expanduser()
        return os.path.relpath(path.resolve(), here) if not spec.startswith("hf:") and path.exists() else spec

    return {
        "model": ref.display, "model_source": ref.to_dict(),
        "model_spec": relative(args.model) if local else args.model, "model_folder": local,
        "model_revision": None if local else source.commit,
        "base_model_id": args.base_model_id or ref.repo_id,
        "train": args.train, "lora": info.lora, "n_params": plan.final_params if args.grow else info.n_params,
        "seq_len": setup.seq_len,
        "batch_size": args.batch_size, "grad_accum": args.grad_accum, "world_size": accelerator.num_processes,
        "tokens_per_step": tokens_per_step, "max_steps": schedule.max_steps, "max_lr": schedule.max_lr,
        "min_lr": schedule.min_lr, "warmup_steps": schedule.warmup, "weight_decay": args.weight_decay,
        "betas": [args.beta1, args.beta2], "grad_clip": args.grad_clip, "seed": args.seed,
        "data": {d.name: relative(d.spec) for d in data.specs}, "mixture": data.weights,
        "data_parts": {d.name: d.part for d in [*data.specs, *setup.eval_specs] if d.part is not None},
        "mixture_file": Path(args.mixture).name if args.mixture else None,
        "eval_data": {d.name: relative(d.spec) for d in setup.eval_specs}, "export_dtype": info.export_dtype,
        "use_cache": info.use_cache, "new_layers": setup.new_layers,
        "mask": setup.mask.to_dict() if info.mask is not None else None,
        "mixed_precision": accelerator.mixed_precision, "distributed_type": str(accelerator.distributed_type),
        "random_init": not setup.has_weights, "stages": plan.to_list() if args.grow else None,
        "grow_optimizer": args.grow_optimizer if args.grow else None,
        "grow_warmup_steps": args.grow_warmup_steps if args.grow else None,
        "speed": resolve_speed(args).to_dict(),
    }


def resume_stage(setup: Setup, plan: StagePlan, out: Path) -> int:
    """The stage the checkpoint to resume from is in (0: none), checked against this run's --grow.

    Raises:
        HfgrowError: the growths the checkpoint went through differ from this run's, or a grown folder is gone.
    """
    from hfgrow.train.growth import grown_folder

    checkpoints.check_same(setup.resume_from)  # nodes with disks of their own each found their own
    if setup.resume_from is None:
        return 0
    stage = int(setup.resume_state.get("stage") or 0)
    before = (setup.resume_state["run"].get("stages") or [])[1 : stage + 1]
    now = plan.to_list()[1 : stage + 1]
    key = ("start_step", "layers", "op", "factor")
    if len(now) < stage or [[b.get(k) for k in key] for b in before] != [[n[k] for k in key] for n in now]:
        grows = " ".join(f"--grow {b['grow']}" for b in before) or "no --grow"
        raise HfgrowError(f"checkpoint {setup.resume_from} is in stage {stage} of a run with {grows}; resume with the "
                          "same growths up to that stage (later ones may change).")
    if stage and not (grown_folder(out, stage) / "config.json").is_file():
        raise HfgrowError(f"checkpoint {setup.resume_from} is in stage {stage}, but {grown_folder(out, stage)}, the "
                          "model that stage started from, is missing; resume from an earlier checkpoint.")
    return stage


def resume(accelerator, setup: Setup, data, schedule: Schedule, run_info: dict[str, Any]) -> int:
    """Restore the checkpoint preflight chose (model, optimizer, RNG, data position); return its step (0: fresh)."""
    if setup.resume_from is None:
        return 0
    state = setup.resume_state
    step = int(state["step"])
    if step > schedule.max_steps:
        raise HfgrowError(f"checkpoint {setup.resume_from} is at step {step}, past --max-steps {schedule.max_steps}.")
    checkpoints.load(accelerator, setup.resume_from)
    data.train.load_state_dict(state["data"])
    before = state.get("run") or {}
    changed = [k for k in ("seq_len", "tokens_per_step", "data", "seed", "train") if k in before
               and before[k] != run_info[k]]
    if changed and accelerator.is_main_process:
        print(f"warning: resuming with a different {', '.join(changed)} than {setup.resume_from} was trained with.",
              file=sys.stderr)
    return step


# ---------------------------------------------------------------------------------------------
# Training, evaluation, console
# ---------------------------------------------------------------------------------------------


class Trainer:
    """One optimizer step at a time: every process trains on its slice of the same global batch."""

    def __init__(self, accelerator, model, optimizer, data, schedule: Schedule, args: argparse.Namespace,
                 seq_len: int, mask=None, stage: int = 0, stage_start: int = 0):
        self.accelerator, self.data, self.schedule = accelerator, data, schedule
        self.swap(model, optimizer, mask, stage, stage_start)
        self.batch_size, self.grad_accum, self.grad_clip = args.batch_size, args.grad_accum, args.grad_clip
        self.global_micro = args.batch_size * accelerator.num_processes
        self.tokens_per_step = self.global_micro * args.grad_accum * seq_len
        self.sequences = 0
        self.sample: list[int] = []  # ids of the first global sequences this process trained on

    def checked(self, sequences: list):
        """The batch's token ids as one int64 array, refused when one has no embedding row (an edited token shard
        or checkpoint data position): an index past the embedding would crash the step or train on another token's
        row."""
        import numpy as np

        if self.vocab_rows is None:
            self.vocab_rows = self.accelerator.unwrap_model(self.model).get_input_embeddings().num_embeddings
        ids = np.asarray(sequences, dtype=np.int64)
        if ids.size and (int(ids.max()) >= self.vocab_rows or int(ids.min()) < 0):
            bad = int(ids.max()) if int(ids.max()) >= self.vocab_rows else int(ids.min())
            raise HfgrowError(f"the data hold token id {bad:,}, but the model's embedding has {self.vocab_rows:,} "
                              "rows; the token folder or the checkpoint's data position was edited or made with "
                              "another tokenizer.")
        return ids

    def swap(self, model, optimizer, mask, stage: int, stage_start: int) -> None:
        """Train ``model`` with ``optimizer`` from now on: stage ``stage``, which began before step ``stage_start``
        (its MSG ramp counts from there: c = 0 at the stage's first step)."""
        self.model, self.optimizer, self.mask = model, optimizer, mask
        self.stage, self.stage_start = stage, stage_start
        self.vocab_rows: int | None = None  # the embedding's rows, read at the first batch
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def step(self, step: int) -> dict[str, Any]:
        """Train optimizer step ``step`` (0-based); return its log record."""
        import torch

        t0 = time.perf_counter()
        lr = self.schedule.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mask_c = self.mask.set_step(step - self.stage_start) if self.mask is not None and self.mask.active else None
        rank, device = self.accelerator.process_index, self.accelerator.device
        loss_sum = torch.zeros((), device=device)
        aux_sum, load = torch.zeros((), device=device), None  # an upcycled model's router: balance term, expert load
        grad_norm = None
        for _ in range(self.grad_accum):
            batch = self.data.next_batch(self.global_micro, rank, self.accelerator.num_processes)  # this rank's part
            self.sequences += len(batch)
            if len(self.sample) < 4096:
                self.sample.extend(i for i, _, _ in batch)
            ids = torch.from_numpy(self.checked([seq for _, _, seq in batch])).to(device)
            with self.accelerator.accumulate(self.model):
                outputs = self.model(input_ids=ids, labels=ids)
                loss = outputs.loss
                self.accelerator.backward(loss)
                if getattr(outputs, "aux_loss", None) is not None:  # logged apart: `loss` stays the LM loss
                    config = _model_config(self.model)
                    aux = outputs.aux_loss.detach() * config.router_aux_loss_coef
                    aux_sum, loss = aux_sum + aux, loss - aux
                    batch_load = expert_load(outputs.router_logits, config.num_experts_per_tok)
                    load = batch_load if load is None else load + batch_load
                if self.accelerator.sync_gradients:
                    grad_norm = self.accelerator.clip_grad_norm_(self.trainable,
                                                                 self.grad_clip if self.grad_clip > 0 else math.inf)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        loss_value = self.accelerator.reduce(loss_sum / self.grad_accum, "mean").item()
        if not math.isfinite(loss_value):
            raise HfgrowError(f"the loss became {loss_value} at step {step + 1}; lower --lr or check the data.")
        seconds = time.perf_counter() - t0
        record = {"step": step + 1, "loss": loss_value, "lr": lr,
                  "grad_norm": float(grad_norm) if grad_norm is not None else None,
                  "tokens": (step + 1) * self.tokens_per_step, "tokens_per_s": self.tokens_per_step / seconds,
                  "time": time.time(), "stage": self.stage}
        if mask_c is not None:
            record["mask_c"] = mask_c
        if load is not None:
            record["aux_loss"] = self.accelerator.reduce(aux_sum / self.grad_accum, "mean").item()
            record["expert_load"] = [round(x, 4) for x in self.accelerator.reduce(load / self.grad_accum, "mean").tolist()]
        return record

    def write_sample(self, folder: Path) -> None:
        """ranks/rank-N.json: how many sequences this process trained on, and the ids of the first 4096."""
        from hfgrow.io.output import atomic_write

        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        atomic_write(folder / f"rank-{rank:05d}.json",
                     {"rank": rank, "world_size": world, "sequences": self.sequences, "ids": self.sample[:4096]})


class Evaluator:
    """Mean held-out loss per domain; the processes share the batches and sum their results."""

    def __init__(self, accelerator, sequences: dict[str, list[list[int]]], batch_size: int):
        self.accelerator, self.sequences, self.batch_size = accelerator, sequences, batch_size

    def __bool__(self) -> bool:
        return bool(self.sequences)

    def __call__(self, model) -> dict[str, float]:
        import torch

        world, rank, device = self.accelerator.num_processes, self.accelerator.process_index, self.accelerator.device
        model.eval()
        losses = {}
        with torch.no_grad():
            for name, seqs in self.sequences.items():
                batches = [seqs[i : i + self.batch_size] for i in range(0, len(seqs), self.batch_size)]
                per_rank = math.ceil(len(batches) / world)  # same number of forwards on every rank
                total = torch.zeros(2, device=device, dtype=torch.float64)
                for j in range(per_rank):
                    k = j * world + rank
                    batch, weight = (batches[k], 1.0) if k < len(batches) else (batches[0], 0.0)
                    ids = torch.tensor(batch, dtype=torch.long, device=device)
                    loss = model(input_ids=ids, labels=ids, **_lm_loss_only(model)).loss.double()
                    total += torch.stack([loss * len(batch) * weight, total.new_tensor(len(batch) * weight)])
                total = self.accelerator.reduce(total, "sum")
                losses[name] = (total[0] / total[1]).item()
        model.train()
        return losses


class Console:
    """What the main process shows: a progress bar with the training loss, and one line per evaluation."""

    def __init__(self, enabled: bool, total: int, initial: int):
        from tqdm.auto import tqdm

        self.enabled = enabled
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, dynamic_ncols=True, desc="train")

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def step(self, record: dict[str, Any]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                             tok_s=f"{record['tokens_per_s']:,.0f}")

    def eval(self, record: dict[str, Any]) -> None:
        if self.enabled:
            domains = "  ".join(f"{name} {loss:.4f}" for name, loss in record["losses"].items())
            self.bar.write(f"eval step {record['step']} ({record['tokens']:,} tokens): {domains}  "
                           f"mean {record['eval_loss']:.4f}", file=sys.stdout)

    def say(self, message: str) -> None:
        if self.enabled:
            self.bar.write(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Growth
# ---------------------------------------------------------------------------------------------


def _model_config(model):
    """The transformers config of a model, wrapped (DDP) or not."""
    return getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)


def _lm_loss_only(model) -> dict[str, Any]:
    """Forward keywords for a held-out loss without the router's load-balancing term (an upcycled model trains
    with ``output_router_logits`` on, which adds ``router_aux_loss_coef * aux_loss`` to ``loss``)."""
    return {"output_router_logits": False} if getattr(_model_config(model), "output_router_logits", False) else {}


def grow(accelerator, args: argparse.Namespace, setup: Setup, out: Path, trainer: Trainer, stage: Stage,
         folder: Path, info: ModelInfo, layers_before: int, state: dict[str, Any]) -> tuple[Path, ModelInfo, dict]:
    """The growth point before ``stage``: write the model as ``stage-K/``, grow it into ``grown-K+1/`` with the
    growth pipeline, load it, build AdamW again (``--grow-optimizer``), and hand both to ``trainer``.

    ``folder`` is the folder the ending stage started from (its config and tokenizer files); ``state`` is what
    a checkpoint at this step would record (the card of ``stage-K/`` tells it). Under FSDP2
    the full weights and optimizer state are gathered onto the main process (torch's distributed
    state-dict API, through accelerate). One process per disk that holds ``out`` writes and grows (every node
    whose ``--output-dir`` is a disk of its own: :func:`~hfgrow.train.growth.write_on_each_disk`); every
    process then loads its node's grown folder and ``accelerator.prepare`` shards it again. Returns the grown
    folder, the new model's info and the growth record for log.jsonl.
    """
    import torch
    from transformers import AutoConfig

    from hfgrow.arch.layout import decoder_blocks
    from hfgrow.growth.pipeline import WriteOptions, grow_model
    from hfgrow.growth.recipe import Recipe
    from hfgrow.growth.registry import describe, get as get_operator
    from hfgrow.train.export import card_text, write_model_folder
    from hfgrow.train.growth import (carry_moments, carry_upcycled, full_optimizer_state, grow_spec, grown_folder,
                                     load_optimizer_state, stage_folder, write_on_each_disk)

    distributed = accelerator.num_processes > 1
    small, grown = stage_folder(out, stage.index - 1), grown_folder(out, stage.index)
    weights = accelerator.get_state_dict(trainer.model)  # the full weights, on the main process (DDP: on all)
    moments = (full_optimizer_state(trainer.model, trainer.optimizer, distributed)
               if args.grow_optimizer == "carry" else None)

    def write_and_grow(weights: dict, readme: str) -> None:
        # float32, the weights exactly as trained: the grown stage is made from them (final/ gets the model's dtype)
        write_model_folder(weights, small, config=AutoConfig.from_pretrained(folder), carry_from=folder,
                           dtype=torch.float32, use_cache=info.use_cache, readme=readme)
        grow_model(str(small), grown, grow_spec(stage.growth.op, stage.growth.factor, args.seed, args.grow_style,
                                                args.grow_top_k), WriteOptions(quiet=True, overwrite=True))

    def card() -> str:  # from the run log, which only the main process writes
        return card_text(small, state, folder, AutoConfig.from_pretrained(folder), small.name, None)

    write_on_each_disk(accelerator, out, write_and_grow, weights, card)
    del weights  # the small model's full copy on the main process
    if info.mask is not None:
        info.mask.remove()
    accelerator.free_memory()  # the old model and optimizer leave accelerate's lists: checkpoints hold the new ones
    trainer.model = trainer.optimizer = None
    recipe = Recipe.read(grown)
    model, new_info = load_model(args, setup, grown,
                                 stage_ramp(setup, recipe, stage.index, trainer.schedule.max_steps - stage.start_step))
    new_info.export_dtype, new_info.use_cache = info.export_dtype, info.use_cache  # the run's model's, not stage-K's
    optimizer = make_optimizer(model, args, accelerator, trainer.schedule.max_lr)
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is not None and not os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):
        plugin.transformer_cls_names_to_wrap = None  # FSDP wraps the grown model's own blocks (upcycled: MoE blocks)
    model, optimizer = accelerator.prepare(model, optimizer)
    record: dict[str, Any] = {}
    if moments is not None:
        template = full_optimizer_state(model, optimizer, distributed)
        if accelerator.is_main_process and recipe.operation.experts:  # upcycled: experts get their MLP's moments
            template["state"], record["carry_unmatched"] = carry_upcycled(moments["state"], template["state"],
                                                                          recipe.operation.experts)
        elif accelerator.is_main_process:
            prefix = decoder_blocks(accelerator.unwrap_model(model), len(recipe.layer_map))[0] + "."
            zeroed = set() if get_operator(recipe.operation.op).carry_new_layers else set(recipe.new_layers)
            template["state"], missing = carry_moments(moments["state"], template["state"], prefix=prefix,
                                                       layer_map=recipe.layer_map, zeroed=zeroed)
            record["carry_unmatched"] = missing
        load_optimizer_state(model, optimizer, template, distributed)
    trainer.swap(model, optimizer, new_info.mask, stage.index, stage.start_step)
    record = {"step": stage.start_step, "tokens": stage.start_step * trainer.tokens_per_step, "stage": stage.index,
              "op": stage.growth.op, "factor": stage.growth.factor, "operator": describe(recipe.operation),
              "layers_before": layers_before, "layers_after": len(recipe.layer_map or []) or layers_before,
              "params_after": new_info.n_params, "optimizer": args.grow_optimizer,
              "small_folder": small.name, "grown_folder": grown.name, **record}
    return grown, new_info, record


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Path | None:
    """Train as ``args`` say; return final/ (None with --no-export, and on every process but the main one)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from hfgrow.arch.layout import read_config
    from hfgrow.data.loading import build_data
    from hfgrow.growth.recipe import Recipe
    from hfgrow.io.source import open_source
    from hfgrow.train.export import export_checkpoint, push
    from hfgrow.train.growth import grown_folder, plan_stages

    out = Path(args.output_dir)
    with open_source(args.model, progress=_rank() == 0) as source:
        # --- setup: checks, processes, data, stages, model, optimizer, schedule
        setup = preflight(args, source)
        accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, log_with=setup.trackers or None,
                                  project_dir=str(out), cpu=_cpu_only_multiprocess())
        _fsdp2_on_cpu(accelerator)
        is_main = accelerator.is_main_process
        set_seed(args.seed)
        data = build_data(setup.specs, setup.tokenizer, setup.seq_len, seed=args.seed,
                          eval_sequences=args.eval_sequences, eval_domains=setup.eval_specs, mixture=args.mixture,
                          text_field=args.text_field)
        tokens_per_step = args.batch_size * accelerator.num_processes * args.grad_accum * setup.seq_len
        max_steps = steps_for(args.max_steps, args.max_tokens, tokens_per_step)
        plan = plan_stages(read_config(source.path), args.grow, tokens_per_step=tokens_per_step, max_steps=max_steps,
                           seed=args.seed, style=args.grow_style, top_k=args.grow_top_k)
        stage = resume_stage(setup, plan, out)
        folder = grown_folder(out, stage) if stage else source.path
        if is_main:
            print(f"speed: {resolve_speed(args).describe()}", file=sys.stderr)
            for note in plan.notes:
                print(note, file=sys.stderr)
            if not setup.has_weights and not stage:
                print(f"{args.model} has no weights: the run starts from {setup.config.model_type}'s own random "
                      f"initialisation (seed {args.seed}).", file=sys.stderr)
        ramp = stage_ramp(setup, Recipe.read(folder) if stage else setup.recipe, stage,
                          max_steps - plan.stages[stage].start_step)
        model, info = load_model(args, setup, folder, ramp, random_init=not setup.has_weights and not stage)
        schedule = Schedule.plan(n_params=plan.final_params if args.grow else info.n_params, max_steps=max_steps,
                                 lr=args.lr, min_lr=args.min_lr, warmup=args.warmup_steps,
                                 rewarm=args.grow_warmup_steps, growth_steps=[s.start_step for s in plan.stages[1:]])
        if is_main and not setup.resume_from:
            print(describe_warmup(schedule.warmup, schedule.max_steps, given=args.warmup_steps is not None),
                  file=sys.stderr)
        optimizer = make_optimizer(model, args, accelerator, schedule.max_lr)
        model, optimizer = accelerator.prepare(model, optimizer)
        trainer = Trainer(accelerator, model, optimizer, data.train, schedule, args, setup.seq_len, info.mask,
                          stage=stage, stage_start=plan.stages[stage].start_step)
        del model, optimizer  # the trainer holds the current ones (a growth replaces them)
        evaluator = Evaluator(accelerator, data.eval, args.batch_size)
        run_info = describe_run(args, setup, source, info, data, schedule, accelerator, tokens_per_step, plan)
        start = resume(accelerator, setup, data, schedule, run_info)
        if args.resume and setup.resume_from is None and is_main:
            print(f"--resume: no complete checkpoint in {out}; starting from the beginning.", file=sys.stderr)
        if setup.trackers:
            accelerator.init_trackers("hfgrow", config={k: v for k, v in run_info.items()
                                                        if isinstance(v, (int, float, str, bool))})

        # --- the loop: evaluate at step 0 (growth's effect), then (grow,) train, evaluate, checkpoint
        last_checkpoint = setup.resume_from
        resumed = setup.resume_state or {}
        last_loss, last_eval = resumed.get("last_loss"), resumed.get("last_eval") or {}
        last_eval_step = resumed.get("last_eval_step")
        with RunLog(out, resume_step=start if setup.resume_from else None, resume_stage=stage, write=is_main,
                    trackers=accelerator if setup.trackers else None) as log, \
                Console(is_main, schedule.max_steps, start) as console:
            log.start(run_info)
            if start == 0 and evaluator:
                n_eval = sum(len(seqs) for seqs in data.eval.values())
                console.say(f"evaluating the model before training: {n_eval:,} held-out sequences of "
                            f"{setup.seq_len:,} tokens ({', '.join(data.eval)})")
                last_eval, last_eval_step = evaluator(trainer.model), 0
                console.eval(log.eval(0, 0, last_eval, data.weights))
            for step in range(start, schedule.max_steps):
                nxt = plan.growth_before(step, trainer.stage)
                if nxt is not None:
                    if evaluator and last_eval_step != step:  # the model as it was grown, on the curve
                        last_eval, last_eval_step = evaluator(trainer.model), step
                        console.eval(log.eval(step, step * tokens_per_step, last_eval, data.weights, trainer.stage))
                    state = {"step": step, "tokens": step * tokens_per_step, "run": run_info, "stage": trainer.stage,
                             "last_loss": last_loss, "last_eval": last_eval}
                    folder, info, record = grow(accelerator, args, setup, out, trainer, nxt, folder, info,
                                                plan.stages[nxt.index - 1].layers, state)
                    if evaluator:
                        after = evaluator(trainer.model)
                        record.update(losses_after=after, eval_loss_after=sum(after.values()) / len(after))
                    log.growth(record)
                    console.say(f"growth at step {step:,} ({record['tokens']:,} tokens): {record['layers_before']} → "
                                f"{record['layers_after']} layers ({record['operator']}), AdamW {args.grow_optimizer}"
                                + (f", held-out loss {record['eval_loss_after']:.4f}" if evaluator else "")
                                + f"; the model it grew from is {out / record['small_folder']}")
                record = trainer.step(step)
                log.train(record)
                console.step(record)
                done, last_loss = record["step"], record["loss"]
                if evaluator and (done % args.eval_steps == 0 or done == schedule.max_steps):
                    last_eval, last_eval_step = evaluator(trainer.model), done
                    console.eval(log.eval(done, record["tokens"], last_eval, data.weights, trainer.stage))
                if done % args.save_steps == 0 or done == schedule.max_steps:
                    state = {"step": done, "tokens": record["tokens"], "data": data.train.state_dict(),
                             "run": run_info, "last_loss": last_loss, "last_eval": last_eval,
                             "last_eval_step": last_eval_step, "stage": trainer.stage}
                    last_checkpoint = checkpoints.save(accelerator, out, done, state, keep=args.save_total_limit)
                checkpoints.debug_kill("HFGROW_DEBUG_KILL_AT_STEP", done)
        trainer.write_sample(out / "ranks")
        if setup.trackers:
            accelerator.end_training()
        if info.mask is not None:
            if info.mask.active and is_main:
                print(f"warning: training stopped at step {schedule.max_steps}, before the MSG mask ramp reached 1 "
                      f"(step {trainer.stage_start + info.mask.steps}); the exported model uses the new layers/units "
                      "at full strength.", file=sys.stderr)
            info.mask.remove()

        # --- the result: final/, or the last checkpoint with --no-export
        final = None
        if is_main and args.no_export:
            print(f"--no-export: the run ends with {last_checkpoint}; `hfgrow export {last_checkpoint} OUT` writes "
                  "the model folder.", file=sys.stderr)
        elif is_main:
            name = args.push_to.split("/")[-1] if args.push_to else out.resolve().name
            final = export_checkpoint(last_checkpoint, out / "final", replace=True, max_shard_size=args.max_shard_size,
                                      base=source, model_name=name)
            print(f"exported {final}", file=sys.stderr)
            if args.push_to:
                push(final, args.push_to)
        accelerator.wait_for_everyone()
    return final


def _watch_parent(pid: int) -> None:
    """Stop this training process (as SIGTERM would) when ``pid``, the ``hfgrow train`` that launched it, is gone:
    a launcher killed with SIGKILL cannot pass the signal on, and a worker left running keeps writing checkpoints."""
    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except PermissionError:  # alive, another user's (the pid was reused): keep watching
                pass

    threading.Thread(target=watch, name="hfgrow-watch-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run, and return the exit code: 0, 1 (an error, said in one line), 128 + signal (stopped).

    Example:
        >>> main(["--model", "grown", "--data", "web.jsonl", "--output-dir", "run", "--max-tokens", "2B"])
        0
    """
    from hfgrow.io.output import Terminated, stop_on_signals

    args = build_parser().parse_args(argv)
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        _watch_parent(int(parent))
    try:
        with stop_on_signals():  # SIGTERM (what schedulers send) stops like Ctrl-C; a second signal is ignored
            run(args)
    except HfgrowError as exc:
        if _rank() == 0:  # every rank fails the same way; say it once
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        name = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        if _rank() == 0:
            print(f"stopped by {name}; every complete checkpoint in {args.output_dir} is intact (rerun with --resume "
                  "to continue from the latest).", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    return 0
