"""Continued pre-training of a (grown) causal LM: one training loop on accelerate, read top to bottom.

    accelerate launch -m hfgrow.continue --model grown/ --data web=data/web.jsonl --data code=data/code/ \\
        --output-dir RUN --seq-len 2048 --batch-size 8 --grad-accum 16 --max-tokens 2B

``hfgrow train ...`` runs the same through accelerate's launcher after checking the arguments and the
machine; in a clone, ``accelerate launch hfgrow/continue.py ...`` works too.

:func:`run` is the whole run, in three parts: :func:`start` (checks, processes, data, stages, model, optimizer,
schedule, resume) builds a :class:`Run`; :func:`train` evaluates at step 0 and loops (grow when a stage
begins, train a step, log, evaluate, checkpoint); :func:`finish` exports ``final/``. Each piece has one owner:
the settings and what they imply (tokens per step, steps, stages, schedule) :mod:`~hfgrow.train.config`,
the input checks :mod:`~hfgrow.train.args`, the LR :mod:`~hfgrow.train.schedule`, MSG masks
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
    >>> run(TrainConfig(model="grown", data=["corpus.jsonl"], output_dir="run", max_steps=100))  # from Python
    PosixPath('run/final')
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hfgrow.console import log, progress
from hfgrow.errors import HfgrowError
from hfgrow.io.folder import Folder
from hfgrow.train import checkpoints
from hfgrow.train.args import Setup, preflight
from hfgrow.train.checkpoints import RunState
from hfgrow.train.config import TrainConfig
from hfgrow.train.growth import Stage, StagePlan, expert_load
from hfgrow.train.launch import PARENT_ENV
from hfgrow.train.kernels import prepare_model
from hfgrow.train.runlog import RunLog
from hfgrow.train.schedule import Schedule, describe_warmup
from hfgrow.units import counted


def _rank() -> int:
    """This process's rank, known before accelerate starts (torchrun sets RANK)."""
    return int(os.environ.get("RANK", "0"))


def _speaks_for_its_node() -> bool:
    """Whether this process says why the run stopped: the first process of each machine (LOCAL_RANK 0), so every
    node's console says it once, a failure on one node alone included."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


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


def load_model(cfg: TrainConfig, setup: Setup, folder: Path, ramp, *, random_init: bool = False):
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
    if cfg.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = None
    if cfg.train == "new":
        _, blocks = decoder_blocks(model)
        bad = [i for i in setup.new_layers if not 0 <= i < len(blocks)]
        if bad:
            raise HfgrowError(f"the recipe lists new layer {bad[0]}, but the model has {len(blocks)} layers.")
        model.requires_grad_(False)
        for i in setup.new_layers:
            blocks[i].requires_grad_(True)
    elif cfg.train == "lora":
        from peft import LoraConfig, get_peft_model

        lora = dict(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                    task_type="CAUSAL_LM")
        model = get_peft_model(model, LoraConfig(**lora))
    mask = MaskRamp(model, ramp) if ramp is not None else None  # after LoRA wraps the projections
    model = prepare_model(model, cfg.speed())  # kernels, float8, compile: again for every grown model
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
        if warning:
            log.warning(warning)
    if mask is not None:
        what = " and ".join(w for w, on in (("new layers", mask.layers), ("new units", mask.width)) if on)
        log.info(f"MSG mask ramp: the {what} are scaled by c = 0 -> 1 over the first "
                 f"{counted(ramp_length(mask), 'step')}" + (f" of stage {stage}" if stage else ""))
    return mask


def make_optimizer(model, cfg: TrainConfig, accelerator, lr: float):
    """Fresh AdamW (the paper: optimizer state does not survive growth); no weight decay on norms and biases."""
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for _, p in named if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0},
    ]
    ds_plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if ds_plugin is not None:  # no dataloader is prepared: tell DeepSpeed the micro-batch size
        ds_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
        ds_plugin.deepspeed_config["gradient_clipping"] = cfg.grad_clip
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(cfg.beta1, cfg.beta2),
                             eps=1e-8, fused=accelerator.device.type == "cuda" or None)


def describe_run(setup: Setup, source, info: ModelInfo, data, schedule: Schedule, accelerator,
                 plan: StagePlan) -> dict[str, Any]:
    """run.json (and every checkpoint's hfgrow_state.json): the run's settings, with no path of this machine.

    ``model`` is a Hub id or a folder name (it reaches the card); ``model_spec`` is what to open again to
    export: a Hub id, or for a local folder its path relative to the run folder (``model_folder`` true), so
    the run and its model can move together. Local data are recorded relative to the run folder too;
    ``data_parts`` names the domain of a token folder each data name reads."""
    from hfgrow.growth.recipe import SourceRef

    cfg = setup.cfg
    ref = SourceRef.from_source(source)
    local = Path(cfg.model).expanduser().is_dir()
    here = Path(cfg.output_dir).expanduser().resolve()

    def relative(spec: str) -> str:
        path = Path(spec).expanduser()
        return os.path.relpath(path.resolve(), here) if not spec.startswith("hf:") and path.exists() else spec

    return {
        "model": ref.display, "model_source": ref.to_dict(),
        "model_spec": relative(cfg.model) if local else cfg.model, "model_folder": local,
        "model_revision": None if local else source.commit,
        "base_model_id": cfg.base_model_id or ref.repo_id,
        "train": cfg.train, "lora": info.lora, "n_params": plan.final_params if cfg.grow else info.n_params,
        "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "world_size": accelerator.num_processes,
        "tokens_per_step": cfg.tokens_per_step, "max_steps": schedule.max_steps, "max_lr": schedule.max_lr,
        "min_lr": schedule.min_lr, "warmup_steps": schedule.warmup, "weight_decay": cfg.weight_decay,
        "betas": [cfg.beta1, cfg.beta2], "grad_clip": cfg.grad_clip, "seed": cfg.seed,
        "data": {d.name: relative(d.spec) for d in data.specs}, "mixture": data.weights,
        "data_parts": {d.name: d.part for d in [*data.specs, *setup.eval_specs] if d.part is not None},
        "mixture_file": Path(cfg.mixture).name if cfg.mixture else None,
        "eval_data": {d.name: relative(d.spec) for d in setup.eval_specs}, "export_dtype": info.export_dtype,
        "use_cache": info.use_cache, "new_layers": setup.new_layers,
        "mask": setup.mask.to_dict() if info.mask is not None else None,
        "mixed_precision": accelerator.mixed_precision, "distributed_type": str(accelerator.distributed_type),
        "random_init": not setup.has_weights, "stages": plan.to_list(),  # stage 0 too: its active parameters
        "grow_optimizer": cfg.grow_optimizer if cfg.grow else None,
        "grow_warmup_steps": cfg.grow_warmup_steps if cfg.grow else None,
        "speed": cfg.speed().to_dict(),
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
    stage = setup.resume_state.stage
    before = (setup.resume_state.run.get("stages") or [])[1 : stage + 1]
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
    step = state.step
    if step > schedule.max_steps:
        raise HfgrowError(f"checkpoint {setup.resume_from} is at step {step}, past --max-steps {schedule.max_steps}.")
    checkpoints.load(accelerator, setup.resume_from)
    data.train.load_state_dict(state.data)
    changed = [k for k in ("seq_len", "tokens_per_step", "data", "seed", "train") if k in state.run
               and state.run[k] != run_info[k]]
    if changed:
        log.warning(f"resuming with a different {', '.join(changed)} than {setup.resume_from} was trained with.")
    return step


# ---------------------------------------------------------------------------------------------
# Training, evaluation, console
# ---------------------------------------------------------------------------------------------


class Trainer:
    """One optimizer step at a time: every process trains on its slice of the same global batch."""

    def __init__(self, accelerator, model, optimizer, data, schedule: Schedule, cfg: TrainConfig, mask=None,
                 stage: int = 0, stage_start: int = 0):
        self.accelerator, self.data, self.schedule = accelerator, data, schedule
        self.swap(model, optimizer, mask, stage, stage_start)
        self.grad_accum, self.grad_clip = cfg.grad_accum, cfg.grad_clip
        self.global_micro, self.tokens_per_step = cfg.global_batch, cfg.tokens_per_step
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
    """What the main process shows while training: a progress bar with the training loss (off with --quiet),
    one line per evaluation on stdout, and the run's status lines written above the bar."""

    def __init__(self, main: bool, total: int, initial: int):
        self.main = main
        self.bar = progress(total=total, initial=initial, desc="train", leave=True)  # disabled off the main process

    def __enter__(self) -> Console:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def step(self, record: dict[str, Any]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                             tok_s=f"{record['tokens_per_s']:,.0f}")

    def eval(self, record: dict[str, Any]) -> None:
        if self.main:
            domains = "  ".join(f"{name} {loss:.4f}" for name, loss in record["losses"].items())
            self.bar.write(f"eval step {record['step']} ({record['tokens']:,} tokens): {domains}  "
                           f"mean {record['eval_loss']:.4f}", file=sys.stdout)

    def say(self, message: str) -> None:
        log.info(message)  # above the bar; not with --quiet, not off the main process


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


def grow(run: Run, stage: Stage, state: RunState) -> dict[str, Any]:
    """The growth point before ``stage``: write the model as ``stage-K/``, grow it into ``grown-K+1/`` with the
    growth pipeline, load it, build AdamW again (``--grow-optimizer``), and hand both to the trainer.

    ``state`` is what a checkpoint at this step would record (the card of ``stage-K/`` tells it). Under FSDP2
    the full weights and optimizer state are gathered onto the main process (torch's distributed
    state-dict API, through accelerate). One process per disk that holds the run folder writes and grows (every
    node whose ``--output-dir`` is a disk of its own: :func:`~hfgrow.train.growth.write_on_each_disk`); every
    process then loads its node's grown folder and ``accelerator.prepare`` shards it again. Returns the growth
    record for log.jsonl.
    """
    from hfgrow.growth.recipe import Recipe
    from hfgrow.growth.registry import describe
    from hfgrow.train.growth import full_optimizer_state, grown_folder, stage_folder, write_on_each_disk

    accelerator, trainer, cfg = run.accelerator, run.trainer, run.cfg
    small, grown = stage_folder(run.out, stage.index - 1), grown_folder(run.out, stage.index)
    weights = accelerator.get_state_dict(trainer.model)  # the full weights, on the main process (DDP: on all)
    moments = (full_optimizer_state(trainer.model, trainer.optimizer, accelerator.num_processes > 1)
               if cfg.grow_optimizer == "carry" else None)
    write_on_each_disk(accelerator, run.out, partial(_write_and_grow, run, stage, small, grown), weights,
                       partial(_stage_card, run, small, state))
    del weights  # the small model's full copy on the main process
    if run.info.mask is not None:
        run.info.mask.remove()
    accelerator.free_memory()  # the old model and optimizer leave accelerate's lists: checkpoints hold the new ones
    trainer.model = trainer.optimizer = None
    recipe = Recipe.read(grown)
    model, info = load_model(cfg, run.setup, grown,
                             stage_ramp(run.setup, recipe, stage.index, trainer.schedule.max_steps - stage.start_step))
    info.export_dtype, info.use_cache = run.info.export_dtype, run.info.use_cache  # the run's model's, not stage-K's
    model, optimizer = _prepare_grown(accelerator, model, make_optimizer(model, cfg, accelerator,
                                                                         trainer.schedule.max_lr))
    unmatched = _carry_optimizer(accelerator, model, optimizer, moments, recipe) if moments is not None else None
    layers_before = run.plan.stages[stage.index - 1].layers
    trainer.swap(model, optimizer, info.mask, stage.index, stage.start_step)
    run.folder, run.info = grown, info
    record = {"step": stage.start_step, "tokens": stage.start_step * cfg.tokens_per_step, "stage": stage.index,
              "op": stage.growth.op, "factor": stage.growth.factor, "operator": describe(recipe.operation),
              "layers_before": layers_before, "layers_after": len(recipe.layer_map or []) or layers_before,
              "params_after": info.n_params, "optimizer": cfg.grow_optimizer,
              "small_folder": small.name, "grown_folder": grown.name}
    if unmatched is not None:
        record["carry_unmatched"] = unmatched
    return record


def _write_and_grow(run: Run, stage: Stage, small: Path, grown: Path, weights: dict, readme: str) -> None:
    """On each disk's writer: the weights as trained (float32: the grown stage is made from them; final/ gets the
    model's dtype) into ``small`` with its card, then the growth pipeline every ``hfgrow stack``/``grow`` uses
    from ``small`` into ``grown``."""
    import torch
    from transformers import AutoConfig

    from hfgrow.growth.pipeline import WriteOptions, grow_model
    from hfgrow.train.export import write_model_folder
    from hfgrow.train.growth import grow_spec

    cfg = run.cfg
    write_model_folder(weights, small, config=AutoConfig.from_pretrained(run.folder), carry_from=run.folder,
                       dtype=torch.float32, use_cache=run.info.use_cache, readme=readme)
    spec = grow_spec(stage.growth.op, stage.growth.factor, cfg.seed, cfg.grow_style, cfg.grow_top_k)
    grow_model(str(small), grown, spec, WriteOptions(quiet=True, overwrite=True))


def _stage_card(run: Run, small: Path, state: RunState) -> str:
    """The card of ``stage-K/`` (made on the main process: it reads the run log, which only that process writes)."""
    from transformers import AutoConfig

    from hfgrow.train.export import card_text

    return card_text(small, state, run.folder, AutoConfig.from_pretrained(run.folder), small.name, None)


def _prepare_grown(accelerator, model, optimizer):
    """``accelerator.prepare`` for a grown model: FSDP wraps the grown model's own blocks (an upcycled model's are
    MoE blocks) unless the launcher named the classes to wrap."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is not None and not os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"):
        plugin.transformer_cls_names_to_wrap = None
    return accelerator.prepare(model, optimizer)


def _carry_optimizer(accelerator, model, optimizer, moments: dict, recipe) -> list[str]:
    """``--grow-optimizer carry``: AdamW's moments of the small model through the grown recipe's layer map (an
    upcycled model: each expert its MLP's, the router fresh); returns the grown parameters that had no source."""
    from hfgrow.arch.layout import decoder_blocks
    from hfgrow.growth.registry import get as get_operator
    from hfgrow.train.growth import carry_moments, carry_upcycled, full_optimizer_state, load_optimizer_state

    distributed = accelerator.num_processes > 1
    template = full_optimizer_state(model, optimizer, distributed)
    unmatched: list[str] = []
    if accelerator.is_main_process and recipe.operation.experts:
        template["state"], unmatched = carry_upcycled(moments["state"], template["state"], recipe.operation.experts)
    elif accelerator.is_main_process:
        prefix = decoder_blocks(accelerator.unwrap_model(model), len(recipe.layer_map))[0] + "."
        zeroed = set() if get_operator(recipe.operation.op).carry_new_layers else set(recipe.new_layers)
        template["state"], unmatched = carry_moments(moments["state"], template["state"], prefix=prefix,
                                                     layer_map=recipe.layer_map, zeroed=zeroed)
    load_optimizer_state(model, optimizer, template, distributed)
    return unmatched


# ---------------------------------------------------------------------------------------------
# The run: start, train, finish
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A run being trained: what :func:`start` built, and what changes as it goes (the folder and model of the
    current stage, the last losses, the last checkpoint)."""

    cfg: TrainConfig  # the run's settings, its sequence length filled in
    setup: Setup
    source: Any  # the resolved --model (hfgrow.io.source.Source)
    accelerator: Any
    data: Any  # hfgrow.data.loading.Data: the training stream and the held-out sequences
    plan: StagePlan
    trainer: Trainer
    evaluator: Evaluator
    info: ModelInfo
    folder: Path  # the model folder the current stage started from
    run_info: dict[str, Any]  # run.json
    start_step: int  # 0, or the step of the checkpoint resumed from
    last_checkpoint: Path | None = None
    last_loss: float | None = None
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
    last_eval_step: int | None = None

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)

    def state(self, step: int, *, data: bool = True) -> RunState:
        """What a checkpoint after ``step`` steps records (``data``: with the data position)."""
        return RunState(step=step, tokens=step * self.cfg.tokens_per_step, run=self.run_info,
                        stage=self.trainer.stage, data=self.data.train.state_dict() if data else None,
                        last_loss=self.last_loss, last_eval=self.last_eval, last_eval_step=self.last_eval_step)


def start(cfg: TrainConfig, source) -> Run:
    """Set the run up: input checks, processes, data, stages, the model of the stage to start in, AdamW, the LR
    schedule, and the checkpoint to resume from."""
    from accelerate.utils import set_seed

    from hfgrow.arch.layout import read_config
    from hfgrow.data.loading import build_data
    from hfgrow.growth.recipe import Recipe
    from hfgrow.train.growth import grown_folder

    setup = preflight(cfg, source)
    cfg = setup.cfg
    accelerator = _accelerator(cfg)
    set_seed(cfg.seed)
    data = build_data(setup.specs, setup.tokenizer, cfg.seq_len, seed=cfg.seed, eval_sequences=cfg.eval_sequences,
                      eval_domains=setup.eval_specs, mixture=cfg.mixture, text_field=cfg.text_field)
    plan = cfg.stage_plan(read_config(source.path))
    stage = resume_stage(setup, plan, Path(cfg.output_dir))
    folder = grown_folder(Path(cfg.output_dir), stage) if stage else source.path
    _say_start(setup, plan, stage)
    ramp = stage_ramp(setup, Recipe.read(folder) if stage else setup.recipe, stage,
                      cfg.steps - plan.stages[stage].start_step)
    model, info = load_model(cfg, setup, folder, ramp, random_init=not setup.has_weights and not stage)
    schedule = cfg.schedule(plan.final_params if cfg.grow else info.n_params, plan)
    if not setup.resume_from:
        log.info(describe_warmup(schedule.warmup, schedule.max_steps, given=cfg.warmup_steps is not None))
    model, optimizer = accelerator.prepare(model, make_optimizer(model, cfg, accelerator, schedule.max_lr))
    trainer = Trainer(accelerator, model, optimizer, data.train, schedule, cfg, info.mask, stage=stage,
                      stage_start=plan.stages[stage].start_step)
    del model, optimizer  # the trainer holds the current ones (a growth replaces them)
    run_info = describe_run(setup, source, info, data, schedule, accelerator, plan)
    step = resume(accelerator, setup, data, schedule, run_info)
    if cfg.resume and setup.resume_from is None:
        log.info(f"--resume: no complete checkpoint in {cfg.output_dir}; starting from the beginning.")
    if cfg.trackers:
        accelerator.init_trackers("hfgrow", config={k: v for k, v in run_info.items()
                                                    if isinstance(v, (int, float, str, bool))})
    resumed = setup.resume_state or RunState(0, 0, {})
    return Run(cfg, setup, source, accelerator, data, plan, trainer, Evaluator(accelerator, data.eval, cfg.batch_size),
               info, folder, run_info, step, last_checkpoint=setup.resume_from, last_loss=resumed.last_loss,
               last_eval=resumed.last_eval, last_eval_step=resumed.last_eval_step)


def _accelerator(cfg: TrainConfig):
    """The processes: accelerate's Accelerator (gloo on CPU-only machines; FSDP2 on CPU when asked)."""
    from accelerate import Accelerator

    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum, log_with=cfg.trackers or None,
                              project_dir=str(cfg.output_dir), cpu=_cpu_only_multiprocess())
    _fsdp2_on_cpu(accelerator)
    if accelerator.num_processes != cfg.world_size:  # the launcher's WORLD_SIZE sized the batch and the steps
        raise HfgrowError(f"the run was configured for {cfg.world_size} processes but accelerate started "
                          f"{accelerator.num_processes}; build the config with world_size={accelerator.num_processes}.")
    return accelerator


def _say_start(setup: Setup, plan: StagePlan, stage: int) -> None:
    cfg = setup.cfg
    log.info(f"speed: {cfg.speed().describe()}")
    for note in plan.notes:
        log.info(note)
    if not setup.has_weights and not stage:
        log.info(f"{cfg.model} has no weights: the run starts from {setup.config.model_type}'s own random "
                 f"initialisation (seed {cfg.seed}).")


def train(run: Run, runlog: RunLog, console: Console) -> None:
    """Evaluate the model as it starts (the growth's effect), then step by step: grow where a stage begins, train,
    log, evaluate, checkpoint."""
    cfg, trainer, last = run.cfg, run.trainer, run.trainer.schedule.max_steps
    if run.start_step == 0 and run.evaluator:
        n_eval = sum(len(seqs) for seqs in run.data.eval.values())
        console.say(f"evaluating the model before training: {n_eval:,} held-out sequences of {cfg.seq_len:,} tokens "
                    f"({', '.join(run.data.eval)})")
        evaluate(run, runlog, console, 0)
    for step in range(run.start_step, last):
        stage = run.plan.growth_before(step, trainer.stage)
        if stage is not None:
            grow_at(run, stage, runlog, console)
        record = trainer.step(step)
        runlog.train(record)
        console.step(record)
        done, run.last_loss = record["step"], record["loss"]
        if run.evaluator and (done % cfg.eval_steps == 0 or done == last):
            evaluate(run, runlog, console, done)
        if done % cfg.save_steps == 0 or done == last:
            run.last_checkpoint = checkpoints.save(run.accelerator, run.out, run.state(done), keep=cfg.save_total_limit)
        checkpoints.debug_kill("HFGROW_DEBUG_KILL_AT_STEP", done)


def evaluate(run: Run, runlog: RunLog, console: Console, step: int) -> None:
    """Held-out losses of the model after ``step`` steps: logged, shown, kept for the next checkpoint."""
    run.last_eval, run.last_eval_step = run.evaluator(run.trainer.model), step
    console.eval(runlog.eval(step, step * run.cfg.tokens_per_step, run.last_eval, run.data.weights,
                             run.trainer.stage))


def grow_at(run: Run, stage: Stage, runlog: RunLog, console: Console) -> None:
    """The growth before ``stage``: the model as it was grown on the curve, the growth, the grown model's
    held-out loss, one log record and one line."""
    step = stage.start_step
    if run.evaluator and run.last_eval_step != step:
        evaluate(run, runlog, console, step)
    record = grow(run, stage, run.state(step, data=False))
    if run.evaluator:
        after = run.evaluator(run.trainer.model)
        record.update(losses_after=after, eval_loss_after=sum(after.values()) / len(after))
    runlog.growth(record)
    console.say(f"growth at step {step:,} ({record['tokens']:,} tokens): {record['layers_before']} → "
                f"{record['layers_after']} layers ({record['operator']}), AdamW {run.cfg.grow_optimizer}"
                + (f", held-out loss {record['eval_loss_after']:.4f}" if run.evaluator else "")
                + f"; the model it grew from is {run.out / record['small_folder']}")


def finish(run: Run) -> Path | None:
    """After the last step: each process's sample of what it trained on, the trackers closed, the MSG hooks
    removed, and final/ exported (or, with --no-export, where the run ends). Returns final/ on the main process."""
    from hfgrow.train.export import export_checkpoint, push

    cfg, accelerator = run.cfg, run.accelerator
    run.trainer.write_sample(run.out / "ranks")
    if cfg.trackers:
        accelerator.end_training()
    mask = run.info.mask
    if mask is not None:
        if mask.active:
            log.warning(f"training stopped at step {run.trainer.schedule.max_steps}, before the MSG mask ramp reached "
                        f"1 (step {run.trainer.stage_start + mask.steps}); the exported model uses the new "
                        "layers/units at full strength.")
        mask.remove()
    final = None
    if cfg.no_export:
        log.info(f"--no-export: the run ends with {run.last_checkpoint}; `hfgrow export {run.last_checkpoint} OUT` "
                 "writes the model folder.")
    elif accelerator.is_main_process:
        name = cfg.push_to.split("/")[-1] if cfg.push_to else run.out.resolve().name
        final = export_checkpoint(run.last_checkpoint, run.out / "final", replace=True,
                                  max_shard_size=cfg.max_shard_size, base=run.source, model_name=name)
        log.info(f"exported {final}")
        if cfg.push_to:
            push(final, cfg.push_to)
    accelerator.wait_for_everyone()
    return final


def run(cfg: TrainConfig) -> Path | None:
    """Train as ``cfg`` says; return final/ (None with --no-export, and on every process but the main one)."""
    from hfgrow.io.source import open_source

    with open_source(cfg.model, progress=_rank() == 0) as source:
        current = start(cfg, source)
        with RunLog(current.out, resume_step=current.start_step if current.setup.resume_from else None,
                    resume_stage=current.trainer.stage, write=current.accelerator.is_main_process,
                    trackers=current.accelerator if current.cfg.trackers else None) as runlog, \
                Console(current.accelerator.is_main_process, current.trainer.schedule.max_steps,
                        current.start_step) as console:
            runlog.start(current.run_info)
            train(current, runlog, console)
        return finish(current)


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
    from hfgrow.console import configure
    from hfgrow.io.output import Terminated, stop_on_signals
    from hfgrow.train.config import build_parser

    args = build_parser().parse_args(argv)  # a bad option: one line, exit 2
    configure(-1 if args.quiet else 1 if args.verbose else 0)  # off the main process: errors only
    parent = os.environ.get(PARENT_ENV)
    if parent and parent.isdigit():
        _watch_parent(int(parent))
    try:
        with stop_on_signals():  # SIGTERM (what schedulers send) stops like Ctrl-C; a second signal is ignored
            run(TrainConfig.from_argv(argv))
    except HfgrowError as exc:
        if _speaks_for_its_node():  # every process of a node fails the same way: said once per node
            log.error(f"error: {exc}")
        return 1
    except KeyboardInterrupt as exc:
        name = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        if _speaks_for_its_node():
            log.error(f"stopped by {name}; every complete checkpoint in {args.output_dir} is intact (rerun with "
                      "--resume to continue from the latest).")
        return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
    return 0
