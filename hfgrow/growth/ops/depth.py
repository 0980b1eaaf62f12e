"""Depthwise growth by copying whole blocks: Gstack (G↑direct), interpolation, SOLAR, partial stacks.

Block ``i`` of the output is source block ``layer_map[i]``; embeddings, final norm and
LM head are copied unchanged. Pure: works on the layout and tensor table only.
"""

from __future__ import annotations

from typing import Mapping

from hfgrow.io.checkpoint import TensorInfo
from hfgrow.errors import HfgrowError
from hfgrow.io import dtypes
from hfgrow.arch.layout import Layout, grown_config
from hfgrow.arch.pattern import compact
from hfgrow.growth.plan import Plan
from hfgrow.growth.recipe import Operation
from hfgrow.io.plan import TensorPlan


def repeated_layers(layer_map: list[int]) -> list[int]:
    """Output positions holding a block already placed earlier (the "new" copies).

    Example:
        >>> repeated_layers([0, 1, 0, 1])
        [2, 3]
    """
    seen: set[int] = set()
    new = []
    for position, src in enumerate(layer_map):
        if src in seen:
            new.append(position)
        seen.add(src)
    return new


def block_tensors(layout: Layout, tensors: Mapping[str, TensorInfo], layer_map: list[int],
                  dtype: str | None = None) -> list[TensorPlan]:
    """The output tensors of every block (in output order), each a copy of its source block's tensor."""
    plans = []
    for position, src in enumerate(layer_map):
        for rest in layout.layers[src]:
            info = tensors[layout.layer_tensor(src, rest)]
            plans.append(TensorPlan(layout.layer_tensor(position, rest), dtypes.float_output(info.dtype, dtype), info.shape, (info.name,)))
    for k, names in enumerate(layout.extra_layers):  # e.g. multi-token-prediction blocks stay after the stack
        for rest in names:
            info = tensors[layout.layer_tensor(layout.num_layers + k, rest)]
            plans.append(TensorPlan(layout.layer_tensor(len(layer_map) + k, rest), dtypes.float_output(info.dtype, dtype), info.shape, (info.name,)))
    return plans


def assemble(layout: Layout, tensors: Mapping[str, TensorInfo], blocks: list[TensorPlan],
             dtype: str | None = None, drop: set[str] = frozenset()) -> list[TensorPlan]:
    """Global tensors in source order, with the grown blocks where the source blocks were; tied copies dropped."""
    result: list[TensorPlan] = []
    placed = False
    globals_ = set(layout.globals)
    for name, info in tensors.items():
        if name in globals_:
            if name in layout.tied or name in drop:
                continue
            result.append(TensorPlan(name, dtypes.float_output(info.dtype, dtype), info.shape, (name,)))
        elif not placed:
            result.extend(blocks)
            placed = True
    if not placed:
        result.extend(blocks)
    return result


def config_dtype(config: dict, dtype: str | None) -> dict:
    if dtype:
        name = dtypes.config_name(dtype)
        config["dtype"] = name
        if "torch_dtype" in config:
            config["torch_dtype"] = name
    return config


def stack_plan(layout: Layout, tensors: Mapping[str, TensorInfo], layer_map: list[int],
               dtype: str | None = None) -> Plan:
    """Plan for a model whose blocks follow ``layer_map`` (Gstack when it is 0..L-1 repeated).

    Example:
        >>> plan = stack_plan(layout, ckpt.tensors, [0, 1, 0, 1])
        >>> plan.config["num_hidden_layers"], plan.new_layers
        (4, [2, 3])
    """
    if not layer_map:
        raise HfgrowError("the layer map is empty; the output needs at least one layer.")
    bad = [i for i in layer_map if not 0 <= i < layout.num_layers]
    if bad:
        raise HfgrowError(f"layer {bad[0]} does not exist; the source has layers 0-{layout.num_layers - 1}.")
    blocks = block_tensors(layout, tensors, layer_map, dtype)
    return Plan(
        tensors=assemble(layout, tensors, blocks, dtype),
        config=config_dtype(grown_config(layout, layer_map), dtype),
        layer_map=list(layer_map),
        new_layers=repeated_layers(layer_map),
        operation=Operation(op="stack", direction="depth"),
        warnings=[text] if (text := dropped_layers(layer_map, layout.num_layers)) else [],
    )


def dropped_layers(layer_map: list[int], num_layers: int) -> str | None:
    """One sentence naming the source layers a layer map leaves out (None when it uses every one).

    A pattern written for a smaller model (the README's ``0-1,2-5*5,4-5`` is for 6 layers) silently
    selects from a bigger one; this says so.

    Example:
        >>> dropped_layers([0, 1, 2, 3, 2, 3], 6)
        'the layer map leaves out source layers 4-5 (2 of 6); the output has 6 layers'
    """
    missing = sorted(set(range(num_layers)) - set(layer_map))
    if not missing:
        return None
    text = (f"the layer map leaves out source layer{'s' if len(missing) > 1 else ''} {compact(missing)} "
            f"({len(missing)} of {num_layers}); the output has {len(layer_map)} layers")
    return text + (f", fewer than the source's {num_layers}" if len(layer_map) < num_layers else "")
