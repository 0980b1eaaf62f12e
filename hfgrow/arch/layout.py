"""Architecture knowledge, derived from the checkpoint and its config.

Nothing here is a table of model families. The decoder blocks are found from the
tensor names (the prefix ``<something>.<i>.`` whose indices run 0..L-1 where L is
the config's layer count); the config keys that count or describe layers are found
from the config itself (the key the config class maps ``num_hidden_layers`` to,
every list with one entry per layer, every list of layer indices). A model nobody
listed therefore works as long as it is built from repeated blocks.

The one thing we ask transformers for is a model skeleton on the ``meta`` device
(no memory, no weights): it tells which parameters each layer has in memory, so
after growing we can check that the new config really describes the layers we put
where (a dense layer where the config expects a MoE layer is caught here), and which
weights are tied.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.io.checkpoint import Checkpoint, TensorInfo
from hfgrow.errors import HfgrowError

_LAYER_NAME = re.compile(r"^(?P<prefix>(?:[^.]+\.)*?)(?P<index>\d+)\.(?P<rest>.+)$")
_INDEX_LIST_HINT = re.compile(r"(layers|layer_ids|layer_idx|indices|_idx)$")
_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


@dataclass
class Layout:
    """What the operators need to know about a source model.

    Attributes:
        config: the raw config.json dict (what we rewrite for the output).
        model_type / architecture: from the config.
        prefix: tensor-name prefix of the decoder blocks, e.g. ``"model.layers."``.
        num_layers: L, the number of decoder blocks.
        layers: for every block, its tensors' names relative to ``prefix + "<i>."``.
        extra_layers: blocks stored after the last decoder block (e.g. multi-token
            prediction heads); kept after the grown stack.
        globals: tensors outside the blocks (embeddings, final norm, LM head, ...).
        count_key: the config.json key that holds L.
        per_layer_keys: config keys whose value is a list with one entry per layer.
        index_keys: config keys whose value is a list of layer indices.
        tied: weights transformers ties to another (target -> source), e.g. ``lm_head.weight`` ->
            ``model.embed_tokens.weight``; a checkpoint may or may not store the target (never rewritten).
        signatures: per block, the parameter names transformers builds for it in memory
            (None when transformers cannot build the architecture).
    """

    config: dict[str, Any]
    model_type: str
    architecture: str
    prefix: str
    num_layers: int
    layers: list[list[str]]
    extra_layers: list[list[str]]
    globals: list[str]
    count_key: str
    per_layer_keys: dict[str, list[Any]] = field(default_factory=dict)
    index_keys: dict[str, list[int]] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    signatures: list[frozenset[str]] | None = None
    layer_types: list[str] | None = None
    skeleton: Any = field(default=None, repr=False, compare=False)  # the meta-device model (shared, read-only)

    def layer_tensor(self, layer: int, rest: str) -> str:
        return f"{self.prefix}{layer}.{rest}"


def read_config(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise HfgrowError(f"{folder} has no config.json; hfgrow needs a transformers model folder.")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise HfgrowError(f"{path} is not valid JSON ({exc}).") from None


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' logger (below ERROR) inside the block; restore its level after."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def hf_config_from_dict(config: dict[str, Any]):
    """A transformers config object for a raw config dict (no files, no network)."""
    from transformers import AutoConfig

    model_type = config.get("model_type")
    if not model_type:
        raise HfgrowError("config.json has no model_type; hfgrow cannot tell what architecture this is.")
    if config.get("is_encoder_decoder"):
        raise HfgrowError(f"'{model_type}' is an encoder-decoder model; hfgrow grows decoder-only causal LMs.")
    kwargs = {k: v for k, v in config.items() if k != "model_type"}
    try:
        with quiet_transformers():
            return AutoConfig.for_model(model_type, **kwargs)
    except Exception as exc:  # noqa: BLE001 - unknown type or a config transformers' validation rejects
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise HfgrowError(f"config.json ({model_type}) is not a config transformers accepts: {first}") from None


def meta_model(hf_config):
    """Build the causal-LM skeleton on the meta device: structure only, zero bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with quiet_transformers(), torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config)
    except ValueError as exc:
        raise HfgrowError(
            f"'{hf_config.model_type}' has no causal-LM class in transformers "
            f"({str(exc).splitlines()[0][:120]}); hfgrow grows decoder-only causal LMs."
        ) from None


def decoder_blocks(model, num_layers: int | None = None, hint: str | None = None) -> tuple[str, Any]:
    """The ModuleList of a model's decoder blocks and its qualified name in ``model``.

    The list is the ``nn.ModuleList`` whose length is the layer count (``num_layers``, else the config's
    ``num_hidden_layers``); when several have that length, the one named ``hint`` (the checkpoint's block
    prefix, e.g. ``layers`` or ``h``) wins, then the decoder's own ``layers``. Works on PEFT-wrapped and
    compiled models too (the name is then the one inside the wrapper).

    Example:
        >>> decoder_blocks(model)[0]
        'model.layers'

    Raises:
        HfgrowError: no such list (not a stack of repeated blocks).
    """
    import torch

    if num_layers is None:
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        num_layers = getattr(config, "num_hidden_layers", None)
    candidates = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers]
    if not candidates:
        raise HfgrowError(f"cannot find the {num_layers} decoder blocks of {type(model).__name__}.")
    last = lambda name: name.rsplit(".", 1)[-1]  # noqa: E731
    for wanted in (hint, "layers"):
        named = [(name, module) for name, module in candidates if wanted and last(name) == wanted]
        if named:
            return named[0]
    return candidates[0]


def layer_signatures(hf_config, num_layers: int, hint: str) -> tuple[list[frozenset[str]] | None, dict[str, str], Any]:
    """Per-layer in-memory parameter names, the tied-weights map, and the skeleton itself."""
    model = meta_model(hf_config)
    try:
        _, blocks = decoder_blocks(model, num_layers, hint)
        signatures = [frozenset(name for name, _ in block.named_parameters()) for block in blocks]
    except HfgrowError:
        signatures = None
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    return signatures, tied, model


def _split_names(tensors: dict[str, TensorInfo], expected_layers: int | None):
    """Group tensor names by their first numeric component; pick the decoder-block prefix."""
    groups: dict[str, dict[int, list[str]]] = {}
    for name in tensors:
        match = _LAYER_NAME.match(name)
        if match:
            groups.setdefault(match["prefix"], {}).setdefault(int(match["index"]), []).append(match["rest"])
    best = None
    for prefix, by_index in groups.items():
        count = len(by_index)
        if sorted(by_index) != list(range(count)) or count < 1:
            continue  # not a contiguous 0..n-1 run: not a block stack
        n_tensors = sum(len(v) for v in by_index.values())
        fits = expected_layers is not None and count >= expected_layers
        score = (fits, n_tensors)
        if best is None or score > best[0]:
            best = (score, prefix, by_index)
    if best is None:
        return None
    _, prefix, by_index = best
    return prefix, [by_index[i] for i in range(len(by_index))]


def _count_key(config: dict[str, Any], hf_config) -> str:
    attribute_map = getattr(type(hf_config), "attribute_map", {}) or {}
    mapped = attribute_map.get("num_hidden_layers")
    if mapped and mapped in config:
        return mapped
    for key in _COUNT_KEYS:
        if key in config and isinstance(config[key], int):
            return key
    return mapped or "num_hidden_layers"


def _classify_lists(values: dict[str, Any], num_layers: int) -> tuple[dict[str, list], dict[str, list[int]]]:
    per_layer: dict[str, list] = {}
    index_lists: dict[str, list[int]] = {}
    for key, value in values.items():
        if not isinstance(value, list) or key in ("architectures",):
            continue
        if not all(isinstance(v, (str, int, float, bool)) or v is None for v in value):
            continue
        is_index_list = (
            bool(_INDEX_LIST_HINT.search(key))
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and len(set(value)) == len(value)
            and all(0 <= v < num_layers for v in value)
            and (len(value) != num_layers or sorted(value) == list(range(num_layers)))
        )
        if is_index_list:
            index_lists[key] = list(value)
        elif len(value) == num_layers and (num_layers > 1 or "layer" in key):
            per_layer[key] = list(value)
    return per_layer, index_lists


def read_layout(folder: Path, checkpoint: Checkpoint, config: dict[str, Any] | None = None) -> Layout:
    """Derive the layer structure of the model in ``folder``.

    Example:
        >>> layout = read_layout(Path("TinyLlama"), Checkpoint.open(Path("TinyLlama")))
        >>> layout.prefix, layout.num_layers, layout.count_key
        ('model.layers.', 22, 'num_hidden_layers')
    """
    config = read_config(folder) if config is None else config
    hf_config = hf_config_from_dict(config)
    declared = getattr(hf_config, "num_hidden_layers", None)
    split = _split_names(checkpoint.tensors, declared)
    if split is None:
        raise HfgrowError(
            f"no repeated block found in {folder}: no tensor names of the form '<prefix>.<index>.<name>'."
        )
    prefix, blocks = split
    num_layers = declared if isinstance(declared, int) and 0 < declared <= len(blocks) else len(blocks)
    if declared is not None and declared != num_layers:
        raise HfgrowError(
            f"config.json says {declared} layers but the checkpoint has {len(blocks)} blocks under '{prefix}'."
        )
    in_blocks = {f"{prefix}{i}.{rest}" for i, names in enumerate(blocks) for rest in names}
    globals_ = [name for name in checkpoint.tensors if name not in in_blocks]

    derived = hf_config.to_dict()
    per_layer, index_lists = _classify_lists(derived, num_layers)
    layout = Layout(
        config=config,
        model_type=config["model_type"],
        architecture=(config.get("architectures") or [type(hf_config).__name__])[0],
        prefix=prefix,
        num_layers=num_layers,
        layers=[sorted(names) for names in blocks[:num_layers]],
        extra_layers=[sorted(names) for names in blocks[num_layers:]],
        globals=globals_,
        count_key=_count_key(config, hf_config),
        per_layer_keys=per_layer,
        index_keys=index_lists,
        layer_types=per_layer.get("layer_types"),
    )
    hint = prefix.rstrip(".").split(".")[-1]
    signatures, tied, layout.skeleton = layer_signatures(hf_config, num_layers, hint)
    layout.signatures = signatures
    layout.tied = tied
    return layout


def grown_config(layout: Layout, layer_map: list[int], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.json for a model whose block i is source block ``layer_map[i]``.

    The layer count is updated and every per-layer list is rebuilt to follow the map:
    per-layer lists are reindexed, lists of layer indices are remapped to the output
    positions of the listed source layers. Derived lists the source config left implicit
    are written out explicitly, because their rule (e.g. "every 6th layer is global")
    would not follow the new order.

    Example:
        >>> layout.per_layer_keys
        {'layer_types': ['sliding_attention', 'full_attention']}
        >>> grown_config(layout, [0, 1, 0, 1])["layer_types"]
        ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention']
    """
    config = _remap_layers(layout.config, layout.count_key, layout.per_layer_keys, layout.index_keys, layer_map)
    config.update(extra or {})
    return config


def config_for_layers(config: dict[str, Any], layer_map: list[int]) -> dict[str, Any]:
    """Like :func:`grown_config`, from a config alone (no checkpoint): what planning needs for a base model.

    Example:
        >>> config_for_layers(gemma3_config, [0, 1])["layer_types"]      # the first two of the target's
        ['sliding_attention', 'sliding_attention']
    """
    hf_config = hf_config_from_dict(config)
    num_layers = getattr(hf_config, "num_hidden_layers")
    per_layer, index_lists = _classify_lists(hf_config.to_dict(), num_layers)
    return _remap_layers(config, _count_key(config, hf_config), per_layer, index_lists, layer_map)


def _remap_layers(config: dict[str, Any], count_key: str, per_layer: dict[str, list], index_lists: dict[str, list[int]],
                  layer_map: list[int]) -> dict[str, Any]:
    config = json.loads(json.dumps(config))
    config[count_key] = len(layer_map)
    for key, values in per_layer.items():
        config[key] = [values[src] for src in layer_map]
    for key, indices in index_lists.items():
        chosen = set(indices)
        config[key] = [i for i, src in enumerate(layer_map) if src in chosen]
    return config


def check_layer_kinds(layout: Layout, config: dict[str, Any], layer_map: list[int]) -> None:
    """Fail clearly when the grown config would build a different block than the one we copy in.

    Configs that describe layer kinds by a rule (DeepSeek's ``first_k_dense_replace``,
    ``decoder_sparse_step``, ...) cannot follow an arbitrary layer order; transformers
    would then build, say, a MoE block where we place a dense one.
    """
    if layout.signatures is None:
        return
    hint = layout.prefix.rstrip(".").split(".")[-1]
    signatures, _, _ = layer_signatures(hf_config_from_dict(config), len(layer_map), hint)
    if signatures is None:
        return
    for position, src in enumerate(layer_map):
        if signatures[position] != layout.signatures[src]:
            from hfgrow.arch.pattern import compact

            hint = ""
            suggestion = kind_preserving_map(layout.signatures, signatures)
            if suggestion is not None:
                hint = f" --pattern '{compact(suggestion)}' stacks each kind of layer where the config expects it."
            raise HfgrowError(
                f"the config cannot describe this layer order: output layer {position} would be a copy of "
                f"source layer {src}, but {layout.model_type}'s config makes layer {position} a different kind "
                f"of block (its layer kinds follow a rule, not a list);{hint or ' choose another --pattern.'}"
            )


def kind_preserving_map(source: list[frozenset[str]], target: list[frozenset[str]]) -> list[int] | None:
    """Gstack within each kind of block: position p gets the next source layer of p's kind, cyclically.

    Example (one dense layer then MoE layers, grown from 4 to 8 layers):
        >>> kind_preserving_map([D, M, M, M], [D, M, M, M, M, M, M, M])
        [0, 1, 2, 3, 1, 2, 3, 1]
    """
    by_kind: dict[frozenset[str], list[int]] = {}
    for index, signature in enumerate(source):
        by_kind.setdefault(signature, []).append(index)
    used: dict[frozenset[str], int] = {}
    layer_map = []
    for signature in target:
        members = by_kind.get(signature)
        if not members:
            return None
        count = used.get(signature, 0)
        layer_map.append(members[count % len(members)])
        used[signature] = count + 1
    return layer_map


def context_length(config) -> int | None:
    """The longest sequence a model config allows, whatever the family calls it (None if unknown)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "seq_length",
                "n_ctx"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def open_model(folder: Path) -> tuple[Checkpoint, Layout]:
    """Open a model folder: config checked first (clearer errors), then tensor table and layout."""
    config = read_config(folder)
    hf_config_from_dict(config)  # validates before any weights are touched; cheap to build again below
    checkpoint = Checkpoint.open(folder)
    return checkpoint, read_layout(folder, checkpoint, config)
