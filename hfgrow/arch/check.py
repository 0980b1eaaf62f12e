"""Does a tensor table fit the model its config describes? Checked on the meta skeleton, before any byte is written.

transformers loads a checkpoint by renaming its keys (legacy names, the base-model prefix, fused MoE experts
and other conversions registered per architecture), placing each tensor in the model and reporting what is
missing, unexpected or of the wrong shape; whatever is missing is silently re-initialised. This module runs
the same renaming and conversions on shapes only (meta tensors) against the skeleton hfgrow already built,
so a renamed tensor (``mlp.upp_proj``), a renamed block prefix, a wrong shape or a ``hidden_size`` that
disagrees with the tensors is refused with one sentence, for the source (:func:`check_checkpoint`) and for
the planned output (:func:`check_tensors` against the grown config's skeleton).

Example:
    >>> report = load_report(skeleton, {"model.embed_tokens.weight": (256, 64), ...})
    >>> report.missing, report.unexpected, report.mismatched
    (['lm_head.weight'], [], [])
"""

from __future__ import annotations

import re
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from hfgrow.errors import HfgrowError


@dataclass
class LoadReport:
    """What ``from_pretrained`` would report for a tensor table (names in the model's own naming)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # conversions that failed (e.g. experts that cannot be fused)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.errors)

    def problem(self, architecture: str) -> str | None:
        """The first problem as a clause, or None when the tensors fit."""
        if self.mismatched:
            name, got, want = self.mismatched[0]
            more = f" ({len(self.mismatched) - 1} more tensors differ)" if len(self.mismatched) > 1 else ""
            return f"tensor {name} has shape {list(got)} but {architecture} expects {list(want)}{more}"
        if self.errors:
            return self.errors[0]
        parts = []
        if self.unexpected:
            more = f" (and {len(self.unexpected) - 1} more)" if len(self.unexpected) > 1 else ""
            parts.append(f"{architecture} has no tensor {self.unexpected[0]}{more}")
        if self.missing:
            more = f" (and {len(self.missing) - 1} more)" if len(self.missing) > 1 else ""
            parts.append(f"tensor {self.missing[0]} is missing{more}")
        return ", and ".join(parts) or None


def _transforms(model) -> tuple[list, list, Any]:
    """transformers' weight renamings and converters for ``model`` (empty when this transformers has none)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # a transformers without conversion mappings: names are compared as they are
        return [], [], None
    mapping = get_model_conversion_mapping(model)
    renamings = [t for t in mapping if isinstance(t, WeightRenaming)]
    converters = [t for t in mapping if isinstance(t, WeightConverter)]
    return renamings, converters, rename_source_key


def model_name(model, key: str) -> str:
    """The name transformers gives checkpoint tensor ``key`` in ``model`` (legacy names, prefixes, converters)."""
    renamings, converters, rename = _transforms(model)
    if rename is None:
        return key
    expected = dict.fromkeys(model.state_dict())
    target, _ = rename(key, renamings, converters, getattr(model, "base_model_prefix", None), expected)
    return target


def _natural(key: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in key.split(".")]


def load_report(model, shapes: Mapping[str, tuple[int, ...]]) -> LoadReport:
    """Simulate ``from_pretrained``'s key handling for tensors of ``shapes`` (name -> shape) on a meta ``model``.

    Mirrors transformers 5: every checkpoint key is renamed (renamings, then at most one converter, then the
    base-model prefix), converters are run on meta tensors to get the fused shapes, tied weights may be absent
    on either side, and the model's ``_keys_to_ignore_on_load_*`` patterns apply.
    """
    import torch

    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    renamings, converters, rename = _transforms(model)
    prefix = getattr(model, "base_model_prefix", None)
    by_pattern = {pattern: converter for converter in converters for pattern in converter.source_patterns}
    report = LoadReport()
    produced: dict[str, tuple[int, ...]] = {}
    pending: dict[str, Any] = {}
    for key in sorted(shapes, key=_natural):
        if rename is None:
            target, pattern = key, None
        else:
            target, pattern = rename(key, renamings, converters, prefix, expected)
            if target not in expected and key in expected:
                target, pattern = rename(key, [], [], prefix, expected)
        if target in expected:
            if pattern is None:
                produced[target] = tuple(shapes[key])
            else:
                converter = pending.setdefault(target, deepcopy(by_pattern[pattern]))
                converter.add_tensor(target, key, pattern, torch.empty(tuple(shapes[key]), device="meta"))
        elif pattern is not None:
            converter = by_pattern[pattern]
            report.unexpected += [target.replace(converter.target_patterns[0], t) for t in converter.target_patterns]
        else:
            report.unexpected.append(target)
    for target, converter in pending.items():
        try:
            realized = converter.convert(target, model=model, config=model.config)
        except Exception as exc:  # noqa: BLE001 - a conversion op failing means the tensors do not fit
            report.errors.append(f"the tensors for {target} cannot be combined the way transformers loads them "
                                 f"({' '.join(str(exc).split())[:120] or type(exc).__name__})")
            produced[target] = expected[target]
            continue
        for name, value in realized.items():
            value = value[0] if isinstance(value, list) else value
            if name in expected:
                produced[name] = tuple(value.shape)
            else:
                report.unexpected.append(name)
    for name, shape in produced.items():
        if shape != expected[name]:
            report.mismatched.append((name, shape, expected[name]))
    missing = {name for name in expected if name not in produced}
    for target, source in (getattr(model, "all_tied_weights_keys", None) or {}).items():
        if target in missing and source not in missing:
            missing.discard(target)
        elif source in missing and target not in missing:
            missing.discard(source)
    ignore_missing, ignore_unexpected = _ignore_patterns(model)
    report.missing = sorted((n for n in missing if not ignore_missing or not ignore_missing.search(n)), key=_natural)
    report.unexpected = [n for n in report.unexpected if not ignore_unexpected or not ignore_unexpected.search(n)]
    return report


def _ignore_patterns(model) -> tuple[re.Pattern | None, re.Pattern | None]:
    """The model's ``_keys_to_ignore_on_load_missing/unexpected`` (+ the two transformers always ignores)."""
    buffers = [name for name, _ in model.named_buffers()]
    unexpected = set(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())
    if any(name.endswith("rotary_emb.inv_freq") for name in buffers):
        unexpected.add(r"rotary_emb\.inv_freq")
    if any(name.endswith("position_ids") for name in buffers):
        unexpected.add(r"(^|\.)position_ids$")
    missing = set(getattr(model, "_keys_to_ignore_on_load_missing", None) or ())

    def compile_(patterns: set[str]) -> re.Pattern | None:
        return re.compile("|".join(f"({p})" for p in sorted(patterns))) if patterns else None

    return compile_(missing), compile_(unexpected)


def check_tensors(model, shapes: Mapping[str, tuple[int, ...]], what: str, *,
                  allowed_unexpected: Iterable[str] = ()) -> None:
    """Raise one sentence when ``shapes`` would not load cleanly into ``model`` (``what`` names the tensors).

    ``allowed_unexpected`` are checkpoint names that may stay unused (e.g. a multi-token-prediction block that
    transformers' own model ignores in the source, moved behind the grown stack).
    """
    if getattr(model.config, "quantization_config", None):
        return  # quantized checkpoints store packed tensors and scales that only their quantizer understands
    report = load_report(model, shapes)
    allowed = set(allowed_unexpected)
    report.unexpected = [name for name in report.unexpected if name not in allowed]
    problem = report.problem(type(model).__name__)
    if problem:
        raise HfgrowError(f"{what} does not match the model its config describes: {problem}.")
