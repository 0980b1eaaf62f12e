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

import math
import re

from hfgrow.errors import HfgrowError

_ITEM = re.compile(r"^(\d+)(?:-(\d+))?(?:\*(\d+))?$")

#: The most output layers hfgrow plans. The deepest released models have a few hundred layers; every output
#: layer costs a block in the meta skeleton the plan is checked against (~40 kB, ~4 ms), so a limit keeps a
#: mistyped --layers or pattern from exhausting memory before anything could be reported.
MAX_LAYERS = 4096


def too_many_layers(count: int, what: str) -> HfgrowError:
    return HfgrowError(f"{what} gives {count:,} layers; hfgrow plans at most {MAX_LAYERS:,} layers.")


def parse_pattern(pattern: str, num_layers: int) -> list[int]:
    """Expand ``pattern`` into the list of source layer indices, one per output layer.

    Example:
        >>> parse_pattern("0-2*2,1", 3)
        [0, 1, 2, 0, 1, 2, 1]
    """
    text = "".join(pattern.split())
    if not text:
        raise HfgrowError("the layer pattern is empty; write e.g. '0-5*4' (layers 0..5 four times).")
    items = []
    total = 0
    for token in text.split(","):
        match = _ITEM.match(token)
        if not match:
            raise HfgrowError(
                f"pattern token '{token}' is not an index, a range 'a-b' or a repeat 'a-b*n' (e.g. '0-5*4')."
            )
        start = int(match[1])
        end = int(match[2]) if match[2] is not None else start
        count = int(match[3]) if match[3] is not None else 1
        items.append((token, start, end, count))
        total += (abs(end - start) + 1) * count  # counted before anything is expanded
    if total > MAX_LAYERS:
        raise too_many_layers(total, f"the pattern '{pattern}'")
    layer_map: list[int] = []
    for token, start, end, count in items:
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


def interleave_map(num_layers: int, target_layers: int) -> list[int]:
    """LLaMA-Pro placement: after every L/(N-L) source layers, a copy of the last one (spread evenly).

    Example:
        >>> interleave_map(4, 6)
        [0, 1, 1, 2, 3, 3]
        >>> interleave_map(4, 12)
        [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    """
    if target_layers < num_layers:
        raise HfgrowError(f"{target_layers} layers is fewer than the source's {num_layers}; hfgrow only grows models.")
    extra = target_layers - num_layers
    after = [0] * num_layers
    for k in range(extra):
        after[math.ceil((k + 1) * num_layers / extra) - 1] += 1
    layer_map: list[int] = []
    for layer in range(num_layers):
        layer_map += [layer] * (1 + after[layer])
    return layer_map


def compact(layer_map: list[int]) -> str:
    """Write a layer map back in the pattern language, in the form a person reads fastest.

    A layer repeated in place is ``a*n``, an ascending run ``a-b``, and a run repeated back to back ``a-b*n``.

    Example:
        >>> compact([0, 1, 2, 0, 1, 2]), compact([0, 0, 1, 1, 2, 2]), compact([0, 1, 1, 2, 3, 3])
        ('0-2*2', '0*2,1*2,2*2', '0,1*2,2,3*2')
    """
    items: list[tuple[int, int, int]] = []  # (start, end, repeats): start..end, or start repeated in place
    i, n = 0, len(layer_map)
    while i < n:
        start = layer_map[i]
        same = i
        while same + 1 < n and layer_map[same + 1] == start:
            same += 1
        if same > i:  # one layer repeated in place
            items.append((start, start, same - i + 1))
            i = same + 1
            continue
        j = i
        while j + 1 < n and layer_map[j + 1] == layer_map[j] + 1 and not (j + 2 < n and layer_map[j + 2] == layer_map[j + 1]):
            j += 1
        items.append((start, layer_map[j], 1))
        i = j + 1
    merged: list[tuple[tuple[int, int, int], int]] = []  # identical ranges back to back -> one item *n
    for item in items:
        if merged and merged[-1][0] == item and item[2] == 1 and item[0] != item[1]:
            merged[-1] = (item, merged[-1][1] + 1)
        else:
            merged.append((item, 1))
    parts = []
    for (start, end, repeats), times in merged:
        if repeats > 1:
            parts.append(f"{start}*{repeats}")
        else:
            text = str(start) if start == end else f"{start}-{end}"
            parts.append(text if times == 1 else f"{text}*{times}")
    return ",".join(parts)


def target_layer_count(num_layers: int, factor: float | None, layers: int | None) -> int:
    """The output layer count from ``--factor`` or ``--layers`` (exactly one given)."""
    if factor is not None and layers is not None:
        raise HfgrowError("give either --factor or --layers, not both.")
    if layers is not None:
        if layers < 1:
            raise HfgrowError(f"--layers must be positive, got {layers}.")
        if layers > MAX_LAYERS:
            raise too_many_layers(layers, f"--layers {layers}")
        return layers
    if factor is None:
        factor = 4
    if not math.isfinite(factor) or factor <= 0:
        raise HfgrowError(f"--factor must be a positive number, got {factor}.")
    target = num_layers * factor
    if target > MAX_LAYERS:
        raise too_many_layers(int(target), f"--factor {factor:g} on {num_layers} layers")
    if abs(target - round(target)) > 1e-9:
        raise HfgrowError(
            f"--factor {factor} does not give a whole number of layers from {num_layers}; use --layers instead."
        )
    return int(round(target))
