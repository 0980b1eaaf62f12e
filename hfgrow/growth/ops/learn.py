"""G↑learn (LiGO depth): every grown block is a learned linear combination of source blocks.

For each weight kind k (a tensor name inside a block, e.g. ``self_attn.q_proj.weight``)
the grown block ``l`` gets ``W'_l[k] = Σ_j D_k[l, j] · W_j[k]`` over the source blocks j
that have that tensor. ``D_k`` starts as the stacking map (one-hot rows), so the initial
plan is exactly Gstack; :mod:`hfgrow.growth.ligo.fit` learns D, and this module turns D into a plan
whose transforms the executor streams like any other (nothing here does I/O).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import torch

from hfgrow.io.checkpoint import TensorInfo
from hfgrow.arch.layout import Layout
from hfgrow.growth.ops.depth import stack_plan
from hfgrow.arch.roles import qkv_row_order
from hfgrow.growth.ops.common import normal, then
from hfgrow.growth.ops.width import (WidthSizes, check_widenable, head_maps, remap_norm, space_maps,
                                     widen_config, widen_tensors)
from hfgrow.io import dtypes
from hfgrow.growth.plan import Plan
from hfgrow.growth.recipe import Operation, WidthRecord
from hfgrow.io.plan import Fn, TensorPlan

Coefficients = dict[str, list[list[float]]]  # weight kind -> D (grown layers x source layers of that kind)


def kind_members(layout: Layout) -> dict[str, list[int]]:
    """For each weight kind, the source layers that have it (dense and MoE blocks differ).

    Example:
        >>> kind_members(layout)["mlp.up_proj.weight"]
        [0, 1, 2, 3]
    """
    members: dict[str, list[int]] = {}
    for index, names in enumerate(layout.layers):
        for rest in names:
            members.setdefault(rest, []).append(index)
    return members


def initial_coefficients(layout: Layout, layer_map: list[int]) -> Coefficients:
    """D at its LiGO initialisation: row l is one-hot at the source layer Gstack copies to l.

    Example:
        >>> initial_coefficients(layout, [0, 1, 0, 1])["mlp.up_proj.weight"]
        [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    """
    coefficients: Coefficients = {}
    for rest, members in kind_members(layout).items():
        rows = []
        for src in layer_map:
            if rest in layout.layers[src]:
                rows.append([1.0 if j == src else 0.0 for j in members])
            else:
                rows.append([0.0] * len(members))
        coefficients[rest] = rows
    return coefficients


def _combine(row: tuple[float, ...]):
    def combine(*weights: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(weights[0].shape, dtype=torch.float32)
        for c, w in zip(row, weights):
            if c != 0.0:
                total.add_(w.float(), alpha=c)
        return total

    return combine


def learned_plan(layout: Layout, tensors: Mapping[str, TensorInfo], layer_map: list[int],
                 coefficients: Coefficients, dtype: str | None = None, base: Plan | None = None) -> Plan:
    """The plan for learned depth growth: block structure from ``layer_map``, values from D.

    A row that is exactly one-hot stays a byte copy; other rows are computed in float32
    from the source tensors with non-zero coefficients, then cast. ``base`` is the Gstack
    plan of the same ``layer_map`` when the caller has it already.
    """
    base = base or stack_plan(layout, tensors, layer_map, dtype)  # config, layer map, checks
    members = kind_members(layout)
    learned: dict[str, TensorPlan] = {}
    for position, src in enumerate(layer_map):
        for rest in layout.layers[src]:
            row = coefficients[rest][position]
            info = tensors[layout.layer_tensor(src, rest)]
            name = layout.layer_tensor(position, rest)
            out_dtype = dtypes.float_output(info.dtype, dtype)
            nonzero = [(c, j) for c, j in zip(row, members[rest]) if c != 0.0]
            if len(nonzero) == 1 and nonzero[0] == (1.0, src):
                continue  # exactly the Gstack copy: stays a byte copy
            sources = tuple(layout.layer_tensor(j, rest) for _, j in nonzero) or (info.name,)
            weights = tuple(c for c, _ in nonzero) or (0.0,)
            text = "learned combination of source layers (LiGO)"
            learned[name] = TensorPlan(name, out_dtype, info.shape, sources, Fn(_combine(weights), text))
    return Plan(
        tensors=[learned.get(t.name, t) for t in base.tensors],
        config=base.config,
        layer_map=base.layer_map,
        new_layers=base.new_layers,
        operation=Operation(op="learn", direction="depth", coefficients=coefficients),
        warnings=list(base.warnings),
    )


# ---------------------------------------------------------------- width (LiGO expansion matrices)

WIDTH_INITS = ("direct", "identity")
SIDECAR = "hfgrow_ligo.safetensors"  # the learned width matrices, next to hfgrow.yaml, for replay


def _contract(matrix: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """``matrix`` [new, old] applied to dimension ``dim`` of ``x`` (size old -> new)."""
    return torch.tensordot(matrix, x, dims=([1], [dim])).movedim(0, dim)


class _Matrices(torch.nn.Module):
    """The learnable width matrices (``matrices``, by name) and their sidecar file; ``sizes`` maps each space
    the expansion acts on to its grown size."""

    matrices: torch.nn.ParameterDict
    sizes: dict[str, int]

    def _param(self, name: str) -> torch.Tensor:
        return self.matrices[name.replace(":", "__")]

    def _cheapest_order(self, y: torch.Tensor, steps: list) -> list:
        """Of two contractions (dim, space, ...), the order with fewer multiply-adds."""
        if len(steps) == 2:
            (old_a, new_a), (old_b, new_b) = [(y.shape[step[0]], self.sizes[step[1]]) for step in steps]
            if old_a * new_b * (old_b + new_a) < old_b * new_a * (old_a + new_b):
                steps.reverse()
        return steps

    def state(self) -> dict[str, torch.Tensor]:
        """The matrices, detached, for the sidecar file."""
        return {name: p.detach().contiguous() for name, p in self.matrices.items()}

    def load(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Load matrices saved by :meth:`state` (a replay); shapes must match this model and sizes."""
        mine = dict(self.matrices.items())
        if set(tensors) != set(mine) or any(tuple(tensors[k].shape) != tuple(mine[k].shape) for k in mine):
            raise ValueError("the saved width matrices do not fit this source model and sizes")
        with torch.no_grad():
            for name, p in mine.items():
                p.copy_(tensors[name])


class WidthExpansion(_Matrices):
    """LiGO width growth: a learnable expansion matrix per space and side, W' = B_out · W · B_inᵀ.

    Spaces are those of :mod:`hfgrow.arch.roles`: the hidden size, each FFN size, query heads and
    key/value heads. Heads are expanded as whole heads (a [new heads, old heads] matrix times
    the identity on head_dim), so rotary embeddings and grouped-query attention stay valid;
    fused q|k|v and gate|up tensors are split, expanded part by part and re-fused. A tensor
    dimension that *writes* a space is multiplied by that space's ``write`` matrix, one that
    *reads* it by its ``read`` matrix. Norm weights are not learned: they are gathered from
    their source units like the direct operator does.

    ``init="direct"`` starts from the function-preserving widening of ``hfgrow grow --op
    direct`` (one-hot rows scaled as HyperCloning/Net2Net), so the model at step 0 computes
    the source's function; ``init="identity"`` (LiGO's form) is the identity on the source units
    and small random rows (std 0.1/sqrt(old): each new unit ~10% of a source unit's scale) for the
    new ones. LiGO's own parameterisation and scale are :class:`LigoWidthExpansion`.

    Example:
        >>> expansion = WidthExpansion(roles, resolve_sizes(roles, hidden_size=128), init="direct")
        >>> expansion.expand(embedding, roles.role("model.embed_tokens.weight")).shape
        torch.Size([512, 128])
    """

    def __init__(self, roles, sizes, init: str = "direct", seed: int = 0):
        super().__init__()
        if init not in WIDTH_INITS:
            raise ValueError(f"unknown width init '{init}'")
        self.init, self.head_dim, self.qkv_layout = init, sizes.head_dim, roles.qkv_layout
        self.heads, self.kv_heads = sizes.heads, sizes.kv_heads
        op = "direct" if init == "direct" else "zero"  # "zero" maps: source units first, the rest new
        # element-level unit maps of the spaces that change (norm gathers, bookkeeping)
        self.maps = {s: m for s, m in space_maps(roles, sizes, op, seed).items() if not m.is_identity()}
        self.sizes = {s: m.src.numel() for s, m in self.maps.items()}
        self.matrices = torch.nn.ParameterDict()
        g = torch.Generator().manual_seed(seed)

        def add(space: str, src: torch.Tensor, read: torch.Tensor, write: torch.Tensor, old: int) -> None:
            for side, scale in (("write", write), ("read", read)):
                matrix = torch.zeros(src.numel(), old)
                known = src >= 0
                matrix[known.nonzero().squeeze(1), src[known]] = scale[known].float()
                new = (~known).nonzero().squeeze(1)
                if new.numel():
                    matrix[new] = torch.randn(new.numel(), old, generator=g) * (0.1 / old ** 0.5)
                self.matrices[f"{space.replace(':', '__')}__{side}"] = torch.nn.Parameter(matrix)

        for space, unit_map in self.maps.items():
            if space == "hidden" or space.startswith("ffn:"):
                add(space, unit_map.src, unit_map.read, unit_map.write, roles.space_size(space))
        if "q" in self.maps or "kv" in self.maps:
            q_map, kv_map = head_maps(sizes, op, seed)
            hd = self.head_dim
            if "q" in self.maps:
                add("q", torch.tensor(q_map), self.maps["q"].read[::hd], self.maps["q"].write[::hd], sizes.heads[0])
            if "kv" in self.maps:
                ones = torch.ones(len(kv_map), dtype=torch.float64)
                add("kv", torch.tensor(kv_map), ones, ones, sizes.kv_heads[0])

    def matrix(self, space: str, side: str) -> torch.Tensor:
        """The ``write`` or ``read`` matrix of a space."""
        return self._param(f"{space}:{side}")

    def _expand_dim(self, x: torch.Tensor, dim: int, space: str, side: str) -> torch.Tensor:
        kind, _, key = space.partition(":")
        if kind == "gate_up":  # [gate | up] rows: both halves live in the FFN space
            return torch.cat([self._expand_dim(half, dim, f"ffn:{key}", side) for half in x.chunk(2, dim)], dim)
        if kind in ("q", "kv"):  # whole heads
            if kind not in self.maps:
                return x  # this head count does not change
            heads = x.unflatten(dim, (-1, self.head_dim))
            return _contract(self.matrix(kind, side), heads, dim).flatten(dim, dim + 1)
        if kind == "qkv":  # fused q|k|v rows, each part expanded on its own
            (nh, nh2), (nkv, nkv2), hd = self.heads, self.kv_heads, self.head_dim
            plain = x.index_select(dim, torch.argsort(qkv_row_order(self.qkv_layout, nh, nkv, hd)).to(x.device))
            q, k, v = plain.split([nh * hd, nkv * hd, nkv * hd], dim)
            grown = torch.cat([self._expand_dim(q, dim, "q", side), self._expand_dim(k, dim, "kv", side),
                               self._expand_dim(v, dim, "kv", side)], dim)
            return grown.index_select(dim, qkv_row_order(self.qkv_layout, nh2, nkv2, hd).to(x.device))
        return _contract(self.matrix(space, side), x, dim)

    def expand(self, x: torch.Tensor, role, factor: float = 1.0, norm: tuple[float, float] | None = None
               ) -> torch.Tensor:
        """One tensor grown in width (float32, differentiable in the matrices).

        ``norm`` = (offset, init) of a norm weight (``w`` or Gemma's ``1 + w``): its new units get ``init``.
        """
        y = x.float()
        if role.is_norm:
            unit_map = self.maps.get(role.dims[0])
            if unit_map is None:
                return y
            if unit_map.src.device != y.device:  # the maps live on the CPU; the weights may not
                unit_map = dataclasses.replace(unit_map, src=unit_map.src.to(y.device))
            return remap_norm(y, unit_map, (unit_map.src.numel(),), "F32", (*norm, 1.0))
        steps = [(dim, space, "write" if io == "out" else "read")
                 for dim, (space, io) in enumerate(zip(role.dims, role.io)) if space in self.maps and io in ("out", "in")]
        for dim, space, side in self._cheapest_order(y, steps):
            y = self._expand_dim(y, dim, space, side)
        return y * factor if factor != 1.0 else y


class LigoWidthExpansion(_Matrices):
    """LiGO's width growth as the reference code runs it (``--style prts``; prts ``prts_lit/scaling/ligo.py``).

    One matrix B per space, used on every side of that space, over its full width: the hidden size
    (``B_embd``), the query, key and value projections' outputs (``BQ``, ``BK``, ``BV``) and the FFN
    (``B_ffn``) (ligo.py lines 28-42). A grown tensor has each dimension contracted with its space's B
    (lines 111-179): q' = BQ·q·B_embdᵀ (k', v' with BK, BV), o' = B_embd·o·BVᵀ (the attention output is
    made of values), up' and gate' = B_ffn·W·B_embdᵀ, down' = B_embd·W·B_ffnᵀ, embedding and LM head
    E·B_embdᵀ, and norm weights B_embd·w, learned like the rest. Every B starts at [I; N(0, 1/new)]
    (``LiGOModel.init``, line 90): the identity on the source units, new rows drawn with std sqrt(1/new)
    (seeded per matrix name). A space that keeps its size keeps a learnable square B, starting at I.

    Where the reference has no rule (it covers multi-head Llama blocks only): a bias is expanded by its
    space's B; with grouped-query attention the attention output has the query heads' width, so the
    output projection reads it through BQ; a ``1 + w`` norm (Gemma) expands its effective weight
    ``1 + w``; fused q|k|v and gate|up tensors are split, expanded part by part and re-fused.

    Example:
        >>> expansion = LigoWidthExpansion(roles, resolve_sizes(roles, hidden_size=128), seed=0)
        >>> expansion.matrix("hidden").shape
        torch.Size([128, 64])
    """

    def __init__(self, roles, sizes, seed: int = 0):
        super().__init__()
        (nh, nh2), (nkv, nkv2), hd = sizes.heads, sizes.kv_heads, sizes.head_dim
        self.heads, self.kv_heads, self.head_dim, self.qkv_layout = sizes.heads, sizes.kv_heads, hd, roles.qkv_layout
        widths = {"hidden": sizes.hidden}
        self.sizes = {"hidden": sizes.hidden[1]}
        if nh:
            widths.update(q=(nh * hd, nh2 * hd), k=(nkv * hd, nkv2 * hd), v=(nkv * hd, nkv2 * hd))
            self.sizes.update(q=nh2 * hd, kv=nkv2 * hd, qkv=(nh2 + 2 * nkv2) * hd)
        for key, (old, new) in sizes.ffn.items():
            widths[f"ffn:{key}"] = (old, new)
            self.sizes.update({f"ffn:{key}": new, f"gate_up:{key}": 2 * new})
        self.o_reads = "v" if nh == nkv and nh2 == nkv2 else "q"
        self.matrices = torch.nn.ParameterDict()
        for name, (old, new) in widths.items():
            matrix = torch.zeros(new, old)
            matrix[:old] = torch.eye(old)
            if new > old:
                matrix[old:] = normal((new - old, old), "F32", math.sqrt(1.0 / new), seed, "ligo-width", name)
            self.matrices[name.replace(":", "__")] = torch.nn.Parameter(matrix)

    def matrix(self, name: str) -> torch.Tensor:
        """B of ``hidden``, ``q``, ``k``, ``v`` or ``ffn:<config key>``."""
        return self._param(name)

    def _expand_dim(self, x: torch.Tensor, dim: int, space: str, kind: str) -> torch.Tensor:
        part, _, key = space.partition(":")
        if part == "gate_up":  # [gate | up] rows: both halves live in the FFN space
            return torch.cat([self._expand_dim(half, dim, f"ffn:{key}", kind) for half in x.chunk(2, dim)], dim)
        if part == "qkv":  # fused q|k|v rows, each part with its own B
            (nh, nh2), (nkv, nkv2), hd = self.heads, self.kv_heads, self.head_dim
            plain = x.index_select(dim, torch.argsort(qkv_row_order(self.qkv_layout, nh, nkv, hd)).to(x.device))
            q, k, v = plain.split([nh * hd, nkv * hd, nkv * hd], dim)
            parts = (("q", q), ("k", k), ("v", v))
            grown = torch.cat([_contract(self.matrix(name), rows, dim) for name, rows in parts], dim)
            return grown.index_select(dim, qkv_row_order(self.qkv_layout, nh2, nkv2, hd).to(x.device))
        if part == "q":
            name = self.o_reads if kind == "o" else "q"
        elif part == "kv":
            name = "v" if kind == "v" else "k"
        else:
            name = space
        return _contract(self.matrix(name), x, dim)

    def expand(self, x: torch.Tensor, role, factor: float = 1.0, norm: tuple[float, float] | None = None
               ) -> torch.Tensor:
        """One tensor grown in width (float32, differentiable in the matrices).

        ``norm`` = (offset, init) of a norm weight: ``w + offset`` is what B expands (the init is not used:
        LiGO's norm weights are learned combinations of the source's).
        """
        y = x.float()
        steps = [(dim, space) for dim, space in enumerate(role.dims) if space in self.sizes]
        if role.is_norm:
            offset = 0.0 if role.is_bias or norm is None else norm[0]
            return self._expand_dim(y + offset, 0, steps[0][1], role.kind) - offset if steps else y
        for dim, space in self._cheapest_order(y, steps):
            y = self._expand_dim(y, dim, space, role.kind)
        return y * factor if factor != 1.0 else y


def learned_width_plan(plan: Plan, roles, sizes: WidthSizes, expansion: WidthExpansion | LigoWidthExpansion,
                       init: str) -> Plan:
    """Grow the width of every tensor of ``plan`` with LiGO's expansion matrices (their current values).

    The matrices go to the ``SIDECAR`` file next to the recipe, so a replay rebuilds the same tensors.
    """
    from hfgrow.arch.roles import check_output_shapes

    widened = widen_config(plan.config, roles, sizes, "learn")

    def grow(tensor: TensorPlan, role) -> TensorPlan:
        if role.is_norm and role.dims[0] not in expansion.sizes:
            return tensor
        if not role.is_norm and not any(space in expansion.sizes for space in role.dims if space) \
                and not (role.kind == "embedding" and widened.embed_factor != 1.0):
            return tensor
        check_widenable(tensor, role, roles)
        factor = widened.embed_factor if role.kind == "embedding" else 1.0
        norm = (roles.norm_offset, 0.0 if role.is_bias else roles.norm_init) if role.is_norm else None
        shape = tuple(expansion.sizes.get(space, size) for space, size in zip(role.dims, tensor.shape))
        dtype = tensor.dtype

        def fn(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return expansion.expand(x, role, factor, norm).to(dtypes.to_torch(dtype))

        spaces = ",".join(s or "-" for s in role.dims)
        return then(tensor, fn, f"width learn ({role.kind} [{spaces}])", shape)

    tensors = widen_tensors(plan.tensors, roles, widened.untie, grow)
    check_output_shapes(widened.config, {t.name: t.shape for t in tensors}, roles)
    record = WidthRecord("learn", sizes.pairs(), sizes.head_dim, False, init=init, matrices=SIDECAR)
    return dataclasses.replace(plan, tensors=tensors, config=widened.config, notes=plan.notes + widened.notes,
                               operation=plan.operation.replace(width=record),
                               sidecars={**plan.sidecars, SIDECAR: expansion.state()})
