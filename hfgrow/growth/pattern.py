"""The layer-index language: which source layer goes at each output position.

Grammar (whitespace ignored)::

    pattern := item ("," item)*
    item    := range ["*" count]
    range   := index | index "-" index        (inclusive; may run downwards)

Examples for a 6-layer source (0-based)::

    0-5*4            Gstack, factor 4: 0..5 four times (24 layers)
    0,0,1,1,2,2      interpolation (each layer repeated in place)
    0-1,2-5*5,4-5    partial stacking: the middle repeated
    0-23,8-31        SOLAR depth up-scaling of a 32-layer model (48 layers)
"""

from __future__ import annotations

import re

from hfgrow.errors import HfgrowError

_ITEM = re.compile(r"^(\d+)(?:-(\d+))?(?:\*(\d+))?$")


def parse_pattern(pattern: str, num_layers: int) -> list[int]:
    """Expand ``pattern`` into the list of source layer indices, one per output layer.

    Example:
        >>> parse_pattern("0-2*2,1", 3)
        [0, 1, 2, 0, 1, 2, 1]
    """
    text = "".join(pattern.split())
    if not text:
        raise HfgrowError("the layer pattern is empty; write e.g. '0-5*4' (layers 0..5 four times).")
    layer_map: list[int] = []
    for token in text.split(","):
        match = _ITEM.match(token)
        if not match:
            raise HfgrowError(
                f"pattern token '{token}' is not an index, a range 'a-b' or a repeat 'a-b*n' (e.g. '0-5*4')."
            )
        start = int(match[1])
        end = int(match[2]) if match[2] is not None else start
        count = int(match[3]) if match[3] is not None else 1
        for index in (start, end):
            if index >= num_layers:
                raise HfgrowError(
                    f"pattern token '{token}' refers to layer {index}, but the source has only "
                    f"{num_layers} layers (0-{num_layers - 1})."
                )
        if count < 1:
            raise HfgrowError(f"pattern token '{token}' repeats zero times; use a count of 1 or more.")
        step = 1 if end >= start else -1
        layer_map.extend(list(range(start, end + step, step)) * count)
    return layer_map


def stack_map(num_layers: int, target_layers: int) -> list[int]:
    """Gstack order: 0..L-1 repeated, cut at ``target_layers`` when it is not a multiple of L.

    Example:
        >>> stack_map(3, 7)
        [0, 1, 2, 0, 1, 2, 0]
    """
    return [i % num_layers for i in range(target_layers)]


def interpolate_map(num_layers: int, target_layers: int) -> list[int]:
    """Interpolation order: each layer repeated in place, spread evenly.

    Example:
        >>> interpolate_map(3, 6)
        [0, 0, 1, 1, 2, 2]
    """
    return [i * num_layers // target_layers for i in range(target_layers)]


def compact(layer_map: list[int]) -> str:
    """Write a layer map back in the pattern language (shortest obvious form).

    Example:
        >>> compact([0, 1, 2, 0, 1, 2])
        '0-2*2'
    """
    runs: list[tuple[int, int]] = []
    for index in layer_map:
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    items: list[tuple[tuple[int, int], int]] = []
    for run in runs:
        if items and items[-1][0] == run:
            items[-1] = (run, items[-1][1] + 1)
        else:
            items.append((run, 1))
    parts = []
    for (start, end), count in items:
        text = str(start) if start == end else f"{start}-{end}"
        parts.append(text if count == 1 else f"{text}*{count}")
    return ",".join(parts)


def target_layer_count(num_layers: int, factor: float | None, layers: int | None) -> int:
    """The output layer count from ``--factor`` or ``--layers`` (exactly one given)."""
    if factor is not None and layers is not None:
        raise HfgrowError("give either --factor or --layers, not both.")
    if layers is not None:
        if layers < 1:
            raise HfgrowError(f"--layers must be positive, got {layers}.")
        return layers
    if factor is None:
        factor = 4
    target = num_layers * factor
    if factor <= 0 or abs(target - round(target)) > 1e-9:
        raise HfgrowError(
            f"--factor {factor} does not give a whole number of layers from {num_layers}; use --layers instead."
        )
    return int(round(target))
