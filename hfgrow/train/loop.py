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

Outputs in --output-dir: run.json, log.jsonl (one line per step and per eval), eval_observations.jsonl
(BiMix observation format), checkpoint-N/ (accelerate state + hfgrow_state.json), ranks/ (which
sequences each process trained on) and, unless --no-export, final/: an ordinary Hugging Face model
folder with its model card.

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
from hfgrow.train import checkpoints
from hfgrow.train.args import Setup, build_parser, preflight
from hfgrow.train.runlog import RunLog
from hfgrow.train.schedule import Schedule, steps_for


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


@dataclass
class ModelInfo:
    """What the run and the export need to know about the model besides its weights."""

    n_params: int
    use_cache: bool | None
    export_dtype: str
    lora: dict[str, Any] | None
    mask: Any  # hfgrow.train.msg.MaskRamp | None


def load_model(args: argparse.Namespace, setup: Setup, folder: Path):
    """The model to train (float32 master weights), with the parts to train selected and the MSG ramp hooked."""
    import torch
    from transformers import AutoModelForCausalLM

    from hfgrow.arch.layout import decoder_blocks
    from hfgrow.train.msg import MaskRamp

    export_dtype = str(getattr(setup.config, "dtype", None) or "float32").replace("torch.", "")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
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
    mask = MaskRamp(model, setup.mask) if setup.mask is not None else None  # after LoRA wraps the projections
    if args.compile:
        model = torch.compile(model)
    return model, ModelInfo(n_params, use_cache, export_dtype, lora, mask)


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
                 accelerator, tokens_per_step: int) -> dict[str, Any]:
    """run.json: the run's settings. ``model`` is a Hub id or a folder name (it reaches the card);
    ``model_spec`` is what to open again to resume or export (a local path stays in the run folder)."""
    from hfgrow.growth.recipe import SourceRef

    ref = SourceRef.from_source(source)
    local = Path(args.model).expanduser().is_dir()
    return {
        "model": ref.display, "model_source": ref.to_dict(),
        "model_spec": str(Path(args.model).expanduser().resolve()) if local else args.model,
        "model_revision": None if local else source.commit,
        "base_model_id": args.base_model_id or ref.repo_id,
        "train": args.train, "lora": info.lora, "n_params": info.n_params, "seq_len": setup.seq_len,
        "batch_size": args.batch_size, "grad_accum": args.grad_accum, "world_size": accelerator.num_processes,
        "tokens_per_step": tokens_per_step, "max_steps": schedule.max_steps, "max_lr": schedule.max_lr,
        "min_lr": schedule.min_lr, "warmup_steps": schedule.warmup, "weight_decay": args.weight_decay,
        "betas": [args.beta1, args.beta2], "grad_clip": args.grad_clip, "seed": args.seed,
        "data": {d.name: d.spec for d in data.specs}, "mixture": data.weights,
        "mixture_file": Path(args.mixture).name if args.mixture else None,
        "eval_data": {d.name: d.spec for d in setup.eval_specs}, "export_dtype": info.export_dtype,
        "use_cache": info.use_cache, "new_layers": setup.new_layers,
        "mask": setup.mask.to_dict() if info.mask is not None else None,
        "mixed_precision": accelerator.mixed_precision, "distributed_type": str(accelerator.distributed_type),
    }


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
                 seq_len: int, mask=None):
        self.accelerator, self.model, self.optimizer, self.data = accelerator, model, optimizer, data
        self.schedule, self.mask = schedule, mask
        self.batch_size, self.grad_accum, self.grad_clip = args.batch_size, args.grad_accum, args.grad_clip
        self.global_micro = args.batch_size * accelerator.num_processes
        self.tokens_per_step = self.global_micro * args.grad_accum * seq_len
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.sequences = 0
        self.sample: list[int] = []  # ids of the first global sequences this process trained on

    def step(self, step: int) -> dict[str, Any]:
        """Train optimizer step ``step`` (0-based); return its log record."""
        import torch

        t0 = time.perf_counter()
        lr = self.schedule.lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        mask_c = self.mask.set_step(step) if self.mask is not None and self.mask.active else None
        rank, device = self.accelerator.process_index, self.accelerator.device
        loss_sum = torch.zeros((), device=device)
        grad_norm = None
        for _ in range(self.grad_accum):
            batch = self.data.next_batch(self.global_micro, rank, self.accelerator.num_processes)  # this rank's part
            self.sequences += len(batch)
            if len(self.sample) < 4096:
                self.sample.extend(i for i, _, _ in batch)
            ids = torch.tensor([seq for _, _, seq in batch], dtype=torch.long, device=device)
            with self.accelerator.accumulate(self.model):
                loss = self.model(input_ids=ids, labels=ids).loss
                self.accelerator.backward(loss)
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
                  "time": time.time()}
        if mask_c is not None:
            record["mask_c"] = mask_c
        return record

    def write_sample(self, folder: Path) -> None:
        """ranks/rank-N.json: how many sequences this process trained on, and the ids of the first 4096."""
        import json

        folder.mkdir(parents=True, exist_ok=True)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        (folder / f"rank-{rank:05d}.json").write_text(json.dumps(
            {"rank": rank, "world_size": world, "sequences": self.sequences, "ids": self.sample[:4096]}) + "\n")


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
                    loss = model(input_ids=ids, labels=ids).loss.double()
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
# The run
# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> Path | None:
    """Train as ``args`` say; return final/ (None with --no-export, and on every process but the main one)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from hfgrow.data.loading import build_data
    from hfgrow.io.source import open_source
    from hfgrow.train.export import export_checkpoint, push

    out = Path(args.output_dir)
    with open_source(args.model, progress=_rank() == 0) as source:
        # --- setup: checks, processes, data, model, optimizer, schedule
        setup = preflight(args, source)
        accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, log_with=setup.trackers or None,
                                  project_dir=str(out), cpu=_cpu_only_multiprocess())
        is_main = accelerator.is_main_process
        set_seed(args.seed)
        data = build_data(setup.specs, setup.tokenizer, setup.seq_len, seed=args.seed,
                          eval_sequences=args.eval_sequences, eval_domains=setup.eval_specs, mixture=args.mixture,
                          text_field=args.text_field)
        model, info = load_model(args, setup, source.path)
        tokens_per_step = args.batch_size * accelerator.num_processes * args.grad_accum * setup.seq_len
        max_steps = steps_for(args.max_steps, args.max_tokens, tokens_per_step)
        schedule = Schedule.plan(n_params=info.n_params, max_steps=max_steps, lr=args.lr, min_lr=args.min_lr,
                                 warmup=args.warmup_steps)
        optimizer = make_optimizer(model, args, accelerator, schedule.max_lr)
        model, optimizer = accelerator.prepare(model, optimizer)
        trainer = Trainer(accelerator, model, optimizer, data.train, schedule, args, setup.seq_len, info.mask)
        evaluator = Evaluator(accelerator, data.eval, args.batch_size)
        run_info = describe_run(args, setup, source, info, data, schedule, accelerator, tokens_per_step)
        start = resume(accelerator, setup, data, schedule, run_info)
        if args.resume and setup.resume_from is None and is_main:
            print(f"--resume: no complete checkpoint in {out}; starting from the beginning.", file=sys.stderr)
        if setup.trackers:
            accelerator.init_trackers("hfgrow", config={k: v for k, v in run_info.items()
                                                        if isinstance(v, (int, float, str, bool))})

        # --- the loop: evaluate at step 0 (growth's effect), then train, evaluate, checkpoint
        last_checkpoint = setup.resume_from
        last_loss = (setup.resume_state or {}).get("last_loss")
        last_eval = (setup.resume_state or {}).get("last_eval") or {}
        with RunLog(out, resume_step=start if setup.resume_from else None, write=is_main,
                    trackers=accelerator if setup.trackers else None) as log, \
                Console(is_main, schedule.max_steps, start) as console:
            log.start(run_info)
            if start == 0 and evaluator:
                last_eval = evaluator(model)
                console.eval(log.eval(0, 0, last_eval, data.weights))
            for step in range(start, schedule.max_steps):
                record = trainer.step(step)
                log.train(record)
                console.step(record)
                done, last_loss = record["step"], record["loss"]
                if evaluator and (done % args.eval_steps == 0 or done == schedule.max_steps):
                    last_eval = evaluator(model)
                    console.eval(log.eval(done, record["tokens"], last_eval, data.weights))
                if done % args.save_steps == 0 or done == schedule.max_steps:
                    state = {"step": done, "tokens": record["tokens"], "data": data.train.state_dict(),
                             "run": run_info, "last_loss": last_loss, "last_eval": last_eval}
                    last_checkpoint = checkpoints.save(accelerator, out, done, state, keep=args.keep_checkpoints)
                checkpoints.debug_kill("HFGROW_DEBUG_KILL_AT_STEP", done)
        trainer.write_sample(out / "ranks")
        if setup.trackers:
            accelerator.end_training()
        if info.mask is not None:
            if info.mask.active and is_main:
                print(f"warning: training stopped at step {schedule.max_steps}, before the MSG mask ramp reached 1 "
                      f"(step {info.mask.steps}); the exported model uses the new layers/units at full strength.",
                      file=sys.stderr)
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


class Stop(KeyboardInterrupt):
    """SIGTERM (what schedulers send), handled like Ctrl-C: the run stops where it is and cleans up."""


def _stop_on_signal(signum: int, frame) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the cleanup
    raise Stop(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run, and return the exit code: 0, 1 (an error, said in one line), 128 + signal (stopped).

    Example:
        >>> main(["--model", "grown", "--data", "web.jsonl", "--output-dir", "run", "--max-tokens", "2B"])
        0
    """
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _stop_on_signal) if in_main_thread else None
    try:
        run(args)
    except HfgrowError as exc:
        if _rank() == 0:  # every rank fails the same way; say it once
            print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        name = "SIGTERM" if isinstance(exc, Stop) else "Ctrl-C"
        if _rank() == 0:
            print(f"stopped by {name}; every complete checkpoint in {args.output_dir} is intact (rerun with --resume "
                  "to continue from the latest).", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(exc, Stop) else signal.SIGINT)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0
