"""Every cheap check of a training run's inputs, before any process group or tokenizing: :func:`preflight`.

The options themselves are :class:`~hfgrow.train.config.TrainConfig` (which checks its numbers when built).
:func:`preflight` checks what needs the model and the disk: the model folder, its recipe and tokenizer, the
data, the mixture, trackers, the output folder and the checkpoint to resume from, and raises one
:class:`HfgrowError` sentence per problem; ``hfgrow train`` runs it before launching any process and every
training process runs it first. It also owns the MSG ramp length a run uses (:func:`fit_ramp`).

Example:
    >>> cfg = TrainConfig.from_argv(["--model", "grown", "--data", "web.jsonl", "--output-dir", "run",
    ...                              "--max-tokens", "2B"])
    >>> with open_source(cfg.model) as source:
    ...     setup = preflight(cfg, source)
    >>> setup.cfg.seq_len, setup.new_layers
    (2048, [4, 5, 6, 7])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfgrow.errors import HfgrowError
from hfgrow.growth.recipe import RAMP_FRACTION, Mask, Recipe
from hfgrow.train.config import TrainConfig

if TYPE_CHECKING:
    from hfgrow.train.checkpoints import RunState


@dataclass
class Setup:
    """What preflight found: the model's config, tokenizer and recipe, the data, where to resume from."""

    cfg: TrainConfig  # the run's config, its sequence length filled in for this model (TrainConfig.for_model)
    config: Any  # the model's transformers config
    tokenizer: Any
    recipe: Recipe | None
    specs: list = field(default_factory=list)
    eval_specs: list = field(default_factory=list)
    resume_from: Path | None = None
    resume_state: RunState | None = None
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
        return fitted, f"{where}; resume with --max-steps {end} or more to finish it."
    shorter = f"--mask-steps {run_steps // stages} or less, " if run_steps // stages >= 1 and resumed is None else ""
    raise HfgrowError(f"{where}, so final/ would use new structure at a strength it was never trained at; give "
                      f"{shorter}a larger --max-steps, or --no-export to go on later.")


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


def preflight(cfg: TrainConfig, source) -> Setup:
    """Every cheap input check (no tokenizing, no process group): one clear HfgrowError each.

    ``source`` is the resolved ``--model`` (:func:`hfgrow.io.source.open_source`): config, tokenizer, recipe
    and, later, weights all come from that one folder. The returned ``setup.cfg`` is ``cfg`` with the
    sequence length filled in for this model.
    """
    from transformers import AutoConfig

    from hfgrow.arch.layout import context_length

    cfg.speed()  # --kernels liger / --float8 this machine cannot run: refused before the data is read
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise HfgrowError(f"--output-dir {out} is a file; give a folder.")
    model_root, run_root = Path(source.path).resolve(), out.resolve()
    if run_root == model_root or model_root in run_root.parents:
        raise HfgrowError(f"--output-dir {out} is the model folder {cfg.model} or inside it; checkpoints "
                          "and final/ would mix with the model's files: give the run its own folder.")
    try:
        config = AutoConfig.from_pretrained(source.path)
    except Exception as exc:  # noqa: BLE001 - bad or unknown config
        raise HfgrowError(f"cannot load model {cfg.model!r}: {str(exc).splitlines()[0]}") from None
    cfg = cfg.for_model(context_length(config))
    recipe = Recipe.read(source.path)
    weights = has_weights(source.path)
    _check_training_mode(cfg, recipe, weights)
    specs, eval_specs = _check_data(cfg)
    _check_trackers(cfg.trackers)
    tokenizer = _load_tokenizer(source.path, cfg.model, config)
    resume_from, resume_state = _checkpoint_to_resume(cfg, out)
    ramp = _fit_run_ramp(cfg, recipe, resume_state)
    return Setup(cfg=cfg, config=config, tokenizer=tokenizer, recipe=recipe, specs=specs, eval_specs=eval_specs,
                 resume_from=resume_from, resume_state=resume_state, has_weights=weights,
                 ramp=ramp)


def _check_training_mode(cfg: TrainConfig, recipe: Recipe | None, weights: bool) -> None:
    """--train new/lora against what the model folder holds."""
    if not weights and cfg.train != "all":
        raise HfgrowError(f"{cfg.model} has no weights (config and tokenizer only), so it starts from random "
                          f"initialisation and --train {cfg.train} would leave most of it random; use --train all.")
    if cfg.train == "new" and not (recipe and recipe.new_layers):
        raise HfgrowError(
            f"this model has no recorded new layers (no new_layers in the hfgrow.yaml of {cfg.model}), so "
            "--train new has nothing to train; use --train all or lora."
        )


def _check_data(cfg: TrainConfig) -> tuple[list, list]:
    """The training and eval data specs, each domain opened once (missing files, empty folders, no
    ``datasets``), and the mixture against the domains."""
    from hfgrow.data.mixture import read_mixture
    from hfgrow.data.specs import open_domain, parse_specs

    specs = parse_specs(list(cfg.data))
    if not specs:
        raise HfgrowError("no training data: give at least one --data PATH or NAME=PATH.")
    eval_specs = parse_specs(list(cfg.eval_data)) if cfg.eval_data else []
    for spec in specs + eval_specs:
        open_domain(spec, cfg.text_field)
    if cfg.mixture:
        read_mixture(cfg.mixture, [d.name for d in specs])
    return specs, eval_specs


def _checkpoint_to_resume(cfg: TrainConfig, out: Path) -> tuple[Path | None, RunState | None]:
    """The newest complete checkpoint with --resume (and its state), refusing to train over checkpoints without
    it."""
    from hfgrow.train.checkpoints import latest_complete, list_checkpoints, read_state

    if list_checkpoints(out) and not cfg.resume:
        raise HfgrowError(f"{out} already has checkpoints; pass --resume to continue that run or pick another "
                          "--output-dir.")
    latest = latest_complete(out) if cfg.resume else None
    return (latest.path, read_state(latest.path)) if latest is not None else (None, None)


def _fit_run_ramp(cfg: TrainConfig, recipe: Recipe | None, resume_state: RunState | None) -> Mask | None:
    """:func:`fit_ramp` for this run (its steps as the loop counts them, the ramp length a resumed run started
    with); the warning shown once, by the main process."""
    from hfgrow.console import log

    started = (resume_state.run.get("mask") if resume_state else None) or {}
    ramp, warning = fit_ramp(recorded_mask(recipe), cfg.steps, asked=cfg.mask_steps, resumed=started.get("steps"),
                             exports=not cfg.no_export)
    if warning:
        log.warning(warning)
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
