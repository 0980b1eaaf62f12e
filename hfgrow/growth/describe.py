"""`hfgrow inspect`: what a checkpoint is made of, read from headers and config only."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from hfgrow.io.checkpoint import weight_files
from hfgrow.arch.layout import open_model
from hfgrow.io.source import open_source


def inspect(src: str, *, revision: str | None = None, token=None, quiet: bool = True) -> dict[str, Any]:
    """Describe a model without loading its weights.

    Example:
        >>> info = inspect("TinyLlama/TinyLlama_v1.1")
        >>> info["num_layers"], info["params"]["total"], info["tied_embeddings"]
        (22, 1100048384, False)
    """
    with open_source(src, revision=revision, token=token, progress=not quiet) as source:
        checkpoint, layout = open_model(source.path)
        vocab = layout.config.get("vocab_size")
        embedding = non_embedding = 0
        for name, info in checkpoint.tensors.items():
            if name in layout.tied:
                continue
            is_embedding = name in layout.globals and vocab is not None and vocab in info.shape
            if is_embedding:
                embedding += math.prod(info.shape)
            else:
                non_embedding += math.prod(info.shape)
        if layout.layer_types:
            kinds = list(layout.layer_types)
        elif layout.signatures:
            # no declared types: label blocks by their parameter structure (e.g. dense vs MoE)
            labels: dict[frozenset, str] = {}
            kinds = [labels.setdefault(sig, f"block-kind-{len(labels)}") for sig in layout.signatures]
        else:
            kinds = ["block"] * layout.num_layers
        files = weight_files(source.path)
        tie = layout.config.get("tie_word_embeddings", layout.config.get("text_config", {}).get("tie_word_embeddings"))
        return {
            "source": source.display,
            "commit": source.commit,
            "path": str(source.path),
            "architecture": layout.architecture,
            "model_type": layout.model_type,
            "num_layers": layout.num_layers,
            "layer_prefix": layout.prefix,
            "layer_count_key": layout.count_key,
            "layer_types": kinds,
            "per_layer_config_keys": sorted(layout.per_layer_keys),
            "layer_index_config_keys": sorted(layout.index_keys),
            "tensors_per_layer": len(layout.layers[0]),
            "extra_blocks": len(layout.extra_layers),
            "params": {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding},
            "tied_embeddings": bool(layout.tied) or bool(tie),
            "dtypes": dict(Counter(info.dtype for info in checkpoint.tensors.values())),
            "format": checkpoint.format,
            "files": len(files),
            "bytes_on_disk": sum(f.stat().st_size for f in files),
        }


def format_inspect(info: dict[str, Any]) -> str:
    from hfgrow.units import format_count
    from hfgrow.arch.pattern import compact

    kinds = Counter(info["layer_types"])
    per_kind = ", ".join(
        f"{kind} x{count} ({compact([i for i, k in enumerate(info['layer_types']) if k == kind])})"
        for kind, count in kinds.items()
    )
    params = info["params"]
    lines = [
        f"source        {info['source']}" + (f" @ {info['commit'][:12]}" if info["commit"] else ""),
        f"architecture  {info['architecture']} (model_type {info['model_type']})",
        f"layers        {info['num_layers']} under '{info['layer_prefix']}' (config key {info['layer_count_key']}), "
        f"{info['tensors_per_layer']} tensors each" + (f", +{info['extra_blocks']} extra blocks" if info["extra_blocks"] else ""),
        f"layer types   {per_kind}",
        f"params        {format_count(params['total'])} total: {format_count(params['embedding'])} embedding, "
        f"{format_count(params['non_embedding'])} non-embedding ({params['total']:,})",
        f"tied embed.   {'yes' if info['tied_embeddings'] else 'no'}",
        "dtypes        " + ", ".join(f"{d} ({n} tensors)" for d, n in info["dtypes"].items()),
        f"on disk       {info['bytes_on_disk'] / 1e9:.3f} GB in {info['files']} {info['format']} file(s)",
    ]
    if info["per_layer_config_keys"] or info["layer_index_config_keys"]:
        lines.append("per-layer cfg " + ", ".join(info["per_layer_config_keys"] + info["layer_index_config_keys"]))
    return "\n".join(lines)
