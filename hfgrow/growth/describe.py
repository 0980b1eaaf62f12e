"""`hfgrow inspect`: what a checkpoint is made of, read from headers and config only.

Besides layers and parameters it shows what picking width targets needs (hidden size, heads, key/value
heads, head_dim, FFN sizes, vocabulary, context length) and names each layer's kind by what it is: the
config's ``layer_types`` value when it has one, else dense or MoE from the block's own parameters.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from hfgrow.io.checkpoint import has_weights, weight_files
from hfgrow.arch.layout import open_model
from hfgrow.io.source import open_source


def _config_only(folder) -> tuple[Any, Any]:
    """(tensor table, layout) of a folder with a config and no weights (what ``hfgrow train`` starts from at random
    initialisation): the tensors the config's model would save, from its skeleton on the meta device (tied
    aliases once, as a saved checkpoint holds them), in the config's dtype; nothing is read or allocated."""
    from hfgrow.arch.layout import hf_config_from_dict, meta_model, read_config, read_layout
    from hfgrow.io import dtypes
    from hfgrow.io.checkpoint import Checkpoint, TensorInfo

    config = read_config(folder)
    hf_config = hf_config_from_dict(config)
    from hfgrow.errors import HfgrowError

    named = str(config.get("dtype") or config.get("torch_dtype") or "float32").replace("torch.", "")
    try:
        dtype = dtypes.from_option(named) or "F32"
    except HfgrowError:  # "auto" or a name hfgrow does not store: count the parameters at float32
        dtype = "F32"
    tensors = {name: TensorInfo(name, dtype, tuple(p.shape), None, 0, dtypes.nbytes(dtype, tuple(p.shape)))
               for name, p in meta_model(hf_config).named_parameters()}
    checkpoint = Checkpoint(folder, tensors)
    return checkpoint, read_layout(folder, checkpoint, config)


def inspect(src: str, *, revision: str | None = None, token=None, quiet: bool = True) -> dict[str, Any]:
    """Describe a model without loading its weights; a folder with a config and no weights is described from the
    config alone (``"format": "config only"``, no files).

    Example:
        >>> info = inspect("TinyLlama/TinyLlama_v1.1")
        >>> info["num_layers"], info["params"]["total"], info["tied_embeddings"]
        (22, 1100048384, False)
    """
    with open_source(src, revision=revision, token=token, progress=not quiet) as source:
        weights = has_weights(source.path)
        checkpoint, layout = open_model(source.path) if weights else _config_only(source.path)
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
        kinds = layer_kinds(layout)
        files = weight_files(source.path) if weights else []
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
            **width_facts(layout, checkpoint),
            "params": {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding},
            "tied_embeddings": bool(layout.tied) or bool(tie),
            "dtypes": dict(Counter(info.dtype for info in checkpoint.tensors.values())),
            "format": checkpoint.format if weights else "config only",
            "files": len(files),
            "bytes_on_disk": sum(f.stat().st_size for f in files),
        }


def _attention_kind(modules: set[str]) -> str:
    attention = [m for m in modules if "attn" in m or "attention" in m]
    if not attention:
        return "no attention"
    return "linear attention" if all("linear" in m for m in attention) else "attention"


_EXPERT_COUNT_KEYS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")


def _mlp_kind(signature: frozenset[str], experts: int | None) -> str:
    """``dense``, or ``MoE`` with the config's expert count and a shared expert if the block has one."""
    if not any("expert" in name for name in signature):
        return "dense"
    text = f"MoE of {experts} experts" if experts else "MoE"
    return text + (" + shared expert" if any("shared_expert" in name for name in signature) else "")


def layer_kinds(layout) -> list[str]:
    """Each layer's kind by what it is: ``layer_types`` values, else dense/MoE (and the attention kind where
    layers differ in it) read off the block's parameters; ``block`` when transformers could not build them.

    Example:
        >>> layer_kinds(deepseek_v3_layout)          # first_k_dense_replace = 1
        ['dense', 'MoE of 4 experts + shared expert']
    """
    signatures = layout.signatures
    if signatures is None:
        return list(layout.layer_types) if layout.layer_types else ["block"] * layout.num_layers
    config = layout.config.get("text_config") or layout.config
    experts = next((config[key] for key in _EXPERT_COUNT_KEYS if isinstance(config.get(key), int)), None)
    mlp = [_mlp_kind(sig, experts) for sig in signatures]
    attention = [_attention_kind({name.split(".", 1)[0] for name in sig}) for sig in signatures]
    if layout.layer_types:
        # the declared type names the attention; say what the MLP is where that differs or is MoE
        show_mlp = len(set(mlp)) > 1 or any(m != "dense" for m in mlp)
        kinds = [f"{t} / {m}" if show_mlp else str(t) for t, m in zip(layout.layer_types, mlp)]
    elif len(set(attention)) > 1:
        kinds = [f"{a} / {m}" for a, m in zip(attention, mlp)]
    else:
        kinds = mlp
    # blocks whose parameters differ in some other way still get a label of their own
    seen: dict[tuple[str, frozenset], str] = {}
    labels: dict[str, int] = {}
    result = []
    for kind, sig in zip(kinds, signatures):
        if (kind, sig) not in seen:
            labels[kind] = labels.get(kind, 0) + 1
            seen[(kind, sig)] = kind if labels[kind] == 1 else f"{kind} #{labels[kind]}"
        result.append(seen[(kind, sig)])
    return result


def width_facts(layout, checkpoint) -> dict[str, Any]:
    """Hidden size, heads, key/value heads, head_dim, FFN sizes, vocabulary and context length: what
    ``grow --hidden-size/--num-heads/...`` targets are chosen from. Sizes come from the checkpoint's own
    shapes where hfgrow can derive the tensor roles, else from the config.

    Example:
        >>> width_facts(layout, checkpoint)["num_key_value_heads"]
        4
    """
    from hfgrow.arch.layout import context_length, hf_config_from_dict, text_config
    from hfgrow.arch.roles import derive_roles, head_geometry
    from hfgrow.errors import HfgrowError

    hf_config = hf_config_from_dict(layout.config)
    text = text_config(hf_config)
    try:
        roles = derive_roles(layout, checkpoint.tensors)
        hidden, heads, kv_heads, head_dim = roles.hidden_size, roles.num_heads, roles.num_kv_heads, roles.head_dim
        ffn = dict(roles.ffn_sizes)
    except HfgrowError:  # a family hfgrow cannot widen: what its config says
        hidden = getattr(text, "hidden_size", None)
        heads, kv_heads, head_dim = head_geometry(hf_config)
        ffn = {key: value for key in ("intermediate_size",) if isinstance(value := getattr(text, key, None), int)}
    return {"hidden_size": hidden, "num_attention_heads": heads or None, "num_key_value_heads": kv_heads or None,
            "head_dim": head_dim or None, "ffn_sizes": ffn, "vocab_size": getattr(text, "vocab_size", None),
            "context_length": context_length(hf_config)}


def format_inspect(info: dict[str, Any]) -> str:
    from hfgrow.units import format_count
    from hfgrow.arch.pattern import compact

    kinds = Counter(info["layer_types"])
    per_kind = "; ".join(
        f"{kind}: {count} layer{'s' if count > 1 else ''} ({compact([i for i, k in enumerate(info['layer_types']) if k == kind])})"
        for kind, count in kinds.items()
    )
    params = info["params"]
    lines = [
        f"source        {info['source']}" + (f" @ {info['commit'][:12]}" if info["commit"] else ""),
        f"architecture  {info['architecture']} (model_type {info['model_type']})",
        f"layers        {info['num_layers']} under '{info['layer_prefix']}' (config key {info['layer_count_key']}), "
        f"{info['tensors_per_layer']} tensors each" + (f", +{info['extra_blocks']} extra blocks" if info["extra_blocks"] else ""),
        f"layer types   {per_kind}",
        _format_width(info),
        f"vocabulary    {_known(info['vocab_size'])} tokens, context {_known(info['context_length'])} tokens",
        f"params        {format_count(params['total'])} total: {format_count(params['embedding'])} embedding, "
        f"{format_count(params['non_embedding'])} non-embedding ({params['total']:,})",
        f"tied embed.   {'yes' if info['tied_embeddings'] else 'no'}",
        "dtypes        " + ", ".join(f"{d} ({n} tensors)" for d, n in info["dtypes"].items())
        + (" (the config's dtype)" if info["format"] == "config only" else ""),
        (f"on disk       {info['bytes_on_disk'] / 1e9:.3f} GB in {info['files']} {info['format']} file(s)"
         if info["format"] != "config only" else "on disk       no weights: a config-only folder (training starts it "
                                                  "from random initialisation)"),
    ]
    if info["per_layer_config_keys"] or info["layer_index_config_keys"]:
        lines.append("per-layer cfg " + ", ".join(info["per_layer_config_keys"] + info["layer_index_config_keys"]))
    return "\n".join(lines)


def _known(value: int | None) -> str:
    return f"{value:,}" if isinstance(value, int) else "unknown"


def _format_width(info: dict[str, Any]) -> str:
    text = f"width         hidden {_known(info['hidden_size'])}"
    if info["num_attention_heads"]:
        text += (f", {info['num_attention_heads']} heads x head_dim {info['head_dim']} "
                 f"({info['num_key_value_heads']} key/value)")
    if info["ffn_sizes"]:
        text += ", FFN " + ", ".join(f"{key} {size:,}" for key, size in info["ffn_sizes"].items())
    return text
