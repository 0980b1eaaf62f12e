"""A training run's settings: one typed config, :class:`TrainConfig`, and every value derived from it.

Each field is one option of ``hfgrow.continue`` (and ``hfgrow train``, which forwards them); the field's
metadata *is* the option (flag, help, argparse type), so :func:`build_parser` builds the command line from
this class and nothing else lists the options. The config is built once — :meth:`TrainConfig.from_argv`
from the command line, or ``TrainConfig(...)`` from Python, both checked by ``__post_init__`` — and owns
what the run derives from it: tokens per optimizer step, the number of steps, the growth stages and the LR
schedule. The sequence length's default depends on the model (its context), so :func:`~hfgrow.train.args.
preflight` returns the config with ``seq_len`` filled in (:meth:`TrainConfig.for_model`); the derived values
need it. Importing this module imports neither torch nor transformers, so ``--help`` is fast.

Example:
    >>> cfg = TrainConfig.from_argv(["--model", "grown", "--data", "web.jsonl", "--output-dir", "run",
    ...                              "--max-tokens", "2M", "--batch-size", "4"], world_size=2)
    >>> cfg = cfg.for_model(context=2048)
    >>> cfg.seq_len, cfg.tokens_per_step, cfg.steps
    (2048, 16384, 123)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.train.growth import OPTIMIZER_MODES, GrowArg, parse_grow
from hfgrow.units import parse_count

EXAMPLES = """\
examples:
  accelerate launch -m hfgrow.continue --model grown/ --data corpus.jsonl --output-dir run/ --max-tokens 2B
  hfgrow train --model org/grown --data web=web.jsonl --data code=hf:bigcode/the-stack-smol \\
      --mixture mix.json --output-dir run/ --seq-len 2048 --batch-size 8 --grad-accum 16 --max-tokens 2e9
  hfgrow train --model grown/ --data corpus.jsonl --output-dir run/ --max-steps 2000 --resume
  accelerate launch -m hfgrow.continue --model small-config/ --grow stack:4@10B --data tok/ --output-dir run/ \
      --max-tokens 100B      # pre-training with growth: 1/4-depth model from random init, Gstack x4 at 10B tokens
"""


def _token_count(text: str) -> int:
    """``--max-tokens``: a count such as 2B, 500M or 2e9 (:func:`hfgrow.units.parse_count`)."""
    try:
        return parse_count(text, "token count", "2B", minimum=1)
    except HfgrowError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _grow(text: str) -> GrowArg:
    """``--grow``: OP:FACTOR@WHEN (:func:`hfgrow.train.growth.parse_grow`)."""
    try:
        return parse_grow(text)
    except HfgrowError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--grow ")) from None


def option(default: Any = None, help: str = "", *flags: str, **argparse_kwargs: Any) -> Any:  # noqa: A002
    """A :class:`TrainConfig` field that is a command-line option: its flags (default ``--field-name``), help
    and the argparse settings (``type``, ``choices``, ``metavar``, ``action``, ``required``)."""
    if isinstance(default, (list, tuple)):
        return field(default=tuple(default), metadata={"flags": flags, "help": help, "argparse": argparse_kwargs})
    return field(default=default, metadata={"flags": flags, "help": help, "argparse": argparse_kwargs})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run is told. Field = option; see ``hfgrow train -h`` for the text of each."""

    # --- what to train, on what, where to
    model: str = option(None, "the model to train: a folder or a Hub repo id (its recipe, hfgrow.yaml, says which "
                              "layers are new); a folder with config.json and tokenizer but no weights starts from "
                              "the architecture's random initialisation", required=True)
    data: tuple[str, ...] = option((), "training data, repeat for several domains", action="append",
                                   metavar="[NAME=]PATH|hf:NAME[:CONFIG][:SPLIT]")
    output_dir: str = option(None, "run folder: logs, checkpoints, final/ export", required=True)
    mixture: str | None = option(None, "mixture JSON {'domains': {NAME: {'proportion': R}}} (default: equal "
                                       "weights)")
    eval_data: tuple[str, ...] = option((), "eval data; a NAME of a --data domain replaces its held-out split",
                                        action="append", metavar="[NAME=]PATH")
    eval_sequences: int = option(16, "held-out eval sequences per domain (0: no eval)", type=int)
    text_field: str = option("text", "JSONL / parquet / dataset text field")
    # --- batch and budget
    seq_len: int | None = option(None, "sequence length (default min(2048, model context))", type=int)
    batch_size: int = option(8, "sequences per device per micro-step", type=int)
    grad_accum: int = option(1, "micro-steps per optimizer step", type=int)
    max_steps: int | None = option(None, "optimizer steps", type=int)
    max_tokens: int | None = option(None, "training tokens, e.g. 2B, 500M or 2e9 (alternative to --max-steps)",
                                    type=_token_count, metavar="N")
    # --- optimizer and schedule
    lr: float | None = option(None, "max LR (default: by model size, 6e-4 at <=410M params down to 1e-4 at >=7B)",
                              type=float)
    min_lr: float | None = option(None, "final LR of the cosine (default 10%% of --lr)", type=float)
    warmup_steps: int | None = option(None, "linear warmup steps (default: 5%% of the steps, at least 100 or half "
                                            "the run when it is shorter, at most 3000; the run prints its warmup)",
                                      type=int)
    weight_decay: float = option(0.1, "AdamW weight decay of the matrices (not of norms or biases)", type=float)
    beta1: float = option(0.9, "AdamW beta1", type=float)
    beta2: float = option(0.95, "AdamW beta2", type=float)
    grad_clip: float = option(1.0, "clip the global grad norm (0: off)", type=float)
    # --- checkpoints and evaluation
    save_steps: int = option(1000, "checkpoint every N steps (and at the end)", type=int)
    save_total_limit: int = option(2, "keep the N newest RUN/checkpoint-* folders, deleting older ones after each "
                                      "save (default 2: the newest to resume from and the one before it; 0 keeps "
                                      "all). stage-K/ and grown-K/ are always kept",
                                   "--save-total-limit", "--keep-checkpoints", type=int, metavar="N")
    eval_steps: int = option(500, "evaluate every N steps (and before the first and after the last)", type=int)
    resume: bool = option(False, "continue from the latest complete checkpoint in --output-dir",
                          action="store_true")
    seed: int = option(0, "seed of the data order and of LoRA's initial weights", type=int)
    # --- what trains, and how fast
    train: str = option("all", "all parameters, only the layers the grow step added, or LoRA adapters",
                        choices=["all", "new", "lora"])
    lora_r: int = option(16, "LoRA rank (--train lora)", type=int)
    lora_alpha: float = option(32.0, "LoRA alpha (--train lora)", type=float)
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass", action="store_true")
    compile: bool = option(False, "torch.compile the model", action="store_true")
    compile_backend: str | None = option(None, "torch.compile backend (default: torch's, inductor; eager or "
                                               "aot_eager to debug a compiled run)", metavar="NAME")
    kernels: str = option("auto", "fused kernels: liger (Liger-Kernel: RMSNorm, RoPE, SwiGLU, fused linear "
                                  "cross-entropy; needs CUDA and pip install 'hfgrow[gpu]'), none, or auto (liger "
                                  "when CUDA and liger-kernel are present, else none; the run says which in one "
                                  "line). Re-applied to the model after every growth",
                          choices=("auto", "liger", "none"))
    float8: bool = option(False, "float8 matmuls in every linear layer but the LM head (torchao; GPUs of compute "
                                 "capability 8.9+, e.g. H100); use with --compile", action="store_true")
    # --- growth during the run
    grow: tuple[GrowArg, ...] = option(
        (), "grow the model during the run: OP stack (Gstack), interpolate, zero or random (MSG ramp), FACTOR the "
            "layer multiple (upcycle: every MLP becomes FACTOR experts), WHEN a token count (250k, 1e7, 10B) or auto "
            "(the paper's growth-timing law for the final model and --max-tokens); repeat for several stages. "
            "RUN/stage-K/ keeps the model each growth started from, RUN/grown-K/ the grown one",
        action="append", type=_grow, metavar="OP:FACTOR@WHEN")
    grow_optimizer: str = option("fresh", "AdamW state at a growth: fresh (the paper) or carry (each copied block "
                                          "gets its source block's moments and step count; new zero/random blocks "
                                          "zero moments; upcycle: each expert its MLP's, the router fresh)",
                                 choices=OPTIMIZER_MODES)
    grow_top_k: int = option(2, "--grow upcycle:E@WHEN: experts each token is routed to (the upcycled model trains "
                                "with its router's load-balancing loss, router_aux_loss_coef, and logs expert load)",
                             type=int, metavar="K")
    grow_style: str = option("hfgrow", "each --grow operator as hfgrow runs it or as the paper's reference code "
                                       "does (as `hfgrow grow --style`; e.g. random: new layers on top, the "
                                       "reference's init, the whole-block MSG ramp)", choices=("hfgrow", "prts"))
    grow_warmup_steps: int = option(0, "after each growth, ramp the LR from 0 to the schedule's value over N steps "
                                       "(0: the global warmup + cosine continues through the growth)", type=int)
    mask_steps: int | None = option(None, "length of the MSG mask ramp (per width stage) instead of the recipe's. "
                                          "Default: the recipe's when `grow --mask-steps` chose it, else 10%% of the "
                                          "run shared by the ramp's stages (a resumed run keeps its ramp). A ramp "
                                          "that would end after the run is refused at the start (with --no-export: "
                                          "warned about)", type=int, metavar="N")
    # --- the result
    push_to: str | None = option(None, "push final/ to this Hub repo", metavar="REPO_ID")
    base_model_id: str | None = option(None, "Hub id of the model trained, for the card of final/ (default: "
                                             "--model when it is a Hub id; a local folder is named by its folder "
                                             "name)")
    report_to: tuple[str, ...] = option((), "trackers besides log.jsonl (always written); repeat or comma-separate",
                                        action="append", metavar="jsonl|tensorboard|wandb|...")
    no_export: bool = option(False, "end with the last checkpoint, RUN/checkpoint-N (resume it with a larger "
                                    "--max-steps, or write the model folder later with `hfgrow export`), and write "
                                    "no final/ folder", action="store_true")
    max_shard_size: str = option("5GB", "largest safetensors file of final/")
    # --- what the run prints
    quiet: bool = option(False, "warnings and errors only: no progress bar, no status lines", "-q", "--quiet",
                         action="store_true")
    verbose: bool = option(False, "debug lines too", "-v", "--verbose", action="store_true")
    # --- not options: where the run is
    world_size: int = field(default=1, metadata={"derived": True})  # processes that train (one global batch)

    # ----------------------------------------------------------------------------------------------------------
    # Built once, checked once
    # ----------------------------------------------------------------------------------------------------------

    @classmethod
    def from_argv(cls, argv: list[str] | None, *, world_size: int | None = None) -> TrainConfig:
        """The config of ``hfgrow.continue ARGV`` for ``world_size`` processes (default: the launcher's
        WORLD_SIZE, 1 without a launcher). A bad option exits 2 with one line, as argparse does."""
        values = vars(build_parser().parse_args(argv))
        world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
        return cls(**values, world_size=world)

    def __post_init__(self) -> None:
        for name in ("data", "eval_data", "grow", "report_to"):  # lists from argparse or Python: kept as tuples
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        self._check()

    def _check(self) -> None:
        """Every check of the numbers alone: one HfgrowError sentence naming the option."""
        for flag, value in (("--batch-size", self.batch_size), ("--grad-accum", self.grad_accum),
                            ("--save-steps", self.save_steps), ("--eval-steps", self.eval_steps),
                            ("--lora-r", self.lora_r), ("--world-size", self.world_size)):
            if value is None or value < 1:
                raise HfgrowError(f"{flag} must be at least 1 (got {value}).")
        for flag, value in (("--lr", self.lr), ("--min-lr", self.min_lr), ("--warmup-steps", self.warmup_steps),
                            ("--weight-decay", self.weight_decay), ("--grad-clip", self.grad_clip),
                            ("--eval-sequences", self.eval_sequences), ("--save-total-limit", self.save_total_limit),
                            ("--grow-warmup-steps", self.grow_warmup_steps)):
            if value is not None and not math.isfinite(value):
                raise HfgrowError(f"{flag} must be a finite number (got {value}).")
            if value is not None and value < 0:
                raise HfgrowError(f"{flag} cannot be negative (got {value}).")
        for flag, value in (("--beta1", self.beta1), ("--beta2", self.beta2)):
            if not 0 <= value < 1:  # also false for nan
                raise HfgrowError(f"{flag} must be at least 0 and below 1 (got {value}).")
        if not math.isfinite(self.lora_alpha):
            raise HfgrowError(f"--lora-alpha must be a finite number (got {self.lora_alpha}).")
        if self.max_steps is None and self.max_tokens is None:
            raise HfgrowError("give --max-steps or --max-tokens.")
        for flag, value in (("--max-steps", self.max_steps), ("--mask-steps", self.mask_steps),
                            ("--seq-len", self.seq_len)):
            if value is not None and value < (2 if flag == "--seq-len" else 1):
                raise HfgrowError(f"{flag} must be at least {2 if flag == '--seq-len' else 1} (got {value}).")
        if self.quiet and self.verbose:
            raise HfgrowError("--quiet and --verbose contradict each other; give one.")
        if self.grow and self.train != "all":
            raise HfgrowError(f"--grow trains every parameter of every stage; it does not combine with --train "
                              f"{self.train}.")

    def for_model(self, context: int | None) -> TrainConfig:
        """This config with the sequence length the run trains at: ``--seq-len``, else min(2048, the model's
        context); refused when longer than the context.

        Raises:
            HfgrowError: ``--seq-len`` longer than the model's context.
        """
        seq_len = self.seq_len or min(2048, context or 2048)
        if context and seq_len > context:
            raise HfgrowError(f"--seq-len {seq_len} is larger than the model's context ({context} positions).")
        return dataclasses.replace(self, seq_len=seq_len)

    # ----------------------------------------------------------------------------------------------------------
    # Derived values: each computed here and nowhere else
    # ----------------------------------------------------------------------------------------------------------

    @property
    def global_batch(self) -> int:
        """Sequences per micro-step, all processes together."""
        return self.batch_size * self.world_size

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step, all processes together."""
        if self.seq_len is None:
            raise ValueError("tokens_per_step needs the sequence length: use TrainConfig.for_model first")
        return self.global_batch * self.grad_accum * self.seq_len

    @property
    def steps(self) -> int:
        """Optimizer steps of the run: ``--max-steps``, else enough to see ``--max-tokens``."""
        from hfgrow.train.schedule import steps_for

        return steps_for(self.max_steps, self.max_tokens, self.tokens_per_step)

    @property
    def verbosity(self) -> int:
        """-1 with --quiet, 1 with --verbose, else 0 (:func:`hfgrow.console.configure`)."""
        return -1 if self.quiet else 1 if self.verbose else 0

    @property
    def trackers(self) -> list[str]:
        """Trackers besides log.jsonl (which is always written), from ``--report-to``."""
        names = [t.strip().lower() for v in self.report_to for t in v.split(",") if t.strip()]
        return [t for t in names if t not in ("jsonl", "none")]

    def stage_plan(self, model_config: dict[str, Any]):
        """The run's stages (:func:`hfgrow.train.growth.plan_stages`) for the model of ``model_config``."""
        from hfgrow.train.growth import plan_stages

        return plan_stages(model_config, list(self.grow), tokens_per_step=self.tokens_per_step,
                           max_steps=self.steps, seed=self.seed, style=self.grow_style, top_k=self.grow_top_k)

    def schedule(self, n_params: int, plan):
        """The LR of every step (:class:`hfgrow.train.schedule.Schedule`): sized by ``n_params`` (the final
        stage's with --grow), re-warmed after each of ``plan``'s growths when --grow-warmup-steps says so."""
        from hfgrow.train.schedule import Schedule

        return Schedule.plan(n_params=n_params, max_steps=self.steps, lr=self.lr, min_lr=self.min_lr,
                             warmup=self.warmup_steps, rewarm=self.grow_warmup_steps,
                             growth_steps=[s.start_step for s in plan.stages[1:]])

    def speed(self):
        """Kernels, float8 and compile as this machine runs them (:func:`hfgrow.train.kernels.resolve`)."""
        from hfgrow.train.kernels import resolve

        return resolve(self)


# ---------------------------------------------------------------------------------------------------------------
# The command line, built from the fields
# ---------------------------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: X)`` only for options whose default is a real value (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default is None or default is False or default is argparse.SUPPRESS
                or default == [] or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _Parser(argparse.ArgumentParser):
    """An argument error is one line, like every other hfgrow error (not the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} ({self.prog} -h lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    """The options of ``hfgrow.continue`` (and of ``hfgrow train``, which forwards them): one per
    :class:`TrainConfig` field, in the order of the fields."""
    p = _Parser(
        prog="hfgrow.continue",
        description="Continued pre-training of a (grown) causal LM with accelerate: fresh AdamW, warmup + cosine\n"
                    "to 10% of the max LR, the MSG mask ramp of the model's recipe, resumable checkpoints.",
        epilog=EXAMPLES,
        formatter_class=_HelpFormatter,
    )
    for f in dataclasses.fields(TrainConfig):
        if f.metadata.get("derived"):
            continue
        flags = f.metadata["flags"] or ("--" + f.name.replace("_", "-"),)
        kwargs = dict(f.metadata["argparse"])
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        p.add_argument(*flags, dest=f.name, default=default, help=f.metadata["help"], **kwargs)
    return p
