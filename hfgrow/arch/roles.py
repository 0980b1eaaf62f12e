"""Roles of tensors and of their dimensions: the one module that knows architectures.

The growth operators never look at model types or tensor names. They ask this module:

* which *space* each dimension of a tensor lives in (the hidden size, the FFN units of a
  given MLP, the query heads, the key/value heads, a fused q|k|v or gate|up layout, or
  nothing that width growth changes) and whether the tensor *writes* those units (an
  output dimension), *reads* them (an input dimension) or normalises them;
* which tensors are a block's output projections (attention output, MLP/expert down
  projections and their biases): zeroing them makes the block an identity map;
* which norms normalise a sublayer's output before it joins the residual stream (the
  post-norms of Gemma 2/3, OLMo 2/3, EXAONE 4, GLM-4): found by following, on one forward
  pass of the meta skeleton, which module takes the attention's or MLP's output as its input;
* how transformers initialises each tensor (for new blocks and new units);
* what a norm computes (RMSNorm or LayerNorm, ``w`` or Gemma's ``1 + w``), whether the
  embedding output is scaled by ``sqrt(hidden_size)``, which weights are tied.

Everything is derived from the config (through the transformers config class and its
``attribute_map``), the tensor shapes, the tensor-name suffixes, and a skeleton of the
model on the ``meta`` device (for module types such as GPT-2's transposed ``Conv1D``, and
for small CPU probes of one norm module). The few rules that belong to one family (the
layout of a fused q|k|v tensor, ALiBi, GPT-2's scaled residual init) are the tables below.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from hfgrow.io.checkpoint import TensorInfo
from hfgrow.errors import HfgrowError
from hfgrow.arch.layout import (Layout, decoder_blocks, hf_config_from_dict, meta_model, quiet_transformers,
                                text_config)

# ---------------------------------------------------------------- name rules (module path within a block)

_ATTN = r"(?:self_attn|attn|attention|self_attention)"
_BLOCK_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(rf"(?:^|\.){_ATTN}\.(?:q_norm|query_layernorm)$"), "q_norm"),
    (re.compile(rf"(?:^|\.){_ATTN}\.(?:k_norm|key_layernorm)$"), "k_norm"),
    (re.compile(r"(?:^|\.)[^.]*(?:norm|ln_\d+|ln)[^.]*$"), "norm"),
    (re.compile(rf"(?:^|\.){_ATTN}\.(?:q_proj|query|wq|q)$"), "q"),
    (re.compile(rf"(?:^|\.){_ATTN}\.(?:k_proj|key|wk|k)$"), "k"),
    (re.compile(rf"(?:^|\.){_ATTN}\.(?:v_proj|value|wv|v)$"), "v"),
    (re.compile(rf"(?:^|\.){_ATTN}\.(?:qkv_proj|query_key_value|c_attn|Wqkv|W_pack|qkv)$"), "qkv"),
    (re.compile(rf"(?:^|\.){_ATTN}\.(?:o_proj|out_proj|dense|c_proj|wo|o|proj)$"), "o"),
    (re.compile(r"(?:^|\.)gate_up_proj$"), "gate_up"),
    (re.compile(r"(?:^|\.)(?:up_proj|gate_proj|w1|w3|c_fc|fc1|dense_h_to_4h|fc_in)$"), "up"),
    (re.compile(r"(?:^|\.)(?:down_proj|w2|c_proj|fc2|dense_4h_to_h|fc_out)$"), "down"),
    (re.compile(r"(?:^|\.)(?:gate|router|shared_expert_gate)$"), "router"),
]
_GLOBAL_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"(?:^|\.)(?:embed_tokens|wte|embed_in|word_embeddings|tok_embeddings)$"), "embedding"),
    (re.compile(r"(?:^|\.)(?:wpe|embed_positions|position_embeddings)$"), "positions"),
    (re.compile(r"(?:^|\.)(?:lm_head|embed_out|output)$"), "lm_head"),
    (re.compile(r"(?:^|\.)project_in$"), "proj_in"),
    (re.compile(r"(?:^|\.)project_out$"), "proj_out"),
    (re.compile(r"(?:^|\.)[^.]*(?:norm|ln_f)[^.]*$"), "norm"),
]

# config keys, by meaning; the config class's attribute_map is applied on top
_FFN_KEYS = ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size")
_EXPERT_FFN_KEYS = ("moe_intermediate_size", "expert_intermediate_size")
_SHARED_FFN_KEYS = ("shared_expert_intermediate_size",)
_KV_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num")
_HIDDEN_ALIASES = ("word_embed_proj_dim",)
_EPS_KEYS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "norm_epsilon", "rms_norm_epsilon")  # OPT: equal to hidden_size unless project_in/out exist

# ---------------------------------------------------------------- family rules


def qkv_layout(config: Mapping[str, Any]) -> str:
    """How a fused q|k|v projection orders its output rows.

    ``concat``: all q heads, then k heads, then v heads (Phi-3, GPT-2, MPT, Baichuan, old
    multi-query Falcon). ``per_head``: head by head, [q_h, k_h, v_h] (GPT-NeoX, Bloom, Falcon
    without multi-query). ``per_group``: per KV group, its q heads then k then v (Falcon's
    new decoder architecture).

    Example:
        >>> qkv_layout({"model_type": "gpt_neox"}), qkv_layout({"model_type": "phi3"})
        ('per_head', 'concat')
    """
    model_type = config.get("model_type")
    if model_type in ("gpt_neox", "bloom"):
        return "per_head"
    if model_type == "falcon":
        if config.get("new_decoder_architecture"):
            return "per_group"
        return "concat" if config.get("multi_query", True) else "per_head"
    return "concat"


def qkv_row_order(layout: str, heads: int, kv_heads: int, head_dim: int):
    """For each row of a fused q|k|v projection in ``layout``, its row in the plain [q heads | k heads | v heads] order.

    The one statement of the three fused layouts (see :func:`qkv_layout`); width growth and LiGO both
    convert through it.

    Example:
        >>> qkv_row_order("per_head", 2, 2, 1).tolist()     # rows [q0 k0 v0 q1 k1 v1]
        [0, 2, 4, 1, 3, 5]
        >>> qkv_row_order("per_group", 4, 2, 1).tolist()    # rows [q0 q1 k0 v0 q2 q3 k1 v1]
        [0, 1, 4, 6, 2, 3, 5, 7]
    """
    import torch

    q = lambda h: h * head_dim  # noqa: E731  (first row of query head h in the plain order)
    k = lambda h: (heads + h) * head_dim  # noqa: E731
    v = lambda h: (heads + kv_heads + h) * head_dim  # noqa: E731
    if layout == "concat":
        starts = [q(h) for h in range(heads)] + [k(h) for h in range(kv_heads)] + [v(h) for h in range(kv_heads)]
    elif layout == "per_head":
        starts = [s for h in range(heads) for s in (q(h), k(h), v(h))]
    elif layout == "per_group":
        group = heads // kv_heads
        starts = [s for g in range(kv_heads) for s in [q(g * group + r) for r in range(group)] + [k(g), v(g)]]
    else:
        raise ValueError(f"unknown fused q|k|v layout '{layout}'")
    return (torch.tensor(starts)[:, None] + torch.arange(head_dim)[None, :]).reshape(-1)


def _uses_alibi(config: Mapping[str, Any]) -> bool:
    """ALiBi slopes depend on the head count, so heads cannot be duplicated exactly."""
    return bool(
        config.get("alibi")
        or config.get("model_type") in ("bloom",)
        or (isinstance(config.get("attn_config"), dict) and config["attn_config"].get("alibi"))
    )


# model types whose transformers init scales the residual output projections by 1/sqrt(2 * layers)
_SCALED_RESIDUAL_INIT = {"gpt2"}

# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class TensorRole:
    """What one tensor is, for the operators.

    Attributes:
        kind: embedding, positions, lm_head, norm, q, k, v, qkv, o, up, gate_up, down, router,
            q_norm, k_norm, proj_in, proj_out, fixed (no dimension grows) or unknown.
        dims: per tensor dimension, the space it lives in (``hidden``, ``q``, ``kv``, ``qkv``,
            ``ffn:<config key>``, ``gate_up:<config key>``) or None (width growth keeps it).
        io: per dimension, ``out`` (the tensor writes these units), ``in`` (reads them),
            ``norm`` (a norm's per-unit weight) or None.
        output_projection: a block output projection (or its bias): zero it and the block's
            contribution to the residual stream is zero.
        is_bias: a bias vector (transformers initialises biases to zero).
        reason: why the role is unknown.
        post_norm_of: for a norm (weight or bias) that normalises a sublayer's output before the residual
            add, the kind of that sublayer's output projection (``o`` or ``down``); empty otherwise.
    """

    kind: str
    dims: tuple[str | None, ...] = ()
    io: tuple[str | None, ...] = ()
    output_projection: bool = False
    is_bias: bool = False
    reason: str = ""
    width_ok: bool = True  # False: the role is known by name only (e.g. fused 3-D expert tensors)
    post_norm_of: str = ""

    @property
    def is_norm(self) -> bool:
        return "norm" in self.io


@dataclass
class Roles:
    """Everything the operators need to know about one model's architecture."""

    model_type: str
    config: dict[str, Any]
    prefix: str
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_sizes: dict[str, int]  # FFN space config key -> size
    keys: dict[str, str | None]  # hidden_size / num_attention_heads / num_key_value_heads / intermediate_size -> key
    hidden_aliases: list[str]
    qkv_layout: str
    alibi: bool
    norm_kind: str  # "rms", "layer" or "none"
    norm_offset: float  # 1.0 when the norm computes x * (1 + w) (Gemma)
    norm_init: float  # what transformers' _init_weights puts in a norm weight
    norm_eps_key: str | None  # config key of the norms' epsilon
    has_norm_weights: bool
    embed_scale: float  # the embedding output is multiplied by this (Gemma: sqrt(hidden_size))
    init_std: float
    tied: dict[str, str]  # tied tensor -> tensor it is tied to (also when absent from the checkpoint)
    block: dict[str, TensorRole] = field(default_factory=dict)  # by name relative to the block
    globals: dict[str, TensorRole] = field(default_factory=dict)

    def role(self, name: str) -> TensorRole:
        """The role of a source tensor, by its full checkpoint name."""
        if name in self.globals:
            return self.globals[name]
        rest = block_rest(name, self.prefix)
        if rest is not None and rest in self.block:
            return self.block[rest]
        return TensorRole("unknown", reason="not in the source checkpoint")

    def space_size(self, space: str) -> int:
        if space == "hidden":
            return self.hidden_size
        if space == "q":
            return self.num_heads * self.head_dim
        if space == "kv":
            return self.num_kv_heads * self.head_dim
        if space == "qkv":
            return (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        kind, _, key = space.partition(":")
        if kind == "ffn":
            return self.ffn_sizes[key]
        if kind == "gate_up":
            return 2 * self.ffn_sizes[key]
        raise KeyError(space)

    def init_std_for(self, role: TensorRole, num_layers: int) -> float:
        """Std of transformers' normal init for a weight of this role in a model of ``num_layers``."""
        if role.output_projection and self.model_type in _SCALED_RESIDUAL_INIT:
            return self.init_std / math.sqrt(2 * num_layers)
        return self.init_std

    def prts_init_std(self, role: TensorRole, shape: tuple[int, ...], num_layers: int) -> float:
        """Std of the reference code's init for a weight of this role and (grown) shape, in a model of
        ``num_layers``: prts's ``GPT._init_weights`` (lit_gpt/model.py, TinyLlama style), sqrt(2 / (5·fan_in))
        for every linear layer and embedding (an embedding's fan-in is its width), 1 / (sqrt(fan_in)·layers)
        for the MLP down projection. 0.014 for a fan-in of 2048.

        Example:
            >>> roles.prts_init_std(roles.role("model.layers.0.mlp.down_proj.weight"), (2048, 5632), 22)
            0.000605...
        """
        if "in" in role.io:
            fan_in = shape[role.io.index("in")]
        elif role.kind in ("embedding", "positions") and "hidden" in role.dims:
            fan_in = shape[role.dims.index("hidden")]
        else:
            raise HfgrowError(f"--style prts initialises a weight by its fan-in, which hfgrow cannot tell for a "
                              f"{self.model_type} '{role.kind}' tensor of shape {tuple(shape)}.")
        if role.kind == "down":
            return 1.0 / math.sqrt(fan_in) / num_layers
        return math.sqrt(2.0 / (5.0 * fan_in))

    def lm_head_role(self) -> TensorRole:
        return TensorRole("lm_head", (None, "hidden"), (None, "in"))

    def is_block_tensor(self, name: str) -> bool:
        return block_rest(name, self.prefix) is not None


def block_rest(name: str, prefix: str) -> str | None:
    """``"mlp.up_proj.weight"`` for ``"<prefix>3.mlp.up_proj.weight"``; None outside the blocks."""
    if not name.startswith(prefix):
        return None
    index, _, rest = name[len(prefix):].partition(".")
    return rest if index.isdigit() and rest else None


def block_index(name: str, prefix: str) -> int | None:
    if not name.startswith(prefix):
        return None
    index = name[len(prefix):].partition(".")[0]
    return int(index) if index.isdigit() else None


# ---------------------------------------------------------------- derivation


def head_geometry(hf_config) -> tuple[int, int, int]:
    """(query heads, key/value heads, head_dim) as a config declares them (0, 0, 0 without attention).

    The checkpoint's own q/k shapes are authoritative (:func:`derive_roles` reads them); this is what a
    loaded model's config says, for code that only has the model.

    Example:
        >>> head_geometry(LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2))
        (4, 2, 16)
    """
    config = text_config(hf_config)
    heads = getattr(config, "num_attention_heads", None)
    if not isinstance(heads, int) or heads < 1:
        return 0, 0, 0
    kv = next((getattr(config, key) for key in _KV_KEYS if isinstance(getattr(config, key, None), int)), heads)
    head_dim = getattr(config, "head_dim", None)
    if not isinstance(head_dim, int) or head_dim < 1:
        head_dim = config.hidden_size // heads
    return heads, kv, head_dim


def _attr(hf_config, key: str):
    return getattr(hf_config, key, None)


def _mapped(hf_config, canonical: str) -> str:
    attribute_map = getattr(type(hf_config), "attribute_map", {}) or {}
    return attribute_map.get(canonical, canonical)


def _module_of(name: str) -> tuple[str, str]:
    module, _, param = name.rpartition(".")
    return module, param


def _classify(module: str, rules) -> str | None:
    for pattern, kind in rules:
        if pattern.search(module):
            return kind
    return None


def kind_of(path: str) -> str | None:
    """The kind the name rules above give an in-memory module or parameter path (block rules first).

    Example:
        >>> kind_of("model.layers.0.self_attn.o_proj"), kind_of("mlp.experts.down_proj"), kind_of("transformer.wte")
        ('o', 'down', 'embedding')
    """
    return _classify(path, _BLOCK_RULES) or _classify(path, _GLOBAL_RULES)


def adds_residual(module: torch.nn.Module) -> bool:
    """Whether a block's attention or MLP module adds the residual itself (BLOOM's and MPT's take it as ``residual``)."""
    import inspect

    try:
        return "residual" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _in_memory_modules(model) -> dict[str, torch.nn.Module]:
    modules = dict(model.named_modules())
    prefix = getattr(model, "base_model_prefix", "") or ""
    if prefix:  # checkpoints saved without the base-model prefix (old GPT-2 files: "h.0.attn...")
        for name, module in list(modules.items()):
            if name.startswith(prefix + "."):
                modules.setdefault(name[len(prefix) + 1:], module)
    return modules


def _norm_eps(model, hidden_size: int, config: Mapping[str, Any]) -> str | None:
    """The config key holding the hidden-size norms' epsilon (matched by value against the module)."""
    for _, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if "Norm" in type(module).__name__ and isinstance(weight, torch.nn.Parameter) \
                and tuple(weight.shape) == (hidden_size,):
            eps = next((getattr(module, a) for a in ("variance_epsilon", "eps", "epsilon")
                        if isinstance(getattr(module, a, None), float)), None)
            if eps is None:
                return None
            for key in _EPS_KEYS:
                if isinstance(config.get(key), (int, float)) and math.isclose(config[key], eps, rel_tol=1e-9):
                    return key
            return None
    return None


def _probe_norm(model, hidden_size: int) -> tuple[str, float, float, bool]:
    """(kind, offset, init value, has weights) of the model's hidden-size norm, from a CPU probe.

    A copy of one norm module is materialised on the CPU (``hidden_size`` floats) and run
    on a shifted random input: with its effective weight at zero the output vanishes unless
    the norm computes ``1 + w``; with effective weight one, a LayerNorm output has zero
    mean and an RMSNorm output does not. ``_init_weights`` on the copy gives the init value.
    """
    candidate = None
    for _, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if ("Norm" in type(module).__name__ or isinstance(module, torch.nn.LayerNorm)) and isinstance(
            weight, torch.nn.Parameter
        ) and tuple(weight.shape) == (hidden_size,):
            candidate = module
            break
    if candidate is None:
        return "none", 0.0, 1.0, False
    probe = copy.deepcopy(candidate).to_empty(device="cpu").float()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, hidden_size, generator=gen) * 2 + 3
    bias = getattr(probe, "bias", None)
    with torch.no_grad():
        if isinstance(bias, torch.Tensor):
            bias.zero_()
        probe.weight.zero_()
        offset = 0.0 if probe(x).abs().max().item() < 1e-6 else 1.0
        probe.weight.fill_(1.0 - offset)
        y = probe(x)
        kind = "layer" if y.mean(-1).abs().max().item() < 1e-3 else "rms"
        init = 1.0 - offset
        try:
            model._init_weights(probe)
            values = probe.weight.unique()
            if values.numel() == 1:
                init = float(values.item())
        except Exception:  # noqa: BLE001 - some inits need the whole model; fall back to 1 - offset
            pass
    return kind, offset, init, True


def _embed_scale(model) -> float:
    embedding = model.get_input_embeddings()
    for attribute in ("scalar_embed_scale", "embed_scale"):
        value = getattr(embedding, attribute, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 1.0


def embed_scale_for(config: dict[str, Any]) -> float:
    """The embedding output multiplier transformers builds for ``config`` (1.0 for most families)."""
    return _embed_scale(meta_model(hf_config_from_dict(config)))


def _block_role(rest: str, shape: tuple[int, ...], transposed: bool, ctx: dict[str, Any]) -> TensorRole:
    module, param = _module_of(rest)
    kind = _classify(module, _BLOCK_RULES)
    is_bias = param.endswith("bias")
    hidden, ffn_key = ctx["hidden"], ctx["ffn_key"]
    if "shared_expert" in module and ctx["shared_key"]:
        ffn_key = ctx["shared_key"]
    elif re.search(r"(?:^|\.)experts(?:\.|$)", module) and ctx["expert_key"]:
        ffn_key = ctx["expert_key"]
    if kind is None:
        return TensorRole("unknown", reason=f"no rule for '{module}'")
    if len(shape) > 2 or (kind == "norm" and len(shape) != 1):
        # fused expert tensors ([experts, out, in]) and the like: name-only role
        return TensorRole(kind, (None,) * len(shape), (None,) * len(shape),
                          output_projection=kind in ("o", "down"), is_bias=is_bias,
                          reason=f"{len(shape)}-D '{kind}' tensor {shape}", width_ok=False)
    if kind == "norm":
        if shape[0] != hidden:
            return TensorRole("norm", (None,), ("norm",), is_bias=is_bias)  # e.g. a norm over head_dim
        return TensorRole("norm", ("hidden",), ("norm",), is_bias=is_bias)
    if kind in ("q_norm", "k_norm"):
        space = "q" if kind == "q_norm" else "kv"
        if shape[0] == ctx["sizes"][space] and shape[0] != ctx["head_dim"]:
            return TensorRole(kind, (space,), ("norm",), is_bias=is_bias)
        return TensorRole(kind, (None,), ("norm",), is_bias=is_bias)  # per-head norm over head_dim
    out_space, in_space = {
        "q": ("q", "hidden"), "k": ("kv", "hidden"), "v": ("kv", "hidden"), "qkv": ("qkv", "hidden"),
        "o": ("hidden", "q"), "up": (f"ffn:{ffn_key}", "hidden"), "gate_up": (f"gate_up:{ffn_key}", "hidden"),
        "down": ("hidden", f"ffn:{ffn_key}"), "router": (None, "hidden"),
    }[kind]
    output_projection = kind in ("o", "down")
    if is_bias:
        return TensorRole(kind, (out_space,), ("out" if out_space else None,), output_projection, True)
    if len(shape) != 2:
        return TensorRole("unknown", reason=f"'{kind}' weight with shape {shape}")
    dims: tuple = (out_space, in_space)
    io: tuple = ("out" if out_space else None, "in")
    if transposed:  # GPT-2 Conv1D stores [in, out]
        dims, io = dims[::-1], io[::-1]
    return TensorRole(kind, dims, io, output_projection)


def _global_role(name: str, shape: tuple[int, ...], transposed: bool, hidden: int) -> TensorRole:
    module, param = _module_of(name)
    kind = _classify(module, _GLOBAL_RULES)
    is_bias = param.endswith("bias")
    if kind is None:
        return TensorRole("unknown", reason=f"no rule for '{module}'")
    if kind == "norm":
        if len(shape) == 1 and shape[0] == hidden:
            return TensorRole("norm", ("hidden",), ("norm",), is_bias=is_bias)
        return TensorRole("unknown", reason=f"norm of shape {shape}")
    if is_bias:
        if kind == "proj_in":
            return TensorRole(kind, ("hidden",), ("out",), is_bias=True)
        return TensorRole(kind, (None,) * len(shape), (None,) * len(shape), is_bias=True)
    if len(shape) != 2:
        return TensorRole("unknown", reason=f"'{kind}' with shape {shape}")
    dims, io = {
        "embedding": ((None, "hidden"), (None, "out")),
        "positions": ((None, "hidden"), (None, "out")),
        "lm_head": ((None, "hidden"), (None, "in")),
        "proj_in": (("hidden", None), ("out", None)),
        "proj_out": ((None, "hidden"), (None, "in")),
    }[kind]
    if transposed:
        dims, io = dims[::-1], io[::-1]
    return TensorRole(kind, dims, io)


def _conv1d_modules(model) -> set[str]:
    """In-memory module paths (with and without the base-model prefix) of GPT-2-style transposed Conv1D layers."""
    return {name for name, module in _in_memory_modules(model).items() if type(module).__name__ == "Conv1D"}


def _attention_shape(hf_config, layout: Layout, tensors: Mapping[str, TensorInfo],
                     transposed: Callable[[str], bool]) -> tuple[int, int, int]:
    """(query heads, key/value heads, head_dim): the config's, corrected by the first block's q/k/qkv rows."""
    num_heads, num_kv, head_dim = head_geometry(hf_config)
    if not num_heads:
        return 0, 0, head_dim  # no attention (state-space and other attention-free blocks): no width rule
    rows: dict[str, int] = {}
    for rest in layout.layers[0]:
        module, param = _module_of(rest)
        kind, info = _classify(module, _BLOCK_RULES), tensors[layout.layer_tensor(0, rest)]
        if kind in ("q", "k", "qkv") and param == "weight" and len(info.shape) == 2:
            rows[kind] = info.shape[1] if transposed(layout.layer_tensor(0, rest)) else info.shape[0]
    if "q" in rows and rows["q"] % num_heads == 0:
        head_dim = rows["q"] // num_heads
    if "k" in rows and rows["k"] % head_dim == 0:
        num_kv = rows["k"] // head_dim
    elif "qkv" in rows and rows["qkv"] % head_dim == 0 and (rows["qkv"] // head_dim - num_heads) % 2 == 0:
        num_kv = (rows["qkv"] // head_dim - num_heads) // 2
    return num_heads, num_kv, head_dim


def _ffn_keys(hf_config) -> tuple[str, str | None, str | None]:
    """Config keys of the dense FFN size, the routed experts' and the shared expert's (attribute_map applied)."""
    def first_key(candidates) -> str | None:
        return next((_mapped(hf_config, key) for key in candidates if hasattr(hf_config, _mapped(hf_config, key))),
                    None)

    return first_key(_FFN_KEYS) or "intermediate_size", first_key(_EXPERT_FFN_KEYS), first_key(_SHARED_FFN_KEYS)


def derive_roles(layout: Layout, tensors: Mapping[str, TensorInfo]) -> Roles:
    """Work out every tensor's role for the model described by ``layout``.

    Example:
        >>> roles = derive_roles(layout, ckpt.tensors)
        >>> roles.role("model.layers.0.self_attn.o_proj.weight").dims
        ('hidden', 'q')
        >>> roles.num_heads, roles.num_kv_heads, roles.head_dim, roles.ffn_sizes
        (32, 4, 64, {'intermediate_size': 5632})
    """
    config = layout.config
    hf_config = hf_config_from_dict(config)
    model = layout.skeleton if layout.skeleton is not None else meta_model(hf_config)
    hidden = _attr(hf_config, "hidden_size")
    if not isinstance(hidden, int):
        raise HfgrowError(f"the {layout.model_type} config has no hidden size hfgrow can read.")
    conv1d = _conv1d_modules(model)
    transposed = lambda name: _module_of(name)[0] in conv1d  # noqa: E731  (GPT-2 Conv1D stores [in, out])
    num_heads, num_kv, head_dim = _attention_shape(hf_config, layout, tensors, transposed)
    ffn_key, expert_key, shared_key = _ffn_keys(hf_config)
    ffn_sizes = {key: _attr(hf_config, key) for key in (ffn_key, expert_key, shared_key)
                 if key and isinstance(_attr(hf_config, key), int)}
    ctx = {"hidden": hidden, "ffn_key": ffn_key, "expert_key": expert_key, "shared_key": shared_key,
           "sizes": {"hidden": hidden, "q": num_heads * head_dim, "kv": num_kv * head_dim}, "head_dim": head_dim}
    where = _block_names(layout)
    block = {rest: _block_role(rest, tensors[name].shape, transposed(name), ctx) for rest, name in where.items()}
    # FFN sizes the config leaves implicit (GPT-2's n_inner=None means 4 * n_embd): read them off the tensors
    for rest, role in block.items():
        for dim, space in enumerate(role.dims):
            if space and space.startswith("ffn:") and len(role.dims) == 2:
                ffn_sizes.setdefault(space.split(":", 1)[1], tensors[where[rest]].shape[dim])
    norm_kind, norm_offset, norm_init, has_norm_weights = _probe_norm(model, hidden)
    init_std = (_attr(hf_config, "initializer_range") or _attr(hf_config, "init_std")
                or _attr(hf_config, "initializer_factor") or 0.02)
    roles = Roles(
        model_type=layout.model_type, config=config, prefix=layout.prefix, hidden_size=hidden,
        num_heads=num_heads, num_kv_heads=num_kv, head_dim=head_dim, ffn_sizes=ffn_sizes,
        keys={"hidden_size": _mapped(hf_config, "hidden_size"),
              "num_attention_heads": _mapped(hf_config, "num_attention_heads"),
              "num_key_value_heads": next((key for key in _KV_KEYS if hasattr(hf_config, key)), None),
              "intermediate_size": ffn_key},
        hidden_aliases=[key for key in _HIDDEN_ALIASES if config.get(key) == hidden],
        qkv_layout=qkv_layout(config), alibi=_uses_alibi(config),
        norm_kind=norm_kind, norm_offset=norm_offset, norm_init=norm_init,
        norm_eps_key=_norm_eps(model, hidden, config), has_norm_weights=has_norm_weights,
        embed_scale=_embed_scale(model), init_std=float(init_std),
        tied=dict(getattr(model, "all_tied_weights_keys", None) or {}),
        block=block,
        globals={name: _global_role(name, tensors[name].shape, transposed(name), hidden) for name in layout.globals},
    )
    _check_sizes(roles, layout, tensors, set(modules_params(model)))
    post = post_norms(model, layout.num_layers, layout.prefix)
    for rest, role in roles.block.items():
        module = _module_of(rest)[0]
        if module in post and role.kind == "norm":
            roles.block[rest] = dataclasses.replace(role, post_norm_of=post[module])
    return roles


def post_norms(model, num_layers: int | None = None, prefix: str = "") -> dict[str, str]:
    """Block-relative paths of the norms that normalise a sublayer's output -> ``o`` (attention) or ``down`` (MLP).

    A post-norm (Gemma 2/3, OLMo 2/3: ``post_attention_layernorm``, ``post_feedforward_layernorm``) is a norm
    that takes the attention's or the MLP's output as its input; Llama's ``post_attention_layernorm`` takes the
    residual sum instead and is no post-norm. Names cannot tell them apart, so one forward pass of ``model``
    (the meta skeleton: no values, no memory) records which module takes which module's output; the chain from
    the block child holding the ``o`` (or ``down``) projection is followed through every module that takes its
    output (a dropout, a norm), and the norms on it are the post-norms. Empty when the pass fails.

    Example:
        >>> post_norms(meta_model(Gemma3TextConfig(num_hidden_layers=2)))
        {'post_attention_layernorm': 'o', 'post_feedforward_layernorm': 'down'}
    """
    try:
        _, blocks = decoder_blocks(model, num_layers, prefix.rstrip(".").rsplit(".", 1)[-1] or None)
    except HfgrowError:
        return {}
    block = blocks[0]  # blocks share a structure: the first one is probed
    modules = {path: m for path, m in block.named_modules() if path}
    paths = {id(m): path for path, m in modules.items()}
    starts: dict[str, str] = {}
    for kind in ("o", "down"):
        # modules first, then parameters (fused experts hold "down_proj" as a parameter of the experts module)
        names = [p for p in [*modules, *(n for n, _ in block.named_parameters())]
                 if p and kind_of(p) == kind]
        if names:
            child = names[0].split(".")[0]
            # BLOOM and MPT add the residual inside the sublayer: the projection's own output is the update
            starts[names[0] if adds_residual(modules[child]) else child] = kind
    calls: list[tuple[str, Any, Any]] = []

    def record(module, args, kwargs, output) -> None:
        calls.append((paths[id(module)], args[0] if args else kwargs.get("hidden_states"),
                      output[0] if isinstance(output, tuple) else output))

    class _Done(Exception):
        pass

    def stop(*_) -> None:
        raise _Done

    def stand_in(hidden_states, *args, **kwargs):
        return hidden_states * 1

    hooks = [m.register_forward_hook(record, with_kwargs=True) for m in modules.values()]
    hooks.append(block.register_forward_hook(stop))
    mlp = next((modules[path] for path, kind in starts.items() if kind == "down"), None)
    try:
        # routed experts do not run on meta tensors (data-dependent shapes): the second try has the MLP pass its
        # input through, which is all the probe needs to see where its output goes
        for attempt in ("real", "stand-in"):
            calls.clear()
            if attempt == "stand-in":
                if mlp is None:
                    return {}
                mlp.forward = stand_in
            try:
                with torch.no_grad(), quiet_transformers():
                    model(input_ids=torch.zeros(1, 2, dtype=torch.long, device="meta"))
            except _Done:
                break
            except Exception:  # noqa: BLE001 - a forward that does not run on meta tensors: no post-norms known
                continue
        else:
            return {}
    finally:
        if mlp is not None and "forward" in vars(mlp):
            del mlp.forward
        for hook in hooks:
            hook.remove()
    found: dict[str, str] = {}
    for path, _, out in calls:
        kind = starts.get(path)
        if kind is None:
            continue
        seen = {path}
        while True:
            nxt = next(((p, o) for p, x, o in calls if x is out and p not in seen), None)
            if nxt is None:
                break
            path_next, out = nxt
            seen.add(path_next)
            module = modules[path_next]
            if "Norm" in type(module).__name__ or isinstance(module, (torch.nn.LayerNorm, torch.nn.RMSNorm)):
                found[path_next] = kind
    return found


def _block_names(layout: Layout) -> dict[str, str]:
    """Each distinct block tensor name (relative) -> the full name of its first occurrence."""
    where: dict[str, str] = {}
    for index, names in enumerate(layout.layers + layout.extra_layers):
        for rest in names:
            where.setdefault(rest, layout.layer_tensor(index, rest))
    return where


def modules_params(model) -> set[str]:
    """In-memory parameter names, with and without the base-model prefix."""
    names = {name for name, _ in model.named_parameters()}
    prefix = getattr(model, "base_model_prefix", "") or ""
    return names | {name[len(prefix) + 1:] for name in names if prefix and name.startswith(prefix + ".")}


def _check_sizes(roles: Roles, layout: Layout, tensors: Mapping[str, TensorInfo], params: set[str]) -> None:
    """Demote a role to unknown when a dimension's size does not match its space; keep harmless extras.

    A tensor no rule covers is kept unchanged when none of its dimensions is a size that
    grows, or when transformers does not use it at all (old checkpoints carry buffers such
    as ``attn.bias`` causal masks or ``rotary_emb.inv_freq``).
    """
    grown = {roles.hidden_size, roles.space_size("q"), roles.space_size("kv"), *roles.ffn_sizes.values()}

    def checked(name: str, role: TensorRole, shape: tuple[int, ...]) -> TensorRole:
        for dim, space in enumerate(role.dims):
            if space is None:
                continue
            try:
                expected = roles.space_size(space)
            except KeyError:
                return TensorRole("unknown", reason=f"no config size for '{space}'")
            if shape[dim] != expected:
                return TensorRole("unknown", reason=f"dimension {dim} is {shape[dim]}, expected {space} = {expected}")
        if role.kind == "unknown" and (not any(size in grown for size in shape) or name not in params):
            return TensorRole("fixed", (None,) * len(shape), (None,) * len(shape))
        return role

    for rest, name in _block_names(layout).items():
        roles.block[rest] = checked(name, roles.block[rest], tensors[name].shape)
    for name, role in list(roles.globals.items()):
        roles.globals[name] = checked(name, role, tensors[name].shape)


def check_output_shapes(config: dict[str, Any], shapes: Mapping[str, tuple[int, ...]], roles: Roles) -> None:
    """Fail clearly when transformers would build different shapes from ``config`` than the plan writes."""
    hidden = config.get(roles.keys["hidden_size"])
    heads = config.get(roles.keys["num_attention_heads"])
    head_message = (
        f"{roles.model_type} ties the head size to hidden_size / num_heads, so {hidden} hidden units with {heads} "
        f"heads would change head_dim from {roles.head_dim}; choose --num-heads "
        + (f"{hidden // roles.head_dim}" if isinstance(hidden, int) and hidden % roles.head_dim == 0
           else "so that hidden_size / num_heads = head_dim") + "."
    )
    ties = isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden != heads * roles.head_dim
    try:
        model = meta_model(hf_config_from_dict(config))
    except Exception as exc:  # noqa: BLE001 - config validators raise ValueError and huggingface_hub errors
        if ties and isinstance(exc, HfgrowError):
            raise HfgrowError(head_message) from None
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise HfgrowError(f"transformers rejects the grown {roles.model_type} config: {first.rstrip('.')}.") from None
    params = {name: tuple(p.shape) for name, p in model.named_parameters()}
    prefix = getattr(model, "base_model_prefix", "") or ""
    for name, shape in shapes.items():
        expected = params.get(name) or (params.get(f"{prefix}.{name}") if prefix else None)
        if expected is None or tuple(expected) == tuple(shape):
            continue
        role = roles.role(name) if name in roles.globals or roles.is_block_tensor(name) else roles.lm_head_role()
        if ties and role.kind in ("q", "k", "v", "qkv", "o", "q_norm", "k_norm"):
            raise HfgrowError(head_message)
        raise HfgrowError(
            f"cannot grow {name}: the plan writes shape {tuple(shape)} but the grown {roles.model_type} config "
            f"builds {tuple(expected)}; hfgrow has no width rule for this tensor."
        )
