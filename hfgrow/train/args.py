"""The training command's options and every cheap check of them, before any process group or tokenizing.

:func:`build_parser` is the one definition of ``hfgrow.continue``'s options (``hfgrow train`` shows and
forwards the same); importing this module imports neither torch nor transformers, so ``--help`` is
fast. :func:`preflight` checks everything that can be checked cheaply (numbers, the model folder, its
recipe and tokenizer, the data, the mixture, trackers, the output folder) and raises one
:class:`HfgrowError` sentence per problem; ``hfgrow train`` runs it before launching any process and
every training process runs it first.

Example:
    >>> args = build_parser().parse_args(["--model", "grown", "--data", "web.jsonl", "--output-dir", "run",
    ...                                   "--max-tokens", "2B"])
    >>> args.max_tokens
    2000000000
    >>> with open_source(args.model) as source:
    ...     setup = preflight(args, source)
    >>> setup.seq_len, setup.new_layers
    (2048, [4, 5, 6, 7])
"""

from __future__ import annotations

import argparse
import math
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.growth.recipe import RAMP_FRACTION, Mask, Recipe
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


def build_parser() -> argparse.ArgumentParser:
    """The options of ``hfgrow.continue`` (and of ``hfgrow train``, which forwards them)."""
    p = _Parser(
        prog="hfgrow.continue",
        description="Continued pre-training of a (grown) causal LM with accelerate: fresh AdamW, warmup + cosine\n"
                    "to 10% of the max LR, the MSG mask ramp of the model's recipe, resumable checkpoints.",
        epilog=EXAMPLES,
        formatter_class=_HelpFormatter,
    )
    a = p.add_argument
    a("--model", required=True, help="the model to train: a folder or a Hub repo id (its recipe, hfgrow.yaml, "
                                      "says which layers are new); a folder with config.json and tokenizer but no "
                                      "weights starts from the architecture's random initialisation")
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
    a("--max-tokens", type=_token_count, metavar="N",
      help="training tokens, e.g. 2B, 500M or 2e9 (alternative to --max-steps)")
    a("--lr", type=float, help="max LR (default: by model size, 6e-4 at <=410M params down to 1e-4 at >=7B)")
    a("--min-lr", type=float, help="final LR of the cosine (default 10%% of --lr)")
    a("--warmup-steps", type=int, help="linear warmup steps (default: 5%% of the steps, at least 100 or half the "
                                        "run when it is shorter, at most 3000; the run prints its warmup)")
    a("--weight-decay", type=float, default=0.1, help="AdamW weight decay of the matrices (not of norms or biases)")
    a("--beta1", type=float, default=0.9, help="AdamW beta1")
    a("--beta2", type=float, default=0.95, help="AdamW beta2")
    a("--grad-clip", type=float, default=1.0, help="clip the global grad norm (0: off)")
    a("--save-steps", type=int, default=1000, help="checkpoint every N steps (and at the end)")
    a("--save-total-limit", "--keep-checkpoints", dest="save_total_limit", type=int, default=2, metavar="N",
      help="keep the N newest RUN/checkpoint-* folders, deleting older ones after each save (default 2: the newest "
           "to resume from and the one before it; 0 keeps all). stage-K/ and grown-K/ are always kept")
    a("--eval-steps", type=int, default=500, help="evaluate every N steps (and before the first and after the last)")
    a("--resume", action="store_true", help="continue from the latest complete checkpoint in --output-dir")
    a("--seed", type=int, default=0, help="seed of the data order and of LoRA's initial weights")
    a("--train", choices=["all", "new", "lora"], default="all",
      help="all parameters, only the layers the grow step added, or LoRA adapters")
    a("--lora-r", type=int, default=16, help="LoRA rank (--train lora)")
    a("--lora-alpha", type=float, default=32.0, help="LoRA alpha (--train lora)")
    a("--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--compile-backend", metavar="NAME",
      help="torch.compile backend (default: torch's, inductor; eager or aot_eager to debug a compiled run)")
    a("--kernels", choices=("auto", "liger", "none"), default="auto",
      help="fused kernels: liger (Liger-Kernel: RMSNorm, RoPE, SwiGLU, fused linear cross-entropy; needs CUDA and "
           "pip install 'hfgrow[gpu]'), none, or auto (liger when CUDA and liger-kernel are present, else none; the "
           "run says which in one line). Re-applied to the model after every growth")
    a("--float8", action="store_true",
      help="float8 matmuls in every linear layer but the LM head (torchao; GPUs of compute capability 8.9+, e.g. "
           "H100); use with --compile")
    a("--grow", action="append", default=[], type=_grow, metavar="OP:FACTOR@WHEN",
      help="grow the model during the run: OP stack (Gstack), interpolate, zero or random (MSG ramp), FACTOR the "
           "layer multiple (upcycle: every MLP becomes FACTOR experts), WHEN a token count (250k, 1e7, 10B) or auto (the paper's growth-timing law for the "
           "final model and --max-tokens); repeat for several stages. RUN/stage-K/ keeps the model each growth "
           "started from, RUN/grown-K/ the grown one")
    a("--grow-optimizer", choices=OPTIMIZER_MODES, default="fresh",
      help="AdamW state at a growth: fresh (the paper) or carry (each copied block gets its source block's moments "
           "and step count; new zero/random blocks zero moments; upcycle: each expert its MLP's, the router fresh)")
    a("--grow-top-k", type=int, default=2, metavar="K",
      help="--grow upcycle:E@WHEN: experts each token is routed to (the upcycled model trains with its router's "
           "load-balancing loss, router_aux_loss_coef, and logs expert load)")
    a("--grow-style", choices=("hfgrow", "prts"), default="hfgrow",
      help="each --grow operator as hfgrow runs it or as the paper's reference code does (as `hfgrow grow --style`; "
           "e.g. random: new layers on top, the reference's init, the whole-block MSG ramp)")
    a("--grow-warmup-steps", type=int, default=0,
      help="after each growth, ramp the LR from 0 to the schedule's value over N steps (0: the global warmup + "
           "cosine continues through the growth)")
    a("--mask-steps", type=int, metavar="N",
      help="length of the MSG mask ramp (per width stage) instead of the recipe's. Default: the recipe's when "
           "`grow --mask-steps` chose it, else 10%% of the run shared by the ramp's stages (a resumed run keeps "
           "its ramp). A ramp that would end after the run is refused at the start (with --no-export: warned "
           "about)")
    a("--push-to", metavar="REPO_ID", help="push final/ to this Hub repo")
    a("--base-model-id", help="Hub id of the model trained, for the card of final/ (default: --model when it is "
                              "a Hub id; a local folder is named by its folder name)")
    a("--report-to", action="append", default=[], metavar="jsonl|tensorboard|wandb|...",
      help="trackers besides log.jsonl (always written); repeat or comma-separate")
    a("--no-export", action="store_true",
      help="end with the last checkpoint, RUN/checkpoint-N (resume it with a larger --max-steps, or write the "
           "model folder later with `hfgrow export`), and write no final/ folder")
    a("--max-shard-size", default="5GB", help="largest safetensors file of final/")
    return p


def report_to(args: argparse.Namespace) -> list[str]:
    """Trackers besides log.jsonl (which is always written) from --report-to."""
    names = [t.strip().lower() for v in args.report_to for t in v.split(",") if t.strip()]
    return [t for t in names if t not in ("jsonl", "none")]


@dataclass
class Setup:
    """What preflight found: the model's config, tokenizer and recipe, the data, where to resume from."""

    config: Any
    tokenizer: Any
    seq_len: int
    recipe: Recipe | None
    specs: list = field(default_factory=list)
    eval_specs: list = field(default_factory=list)
    resume_from: Path | None = None
    resume_state: dict[str, Any] | None = None
    trackers: list[str] = field(default_factory=list)
    has_weights: bool = True  # False: a config-only folder, the run starts from random initialisation
    ramp: Mask | None = None  # the recipe's MSG mask with its length fitted to the run (fit_ramp)

    @property
    def new_layers(self) -> list[int]:
        return list(self.recipe.new_layers) if self.recipe else []

    @property
    def mask(self) -> Mask | None:
        """The MSG mask this run ramps (its length fitted to the run by preflight), None when nothing ramps."""
        return self.ramp if self.ramp is not None else recorded_mask(self.recipe)


def recorded_mask(recipe: Recipe | None) -> Mask | None:
    """The recipe's MSG mask as grow recorded it, None when nothing ramps.

    Example:
        >>> recorded_mask(Recipe.read(Path("grown"))).layers
        (4, 5, 6, 7)
    """
    mask = recipe.operation.mask if recipe else None
    return mask if mask is not None and (mask.layers or mask.width) and (mask.steps > 0 or not mask.steps_given) \
        else None


def fit_ramp(mask: Mask | None, run_steps: int, *, asked: int | None = None, resumed: int | None = None,
             exports: bool = True) -> tuple[Mask | None, str | None]:
    """The MSG mask a run of ``run_steps`` optimizer steps ramps, and a warning to show at its start (or None).

    The ramp's length T (per width stage; S stages, :func:`hfgrow.train.msg.ramp_stages`, S = 1 without them):

    1. a resumed run keeps the T it started with (``resumed``, from its checkpoint's run settings);
    2. else ``--mask-steps`` (``asked``);
    3. else the recipe's ``steps`` when ``grow --mask-steps`` chose them (``mask.steps_given``);
    4. else (grow's default) T = max(1, ⌊RAMP_FRACTION · run_steps / S⌋): the whole ramp takes the run's
       first tenth.

    A ramp that ends after the run (:func:`hfgrow.train.msg.ramp_length` > run_steps) is refused when the run
    exports final/ (the export would use, at full strength, structure never trained at full strength) and
    warned about with ``--no-export`` (the run can go on with a larger --max-steps).

    Example:
        >>> mask, warning = fit_ramp(Mask(layers=(4, 5), steps_given=False), 450)
        >>> mask.steps, warning
        (45, None)
    """
    from hfgrow.train.msg import ramp_length, ramp_stages

    if mask is None:
        if asked is not None:
            raise HfgrowError("--mask-steps: this model's recipe has no MSG mask (no new layers or units to ramp).")
        return None, None
    stages = max(1, len(ramp_stages(mask)))
    if resumed is not None:
        if asked is not None and asked != resumed:
            raise HfgrowError(f"--mask-steps {asked} differs from the MSG ramp this run started with ({resumed} "
                              "steps), which a resumed run keeps; leave --mask-steps out.")
        steps = resumed
    elif asked is not None:
        steps = asked
    elif mask.steps_given:
        steps = mask.steps
    else:
        steps = max(1, int(RAMP_FRACTION * run_steps / stages))
    fitted = dataclasses.replace(mask, steps=steps, steps_given=True)
    end = ramp_length(fitted)
    if end <= run_steps:
        return fitted, None
    length = f"{stages} stages of {steps:,} steps" if stages > 1 and mask.width else f"{steps:,} steps"
    where = f"the MSG mask ramp ends at step {end:,} ({length}), after the run's {run_steps:,} steps"
    if not exports:
        return fitted, f"warning: {where}; resume with --max-steps {end} or more to finish it."
    shorter = f"--mask-steps {run_steps // stages} or less, " if run_steps // stages >= 1 and resumed is None else ""
    raise HfgrowError(f"{where}, so final/ would use new structure at a strength it was never trained at; give "
                      f"{shorter}a larger --max-steps, or --no-export to go on later.")


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--batch-size", args.batch_size), ("--grad-accum", args.grad_accum),
                        ("--save-steps", args.save_steps), ("--eval-steps", args.eval_steps),
                        ("--lora-r", args.lora_r)):
        if value is None or value < 1:
            raise HfgrowError(f"{flag} must be at least 1 (got {value}).")
    for flag, value in (("--lr", args.lr), ("--min-lr", args.min_lr), ("--warmup-steps", args.warmup_steps),
                        ("--weight-decay", args.weight_decay), ("--grad-clip", args.grad_clip),
                        ("--eval-sequences", args.eval_sequences), ("--save-total-limit", args.save_total_limit),
                        ("--grow-warmup-steps", args.grow_warmup_steps)):
        if value is not None and not math.isfinite(value):
            raise HfgrowError(f"{flag} must be a finite number (got {value}).")
        if value is not None and value < 0:
            raise HfgrowError(f"{flag} cannot be negative (got {value}).")
    for flag, value in (("--beta1", args.beta1), ("--beta2", args.beta2)):
        if not 0 <= value < 1:  # also false for nan
            raise HfgrowError(f"{flag} must be at least 0 and below 1 (got {value}).")
    if not math.isfinite(args.lora_alpha):
        raise HfgrowError(f"--lora-alpha must be a finite number (got {args.lora_alpha}).")
    if args.max_steps is None and args.max_tokens is None:
        raise HfgrowError("give --max-steps or --max-tokens.")
    if args.max_steps is not None and args.max_steps < 1:
        raise HfgrowError(f"--max-steps must be at least 1 (got {args.max_steps}).")
    mask_steps = getattr(args, "mask_steps", None)
    if mask_steps is not None and mask_steps < 1:
        raise HfgrowError(f"--mask-steps must be at least 1 (got {mask_steps}).")


def _check_trackers(trackers: list[str]) -> None:
    if not trackers:
        return
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    known = {str(t.value) if hasattr(t, "value") else str(t) for t in LoggerType}
    available = {str(t.value) if hasattr(t, "value") else str(t) for t in get_available_trackers()}
    for t in trackers:
        if t not in known:
            raise HfgrowError(f"--report-to {t}: unknown tracker; choose from jsonl, {', '.join(sorted(known))}.")
        if t not in available and t != "all":
            raise HfgrowError(f"--report-to {t}: its package is not installed (pip install {t}).")


def _load_tokenizer(folder: Path, model: str, config) -> Any:
    """The model's tokenizer, refused when it has ids the embedding has no row for."""
    from hfgrow.arch.layout import text_config
    from hfgrow.io.tokenizer import load_tokenizer

    rows = getattr(text_config(config), "vocab_size", None)
    return load_tokenizer(folder, rows=rows if isinstance(rows, int) else None, what=repr(model))


def preflight(args: argparse.Namespace, source) -> Setup:
    """Every cheap input check (no tokenizing, no process group): one clear HfgrowError each.

    ``source`` is the resolved ``--model`` (:func:`hfgrow.io.source.open_source`): config, tokenizer, recipe
    and, later, weights all come from that one folder.
    """
    from transformers import AutoConfig

    from hfgrow.arch.layout import context_length
    from hfgrow.data.mixture import read_mixture
    from hfgrow.data.specs import open_domain, parse_specs
    from hfgrow.train.checkpoints import latest_complete, list_checkpoints, read_state

    _check_numbers(args)
    from hfgrow.train.kernels import resolve

    resolve(args)  # --kernels liger / --float8 this machine cannot run: refused before the data is read
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise HfgrowError(f"--output-dir {out} is a file; give a folder.")
    model_root, run_root = Path(source.path).resolve(), out.resolve()
    if run_root == model_root or model_root in run_root.parents:
        raise HfgrowError(f"--output-dir {out} is the model folder {args.model} or inside it; checkpoints "
                          "and final/ would mix with the model's files: give the run its own folder.")
    try:
        config = AutoConfig.from_pretrained(source.path)
    except Exception as exc:  # noqa: BLE001 - bad or unknown config
        raise HfgrowError(f"cannot load model {args.model!r}: {str(exc).splitlines()[0]}") from None
    context = context_length(config)
    seq_len = args.seq_len or min(2048, context or 2048)
    if seq_len < 2:
        raise HfgrowError("--seq-len must be at least 2.")
    if context and seq_len > context:
        raise HfgrowError(f"--seq-len {seq_len} is larger than the model's context ({context} positions).")
    recipe = Recipe.read(source.path)
    if args.grow and args.train != "all":
        raise HfgrowError(f"--grow trains every parameter of every stage; it does not combine with --train {args.train}.")
    weights = has_weights(source.path)
    if not weights and args.train != "all":
        raise HfgrowError(f"{args.model} has no weights (config and tokenizer only), so it starts from random "
                          f"initialisation and --train {args.train} would leave most of it random; use --train all.")
    if args.train == "new" and not (recipe and recipe.new_layers):
        raise HfgrowError(
            f"this model has no recorded new layers (no new_layers in the hfgrow.yaml of {args.model}), so "
            "--train new has nothing to train; use --train all or lora."
        )
    specs = parse_specs(args.data)
    if not specs:
        raise HfgrowError("no training data: give at least one --data PATH or NAME=PATH.")
    eval_specs = parse_specs(args.eval_data) if args.eval_data else []
    for spec in specs + eval_specs:
        open_domain(spec, args.text_field)  # missing files, empty folders, missing `datasets`
    if args.mixture:
        read_mixture(args.mixture, [d.name for d in specs])
    trackers = report_to(args)
    _check_trackers(trackers)
    tokenizer = _load_tokenizer(source.path, args.model, config)

    resume_from, resume_state = None, None
    if list_checkpoints(out) and not args.resume:
        raise HfgrowError(f"{out} already has checkpoints; pass --resume to continue that run or pick another "
                          "--output-dir.")
    latest = latest_complete(out) if args.resume else None
    if latest is not None:
        resume_from, resume_state = latest.path, read_state(latest.path)
    ramp = _fit_run_ramp(args, recipe, seq_len, resume_state)
    return Setup(config=config, tokenizer=tokenizer, seq_len=seq_len, recipe=recipe, specs=specs,
                 eval_specs=eval_specs, resume_from=resume_from, resume_state=resume_state, trackers=trackers,
                 has_weights=weights, ramp=ramp)


def _fit_run_ramp(args: argparse.Namespace, recipe: Recipe | None, seq_len: int,
                  resume_state: dict[str, Any] | None) -> Mask | None:
    """:func:`fit_ramp` for this run: its steps as the loop will count them (the launcher's WORLD_SIZE
    processes), the ramp length a resumed run started with; the warning shown once, by the first process."""
    from hfgrow.train.schedule import steps_for

    world = int(os.environ.get("WORLD_SIZE", "1"))
    run_steps = steps_for(args.max_steps, args.max_tokens, args.batch_size * world * args.grad_accum * seq_len)
    started = ((resume_state or {}).get("run") or {}).get("mask") or {}
    ramp, warning = fit_ramp(recorded_mask(recipe), run_steps, asked=getattr(args, "mask_steps", None),
                             resumed=started.get("steps"), exports=not getattr(args, "no_export", False))
    if warning and int(os.environ.get("RANK", "0")) == 0:
        print(warning, file=sys.stderr)
    return ramp


def has_weights(folder: Path) -> bool:
    """Whether a model folder holds weights (a config-only folder starts a run from random initialisation).

    Raises:
        HfgrowError: weight files are there but broken (an index naming a missing shard).
    """
    from hfgrow.io import checkpoint

    if not checkpoint.has_weights(folder):
        return False
    checkpoint.weight_files(folder)
    return True
