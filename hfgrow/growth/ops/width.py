"""Widthwise growth (G→): wider hidden size, FFN and more attention heads (head_dim fixed).

Every grown dimension gets a *unit map*: for each output unit, the source unit it copies
(or -1 for a brand-new unit), a multiplier for the weights that *write* it and one for
the weights that *read* it. :mod:`hfgrow.arch.roles` says which space each tensor dimension
lives in and whether it writes or reads it; this module only applies the maps.

``direct`` (function-preserving neuron splitting, HyperCloning / Net2Net)
    Output unit j copies source unit g(j): the source units tiled ⌊new/old⌋ times, then a
    seeded random subset of them once more. Weights that read a unit copied c times are
    divided by c, so every sum is unchanged. For an integer factor this is HyperCloning's
    exact rule (all linear layers tiled and divided by the input factor; embedding tiled
    undivided; norm weights tiled — a tiled vector keeps its mean, variance and RMS, so
    LayerNorm and RMSNorm outputs are tiled too; the LM head divided). For a non-integer
    hidden size the residual copies are scaled by sqrt(k/c) (k = new/old): the RMS is then
    unchanged and RMSNorm models stay exact; LayerNorm models are only approximately
    preserved (mean and variance cannot both be kept), which the plan notes. Heads are
    duplicated whole, query heads within their key/value group so grouped-query and
    multi-query attention keep reading the right key/value head.
``zero``
    Source units keep their exact weights; new FFN units and heads get random fan-in
    (up/gate, q/k/v rows) and zero fan-out (down/o columns), so they add nothing. New
    hidden units are written by nothing (embedding columns, o/down rows and biases zero)
    and read with random weights, so they stay exactly zero; RMSNorm weights are rescaled
    by sqrt(old/new) to undo the smaller RMS. Exact for FFN and head growth on every
    family and for hidden growth with RMSNorm; approximate for hidden growth with LayerNorm.
``random``
    Source units keep their weights, every new weight is drawn like transformers'
    ``_init_weights`` (normal(0, initializer_range), biases zero, norms at their init);
    the recipe lists the new units so continued training can ramp them in (MSG).

``style="prts"`` runs ``zero`` and ``random`` as the reference code does (tongxuluo/prts
``prts_lit/scaling/zero.py`` and ``prts_lit/scaling/msg.py``): the target model is initialised by prts's ``GPT._init_weights``
(:meth:`Roles.prts_init_std`) and the source copied into the leading units of every dimension. For
``random`` that is all (new units keep the init; the recipe asks for MSG's staged ramp: FFN, then
hidden, then heads, masks on the outputs of the projections that write new units, mask-weighted norm
statistics). For ``zero``, every weight element that writes a new unit from a source unit is zero
and every element that reads a new unit keeps its random init (new FFN units and heads: zero fan-in
from the source, random fan-out; new hidden units: zero embedding columns, random LM-head columns);
new norm weights and biases are zero and nothing is rescaled, so growing the hidden size changes the
norms' statistics (the reference's operator is function-preserving only for FFN and head growth).

``style="prts"`` runs ``direct`` as the reference's bert2BERT does (tongxuluo/prts ``prts_lit/scaling/bert2bert.py``,
``get_extra_src_indices`` and ``expand_tensor``, default ``from_left=False``): the ``diff = new - old``
hidden units beyond the source width copy source units drawn *with replacement*
(``random.choices(range(diff), k=diff)``, each taken modulo the source width; hfgrow seeds a
``random.Random(--seed)`` for it), the FFN's new units the same list repeated (``(idx * 4)[:new - old]``
unless the FFN grows by diff, 3·diff or 4·diff); weights reading a unit copied c times are divided by
c + 1 (the source column too), weights writing one are copied. The reference widens lit_gpt's fused
q|k|v (3·hidden rows, per head [q_h, k_h, v_h]) like any other output dimension: its new rows copy rows
``idx * 3`` of the source's fused tensor, whatever head or q/k/v part those belong to, and the target
model reads them as its new heads. hfgrow builds that fused tensor from q/k/v (or a fused q|k|v
of any layout), extends it by that rule and splits it back. Multi-head attention only (the reference's
3·hidden rule); not function-preserving (copies drawn with replacement change the norms' statistics,
and the new heads' q/k/v rows are parts of other heads).

Tied input/output embeddings are untied in the output (they need different values).
Gemma-style embeddings scaled by sqrt(hidden_size) are rescaled by sqrt(old/new).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import torch

from hfgrow.errors import HfgrowError
from hfgrow.growth.ops.common import compute_dtype, generator, row_chunks, then
from hfgrow.io import dtypes
from hfgrow.growth.plan import Plan
from hfgrow.growth.recipe import Mask, WidthMask, WidthRecord
from hfgrow.io.plan import Fn, TensorPlan
from hfgrow.arch.layout import rewrite_config
from hfgrow.arch.roles import (Roles, TensorRole, block_rest, check_output_shapes, embed_scale_for,
                               qkv_row_order)

OPS = ("direct", "zero", "random")


@dataclass(frozen=True)
class WidthSizes:
    """Source and target sizes of every grown space."""

    hidden: tuple[int, int]
    heads: tuple[int, int]
    kv_heads: tuple[int, int]
    ffn: dict[str, tuple[int, int]]  # config key -> (old, new)
    head_dim: int

    @property
    def changed(self) -> bool:
        pairs = [self.hidden, self.heads, self.kv_heads, *self.ffn.values()]
        return any(a != b for a, b in pairs)

    def pairs(self) -> dict[str, tuple[int, int]]:
        """(old, new) of every grown size, by config meaning (``hidden_size``, heads, FFN config keys)."""
        return {"hidden_size": self.hidden, "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads,
                **self.ffn}


def _scaled(value: int, new: int, old: int, what: str, flag: str, basis: str = "hidden size") -> int:
    scaled = value * new / old
    if abs(scaled - round(scaled)) > 1e-9:
        raise HfgrowError(
            f"{what} ({value}) does not scale to a whole number with the {basis} {old} -> {new}; give {flag}."
        )
    return int(round(scaled))


def resolve_sizes(roles: Roles, hidden_size: int | None = None, intermediate_size: int | None = None,
                  num_heads: int | None = None, num_kv_heads: int | None = None, op: str = "direct") -> WidthSizes:
    """Target sizes from the requested ones; the rest follow the hidden size (head_dim stays fixed).

    Query heads scale with the hidden size unless ``num_heads`` is given; key/value heads
    scale with the query heads (multi-query stays at one) unless ``num_kv_heads`` is given;
    every FFN size scales with the hidden size unless ``intermediate_size`` is given (other
    FFN sizes of MoE models follow the main one).

    Example:
        >>> resolve_sizes(roles, hidden_size=4096).heads     # TinyLlama: 32 heads of 64
        (32, 64)
    """
    H, nh, nkv, hd = roles.hidden_size, roles.num_heads, roles.num_kv_heads, roles.head_dim
    if not nh:
        raise HfgrowError(f"hfgrow has no width rule for {roles.model_type}: its blocks have no attention heads "
                          "hfgrow can split.")
    H2 = hidden_size if hidden_size is not None else H
    for value, flag in ((hidden_size, "--hidden-size"), (intermediate_size, "--intermediate-size"),
                        (num_heads, "--num-heads"), (num_kv_heads, "--num-kv-heads")):
        if value is not None and value < 1:
            raise HfgrowError(f"{flag} must be positive, got {value}.")
    if H2 < H:
        raise HfgrowError(f"--hidden-size {H2} is smaller than the source's {H}; hfgrow only grows models.")
    nh2 = num_heads if num_heads is not None else _scaled(nh, H2, H, "the head count", "--num-heads")
    if nh2 < nh:
        raise HfgrowError(f"--num-heads {nh2} is fewer than the source's {nh} heads; hfgrow only grows models.")
    if num_kv_heads is not None:
        nkv2 = num_kv_heads
    elif nkv == 1 and nh > 1:
        nkv2 = 1  # multi-query attention stays multi-query
    elif (nkv * nh2) % nh == 0:
        nkv2 = nkv * nh2 // nh
    else:
        raise HfgrowError(
            f"{nh2} query heads cannot keep the source's {nh // nkv} query heads per key/value head; "
            f"give --num-kv-heads (a divisor of {nh2})."
        )
    if nkv2 < nkv:
        raise HfgrowError(f"--num-kv-heads {nkv2} is fewer than the source's {nkv}; hfgrow only grows models.")
    if nh2 % nkv2:
        raise HfgrowError(f"{nh2} query heads cannot be split evenly over {nkv2} key/value heads.")
    if nh2 != nh and roles.alibi:
        raise HfgrowError(f"{roles.model_type} uses ALiBi, whose slopes depend on the head count; "
                          "hfgrow cannot add heads to it exactly.")
    if roles.qkv_layout == "per_head" and nkv2 != nh2:
        raise HfgrowError(f"{roles.model_type} fuses q, k and v head by head, so it needs as many key/value heads "
                          f"as query heads ({nh2}).")
    implied = nh2 if nkv == nh else nkv  # families without a key/value head count: MHA, or fixed MQA
    if not roles.keys.get("num_key_value_heads") and nkv2 != implied:
        raise HfgrowError(f"{roles.model_type} has no separate key/value head count; --num-kv-heads must be "
                          f"{implied}.")
    if op != "direct" and nh2 // nkv2 < nh // nkv:
        raise HfgrowError(
            f"--op {op} keeps the source heads where they are, so each key/value head needs at least "
            f"{nh // nkv} query heads; {nh2} heads over {nkv2} key/value heads give {nh2 // nkv2}."
        )
    main = roles.keys.get("intermediate_size")
    ffn: dict[str, tuple[int, int]] = {}
    if main in roles.ffn_sizes:
        I = roles.ffn_sizes[main]
        I2 = intermediate_size if intermediate_size is not None else _scaled(I, H2, H, "the FFN size",
                                                                             "--intermediate-size")
        if I2 < I:
            raise HfgrowError(f"--intermediate-size {I2} is smaller than the source's {I}; hfgrow only grows models.")
        ffn[main] = (I, I2)
        for key, size in roles.ffn_sizes.items():
            if key != main:
                ffn[key] = (size, _scaled(size, I2, I, key, "an --intermediate-size that scales it evenly",
                                          basis="FFN size"))
    elif intermediate_size is not None:
        raise HfgrowError(f"hfgrow cannot tell which {roles.model_type} config key holds the FFN size.")
    return WidthSizes((H, H2), (nh, nh2), (nkv, nkv2), ffn, hd)


# ---------------------------------------------------------------- unit maps


@dataclass(frozen=True)
class UnitMap:
    """How the units of one space are grown (see the module docstring)."""

    src: torch.Tensor  # int64 [new]: source unit, -1 for a new unit
    read: torch.Tensor  # float64 [new]: multiplier for weights that read the unit
    write: torch.Tensor  # float64 [new]: multiplier for weights that write the unit
    fill_out: str = "zero"  # value of new units where a tensor writes them: "zero" or "random"
    fill_in: str = "zero"  # ... where a tensor reads them

    @property
    def new(self) -> torch.Tensor:
        return self.src < 0

    @property
    def has_new(self) -> bool:
        return bool((self.src < 0).any())

    def is_identity(self) -> bool:
        n = self.src.numel()
        return (torch.equal(self.src, torch.arange(n)) and bool((self.read == 1).all())
                and bool((self.write == 1).all()))

    def scale(self, io: str | None) -> torch.Tensor | None:
        vec = self.write if io == "out" else self.read if io == "in" else None
        return None if vec is None or bool((vec == 1).all()) else vec

    def fill(self, io: str | None) -> str:
        return self.fill_out if io == "out" else self.fill_in

    def runs_between(self, start: int, stop: int) -> tuple[list[tuple[int, int, int]], torch.Tensor, torch.Tensor]:
        """:attr:`runs` restricted to output units start..stop-1."""
        runs, rest_dst, rest_src = self.runs
        clipped = []
        for dst, src, length in runs:
            lo, hi = max(dst, start), min(dst + length, stop)
            if lo < hi:
                clipped.append((lo, src + lo - dst, hi - lo))
        keep = (rest_dst >= start) & (rest_dst < stop)
        return clipped, rest_dst[keep], rest_src[keep]

    @cached_property
    def runs(self) -> tuple[list[tuple[int, int, int]], torch.Tensor, torch.Tensor]:
        """The map as (dst, src, length) runs of consecutive units, plus the short leftovers (dst, src).

        Copying a run is a plain slice copy, many times faster than an element-wise gather;
        tiling makes the whole map a few long runs. New units (-1) are skipped: they are filled later.
        """
        src = self.src.tolist()
        runs, rest_dst, rest_src = [], [], []
        i = 0
        while i < len(src):
            if src[i] < 0:
                i += 1
                continue
            j = i + 1
            while j < len(src) and src[j] == src[j - 1] + 1:
                j += 1
            if j - i >= 16:
                runs.append((i, src[i], j - i))
            else:
                rest_dst.extend(range(i, j))
                rest_src.extend(src[i:j])
            i = j
        return runs, torch.tensor(rest_dst, dtype=torch.long), torch.tensor(rest_src, dtype=torch.long)


def grow_indices(old: int, new: int, seed: int, key: str) -> list[int]:
    """Net2Net/HyperCloning source indices: 0..old-1 tiled, then a seeded random subset (sorted).

    Example:
        >>> grow_indices(4, 8, 0, "hidden")
        [0, 1, 2, 3, 0, 1, 2, 3]
        >>> len(grow_indices(4, 6, 0, "hidden"))
        6
    """
    tiles, rest = divmod(new, old)
    extra = torch.randperm(old, generator=generator(seed, "width-split", key))[:rest].sort().values.tolist()
    return list(range(old)) * tiles + extra


def _expand(head_map: list[int], head_dim: int) -> torch.Tensor:
    """Head-level map -> element-level map (-1 stays -1)."""
    heads = torch.tensor(head_map, dtype=torch.long)
    offsets = torch.arange(head_dim)
    elements = heads[:, None] * head_dim + offsets[None, :]
    return torch.where(heads[:, None] < 0, -1, elements).reshape(-1)


def head_maps(sizes: WidthSizes, op: str, seed: int) -> tuple[list[int], list[int]]:
    """(query-head map, key/value-head map), each new head -> source head (-1: new).

    ``direct``: key/value heads are split Net2Net-style; every new group's query slots are
    filled with the query heads of the source group its key/value head copies (tiled, then
    a seeded subset), so each query head still attends with (a copy of) its own key/value head.
    ``zero``/``random``: source heads stay first in their groups; everything else is new.
    """
    (nh, nh2), (nkv, nkv2) = sizes.heads, sizes.kv_heads
    G, G2 = nh // nkv, nh2 // nkv2
    if op != "direct":
        kv_map = list(range(nkv)) + [-1] * (nkv2 - nkv)
        q_map = []
        for position in range(nh2):
            group, slot = divmod(position, G2)
            q_map.append(group * G + slot if group < nkv and slot < G else -1)
        return q_map, kv_map
    kv_map = grow_indices(nkv, nkv2, seed, "kv_heads")
    q_map = [0] * nh2
    slots: dict[int, list[int]] = {s: [] for s in range(nkv)}
    for m, s in enumerate(kv_map):
        slots[s].extend(range(m * G2, (m + 1) * G2))
    for s, positions in slots.items():
        if len(positions) < G:
            raise HfgrowError(
                f"{nh2} query heads over {nkv2} key/value heads leave only {len(positions)} query slots for the "
                f"{G} query heads of source key/value head {s}; choose more heads."
            )
        local = grow_indices(G, len(positions), seed, f"q_heads/{s}")
        for position, head in zip(positions, local):
            q_map[position] = s * G + head
    return q_map, kv_map


def _fused_qkv(layout: str, q_map: list[int], kv_map: list[int], sizes: WidthSizes) -> torch.Tensor:
    """Element map of a fused q|k|v projection's output rows: through the plain [q | k | v] order and back."""
    (nh, nh2), (nkv, nkv2), hd = sizes.heads, sizes.kv_heads, sizes.head_dim
    q, kv = _expand(q_map, hd), _expand(kv_map, hd)
    shift = lambda t, offset: torch.where(t < 0, -1, t + offset)  # noqa: E731
    plain = torch.cat([q, shift(kv, nh * hd), shift(kv, (nh + nkv) * hd)])  # new plain row -> source plain row
    wanted = plain[qkv_row_order(layout, nh2, nkv2, hd)]  # new fused row -> source plain row
    fused_of_plain = torch.argsort(qkv_row_order(layout, nh, nkv, hd))  # source plain row -> source fused row
    return torch.where(wanted < 0, -1, fused_of_plain[wanted.clamp(min=0)])


def _ones(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.float64)


def space_maps(roles: Roles, sizes: WidthSizes, op: str, seed: int, style: str = "hfgrow") -> dict[str, UnitMap]:
    """A UnitMap for every space that changes."""
    if op not in OPS:
        raise HfgrowError(f"unknown width operator '{op}'; use one of {', '.join(OPS)}.")
    if op == "direct" and style == "prts":
        return _prts_direct_maps(roles, sizes, seed)
    maps: dict[str, UnitMap] = {}
    hidden_fill = ("zero", "random") if op == "zero" else ("random", "random")
    inner_fill = ("random", "zero") if op == "zero" else ("random", "random")
    if op == "zero" and style == "prts":  # prts zero.py: writing a new unit from old ones is zero, reading one random
        inner_fill = hidden_fill

    def counts(src: torch.Tensor, old: int) -> torch.Tensor:
        return torch.bincount(src.clamp(min=0), minlength=old).to(torch.float64)[src.clamp(min=0)]

    def simple(old: int, new: int, key: str, fills) -> UnitMap:
        if op == "direct":
            src = torch.tensor(grow_indices(old, new, seed, key))
            read = 1.0 / counts(src, old)
            return UnitMap(src, read, _ones(new))
        src = torch.cat([torch.arange(old), torch.full((new - old,), -1)])
        return UnitMap(src, _ones(new), _ones(new), *fills)

    H, H2 = sizes.hidden
    if H2 != H:
        hidden = simple(H, H2, "hidden", hidden_fill)
        if op == "direct" and H2 % H and roles.norm_kind == "rms":
            copies = 1.0 / hidden.read  # c per unit
            s = torch.sqrt((H2 / H) / copies)  # RMS-preserving scaled copies
            hidden = UnitMap(hidden.src, 1.0 / (copies * s), s)
        maps["hidden"] = hidden
    for key, (old, new) in sizes.ffn.items():
        if new != old:
            maps[f"ffn:{key}"] = ffn = simple(old, new, f"ffn:{key}", inner_fill)
            src = torch.cat([ffn.src, torch.where(ffn.src < 0, -1, ffn.src + old)])
            maps[f"gate_up:{key}"] = UnitMap(src, torch.cat([ffn.read, ffn.read]), _ones(2 * new),
                                             ffn.fill_out, ffn.fill_in)
    if sizes.heads[0] != sizes.heads[1] or sizes.kv_heads[0] != sizes.kv_heads[1]:
        q_map, kv_map = head_maps(sizes, op, seed)
        hd = sizes.head_dim
        q = _expand(q_map, hd)
        read = _ones(q.numel())
        if op == "direct":
            per_head = torch.bincount(torch.tensor(q_map), minlength=sizes.heads[0]).to(torch.float64)
            read = (1.0 / per_head[torch.tensor(q_map)]).repeat_interleave(hd)
        maps["q"] = UnitMap(q, read, _ones(q.numel()), *inner_fill)
        kv = _expand(kv_map, hd)
        maps["kv"] = UnitMap(kv, _ones(kv.numel()), _ones(kv.numel()), *inner_fill)
        qkv = _fused_qkv(roles.qkv_layout, q_map, kv_map, sizes)
        maps["qkv"] = UnitMap(qkv, _ones(qkv.numel()), _ones(qkv.numel()), *inner_fill)
    return maps


def prts_extra_indices(sizes: WidthSizes, seed: int) -> dict[str, list[int]]:
    """The source units the reference's bert2BERT copies into the new units (``get_extra_src_indices``,
    ``from_left=False``): ``hidden`` (diff = new - old hidden units), ``qkv`` (the 3·diff new rows of a fused
    q|k|v) and each FFN key. Drawn with replacement from ``random.Random(seed)``.

    Example:
        >>> prts_extra_indices(WidthSizes((4, 6), (2, 3), (2, 3), {"intermediate_size": (8, 12)}, 2), 0)["qkv"]
        [1, 1, 1, 1, 1, 1]
    """
    import random

    (H, H2), (nh, nh2), (nkv, nkv2), hd = sizes.hidden, sizes.heads, sizes.kv_heads, sizes.head_dim
    if H2 <= H:
        raise HfgrowError("--style prts G-right-direct (bert2BERT) grows the hidden size, as the reference does; "
                          "give a larger --hidden-size (or use --style hfgrow).")
    if nkv != nh or nkv2 != nh2 or nh * hd != H or nh2 * hd != H2:
        raise HfgrowError(f"--style prts G-right-direct widens a fused q|k|v of 3 x hidden rows as the reference's "
                          f"bert2BERT does, which needs multi-head attention with heads x head_dim = hidden size "
                          f"(here {nh} -> {nh2} query and {nkv} -> {nkv2} key/value heads of {hd}, hidden {H} -> "
                          f"{H2}); use --style hfgrow.")
    diff = H2 - H
    idx = [x % H for x in random.Random(seed).choices(range(diff), k=diff)]
    by_growth = {diff: idx, 3 * diff: idx * 3, 4 * diff: idx * 4}
    extra = {"hidden": idx, "qkv": idx * 3}
    for key, (old, new) in sizes.ffn.items():
        if new == old:
            continue
        rows = by_growth.get(new - old, (idx * 4)[:new - old])
        if len(rows) != new - old:
            raise HfgrowError(f"--style prts G-right-direct draws at most 4 x {diff} new FFN units (the reference's "
                              f"rule); {key} grows by {new - old}.")
        extra[f"ffn:{key}"] = rows
    return extra


def _prts_direct_maps(roles: Roles, sizes: WidthSizes, seed: int) -> dict[str, UnitMap]:
    """bert2BERT's unit maps: each space's source units, then the drawn copies; readers of a unit copied c
    times divided by c + 1, writers copied. The q space (what the attention output projection reads) follows
    the hidden map, as the reference's ``attn.proj`` [H, H] does; q/k/v rows go through the fused rule
    (:func:`_prts_qkv`)."""
    extra = prts_extra_indices(sizes, seed)

    def unit_map(old: int, rows: list[int]) -> UnitMap:
        src = torch.cat([torch.arange(old), torch.tensor(rows, dtype=torch.long)])
        counts = torch.bincount(src, minlength=old).to(torch.float64)[src]
        return UnitMap(src, 1.0 / counts, _ones(src.numel()), "random", "random")

    maps = {"hidden": unit_map(sizes.hidden[0], extra["hidden"])}
    maps["q"] = maps["hidden"]
    for key, (old, new) in sizes.ffn.items():
        if new != old:
            maps[f"ffn:{key}"] = ffn = unit_map(old, extra[f"ffn:{key}"])
            src = torch.cat([ffn.src, ffn.src + old])
            maps[f"gate_up:{key}"] = UnitMap(src, torch.cat([ffn.read, ffn.read]), _ones(2 * new), "random", "random")
    return maps


def prts_qkv_rows(roles: Roles, sizes: WidthSizes, seed: int) -> torch.Tensor:
    """For each row of the grown [q | k | v] (plain order), the source [q | k | v] row bert2BERT copies into it.

    The reference's fused tensor is lit_gpt's, per key/value group [its q heads, k, v] (multi-head: per head);
    its rows are the source's followed by the source's fused rows ``qkv`` (:func:`prts_extra_indices`), and the
    grown model reads them in the same layout with its own head count.
    """
    (nh, nh2), (nkv, nkv2), hd = sizes.heads, sizes.kv_heads, sizes.head_dim
    fused = torch.cat([torch.arange((nh + 2 * nkv) * hd), torch.tensor(prts_extra_indices(sizes, seed)["qkv"])])
    plain_of_fused = qkv_row_order("per_group", nh, nkv, hd)  # source fused row -> source plain row
    fused_of_plain = torch.argsort(qkv_row_order("per_group", nh2, nkv2, hd))  # grown plain row -> grown fused row
    return plain_of_fused[fused[fused_of_plain]]


# ---------------------------------------------------------------- per-tensor transform


def _view(vec: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return vec.view(shape)


def remap(x: torch.Tensor, role: TensorRole, dim_maps: list[UnitMap | None], shape: tuple[int, ...], dtype: str,
          *, std: float, seed: int, key: str, factor: float = 1.0, norm: tuple[float, float, float] | None = None,
          prefer: str = "zero") -> torch.Tensor:
    """Apply per-dimension unit maps to ``x``, one chunk of output rows at a time.

    Each chunk is gathered straight into the output tensor (in the output dtype), then
    multiplied in place by one combined scale (one rounding: the product is computed in
    float32), then new units are filled. ``norm`` = (offset, init value, rescale) for a
    norm weight: the effective weight ``w + offset`` of every unit (new units:
    ``init + offset``) is multiplied by ``rescale``. An element new in two dimensions whose
    fills disagree gets the ``prefer`` one ("zero" or "random").
    """
    if norm is not None:
        return remap_norm(x, dim_maps[0], shape, dtype, norm)
    ndim = len(shape)
    out = torch.empty(shape, dtype=dtypes.to_torch(dtype))
    # Each output unit's scale is a function of its source unit. A single constant (integer tiling,
    # Gemma's embedding factor) is one multiplication in the source dtype; per-unit scales (non-integer
    # splits) are applied in float32 and rounded once. Either way the scaled values are then only copied.
    constant, per_unit = factor, []
    for dim, unit_map in enumerate(dim_maps):
        vec = unit_map.scale(role.io[dim]) if unit_map is not None else None
        if vec is None:
            continue
        if bool((vec == vec[0]).all()):
            constant *= float(vec[0])
        else:
            valid = unit_map.src >= 0
            by_source = torch.ones(x.shape[dim], dtype=torch.float64)
            by_source[unit_map.src[valid]] = vec[valid]
            per_unit.append((dim, by_source.to(torch.float32)))
    first = dim_maps[0]
    columns = dim_maps[1] if ndim > 1 else None
    source = x
    post_scale = 1.0  # applied to each output chunk right after its rows are copied
    if first is not None and (per_unit or constant != 1.0):
        if not per_unit and x.dtype == out.dtype:
            # one constant in the same dtype: scaling the copied rows rounds exactly like scaling the source,
            # and needs no scaled copy of the source (peak memory: source + output)
            post_scale = constant
        else:  # per-unit scales: scale the (smaller) source once, in float32, then copy rows straight out
            source = _scaled_source(x, per_unit, constant, out.dtype)
        per_unit, constant = [], 1.0
    for start, stop in row_chunks(shape):
        target = out[start:stop]
        if first is None:
            rows = source[start:stop]
            if per_unit:
                rows = rows.to(torch.float32, copy=True)
                for dim, by_source in per_unit:
                    rows.mul_(_view(by_source[start:stop] if dim == 0 else by_source, dim, ndim))
                if constant != 1.0:
                    rows.mul_(constant)
            elif constant != 1.0 and columns is not None:  # scale the (smaller) rows before the column copies,
                rows = rows.to(compute_dtype(rows.dtype)).mul_(constant)  # in float32: one rounding, to the output
            _copy_columns(target, rows, columns)
            if constant != 1.0 and not per_unit and columns is None:
                target.mul_(constant)
        else:
            runs, rest_dst, rest_src = first.runs_between(start, stop)
            for dst, src, length in runs:
                _copy_columns(target[dst - start:dst - start + length], source[src:src + length], columns)
            if rest_dst.numel():
                block = torch.empty((rest_dst.numel(), *shape[1:]), dtype=out.dtype)
                _copy_columns(block, source.index_select(0, rest_src), columns)
                target.index_copy_(0, rest_dst - start, block)
            if post_scale != 1.0:
                target.mul_(post_scale)
        new = zero = drawn = None
        for dim, unit_map in enumerate(dim_maps):
            if unit_map is None or not unit_map.has_new:
                continue
            mask = _view(unit_map.new[start:stop] if dim == 0 else unit_map.new, dim, ndim)
            new = mask if new is None else new | mask
            if role.is_bias or unit_map.fill(role.io[dim]) == "zero":
                zero = mask if zero is None else zero | mask
            else:
                drawn = mask if drawn is None else drawn | mask
        if new is not None:
            new = new.expand(target.shape)
            if prefer == "random" and drawn is not None:
                zero = None if zero is None else zero & ~drawn
            random = new if zero is None else new & ~zero.expand(target.shape)
            if bool(random.any()):
                values = torch.randn(target.shape, generator=generator(seed, "width-init", key, start)) * std
                target.copy_(torch.where(random, values.to(target.dtype), target))
            if zero is not None:
                target.masked_fill_(zero.expand(target.shape), 0.0)
    return out


def _is_tiling(unit_map: UnitMap) -> bool:
    """The map repeats the whole source k times (a tiled vector keeps its mean, variance and RMS)."""
    src = unit_map.src
    old = int(src.max()) + 1 if src.numel() else 0
    return old > 0 and src.numel() % old == 0 and torch.equal(src, torch.arange(old).repeat(src.numel() // old))


def _copy_columns(target: torch.Tensor, rows: torch.Tensor, columns: UnitMap | None) -> None:
    """target[:, j] = rows[:, src[j]] for every mapped column (slice copies for runs; casts as needed)."""
    if columns is None:
        target.copy_(rows)
        return
    runs, rest_dst, rest_src = columns.runs
    for dst, src, length in runs:
        target[:, dst:dst + length].copy_(rows[:, src:src + length])
    if rest_dst.numel():
        target.index_copy_(1, rest_dst, rows.index_select(1, rest_src).to(target.dtype))


def _scaled_source(x: torch.Tensor, per_unit: list, constant: float, dtype: torch.dtype) -> torch.Tensor:
    """``x`` times its per-source-unit scales or a constant, computed in float32 and rounded once to ``dtype``
    (``x * constant`` alone would round in ``x``'s dtype: a bf16 source widened into float32 lost the exactness
    float32 output exists for)."""
    if not per_unit:
        return x.to(compute_dtype(x.dtype)).mul_(constant).to(dtype)
    scaled = torch.empty(x.shape, dtype=dtype)
    for start, stop in row_chunks(tuple(x.shape)):
        rows = x[start:stop].to(torch.float32, copy=True)
        for dim, by_source in per_unit:
            rows.mul_(_view(by_source[start:stop] if dim == 0 else by_source, dim, x.dim()))
        if constant != 1.0:
            rows.mul_(constant)
        scaled[start:stop] = rows
    return scaled


def remap_norm(x: torch.Tensor, unit_map: UnitMap | None, shape: tuple[int, ...], dtype: str,
                norm: tuple[float, float, float]) -> torch.Tensor:
    offset, init, rescale = norm
    cdt = compute_dtype(x.dtype)
    values = x.to(cdt) if unit_map is None else x.index_select(0, unit_map.src.clamp(min=0)).to(cdt)
    if unit_map is not None and unit_map.has_new:
        values = torch.where(unit_map.new, torch.tensor(init, dtype=cdt), values)
    if rescale != 1.0:
        values = (values + offset) * rescale - offset
    return values.to(dtypes.to_torch(dtype)).reshape(shape)


# ---------------------------------------------------------------- the plan


@dataclass
class Widened:
    """What widening changes besides the tensors, for any width operator (unit maps or LiGO).

    ``config`` is the grown config; ``untie`` the tied output embeddings that must become tensors of their
    own (target -> the embedding they were tied to); ``embed_factor`` what the embedding is multiplied by
    (Gemma scales its output by sqrt(hidden), which changes with the width).
    """

    config: dict[str, Any]
    untie: dict[str, str]
    embed_factor: float
    notes: list[str]


def widen_config(config: dict[str, Any], roles: Roles, sizes: WidthSizes, op: str, keep_tied: bool = False) -> Widened:
    """The grown config and the model-level changes every width operator shares (``keep_tied``: tied embeddings
    stay tied, for a widening whose new hidden units are zero in the embedding).

    The sizes are written by meaning (``hidden_size``, ``num_key_value_heads``, ...) through
    :func:`hfgrow.arch.layout.rewrite_config`, so each lands on the key the config class builds it from.
    """
    H, H2 = sizes.hidden
    changes: dict[str, Any] = {"hidden_size": H2, **{alias: H2 for alias in roles.hidden_aliases},
                               "num_attention_heads": sizes.heads[1]}
    if sizes.kv_heads[1] != sizes.kv_heads[0] and roles.keys.get("num_key_value_heads"):
        changes[roles.keys["num_key_value_heads"]] = sizes.kv_heads[1]  # the attribute the family reads (ChatGLM's
        # multi_query_group_num; Falcon's num_key_value_heads, which rewrite_config writes to num_kv_heads)
    changes.update({key: new for key, (_, new) in sizes.ffn.items()})
    if config.get("head_dim") is not None or H2 % sizes.heads[1] or H2 // sizes.heads[1] != sizes.head_dim:
        changes["head_dim"] = sizes.head_dim
    ffn_text = ", ".join(f"{key} {a} -> {b}" for key, (a, b) in sizes.ffn.items())
    notes = [f"width ({op}): hidden {H} -> {H2}, heads {sizes.heads[0]} -> {sizes.heads[1]} (key/value "
             f"{sizes.kv_heads[0]} -> {sizes.kv_heads[1]}, head_dim {sizes.head_dim})" + (f", {ffn_text}" if ffn_text else "")]
    untie = {}
    if H2 != H:
        untie = {target: source for target, source in roles.tied.items() if roles.role(source).kind == "embedding"}
        if keep_tied:
            if not untie:
                raise HfgrowError(f"--keep-tied keeps tied embeddings tied, but this {roles.model_type} model's input "
                                  "and output embeddings are not tied.")
            untie = {}
            notes.append("input and output embeddings stay tied (--keep-tied): the new hidden units are zero in the "
                         "embedding, so the tied LM head reads nothing from them")
        elif untie:
            changes["tie_word_embeddings"] = False
            notes.append("input and output embeddings are untied (grown width needs different values)")
    config = rewrite_config(config, changes)
    factor = 1.0
    if H2 != H and roles.embed_scale != 1.0:
        new_scale = embed_scale_for(config)
        factor = roles.embed_scale / new_scale
        if factor != 1.0:
            notes.append(f"embedding rescaled by {factor:.6g}: the model multiplies it by {new_scale:.6g} instead of "
                         f"{roles.embed_scale:.6g}")
    return Widened(config, untie, factor, notes)


def check_widenable(tensor: TensorPlan, role: TensorRole, roles: Roles) -> None:
    """Refuse, in one sentence, a tensor no width rule covers."""
    if role.kind == "unknown" or not role.width_ok:
        raise HfgrowError(
            f"hfgrow has no width rule for {roles.model_type} tensor {tensor.sources[0]} "
            f"({role.reason or 'unknown role'}); width growth is not supported for this architecture."
        )
    if tensor.dtype not in dtypes.FLOAT:
        raise HfgrowError(f"cannot grow the {tensor.dtype} tensor {tensor.name}; width growth needs float weights.")


def widen_tensors(tensors: list[TensorPlan], roles: Roles, untie: dict[str, str],
                  grow: Callable[[TensorPlan, TensorRole], TensorPlan]) -> list[TensorPlan]:
    """Every planned tensor through ``grow`` (by its source's role); untied output embeddings added as tensors."""
    grown = [grow(tensor, roles.role(tensor.sources[0])) if tensor.sources else tensor for tensor in tensors]
    for target, source in untie.items():
        grown = [t for t in grown if t.name != target]
        base = next(t for t in tensors if t.name == source or t.sources[:1] == (source,))
        grown.append(grow(TensorPlan(target, base.dtype, base.shape, (source,)), roles.lm_head_role()))
    return grown


class _UnitMapWidening:
    """Grows one tensor by the unit maps of its dimensions (the direct, zero and random operators)."""

    def __init__(self, roles: Roles, maps: dict[str, UnitMap], op: str, seed: int, embed_factor: float,
                 norm_rescale: float, layers_out: int, style: str = "hfgrow", final_norm_rescale: float = 1.0):
        self.roles, self.maps, self.op, self.seed = roles, maps, op, seed
        self.embed_factor, self.norm_rescale, self.layers_out = embed_factor, norm_rescale, layers_out
        self.style = style
        self.final_norm_rescale = final_norm_rescale  # extra factor on the final norm (tied LM head kept, Gemma)
        self.qkv_rows: torch.Tensor | None = None  # --style prts direct: grown plain q|k|v row -> source row
        self.sizes: WidthSizes | None = None

    def _prts_qkv(self, tensor: TensorPlan, role: TensorRole) -> TensorPlan:
        """bert2BERT's q/k/v rows (:func:`prts_qkv_rows`): the layer's q, k and v read together, their columns
        widened like every reader of the hidden size, the grown plain [q | k | v] gathered, this tensor's part
        (or, for a fused q|k|v, all of it in its own layout) kept."""
        roles, sizes, rows = self.roles, self.sizes, self.qkv_rows
        (nh, nh2), (nkv, nkv2), hd = sizes.heads, sizes.kv_heads, sizes.head_dim
        if tensor.transform is not None:
            raise HfgrowError("--style prts G-right-direct cannot follow another transform of the q|k|v weights.")
        source = tensor.sources[0]
        rest = block_rest(source, roles.prefix) or ""
        if role.kind == "qkv":
            names = (source,)
            parts = {"qkv": slice(0, rows.numel())}
        else:
            siblings = {r.kind: name for name, r in roles.block.items()
                        if r.kind in ("q", "k", "v") and r.is_bias == role.is_bias}
            if set(siblings) != {"q", "k", "v"}:
                raise HfgrowError(f"--style prts G-right-direct needs the q, k and v {'biases' if role.is_bias else 'weights'} "
                                  f"of {roles.model_type}'s blocks together; hfgrow found {sorted(siblings)}.")
            names = tuple(source[: len(source) - len(rest)] + siblings[kind] for kind in ("q", "k", "v"))
            parts = {"q": slice(0, nh2 * hd), "k": slice(nh2 * hd, (nh2 + nkv2) * hd),
                     "v": slice((nh2 + nkv2) * hd, rows.numel())}
        keep = parts[role.kind]
        hidden = None if role.is_bias else self.maps["hidden"]
        in_dim = role.io.index("in") if hidden is not None else None
        transposed = in_dim == 0
        layout = roles.qkv_layout
        dtype = tensor.dtype
        shape = (rows[keep].numel(),) + ((hidden.src.numel(),) if hidden is not None else ())
        shape = shape[::-1] if transposed else shape

        def fn(*xs: torch.Tensor) -> torch.Tensor:
            cdt = compute_dtype(xs[0].dtype)
            mats = [x.to(cdt).T if transposed else x.to(cdt) for x in xs]
            if hidden is not None:  # readers of a hidden unit copied c times: divided by c + 1 (expand_tensor, div)
                mats = [m.index_select(1, hidden.src) * hidden.read.to(cdt) for m in mats]
            plain = torch.cat(mats)
            if role.kind == "qkv":  # a fused q|k|v in its own layout -> plain, and back in the grown layout
                plain = plain.index_select(0, torch.argsort(qkv_row_order(layout, nh, nkv, hd)))
                grown = plain.index_select(0, rows)
                grown = grown.index_select(0, qkv_row_order(layout, nh2, nkv2, hd))
            else:
                grown = plain.index_select(0, rows[keep])
            grown = grown.T if transposed else grown
            return grown.contiguous().to(dtypes.to_torch(dtype))

        text = f"width direct --style prts (bert2BERT {role.kind} rows of the fused q|k|v)"
        return dataclasses.replace(tensor, sources=names, shape=tuple(shape), transform=Fn(fn, text))

    def __call__(self, tensor: TensorPlan, role: TensorRole) -> TensorPlan:
        roles = self.roles
        if self.qkv_rows is not None and role.kind in ("q", "k", "v", "qkv"):
            return self._prts_qkv(tensor, role)
        dim_maps = [self.maps.get(space) if space else None for space in role.dims]
        dim_maps = [m if m is not None and not m.is_identity() else None for m in dim_maps]
        factor = self.embed_factor if role.kind == "embedding" else 1.0
        prts = self.style == "prts"
        norm = None
        if role.is_norm:
            scale = self.norm_rescale if role.dims[0] == "hidden" and not role.is_bias else 1.0
            if not roles.is_block_tensor(tensor.sources[0]) and role.dims[0] == "hidden":
                scale *= self.final_norm_rescale  # biases too: the norm's whole output feeds the LM head
            # new norm units: their init (effective weight one), or, for prts's zero operator, effective weight zero
            init = 0.0 if role.is_bias else 0.0 - roles.norm_offset if prts and self.op == "zero" else roles.norm_init
            norm = (roles.norm_offset, init, scale)
            if scale == 1.0 and dim_maps[0] is None:
                return tensor
        elif all(m is None for m in dim_maps) and factor == 1.0:
            return tensor
        check_widenable(tensor, role, roles)
        shape = tuple(m.src.numel() if m is not None else size for m, size in zip(dim_maps, tensor.shape))
        std = 0.0
        if not role.is_norm and not role.is_bias and any(m is not None and m.has_new for m in dim_maps):
            layers = self.layers_out
            std = roles.prts_init_std(role, shape, layers) if prts else roles.init_std_for(role, layers)
        seed, name, dtype, prefer = self.seed, tensor.name, tensor.dtype, "random" if prts else "zero"

        def fn(x: torch.Tensor) -> torch.Tensor:
            return remap(x, role, dim_maps, shape, dtype, std=std, seed=seed, key=name, factor=factor, norm=norm,
                         prefer=prefer)

        spaces = ",".join(s or "-" for s in role.dims)
        return then(tensor, fn, f"width {self.op} ({role.kind} [{spaces}])", shape)


def _zero_norm_rescale(widened: Widened, roles: Roles, sizes: WidthSizes) -> float:
    """G-right-zero with RMSNorm: new hidden units stay zero, so mean(x²) shrinks by H/H2. Norm weights x
    sqrt(H/H2) and eps x H/H2 make every RMSNorm output exactly what it was."""
    H, H2 = sizes.hidden
    key = roles.norm_eps_key
    if key and isinstance(widened.config.get(key), (int, float)):
        widened.config = rewrite_config(widened.config, {key: widened.config[key] * H / H2})
        widened.notes.append(f"{key} scaled by {H}/{H2} and norm weights by sqrt({H}/{H2}) "
                             "(the zero hidden units lower the mean square)")
    else:
        widened.notes.append(f"norm weights scaled by sqrt({H}/{H2}); hfgrow found no epsilon to scale, so outputs "
                             "match up to the norm's epsilon")
    return math.sqrt(H / H2)


def _preservation(op: str, roles: Roles, sizes: WidthSizes, maps: dict[str, UnitMap], style: str = "hfgrow",
                  seed: int = 0) -> tuple[bool, list[str]]:
    """Whether the unit-map operator keeps the source's function exactly, and notes saying why not."""
    if op == "random":
        return False, []
    H, H2 = sizes.hidden
    notes = []
    if op == "direct" and style == "prts":
        return False, ["G-right-direct --style prts (bert2BERT as the reference runs it): the new units copy source "
                       "units drawn with replacement, which changes the norms' statistics, and the new heads' q/k/v "
                       "rows are rows of other heads' fused q|k|v, so the grown model computes a different function"]
    if op == "zero" and style == "prts":
        if H2 != H:
            notes.append("G-right-zero --style prts: the zero new hidden units lower the norms' mean square and the "
                         "reference code rescales nothing, so the grown model computes a different function "
                         "(hfgrow's default style rescales RMSNorm to keep it)")
        q_map, kv_map = head_maps(sizes, op, seed) if "q" in maps else ([], [])
        group = sizes.heads[1] // sizes.kv_heads[1] if "q" in maps else 1
        if any(s < 0 and kv_map[i // group] >= 0 for i, s in enumerate(q_map)):
            notes.append("G-right-zero --style prts: new query heads share a source key/value head and attend with "
                         "it, and their random fan-out writes that to the residual stream (keep the query heads per "
                         "key/value head to preserve the function)")
    if H2 != H and H2 % H and op == "direct" and roles.norm_kind != "rms":
        notes.append(f"hidden size grown by a non-integer factor with {roles.norm_kind} norms: only approximately "
                     "function-preserving (use a whole multiple for an exact copy)")
    if H2 != H and op == "zero" and style == "hfgrow" and roles.norm_kind != "rms":
        notes.append(f"G-right-zero with {roles.norm_kind} norms: new hidden units change the norm statistics; "
                     "only approximately function-preserving")
    for space in ("q", "kv"):  # norms over the whole query/key vector (OLMo 2) only survive plain tiling
        normed = any(role.dims == (space,) and role.is_norm for role in roles.block.values())
        if normed and space in maps and not _is_tiling(maps[space]):
            notes.append(f"the {space} norm spans all heads and the heads were not grown by whole tiling: "
                         "only approximately function-preserving (use a whole multiple of the heads)")
    return not notes, notes


def _power_of_two(value: float) -> bool:
    """Multiplying by ``value`` is exact in any float format (barring overflow and subnormals)."""
    return value > 0 and math.frexp(value)[0] == 0.5


_SPACE_NAMES = {"hidden": "hidden units", "q": "query heads"}


def inexact_scales(maps: dict[str, UnitMap], norm_rescale: float, embed_factor: float) -> list[str]:
    """The weights a unit-map widening multiplies by a factor that is not a power of two.

    Such a product is rounded when it is stored in bf16/fp16 (8 or 11 significant bits), so the grown
    model then matches its source only to that rounding; powers of two (an even split: 1/2, 1/4) are exact.

    Example:
        >>> inexact_scales(space_maps(roles, resolve_sizes(roles, hidden_size=96), "direct", 0), 1.0, 1.0)
        ['the weights reading split hidden units (x 1/copies, and sqrt(k/copies) where they are written)']
    """
    found = []
    for space, unit_map in maps.items():
        if space.startswith(("gate_up:", "qkv", "kv")):
            continue  # the same units as an ffn: / q space listed already (key/value heads are never rescaled)
        values = torch.cat([unit_map.read, unit_map.write]).unique().tolist()
        if not all(_power_of_two(v) for v in values):
            name = _SPACE_NAMES.get(space, "FFN units" if space.startswith("ffn:") else space)
            where = ", and sqrt(k/copies) where they are written" if not bool((unit_map.write == 1).all()) else ""
            found.append(f"the weights reading split {name} (x 1/copies{where})")
    if not _power_of_two(norm_rescale):
        found.append(f"the norm weights (x {norm_rescale:.6g})")
    if not _power_of_two(embed_factor):
        found.append(f"the embedding (x {embed_factor:.6g})")
    return found


def half_precision_caveat(tensors: list[TensorPlan], scaled: list[str]) -> str | None:
    """Why a widening that preserves the function in exact arithmetic does not in its bf16/fp16 output.

    Example:
        >>> half_precision_caveat(plan.tensors, ["the norm weights (x 0.707107)"])[:64]
        'BF16 output rounds the norm weights (x 0.707107): the grown model'
    """
    half = sorted({t.dtype for t in tensors if t.dtype in ("BF16", "F16") and t.transform is not None})
    if not scaled or not half:
        return None
    return (f"{'/'.join(half)} output rounds {' and '.join(scaled)}: the grown model matches its source only to "
            f"{half[0]} rounding, so it is not function-preserving (recipe: function_preserving false; verify --expect "
            "preserved fails); --dtype float32 keeps the function")


#: how training ramps new width units in, by style (recipe fields of :class:`~hfgrow.growth.recipe.Mask`):
#: prts_lit/scaling/msg.py stages FFN, hidden, heads one ramp after another (MsgMask.getmask), scales the outputs of
#: every projection that writes new units (MsgLayer) and normalises with mask-weighted statistics (MsgNorm)
WIDTH_RAMPS = {
    "hfgrow": dict(stages=(("ffn", "hidden", "heads"),), units_at="readers", norm_stats="fill"),
    "prts": dict(stages=(("ffn",), ("hidden",), ("heads",)), units_at="writers", norm_stats="masked"),
}


def _width_mask(sizes: WidthSizes, maps: dict[str, UnitMap], seed: int) -> WidthMask:
    """The new units an MSG ramp scales after G-right-random."""
    q_map, kv_map = head_maps(sizes, "random", seed) if "q" in maps else ([], [])
    return WidthMask(hidden=sizes.hidden, ffn=dict(sizes.ffn),
                     new_heads=tuple(i for i, s in enumerate(q_map) if s < 0),
                     new_kv_heads=tuple(i for i, s in enumerate(kv_map) if s < 0))


def width_plan(plan: Plan, roles: Roles, sizes: WidthSizes, *, op: str = "direct", seed: int = 0,
               style: str = "hfgrow", keep_tied: bool = False) -> Plan:
    """Grow the width of every tensor of ``plan`` (any depth plan: its tensors' sources are source tensors).

    Example:
        >>> sizes = resolve_sizes(roles, hidden_size=128, intermediate_size=512)
        >>> wide = width_plan(stack_plan(layout, ckpt.tensors, [0, 1]), roles, sizes)
        >>> wide.config["hidden_size"], wide.operation.width.function_preserving
        (128, True)

    ``keep_tied`` (G-right-zero only) keeps tied input and output embeddings tied: the new hidden units are zero
    in the embedding and stay zero through every block, so the tied LM head reads zeros from them. Where the
    embedding is rescaled (Gemma's sqrt(hidden) factor), the final norm's effective weight takes the inverse
    factor, so the logits, read through the rescaled tied embedding, are unchanged.
    """
    if not sizes.changed:
        return plan
    if keep_tied and op != "zero":
        raise HfgrowError("--keep-tied widens the hidden size the G-right-zero way (new hidden units zero in the tied "
                          f"embedding); use it with --op zero or --width-op zero, not {op}.")
    maps = space_maps(roles, sizes, op, seed, style)
    widened = widen_config(plan.config, roles, sizes, op, keep_tied)
    rescale = 1.0
    if op == "zero" and style == "hfgrow" and sizes.hidden[1] != sizes.hidden[0] and roles.norm_kind == "rms":
        rescale = _zero_norm_rescale(widened, roles, sizes)
    layers_out = len(plan.layer_map) if plan.layer_map else 1
    final = 1.0 / widened.embed_factor if keep_tied and sizes.hidden[1] != sizes.hidden[0] else 1.0
    widen = _UnitMapWidening(roles, maps, op, seed, widened.embed_factor, rescale, layers_out, style, final)
    if op == "direct" and style == "prts":
        widen.qkv_rows, widen.sizes = prts_qkv_rows(roles, sizes, seed), sizes
    tensors = widen_tensors(plan.tensors, roles, widened.untie, widen)
    preserving, caveats = _preservation(op, roles, sizes, maps, style, seed)
    warnings = list(plan.warnings)
    if preserving and (caveat := half_precision_caveat(tensors, inexact_scales(maps, rescale, widened.embed_factor))):
        preserving = False
        warnings.append(caveat)
    check_output_shapes(widened.config, {t.name: t.shape for t in tensors}, roles)
    operation = plan.operation.replace(width=WidthRecord(op, sizes.pairs(), sizes.head_dim, preserving))
    if op == "random":
        mask = plan.operation.mask or Mask()
        operation = operation.replace(mask=dataclasses.replace(mask, width=_width_mask(sizes, maps, seed),
                                                               **WIDTH_RAMPS[style]))
    return dataclasses.replace(plan, tensors=tensors, config=widened.config, operation=operation,
                               notes=plan.notes + widened.notes + caveats, warnings=warnings)
