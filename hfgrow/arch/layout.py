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
import copy
import difflib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfgrow.errors import HfgrowError
from hfgrow.io.checkpoint import Checkpoint, TensorInfo
from hfgrow.io.folder import ModelFolder, parse_bounded_json, read_user_file

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
        count_key: the config.json key that holds L (a dotted path in a composite config).
        count_aliases: ``num_hidden_layers`` (an attribute path) when the blocks are counted by another key
            (xLSTM's ``num_blocks``, BART's ``decoder_layers``) and the config read it as L too: kept equal, since
            caches and generation read it.
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
    count_aliases: list[str] = field(default_factory=list)  # other keys that held L (kept equal to the count)
    per_layer_keys: dict[str, list[Any]] = field(default_factory=dict)
    index_keys: dict[str, list[int]] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    signatures: list[frozenset[str]] | None = None
    layer_types: list[str] | None = None
    skeleton: Any = field(default=None, repr=False, compare=False)  # the meta-device model (shared, read-only)
    headers_only: bool = False  # made by header_layout: its grown configs are drafts (the checked plan writes the real)

    def layer_tensor(self, layer: int, rest: str) -> str:
        return f"{self.prefix}{layer}.{rest}"


def read_config(folder: Path | ModelFolder) -> dict[str, Any]:
    """config.json of a model folder, as a dict (inside the folder, a JSON object, or one sentence why not)."""
    folder = ModelFolder(folder)
    if folder.find("config.json") is None:
        raise HfgrowError(f"{folder.path} has no config.json; hfgrow needs a transformers model folder.")
    return folder.read_json("config.json")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config a user names: a ``config.json`` file, or a model folder holding one (see :func:`read_config`).

    Example:
        >>> read_config_file("big/config.json")["model_type"]          # doctest: +SKIP
        'llama'
    """
    p = Path(path).expanduser()
    if p.is_dir():
        return read_config(p)
    return parse_bounded_json(read_user_file(p, "config file"), f"the config file '{path}'")


def text_config(config: Any) -> Any:
    """The decoder's config of a transformers config: its text config for composite (vision-language) configs,
    the config itself otherwise. The one place hfgrow asks for it."""
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


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

    from transformers import PretrainedConfig

    model_type = config.get("model_type")
    if not model_type or not isinstance(model_type, str):
        raise HfgrowError("config.json has no model_type; hfgrow cannot tell what architecture this is.")
    if config.get("is_encoder_decoder") is True:
        raise HfgrowError(f"'{model_type}' is an encoder-decoder model; hfgrow grows decoder-only causal LMs.")
    decode = getattr(PretrainedConfig, "_decode_special_floats", lambda value: value)  # {"__float__": "Infinity"}
    kwargs = {k: decode(v) for k, v in config.items() if k != "model_type"}
    try:
        with quiet_transformers():
            return AutoConfig.for_model(model_type, **kwargs)
    except Exception as exc:  # noqa: BLE001 - unknown type or a config transformers' validation rejects
        first = " ".join(str(exc).split())[:200].rstrip(".") or type(exc).__name__
        raise HfgrowError(f"config.json ({model_type}) is not a config transformers accepts: {first}.") from None


def meta_model(hf_config):
    """Build the causal-LM skeleton on the meta device: structure only, zero bytes."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with quiet_transformers(), torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise HfgrowError(
                f"'{hf_config.model_type}' has no causal-LM class in transformers; hfgrow grows decoder-only causal "
                "LMs.") from None
        raise _unbuildable(hf_config, exc) from None
    except Exception as exc:  # noqa: BLE001 - model code fails on configs it does not expect (None sizes, ...)
        raise _unbuildable(hf_config, exc) from None


def _unbuildable(hf_config, exc: BaseException) -> HfgrowError:
    first = " ".join(str(exc).split())[:160].rstrip(".") or type(exc).__name__
    return HfgrowError(f"transformers cannot build '{hf_config.model_type}' from this config.json "
                       f"({type(exc).__name__}: {first}).")


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
        config = text_config(model.config)
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


def _text_config(hf_config) -> tuple[str, Any]:
    """(path of the decoder's sub-config in config.json, that sub-config): ``("", hf_config)`` for plain LMs,
    ``("text_config", ...)`` for a composite model (e.g. a vision-language model whose language model grows)."""
    for name in ("text_config", "decoder", "generator"):
        sub = getattr(hf_config, name, None)
        if sub is not None and hasattr(sub, "to_dict") and sub is not hf_config:
            return name, sub
    return "", hf_config


def _get(config: dict[str, Any], path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        config = config.setdefault(part, {})
    config[last] = value


def set_config_value(config: dict[str, Any], path: str, value: Any) -> None:
    """Set one config value in place, as :func:`rewrite_config` does (``path`` may name a sub-config:
    ``text_config.num_hidden_layers``)."""
    rewritten = rewrite_config(config, {path: value})
    config.clear()
    config.update(rewritten)


def _plain(value: Any) -> Any:
    """A config value as JSON has it (tuples as lists), for comparing what was written with what is read."""
    return json.loads(json.dumps(value, default=str))


def _sub_config(hf_config, path: str):
    """The config object at ``path`` (``""``: the config itself; ``"text_config"``: its sub-config), or None."""
    sub = hf_config
    for part in [p for p in path.split(".") if p]:
        sub = getattr(sub, part, None)
        if sub is None or not hasattr(sub, "to_dict"):
            return None
    return sub


_MISSING = object()


def _declared(sub, key: str) -> bool:
    """Whether ``key`` is a field the config class declares (what it builds its attributes from)."""
    return key in (getattr(type(sub), "__dataclass_fields__", None) or {})


def _reads_back(config: dict[str, Any], wanted: dict[tuple[str, str], Any]) -> list[tuple[str, str]]:
    """The changes (sub-config path, attribute) that the config class does not read from ``config`` as written.

    An attribute the class does not declare is checked with its own key left out of config.json: a class that
    derives it (Falcon's ``num_key_value_heads``) would overwrite a stored value on the next change of its input;
    one that only passes it through (no such attribute without the key) reads it from the key."""
    wrong = []
    try:
        rebuilt = hf_config_from_dict(config)
    except HfgrowError:
        return list(wanted)
    for (path, attr), value in wanted.items():
        sub = _sub_config(rebuilt, path)
        if sub is None:
            continue
        key = (getattr(type(sub), "attribute_map", {}) or {}).get(attr, attr)
        if _plain(getattr(sub, attr, None)) != _plain(value):
            wrong.append((path, attr))
            continue
        if _declared(sub, key) or not isinstance(_get(config, path) if path else config, dict):
            continue
        without = json.loads(json.dumps(config))
        (_get(without, path) if path else without).pop(key, None)
        try:
            derived = getattr(_sub_config(hf_config_from_dict(without), path), attr, _MISSING)
        except HfgrowError:
            continue
        if derived is not _MISSING and _plain(derived) != _plain(value):
            wrong.append((path, attr))
    return wrong


def _input_keys(sub, raw: dict[str, Any]) -> list[str]:
    """The keys a config class may build an attribute from: config.json's own keys, then the declared fields."""
    return list(dict.fromkeys([*raw, *(getattr(type(sub), "__dataclass_fields__", None) or {})]))


def rewrite_config(config: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of config.json with ``changes`` made the way transformers reads them.

    Every change names an attribute as the config object exposes it, under the path of its sub-config when the
    decoder's config is nested (``text_config.num_hidden_layers``). It is written to the config.json key the
    config class builds that attribute from: the attribute itself, its ``attribute_map`` alias (BART's
    ``num_hidden_layers`` is ``encoder_layers``; GPT-2's ``hidden_size`` is ``n_embd``), or, for an attribute the
    class derives from another in ``__post_init__`` (Falcon's ``num_key_value_heads`` from ``num_kv_heads``), the
    input key that makes it read back (found by rebuilding the config with each key of the old value). The
    config is rebuilt by its class and every change must read back as written. A config transformers rejects
    is returned as written: the checks that build the grown model refuse it with their own sentence.

    Example:
        >>> rewrite_config(falcon, {"num_key_value_heads": 4})["num_kv_heads"]
        4
        >>> rewrite_config(bart_decoder, {"num_hidden_layers": 4})["encoder_layers"]
        4

    Raises:
        HfgrowError: transformers accepts the config but reads a change differently whatever key holds it.
    """
    original = hf_config_from_dict(config)
    wanted: dict[tuple[str, str], Any] = {}
    written = json.loads(json.dumps(config))
    for name, value in changes.items():
        path, _, attr = name.rpartition(".")
        sub = _sub_config(original, path)
        key = (getattr(type(sub), "attribute_map", {}) or {}).get(attr, attr) if sub is not None else attr
        _set(written, _join(path, key), value)
        if sub is not None:
            wanted[(path, attr)] = value
    try:
        hf_config_from_dict(written)
    except HfgrowError:
        return written
    named = {name.rpartition(".")[2] for name in changes}
    for path, attr in _reads_back(written, wanted):
        sub, raw = _sub_config(original, path), _get(written, path) if path else written
        raw = raw if isinstance(raw, dict) else {}
        old = _plain(getattr(sub, attr, None))
        candidates = [key for key in _input_keys(sub, raw) if key not in named and key != attr and _declared(sub, key)
                      and _plain(_get(config, _join(path, key)) if key in raw else getattr(sub, key, None)) == old]
        candidates.sort(key=lambda key: -difflib.SequenceMatcher(None, key, attr).ratio())
        for key in candidates:
            trial = json.loads(json.dumps(written))
            _set(trial, _join(path, key), wanted[(path, attr)])
            if (path, attr) not in _reads_back(trial, {(path, attr): wanted[(path, attr)]}):
                written = trial
                break
        else:
            raise HfgrowError(
                f"transformers' {type(sub).__name__} does not read {attr} = {json.dumps(wanted[(path, attr)])} from "
                f"any config.json key; hfgrow cannot write this {original.model_type} config.")
    return written


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


_OTHER_MODALITY = re.compile(r"vision|visual|image|audio|speech|video|patch")


def _block_list(model, text_config, hint: str | None = None) -> tuple[str, Any] | None:
    """The decoder's block ModuleList in a skeleton and its qualified name (None when there is none).

    Looked for under the model's decoder (``get_decoder()``: the language model of a composite model, BART's
    decoder, ...): the list named ``hint`` or ``layers`` first, then one as long as the config's layer count,
    then the longest.
    """
    import torch

    decoder = model
    getter = getattr(model, "get_decoder", None)
    if getter is not None:
        try:
            decoder = getter() or model
        except Exception:  # noqa: BLE001 - exotic models raise here; the whole model is searched instead
            decoder = model
    if not isinstance(decoder, torch.nn.Module):
        decoder = model
    names = {id(module): name for name, module in model.named_modules()}
    lists = []
    for scope in (decoder, model):  # some models call their LM head "decoder": then search the whole model
        lists = [(names.get(id(module)), module) for _, module in scope.named_modules()
                 if isinstance(module, torch.nn.ModuleList) and len(module) > 0 and id(module) in names]
        if lists:
            break
    if not lists:
        return None
    text_lists = [(n, m) for n, m in lists if not _OTHER_MODALITY.search(n)]
    lists = text_lists or lists  # a vision or audio tower's blocks are not the decoder's
    declared = getattr(text_config, "num_hidden_layers", None)
    last = lambda name: name.rsplit(".", 1)[-1]  # noqa: E731
    for choose in (lambda n, m: hint is not None and last(n) == hint, lambda n, m: last(n) == "layers",
                   lambda n, m: len(m) == declared):
        chosen = [(n, m) for n, m in lists if choose(n, m)]
        if chosen:
            return max(chosen, key=lambda item: len(item[1]))
    return max(lists, key=lambda item: len(item[1]))


def _signatures(blocks) -> list[frozenset[str]]:
    return [frozenset(name for name, _ in block.named_parameters()) for block in blocks]


def layer_signatures(hf_config, num_layers: int, hint: str) -> tuple[list[frozenset[str]] | None, dict[str, str], Any]:
    """Per-layer in-memory parameter names, the tied-weights map, and the skeleton itself."""
    model = meta_model(hf_config)
    found = _block_list(model, _text_config(hf_config)[1], hint)
    signatures = _signatures(found[1]) if found is not None and len(found[1]) == num_layers else None
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    return signatures, tied, model


def _split_names(tensors: dict[str, TensorInfo], expected_layers: int | None, preferred=None):
    """Group tensor names by their first numeric component; pick the decoder-block prefix.

    ``preferred(prefix, first tensor name)`` says whether a run is the skeleton's decoder blocks (it wins);
    otherwise the run that covers the expected layer count and has the most tensors.
    """
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
        is_decoder = preferred is not None and preferred(prefix, f"{prefix}0.{by_index[0][0]}")
        score = (is_decoder, fits, n_tensors)
        if best is None or score > best[0]:
            best = (score, prefix, by_index)
    if best is None:
        return None
    _, prefix, by_index = best
    return prefix, [by_index[i] for i in range(len(by_index))]


def _count_key(config: dict[str, Any], text_path: str, hf_config, num_layers: int, hint: str) -> str:
    """The config.json key (a dotted path for composite configs) that sets how many decoder blocks are built.

    Usually ``num_hidden_layers`` (or what the config class maps it to, e.g. GPT-2's ``n_layer``). When several
    keys hold the layer count (BART-style decoders map ``num_hidden_layers`` to ``encoder_layers`` but build
    ``decoder_layers`` blocks), each is tried on a meta skeleton and the one that changes the block count wins.
    """
    text_config = _text_config(hf_config)[1]
    raw = _get(config, text_path) if text_path else config
    raw = raw if isinstance(raw, dict) else {}
    attribute_map = getattr(type(text_config), "attribute_map", {}) or {}
    mapped = attribute_map.get("num_hidden_layers")
    candidates = [key for key, value in raw.items()
                  if isinstance(value, int) and not isinstance(value, bool) and value == num_layers
                  and ("layer" in key or "block" in key or key in _COUNT_KEYS)]
    if len(candidates) == 1:
        return _join(text_path, candidates[0])
    builds = []
    for key in candidates:
        probe = copy.deepcopy(hf_config)
        try:
            setattr(_text_config(probe)[1], key, num_layers + 1)
            found = _block_list(meta_model(probe), _text_config(probe)[1], hint)
        except Exception:  # noqa: BLE001 - a key the config validates against others: not the count
            continue
        if found is not None and len(found[1]) == num_layers + 1:
            builds.append(key)
    if len(builds) == 1:
        return _join(text_path, builds[0])
    if mapped and mapped in raw:
        return _join(text_path, mapped)
    for key in _COUNT_KEYS:
        if isinstance(raw.get(key), int):
            return _join(text_path, key)
    return _join(text_path, mapped or "num_hidden_layers")


_PER_LAYER_HINT = re.compile(r"layer|block|type|pattern|window|head|size|sparsity|expert|moe|rope|kind|mixer")


def _fixed_tuple(key: str, value: list) -> bool:
    """A short list of numbers that is a fixed-size tuple (``time_step_limit: [0.0, inf]``, ``mlp_multipliers``)
    rather than one entry per layer: it can only be confused with one for a model of 2 or 3 layers."""
    return (len(value) <= 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and not _PER_LAYER_HINT.search(key))


def _count_aliases(count_key: str, text_path: str, text_config, num_layers: int) -> list[str]:
    """``num_hidden_layers`` (as an attribute path) when the config reads it as L but builds the blocks from
    another key: BART-style decoders (``num_hidden_layers`` is ``encoder_layers``, the blocks are
    ``decoder_layers``), xLSTM (``num_blocks``). Caches and generation size themselves by it, so it follows the
    count; a causal-LM checkpoint has no encoder for the other meaning to describe."""
    mapped = (getattr(type(text_config), "attribute_map", {}) or {}).get("num_hidden_layers", "num_hidden_layers")
    if getattr(text_config, "num_hidden_layers", None) == num_layers and _join(text_path, mapped) != count_key:
        return [_join(text_path, "num_hidden_layers")]
    return []


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
        elif len(value) == num_layers and (num_layers > 1 or "layer" in key) and not _fixed_tuple(key, value):
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
    text_path, text_config = _text_config(hf_config)
    skeleton = meta_model(hf_config)
    found = _block_list(skeleton, text_config)
    declared = len(found[1]) if found is not None else getattr(text_config, "num_hidden_layers", None)
    preferred = None
    if found is not None:
        from hfgrow.arch.check import model_name

        blocks_name = found[0] + "."
        preferred = lambda prefix, sample: prefix == blocks_name or model_name(skeleton, sample).startswith(  # noqa: E731
            blocks_name)
    split = _split_names(checkpoint.tensors, declared, preferred)
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

    per_layer, index_lists = _classify_lists(text_config.to_dict(), num_layers)
    hint = prefix.rstrip(".").split(".")[-1]
    found = _block_list(skeleton, text_config, hint)
    count_key = _count_key(config, text_path, hf_config, num_layers, hint)
    layout = Layout(
        config=config,
        model_type=config["model_type"],
        architecture=(config.get("architectures") or [type(hf_config).__name__])[0],
        prefix=prefix,
        num_layers=num_layers,
        layers=[sorted(names) for names in blocks[:num_layers]],
        extra_layers=[sorted(names) for names in blocks[num_layers:]],
        globals=globals_,
        count_key=count_key,
        count_aliases=_count_aliases(count_key, text_path, text_config, num_layers),
        per_layer_keys={_join(text_path, k): v for k, v in per_layer.items()},
        index_keys={_join(text_path, k): v for k, v in index_lists.items()},
        layer_types=per_layer.get("layer_types"),
    )
    layout.signatures = _signatures(found[1]) if found is not None and len(found[1]) == num_layers else None
    layout.tied = dict(getattr(skeleton, "all_tied_weights_keys", None) or {})
    layout.skeleton = skeleton
    return layout


def header_layout(config: dict[str, Any], checkpoint: Checkpoint) -> Layout | None:
    """The layout :func:`read_layout` would find, from config.json and the tensor names alone (no transformers, no
    skeleton), for the plain case only: a flat config with an integer ``num_hidden_layers``, untied embeddings said
    explicitly, and exactly that many blocks. None otherwise. It lets a writer start before the skeleton is built;
    the full :func:`read_layout` must still run, and whatever was planned from this must be checked against it.
    """
    layers = config.get("num_hidden_layers")
    if (not isinstance(layers, int) or isinstance(layers, bool) or layers < 1 or config.get("tie_word_embeddings")
            is not False or config.get("is_encoder_decoder") or not isinstance(config.get("model_type"), str)
            or any(isinstance(config.get(k), dict) for k in ("text_config", "decoder", "generator"))):
        return None
    split = _split_names(checkpoint.tensors, layers)
    if split is None or len(split[1]) != layers:
        return None
    prefix, blocks = split
    in_blocks = {f"{prefix}{i}.{rest}" for i, names in enumerate(blocks) for rest in names}
    per_layer, index_lists = _classify_lists(config, layers)
    return Layout(config=config, model_type=config["model_type"],
                  architecture=(config.get("architectures") or [config["model_type"]])[0], prefix=prefix,
                  num_layers=layers, layers=[sorted(names) for names in blocks], extra_layers=[],
                  globals=[name for name in checkpoint.tensors if name not in in_blocks], count_key="num_hidden_layers",
                  per_layer_keys=per_layer, index_keys=index_lists, layer_types=per_layer.get("layer_types"),
                  headers_only=True)


def grown_config(layout: Layout, layer_map: list[int], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.json for a model whose block i is source block ``layer_map[i]``.

    The layer count is updated and every per-layer list is rebuilt to follow the map:
    per-layer lists are reindexed, lists of layer indices are remapped to the output
    positions of the listed source layers. Derived lists the source config left implicit
    are written out explicitly, because their rule (e.g. "every 6th layer is global")
    would not follow the new order. Keys may be dotted paths into a sub-config
    (``text_config.num_hidden_layers``); ``extra`` is applied last, by path too.

    Example:
        >>> layout.per_layer_keys
        {'layer_types': ['sliding_attention', 'full_attention']}
        >>> grown_config(layout, [0, 1, 0, 1])["layer_types"]
        ['sliding_attention', 'full_attention', 'sliding_attention', 'full_attention']
    """
    return _remap_layers(layout.config, layer_map, count_keys=[layout.count_key, *layout.count_aliases],
                         per_layer=layout.per_layer_keys, index_lists=layout.index_keys, extra=extra,
                         draft=layout.headers_only)


def config_for_layers(config: dict[str, Any], layer_map: list[int]) -> dict[str, Any]:
    """Like :func:`grown_config`, from a config alone (no checkpoint): what planning needs for a base model.

    The keys that follow the layer count are found as :func:`read_layout` finds them, on a meta skeleton.

    Example:
        >>> config_for_layers(gemma3_config, [0, 1])["layer_types"]      # the first two of the target's
        ['sliding_attention', 'sliding_attention']
    """
    hf_config = hf_config_from_dict(config)
    text_path, text_config = _text_config(hf_config)
    found = _block_list(meta_model(hf_config), text_config)
    num_layers = len(found[1]) if found is not None else int(getattr(text_config, "num_hidden_layers"))
    hint = found[0].split(".")[-1] if found is not None else None
    per_layer, index_lists = _classify_lists(text_config.to_dict(), num_layers)
    count_key = _count_key(config, text_path, hf_config, num_layers, hint)
    count_keys = [count_key, *_count_aliases(count_key, text_path, text_config, num_layers)]
    return _remap_layers(config, layer_map, count_keys=count_keys,
                         per_layer={_join(text_path, k): v for k, v in per_layer.items()},
                         index_lists={_join(text_path, k): v for k, v in index_lists.items()})


def _remap_layers(config: dict[str, Any], layer_map: list[int], *, count_keys: list[str],
                  per_layer: dict[str, list], index_lists: dict[str, list[int]],
                  extra: dict[str, Any] | None = None, draft: bool = False) -> dict[str, Any]:
    """``config`` with its layer count and per-layer lists following ``layer_map``, written by
    :func:`rewrite_config` (keys are attribute paths: ``text_config.num_hidden_layers``). ``draft``: the keys are
    set as they are named, without transformers (for a header-only layout, whose plan is used for its tensors
    only and checked against the full one before anything of it is kept)."""
    changes: dict[str, Any] = {key: len(layer_map) for key in count_keys}
    for key, values in per_layer.items():
        changes[key] = [values[src] for src in layer_map]
    for key, indices in index_lists.items():
        chosen = set(indices)
        changes[key] = [i for i, src in enumerate(layer_map) if src in chosen]
    changes.update(extra or {})
    if draft:
        return {**json.loads(json.dumps(config)), **changes}
    return rewrite_config(config, changes)


# ------------------------------------------------------------------ the grown model's skeleton

_SKELETONS: dict[str, Any] = {}  # one or two grown skeletons per run (a kind probe, the final plan)


def grown_skeleton(layout: Layout, config: dict[str, Any]):
    """The meta skeleton transformers builds for a grown ``config`` (cached: the kind fit and the output check
    of one plan share it)."""
    key = f"{id(layout)}:{json.dumps(config, sort_keys=True, default=str)}"
    if key not in _SKELETONS:
        _SKELETONS.clear()
        _SKELETONS[key] = meta_model(hf_config_from_dict(config))
    return _SKELETONS[key]


def grown_signatures(layout: Layout, config: dict[str, Any], num_layers: int) -> list[frozenset[str]] | None:
    """Per-block parameter names of the grown model ``config`` describes (None: no block list of that length)."""
    model = grown_skeleton(layout, config)
    found = _block_list(model, _text_config(model.config)[1], layout.prefix.rstrip(".").split(".")[-1])
    if found is None or len(found[1]) != num_layers:
        return None
    return _signatures(found[1])


@dataclass
class KindFit:
    """A layer map the grown config can describe, the config keys rewritten for it, and what changed."""

    layer_map: list[int]
    changes: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


#: Integer config keys that may state where layer kinds go ("the first k layers are dense", "every n-th is MoE").
_RULE_KEY = re.compile(r"layer|replace|step|freq|period|offset|interval|every|dense|sparse|moe|first|start|end")
_NOT_RULE = re.compile(r"size|dim|hidden|vocab|head|expert|rank|position|token|nextn|mtp|predict|window|group")


def _rule_rewrites(layout: Layout, num_layers: int) -> list[dict[str, Any]]:
    """Candidate rewrites of the config's layer-kind rules for ``num_layers`` output layers, most likely first:
    an integer rule scaled with the depth (``first_k_dense_replace = g*k``), a cyclic list of kinds written
    out for the new depth."""
    text_path = layout.count_key.rsplit(".", 1)[0] if "." in layout.count_key else ""
    raw = _get(layout.config, text_path) if text_path else layout.config
    if not isinstance(raw, dict):
        return []
    count = layout.count_key.rsplit(".", 1)[-1]
    rewrites = []
    for key, value in raw.items():
        path = _join(text_path, key)
        if key == count or path in layout.per_layer_keys or path in layout.index_keys or _NOT_RULE.search(key):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value > 0 and _RULE_KEY.search(key):
            scaled = round(value * num_layers / layout.num_layers)
            if scaled != value:
                rewrites.append({path: scaled})
        elif isinstance(value, list) and 0 < len(value) < layout.num_layers * 4 and len(value) != layout.num_layers \
                and all(isinstance(v, str) for v in value) and _PER_LAYER_HINT.search(key):
            # a cycle of layer kinds (``block_types: [recurrent, recurrent, attention]``): the source's layers
            # follow the cycle; the output lists one kind per layer (a cycle as long as the model)
            per_source = [value[i % len(value)] for i in range(layout.num_layers)]
            rewrites.append({path: ("per-layer", per_source)})
    return rewrites


def _materialize(rewrite: dict[str, Any], layer_map: list[int]) -> dict[str, Any]:
    """Config values of a rewrite for ``layer_map`` (a per-layer rewrite follows the map)."""
    return {key: [value[1][src] for src in layer_map] if isinstance(value, tuple) and value[0] == "per-layer"
            else value for key, value in rewrite.items()}


def _proportional(target: list[frozenset[str]], source: list[frozenset[str]]) -> bool:
    """Every kind of ``target`` exists in ``source`` and keeps its share of the layers (within one layer)."""
    scale = len(target) / len(source)
    kinds = set(source) | set(target)
    return set(target) <= set(source) and all(
        abs(target.count(k) - source.count(k) * scale) < 1 for k in kinds)


def fit_layer_kinds(layout: Layout, layer_map: list[int], *, rearrange: bool) -> KindFit:
    """Make ``layer_map`` something the grown config can describe, before anything is planned in detail.

    A config that lists its layer kinds follows any map (the lists are reindexed). A config that gives them by a
    rule (DeepSeek's ``first_k_dense_replace``, Ernie's ``moe_layer_start_index``, ...) describes only some
    orders: the rule key is rewritten in proportion to the new depth when that makes the map describable; with
    ``rearrange`` (``--factor``/``--layers``, not an explicit ``--pattern``) the map becomes a kind-preserving
    stack (Gstack within each kind of layer) when plain Gstack cannot be described.

    Raises:
        HfgrowError: no rewrite and no kind-preserving order fits; the sentence suggests a pattern when one exists.
    """
    if layout.signatures is None:
        return KindFit(list(layer_map))
    needed = [layout.signatures[s] for s in layer_map]
    base = grown_signatures(layout, grown_config(layout, layer_map), len(layer_map))
    if base is None or base == needed:
        return KindFit(list(layer_map))
    attempts: list[tuple[dict[str, Any], list[frozenset[str]]]] = []
    for rewrite in _rule_rewrites(layout, len(layer_map)):
        changes = _materialize(rewrite, layer_map)
        try:
            got = grown_signatures(layout, grown_config(layout, layer_map, changes), len(layer_map))
        except HfgrowError:
            continue
        if got == needed:
            return KindFit(list(layer_map), changes, _rule_note(layout, changes))
        if got is not None:
            attempts.append((rewrite, got))
    if rearrange:
        for rewrite, got in [*[a for a in attempts if _proportional(a[1], layout.signatures)], ({}, base)]:
            kind_map = kind_preserving_map(layout.signatures, got)
            if kind_map is None:
                continue
            changes = _materialize(rewrite, kind_map)
            try:
                check = grown_signatures(layout, grown_config(layout, kind_map, changes), len(kind_map))
            except HfgrowError:
                continue
            if check == [layout.signatures[s] for s in kind_map]:
                return KindFit(kind_map, changes, _kind_note(layout, layer_map, kind_map, changes))
    position = next(i for i, (a, b) in enumerate(zip(base, needed)) if a != b)
    from hfgrow.arch.pattern import compact

    suggestion = kind_preserving_map(layout.signatures, base)
    hint = (f" --pattern '{compact(suggestion)}' stacks each kind of layer where the config expects it."
            if suggestion is not None else " choose another --pattern.")
    raise HfgrowError(
        f"the config cannot describe this layer order: output layer {position} would be a copy of source layer "
        f"{layer_map[position]}, but {layout.model_type}'s config makes layer {position} a different kind of block "
        f"(its layer kinds follow a rule, not a list);{hint}")


def _describe_changes(layout: Layout, changes: dict[str, Any]) -> str:
    def short(value: Any) -> str:
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."

    return ", ".join(f"{k} = {short(v)} (was {short(_get(layout.config, k))})" for k, v in changes.items())


def _rule_note(layout: Layout, changes: dict[str, Any]) -> str:
    rewritten = _describe_changes(layout, changes)
    return f"{layout.model_type}'s config places layer kinds by a rule; rewritten for the new depth: {rewritten}"


def _kind_note(layout: Layout, asked: list[int], kind_map: list[int], changes: dict[str, Any]) -> str:
    from hfgrow.arch.pattern import compact

    labels: dict[frozenset[str], str] = {}
    for signature in layout.signatures or []:
        labels.setdefault(signature, f"kind {len(labels)}")
    groups = ", ".join(f"{label} (source layers {compact([i for i, s in enumerate(layout.signatures) if s == sig])})"
                       for sig, label in labels.items())
    rule = f"; {_describe_changes(layout, changes)}" if changes else ""
    return (f"kind-preserving stack: {layout.model_type}'s config places its {len(labels)} kinds of layer by a rule, "
            f"so each kind is stacked on its own ({groups}){rule}; plain Gstack ({compact(asked)}) would put a "
            "layer where the config builds another kind")


def follow_packed_layers(tensors: list, layout: Layout, source: dict[str, TensorInfo], config: dict[str, Any],
                         layer_map: list[int]) -> list:
    """Global tensors that pack one slice per layer along one dimension (Gemma 3n's per-layer input embeddings,
    ``[vocab, L * d]``) get their slices reordered by the layer map; other tensor plans are returned as they are.

    Found by comparing each global's source shape with the grown skeleton's: exactly one dimension differs, and it
    is ``L * k`` in the source and ``N * k`` in the grown model.
    """
    from hfgrow.arch.check import model_name
    from hfgrow.io.plan import Fn, TensorPlan

    if layout.skeleton is None:  # a header_layout: unchecked, so the plan made with it is compared with a checked one
        return tensors
    model = grown_skeleton(layout, config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    globals_ = set(layout.globals)
    old, new = layout.num_layers, len(layer_map)
    result = []
    for plan in tensors:
        shape = tuple(source[plan.name].shape) if plan.name in globals_ and plan.name in source else None
        want = expected.get(model_name(model, plan.name)) if shape is not None else None
        diff = [d for d in range(len(shape)) if want and len(want) == len(shape) and shape[d] != want[d]] \
            if shape is not None else []
        if len(diff) != 1 or plan.transform is not None or shape[diff[0]] % old \
                or want[diff[0]] != shape[diff[0]] // old * new:
            result.append(plan)
            continue
        dim, size = diff[0], shape[diff[0]] // old

        def reorder(t, dim=dim, size=size):
            import torch

            index = torch.tensor(layer_map, dtype=torch.long)
            return t.unflatten(dim, (old, size)).index_select(dim, index).flatten(dim, dim + 1)

        result.append(TensorPlan(plan.name, plan.dtype, tuple(want), plan.sources,
                                 Fn(reorder, f"per-layer slices (dim {dim}, {size} each) follow the layer map")))
    return result


def check_layer_kinds(layout: Layout, config: dict[str, Any], layer_map: list[int]) -> None:
    """Fail clearly when the grown config would build a different block than the one we copy in.

    Configs that describe layer kinds by a rule (DeepSeek's ``first_k_dense_replace``,
    ``decoder_sparse_step``, ...) cannot follow an arbitrary layer order; transformers
    would then build, say, a MoE block where we place a dense one.
    """
    if layout.signatures is None:
        return
    signatures = grown_signatures(layout, config, len(layer_map))
    if signatures is None:
        return
    for position, src in enumerate(layer_map):
        if signatures[position] != layout.signatures[src]:
            raise HfgrowError(
                f"the config cannot describe this layer order: output layer {position} would be a copy of "
                f"source layer {src}, but {layout.model_type}'s config makes layer {position} a different kind "
                "of block (its layer kinds follow a rule, not a list); choose another --pattern.")


def check_grown(layout: Layout, config: dict[str, Any], layer_map: list[int] | None, shapes: dict[str, tuple]) -> None:
    """Refuse a plan whose output would not load cleanly: the grown config must be one transformers accepts, build
    the kind of block placed at each position, and expect exactly the planned tensors with their shapes.

    Runs on the meta device before any byte is written.
    """
    from hfgrow.arch.check import check_tensors

    model = grown_skeleton(layout, config)
    if layer_map is not None:
        check_layer_kinds(layout, config, layer_map)
    extra = set()
    if layer_map is not None:
        extra = {layout.layer_tensor(len(layer_map) + k, rest)
                 for k, names in enumerate(layout.extra_layers) for rest in names}
    check_tensors(model, shapes, "the planned output", allowed_unexpected=extra)


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
    cfg = text_config(config)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "seq_length",
                "n_ctx"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def open_model(folder: Path | ModelFolder) -> tuple[Checkpoint, Layout]:
    """Open a model folder: config checked first (clearer errors), then tensor table and layout, then every
    tensor's name and shape against the skeleton the config builds (so a checkpoint that would load with
    re-initialised weights is refused here, before anything is planned or written)."""
    from hfgrow.arch.check import check_tensors

    folder = ModelFolder(folder)
    config = read_config(folder)
    hf_config_from_dict(config)  # validates before any weights are touched; cheap to build again below
    checkpoint = Checkpoint.open(folder)
    layout = read_layout(folder.path, checkpoint, config)
    check_tensors(layout.skeleton, {name: info.shape for name, info in checkpoint.tensors.items()},
                  f"the checkpoint in {folder.path}")
    return checkpoint, layout
