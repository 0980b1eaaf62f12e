"""Growth planning: the Gstack paper's guidelines as a calculator.

Du et al., "Stacking Your Transformers" (NeurIPS 2024, arXiv 2405.15319), §4.2, fit when to grow:

    log10(d) = 0.88·log10(N) + 163.27 / log10(C) − 5.74,   C = 6·N·D

where N is the target model's parameter count, D the total training tokens, C the training compute
in FLOPs and d the number of tokens the small (base) model should be trained on before it is stacked
g times (g = 4 is the paper's recommended growth factor). :func:`make_plan` turns that into a
concrete plan: base shape, FLOPs per phase, the ``--grow`` argument of a training run that grows on
the way (``hfgrow.continue --grow stack:4@d``) and its launch command, and the ``hfgrow stack`` command
for doing the growth by hand.

Conventions (used everywhere in this module):

* **N is the total parameter count** of the target, embeddings included. The paper plugs in the
  nominal size ("7B", "70B"); Table 4 is reproduced with N = 7e9 etc. (see :func:`growth_tokens`).
  For a mixture-of-experts target N is its active count (below), so that C = 6·N·D stays its training
  compute; the law was fitted on dense models only, and the plan says so.
* **Embedding parameters** are those of every ``nn.Embedding`` module (token embeddings and learned
  position embeddings, as in Kaplan et al.) plus the output projection (LM head) when it is *not*
  tied to the input embeddings. A tied LM head shares the input embedding tensor and is counted once.
* FLOPs are the usual 6·N·tokens estimate (forward + backward), with N the parameters one token uses in
  the model being trained in that phase: all of them for a dense model; for a mixture of experts, the
  **active** parameters (every parameter outside the routed experts, plus top_k/E of the routed experts:
  a token passes through k of the E experts of each MoE layer; shared experts and routers count in full).

Example:
    >>> round(growth_tokens(7e9, 6 * 7e9 * 2e12) / 1e9, 2)
    11.11
    >>> plan = make_plan("7B", "2T")
    >>> plan.command, plan.grow_argument
    ('hfgrow stack BASE_MODEL OUT --factor 4', 'stack:4@11.11B')
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.arch.layout import hf_config_from_dict, read_config_file, text_config
from hfgrow.errors import HfgrowError
from hfgrow.units import format_count, format_flops, parse_count

__all__ = [
    "GROWTH_LAW",
    "DEFAULT_FACTOR",
    "ParamCount",
    "GrowthPlan",
    "count_params",
    "load_target_config",
    "growth_tokens",
    "valid_factors",
    "check_factor",
    "make_plan",
]

#: Coefficients of the paper's growth-timing law: log10 d = a·log10 N + b / log10 C + c.
GROWTH_LAW = {"a": 0.88, "b": 163.27, "c": -5.74}
#: The paper's recommended growth factor (optimum between 2 and 4).
DEFAULT_FACTOR = 4
#: The paper's experiments span 410M-7B parameters; below that the growth-timing law is an extrapolation far
#: outside its fit (it asks ~10^10 tokens of a 1M-parameter model).
LAW_MIN_PARAMS = 410_000_000



# --------------------------------------------------------------------------- parameter counts


@dataclass(frozen=True)
class ParamCount:
    """Parameter count of a model, split as described in the module docstring.

    ``embedding`` and ``non_embedding`` are ``None`` when only the total is known (a size string).
    ``active`` is what one token uses (FLOPs count it): ``total`` for a dense model; for a mixture of experts,
    ``total - experts + routed``, ``experts`` being the routed experts' parameters and ``routed`` the top-k share
    of them a token passes through.
    """

    embedding: int | None
    non_embedding: int | None
    total: int
    experts: int = 0
    routed: int = 0

    @property
    def active(self) -> int:
        return self.total - self.experts + self.routed

    def describe(self) -> str:
        """``"6.74B (embedding 262M, non-embedding 6.48B)"`` or just ``"7B"``; a mixture of experts adds its
        active count (``"46.7B (...; 12.9B active per token)"``)."""
        if self.embedding is None or self.non_embedding is None:
            return format_count(self.total)
        active = f"; {format_count(self.active)} active per token" if self.experts else ""
        return (
            f"{format_count(self.total)} (embedding {format_count(self.embedding)}, "
            f"non-embedding {format_count(self.non_embedding)}{active})"
        )


def count_params(config: Any) -> ParamCount:
    """Count the parameters a causal LM built from ``config`` has, without allocating weights.

    The model is instantiated on PyTorch's ``meta`` device (shapes only), so this is fast even for
    70B configurations. Works for any architecture ``AutoModelForCausalLM`` knows.

    Embedding parameters: all ``nn.Embedding`` modules plus an untied output embedding (LM head,
    with its bias if any). Tied weights are counted once.

    Raises:
        HfgrowError: the config is not a causal LM transformers can build.
    """
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        model_type = getattr(config, "model_type", "?")
        raise HfgrowError(
            f"cannot build a causal LM from a '{model_type}' config: {str(exc).splitlines()[0]}"
        ) from None

    embedding_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            embedding_ids.update(id(p) for p in module.parameters())
    output = model.get_output_embeddings()
    if output is not None:
        embedding_ids.update(id(p) for p in output.parameters())

    total = embedding = 0
    for param in model.parameters():  # .parameters() already yields shared (tied) tensors once
        total += param.numel()
        if id(param) in embedding_ids:
            embedding += param.numel()
    experts, routed = _routed_experts(model, text_config(config))
    return ParamCount(embedding=embedding, non_embedding=total - embedding, total=total, experts=experts,
                      routed=routed)


#: config fields that say how many experts a token is routed to, where the modules do not (Gemma 4's router reads
#: top_k_experts from its config)
_TOP_K_FIELDS = ("num_experts_per_tok", "top_k_experts", "moe_topk", "moe_top_k", "num_experts_per_token",
                 "n_activated_experts", "moe_k", "router_topk", "num_selected_experts")


def _top_k(block: Any, experts: Any, config: Any) -> int | None:
    """Experts a token is routed to in the MoE block ``block``: its own ``top_k``, its router's (``gate``,
    ``router``: transformers 5 keeps it there), the experts module's, else the config's (:data:`_TOP_K_FIELDS`)."""
    for holder in (block, *block.children(), experts):
        k = getattr(holder, "top_k", None)
        if isinstance(k, int) and k > 0:
            return k
    for field_name in _TOP_K_FIELDS:
        k = getattr(config, field_name, None)
        if isinstance(k, int) and k > 0:
            return k
    return None


def _routed_experts(model: Any, config: Any) -> tuple[int, int]:
    """(parameters of the routed experts, the share of them one token uses) in ``model``.

    Routed experts are the modules named ``experts`` (every MoE family of transformers 5 names them so; shared
    experts are ``shared_expert(s)`` and count in full), E of them (``num_experts``, or the children of a
    ``ModuleList``), a token routed to k (:func:`_top_k`). transformers 5 stores them fused, one tensor per
    projection with the experts along dimension 0: a tensor of the module counts as routed when that dimension is a
    multiple of E (a bias shared by all, as JetMoE's, does not). Where k cannot be found every expert counts
    (the FLOPs are then an upper bound).
    """
    import torch

    experts = routed = 0
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] != "experts":
            continue
        if isinstance(module, torch.nn.ModuleList):
            E, params = len(module), [p for p in module.parameters()]
        else:
            E = getattr(module, "num_experts", None)
            if not isinstance(E, int) or E < 1:
                continue
            params = [p for p in module.parameters() if p.dim() and p.shape[0] % E == 0 and (p.dim() > 1 or
                                                                                              p.shape[0] == E)]
        k = _top_k(model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model, module, config)
        size = sum(p.numel() for p in params)
        experts += size
        routed += size if k is None or k >= E else size * k // E
    return experts, routed


def load_target_config(target: str) -> Any:
    """Resolve a plan target that is not a size string to a transformers config, offline-friendly.

    Accepted, in this order: a ``config.json`` file, a folder containing one, a transformers model
    type (``llama``, ``gpt2``, ``qwen2``…: that architecture's default configuration), or a Hub repo
    id already in the local cache.

    Raises:
        HfgrowError: none of those matched.
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    path = Path(target).expanduser()
    if path.is_file() or path.is_dir():
        return hf_config_from_dict(read_config_file(path))
    if target in CONFIG_MAPPING:
        return AutoConfig.for_model(target)
    try:
        return AutoConfig.from_pretrained(target, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not found"; say what we accept instead
        pass
    raise HfgrowError(
        f"target '{target}' is not a size (e.g. 7B), a config.json or model folder, a transformers "
        f"model type (e.g. llama) or a Hub repo already in the local cache."
    )


# --------------------------------------------------------------------------- the growth law


def growth_tokens(n_params: float, compute: float) -> float:
    """The paper's growth timing d (tokens to train the base model before stacking).

    ``log10(d) = 0.88·log10(N) + 163.27 / log10(C) − 5.74`` with N the target's parameter count and
    C = 6·N·D its training compute in FLOPs. The paper's Table 4 uses the *nominal* N (8e9, 7e9,
    13e9, 70e9); with it this function gives 6.58B (8B, 15T), 11.11B (7B, 2T), 15.84B (13B, 2T) and
    42.48B (70B, 2T) tokens.

    Raises:
        HfgrowError: N or C is not positive, or C ≤ 1 FLOP (the law divides by log10 C).
    """
    if n_params <= 0:
        raise HfgrowError(f"the parameter count must be > 0 (got {n_params}).")
    if compute <= 10:
        raise HfgrowError(f"the compute must be > 10 FLOPs for the growth law (got {compute}).")
    log_d = GROWTH_LAW["a"] * math.log10(n_params) + GROWTH_LAW["b"] / math.log10(compute) + GROWTH_LAW["c"]
    return 10.0**log_d


def valid_factors(layers: int) -> list[int]:
    """Growth factors that split ``layers`` evenly into a base model: divisors ≥ 2."""
    return [g for g in range(2, layers + 1) if layers % g == 0]


def check_factor(layers: int, factor: float) -> int:
    """The base model's layer count, ``layers / factor``, refused unless it is whole (suggesting the nearest
    factors that are). ``factor`` may be fractional, as in ``hfgrow grow`` (1.5: 16 layers grow to 24).

    Example:
        >>> check_factor(24, 4), check_factor(24, 1.5)
        (6, 16)
    """
    if not factor > 1:  # also refuses nan
        raise HfgrowError(f"--factor must be above 1 (got {factor:g}); the paper recommends 4.")
    base = layers / factor
    if abs(base - round(base)) < 1e-9 and round(base) >= 1:
        return round(base)
    valid = valid_factors(layers)
    if not valid:
        raise HfgrowError(f"the target has {layers} layer(s), which cannot be grown from a smaller stack.")
    lower = [g for g in valid if g < factor]
    upper = [g for g in valid if g > factor]
    nearest = ([lower[-1]] if lower else []) + ([upper[0]] if upper else [])
    suggestion = " or ".join(str(g) for g in nearest)
    raise HfgrowError(
        f"factor {factor:g} does not divide the target's {layers} layers into a whole base model: use {suggestion} "
        f"(valid whole factors: {', '.join(map(str, valid))})."
    )


# --------------------------------------------------------------------------- the plan


@dataclass
class GrowthPlan:
    """Everything ``hfgrow plan`` reports. Numbers are raw (params, tokens, FLOPs); see :meth:`report`.

    Attributes:
        target: the target as given (size string, config path or name).
        params: target parameter count N (embedding / non-embedding split when a config is known).
        tokens: total training tokens D.
        compute: C = 6·N·D FLOPs of training the target from scratch.
        growth_tokens: d, tokens to train the base model before stacking.
        factor: g, the growth factor.
        target_layers, hidden_size, base_layers: shapes; ``None`` for a bare size string.
        base_params: parameters of the base model (exact from its config, else the estimate N/g).
        base_params_exact: whether ``base_params`` came from a config.
        base_active_params: the base model's active parameters (``base_params`` for a dense model).
        base_flops: 6·N_base·d, the base phase (N_base active).
        grown_flops: 6·N·(D − d), the grown phase (0 if d ≥ D, which also adds a warning).
        total_flops: base + grown phases.
        scratch_flops: 6·N·D, training the target from scratch on the same D tokens.
        saving_flops, saving_fraction: scratch − total, and that over scratch. This is the compute
            accounting at an equal token budget; the paper's speedups (≈50%) are measured at equal
            loss and are a separate, empirical result.
        command: the ``hfgrow stack`` command to run once the base model has seen d tokens (growth by hand).
        grow_argument: ``--grow`` of a training run that grows at d (``stack:4@11.11B``); None when d ≥ D.
        launch: the ``accelerate launch`` command of that run (None when d ≥ D).
        warnings: anything that makes the plan questionable (e.g. d ≥ D).
    """

    target: str
    params: ParamCount
    tokens: int
    compute: float
    growth_tokens: float
    factor: float
    target_layers: int | None
    hidden_size: int | None
    base_layers: int | None
    base_params: int
    base_params_exact: bool
    base_flops: float
    grown_flops: float
    total_flops: float
    scratch_flops: float
    saving_flops: float
    saving_fraction: float
    command: str
    model_type: str | None = None
    warnings: list[str] = field(default_factory=list)
    grow_argument: str | None = None
    launch: str | None = None
    base_active_params: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (numbers raw, plus a few human-readable strings under ``"human"``)."""
        data = asdict(self)
        data["params"]["active"] = self.params.active
        data["human"] = {
            "params": self.params.describe(),
            "tokens": format_count(self.tokens),
            "growth_tokens": format_count(self.growth_tokens, 2),
            "compute": format_flops(self.compute),
            "base_params": format_count(self.base_params),
            "total_flops": format_flops(self.total_flops),
            "saving": f"{self.saving_fraction:.1%}",
        }
        return data

    def report(self) -> str:
        """The multi-line human report ``hfgrow plan`` prints."""
        d_text = format_count(self.growth_tokens, 2)
        lines = [
            f"Gstack plan: grow a {format_count(self.params.total)}-parameter model trained on "
            f"{format_count(self.tokens)} tokens",
            *(f"  warning: {warning}" for warning in self.warnings),  # first: they qualify every number below
            "",
        ]
        shape = ""
        if self.target_layers is not None:
            shape = f"   ({self.model_type or 'config'}, {self.target_layers} layers, hidden {self.hidden_size})"
        lines += [
            f"  target          {self.target}{shape}",
            f"  parameters N    {self.params.describe()}",
            f"  tokens D        {format_count(self.tokens)}",
            f"  compute C       {format_flops(self.compute)} FLOPs   (C = 6·N·D)",
            f"  growth timing d {d_text} tokens   (log10 d = 0.88·log10 N + 163.27/log10 C − 5.74)",
            f"  growth factor g {self.factor:g}",
        ]
        if self.base_layers is not None:
            lines.append(
                f"  base model      {self.base_layers} layers, hidden {self.hidden_size}, "
                f"{format_count(self.base_params)} parameters"
                + (f" ({format_count(self.base_active_params)} active)"
                   if self.base_active_params not in (None, self.base_params) else "")
            )
        else:
            lines.append(
                f"  base model      1/{self.factor:g} of the target's layers, same width; "
                f"≈{format_count(self.base_params)} parameters (estimate N/g; pass a config for exact)"
            )
        lines += [
            "",
            "  FLOPs",
            f"    base phase    {format_flops(self.base_flops):>10}   6·N_base·d",
            f"    grown phase   {format_flops(self.grown_flops):>10}   6·N·(D − d)",
            f"    total         {format_flops(self.total_flops):>10}",
            f"    from scratch  {format_flops(self.scratch_flops):>10}   6·N·D",
            f"    saving        {format_flops(self.saving_flops):>10}   {self.saving_fraction:.1%} of scratch "
            "at the same token budget (the paper's ≈50% speedups are at equal loss)",
        ]
        if self.grow_argument is not None:
            lines += [
                "",
                f"  one run (pre-training with growth): --grow {self.grow_argument}",
                f"    BASE/ = config.json of the base model ({self.base_layers or f'L/{self.factor:g}'} layers) and the "
                "tokenizer, no weights (random init)",
                f"    {self.launch}",
                f"    (--grow stack:{self.factor:g}@auto applies the same law to the run's own parameter count and "
                "--max-tokens)",
            ]
        lines += [
            "",
            "  or by hand",
            f"    1. train the base model ({self.base_layers or f'L/{self.factor:g}'} layers) for {d_text} tokens",
            f"    2. {self.command}",
            f"    3. continue training OUT for the remaining {format_count(max(self.tokens - self.growth_tokens, 0), 2)} tokens",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _looks_like_size(target: str) -> bool:
    return bool(re.match(r"^\s*[+-]?[\d.]", target)) and "/" not in target and os.sep not in target


def make_plan(target: str | Any, tokens: int | float | str, factor: float = DEFAULT_FACTOR) -> GrowthPlan:
    """Build a Gstack growth plan for ``target`` trained on ``tokens`` tokens.

    Args:
        target: a size string (``"7B"``), a ``config.json`` path or model folder, a transformers
            model type (``"llama"``), a cached Hub repo id, or a transformers config object.
        tokens: total training tokens D, as a number or a string such as ``"2T"`` / ``"300B"``.
        factor: growth factor g (default 4, the paper's recommendation). With a config it must
            divide the number of layers.

    Raises:
        HfgrowError: unknown size, tokens ≤ 0, a factor that does not divide the layer count, or a
            target that cannot be resolved.
    """
    D = parse_count(tokens, "token count", "2T")
    if D <= 0:
        raise HfgrowError(f"--max-tokens must be > 0 (got '{tokens}'); e.g. --max-tokens 2T.")
    if not factor > 1:
        raise HfgrowError(f"--factor must be above 1 (got {factor:g}); the paper recommends 4.")

    config = None
    label = str(target) if isinstance(target, (str, os.PathLike)) else type(target).__name__
    if isinstance(target, (str, os.PathLike)):
        text = str(target)
        if _looks_like_size(text) and not Path(text).exists():
            n_total = parse_count(text, "model size", "7B")
            if n_total <= 0:
                raise HfgrowError(f"the model size must be > 0 (got '{text}').")
            params = ParamCount(embedding=None, non_embedding=None, total=n_total)
        else:
            config = load_target_config(text)
    else:
        config = target

    target_layers = hidden = base_layers = None
    model_type = None
    if config is not None:
        text = text_config(config)
        model_type = getattr(config, "model_type", None)
        target_layers = getattr(text, "num_hidden_layers", None)
        hidden = getattr(text, "hidden_size", None)
        if not isinstance(target_layers, int):
            raise HfgrowError(f"the '{model_type}' config has no num_hidden_layers; cannot plan depth growth.")
        base_layers = check_factor(target_layers, factor)
        params = count_params(config)
        base_count = count_params(_base_config(config, base_layers))
        base_params, base_active = base_count.total, base_count.active
        base_exact = True
    else:
        base_params = base_active = round(params.total / factor)
        base_exact = False

    N = params.active  # what a token uses: FLOPs and the law's C = 6·N·D (the total for a dense model)
    C = 6.0 * N * D
    d = growth_tokens(N, C)
    warnings: list[str] = []
    if params.experts:
        warnings.append(
            f"a mixture of experts: N is its {format_count(N)} active parameters per token (top-k of the routed "
            f"experts; {format_count(params.total)} in all), which every FLOPs figure counts; the growth-timing law "
            "was fitted on dense models."
        )
    if N < LAW_MIN_PARAMS:
        warnings.append(
            f"the target has {format_count(N)} parameters, below {format_count(LAW_MIN_PARAMS)}, the smallest model "
            "the growth-timing law was fitted on (Du et al. 2024: 410M-7B); below it d is an extrapolation, not "
            "the paper's guidance."
        )
    if d >= D:
        warnings.append(
            f"the law's growth timing d = {format_count(d, 2)} tokens is not below the budget D = "
            f"{format_count(D)}: at this budget the law says not to grow (following it would cost more "
            "than training the target from scratch); train from scratch or raise D."
        )
    grow_argument = launch = None
    if d < D and N >= LAW_MIN_PARAMS:
        grow_argument = f"stack:{factor:g}@{format_count(d, 2)}"
        launch = (f"accelerate launch --quiet --config_file configs/fsdp2.yaml --num_processes N -m hfgrow.continue "
                  f"--model BASE/ --grow {grow_argument} --data DATA --output-dir RUN --max-tokens "
                  f"{format_count(D, 2)}")
    base_flops = 6.0 * base_active * d
    grown_flops = 6.0 * N * max(D - d, 0.0)
    total = base_flops + grown_flops
    scratch = C
    return GrowthPlan(
        target=label,
        params=params,
        tokens=D,
        compute=C,
        growth_tokens=d,
        factor=factor,
        target_layers=target_layers,
        hidden_size=hidden,
        base_layers=base_layers,
        base_params=base_params,
        base_params_exact=base_exact,
        base_active_params=base_active,
        base_flops=base_flops,
        grown_flops=grown_flops,
        total_flops=total,
        scratch_flops=scratch,
        saving_flops=scratch - total,
        saving_fraction=(scratch - total) / scratch,
        command=f"hfgrow stack BASE_MODEL OUT --factor {factor:g}",
        model_type=model_type,
        warnings=warnings,
        grow_argument=grow_argument,
        launch=launch,
    )


def _base_config(config: Any, base_layers: int) -> Any:
    """The target's config with its first ``base_layers`` layers: every per-layer list follows, by the layout's rule."""
    from hfgrow.arch.layout import config_for_layers

    text = text_config(config)
    base_text = type(text).from_dict(config_for_layers(text.to_dict(), list(range(base_layers))))
    if text is config:
        return base_text
    base = copy.copy(config)  # a multimodal config: swap in the base text config, keep the rest
    name = next(name for name, value in vars(config).items() if value is text)
    setattr(base, name, base_text)
    return base
