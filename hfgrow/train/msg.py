"""MSG (masked structural growth, Yao et al. 2023): new structure ramps in over the first training steps.

This module owns how training applies a grown folder's MSG mask (:class:`hfgrow.growth.recipe.Mask`, written by
``grow --op random``): where the masks go, and how each mask value c moves with the step. How long the ramp
is for a given run is :func:`hfgrow.train.args.fit_ramp`'s rule; this module only counts stages
(:func:`ramp_stages`, :func:`ramp_length`, :func:`ramp_values`). :class:`MaskRamp` applies the masks to a
loaded model with forward hooks and removes them once every c is 1; :func:`sublayer_outputs` finds where each
block's attention and MLP residual updates come out.

t is the optimizer step since growth (0 for the first forward; the loop calls ``set_step(t)`` before each
step, as the reference advances its counter after each ``optimizer.step()``); T is ``mask.steps``. The
recipe's fields, as training reads them:

``layers``, ``form``
    New layers ramp with c = min(t / T, 1): ``sublayer`` scales each attention and MLP residual update,
    ``block`` the whole block, y = c·block(x) + (1 − c)·x (prts ``MsgBlock``).
``stages``
    Width spaces (``ffn``, ``hidden``, ``heads``) ramp stage after stage: a space in stage k has
    c = clamp((t − k·T) / T, 0, 1). A stage whose spaces did not grow is skipped; a grown space no stage
    names ramps in the first one. New layers and width share t.
``units_at``
    ``readers``: new heads and FFN units are scaled where they are read (input columns of the attention
    output and MLP down projections) and new hidden units at every residual update. ``writers`` (prts
    ``MsgLayer``): the output of every projection and embedding but the LM head is scaled by the mask of its
    output space: embeddings, o and down projections by the hidden mask; up/gate by the FFN mask; q rows of new
    query heads and k/v rows of new key/value heads by the heads' c (fused q|k|v rows through their layout).
    Both: embeddings and hidden-size norms' outputs carry the hidden mask; fused MoE experts (no per-expert
    modules) scale their activation's output by the FFN mask.
``norm_stats``
    ``fill``: a norm over grown units sees, in place of the new units, values with the source units' mean
    and variance, blended into the real values as c grows. ``masked`` (prts ``MsgNorm``, MSG ``LayerNormEx``):
    with m the space's per-unit mask (1 on source units, c on new ones), the norm's statistics are those of
    x·m over Σm units, and its output is multiplied by m: for RMSNorm y = w·x·m / sqrt(Σ(x·m)² / Σm + ε)·m. A
    LayerNorm centres x by the mask-weighted mean μ = Σ(x·m) / Σm first: y = (w·u / sqrt(Σu² / Σm + ε) + b)·m
    with u = (x − μ)·m. prts computes norm(x·m)·sqrt(Σm / n), which is the same but for ε (n·ε / Σm there):
    with ε inside, c = 0 gives the source's norms exactly, post-norms of small sublayer outputs included.

Example:
    >>> ramp = MaskRamp(model, Recipe.read(Path("grown")).operation.mask)
    >>> ramp.set_step(0)  # the grown model now computes its source's function
    0.0
"""

from __future__ import annotations

from functools import partial

from hfgrow.arch.layout import decoder_blocks, text_config
from hfgrow.console import log
from hfgrow.errors import HfgrowError
from hfgrow.growth.recipe import Mask

WIDTH_SPACES = ("ffn", "hidden", "heads")  # what the recipe's stages name
FORMS, UNITS_AT, NORM_STATS = ("sublayer", "block"), ("readers", "writers"), ("fill", "masked")
_C_NAMES = ("layer", "ffn", "hidden", "heads")  # the c values a ramp keeps, in this order
# unit space -> the c it is scaled by (qkv: a fused q|k|v output; gate_up: a fused gate|up output)
_C_OF_SPACE = {"layer": "layer", "hidden": "hidden", "ffn": "ffn", "gate_up": "ffn", "q": "heads", "kv": "heads",
               "qkv": "heads"}
# writers: the output space of each projection kind (arch.roles.kind_of)
_WRITES = {"q": "q", "k": "kv", "v": "kv", "qkv": "qkv", "up": "ffn", "gate_up": "gate_up", "o": "hidden",
           "down": "hidden"}


# ---------------------------------------------------------------------------------------------
# The schedule
# ---------------------------------------------------------------------------------------------


def check_mask(mask: Mask) -> None:
    """Refuse a recipe mask whose ramp fields training does not know (one sentence).

    Example:
        >>> check_mask(Mask(layers=(2,), steps=10, form="whole"))
        Traceback (most recent call last):
        hfgrow.errors.HfgrowError: the recipe's MSG mask has form 'whole'; hfgrow knows sublayer, block.
    """
    for field, value, known in (("form", mask.form, FORMS), ("units_at", mask.units_at, UNITS_AT),
                                ("norm_stats", mask.norm_stats, NORM_STATS)):
        if value not in known:
            raise HfgrowError(f"the recipe's MSG mask has {field} '{value}'; hfgrow knows {', '.join(known)}.")
    names = [space for stage in mask.stages for space in stage]
    for space in names:
        if space not in WIDTH_SPACES or names.count(space) > 1:
            raise HfgrowError(f"the recipe's MSG mask stages name '{space}' "
                              f"{'twice' if space in WIDTH_SPACES else 'as a space'}; each stage lists some of "
                              f"{', '.join(WIDTH_SPACES)}, each once.")


def grown_spaces(mask: Mask) -> set[str]:
    """The width spaces (``ffn``, ``hidden``, ``heads``) with new units.

    Example:
        >>> grown_spaces(Mask(steps=10, width=WidthMask(hidden=(32, 64), new_heads=(4, 5))))
        {'heads', 'hidden'}
    """
    width, grown = mask.width, set()
    if width is None:
        return grown
    if width.hidden and width.hidden[0] != width.hidden[1]:
        grown.add("hidden")
    if any(old != new for old, new in width.ffn.values()):
        grown.add("ffn")
    if width.new_heads or width.new_kv_heads:
        grown.add("heads")
    return grown


def ramp_stages(mask: Mask) -> tuple[tuple[str, ...], ...]:
    """The width stages that ramp something, in order: the recipe's stages without the spaces that did not grow.

    Example:
        >>> prts = Mask(steps=10, width=WidthMask(hidden=(32, 64), new_heads=(4, 5)),
        ...             stages=(("ffn",), ("hidden",), ("heads",)))
        >>> ramp_stages(prts)  # the FFN did not grow: its stage is skipped
        (('hidden',), ('heads',))
    """
    check_mask(mask)
    grown = grown_spaces(mask)
    stages = [tuple(space for space in stage if space in grown) for stage in mask.stages] or [()]
    named = {space for stage in mask.stages for space in stage}
    stages[0] += tuple(space for space in WIDTH_SPACES if space in grown - named)
    return tuple(stage for stage in stages if stage)


def ramp_length(mask: Mask) -> int:
    """Steps until every c is 1: ``mask.steps`` for new layers, ``mask.steps`` per width stage.

    Example:
        >>> ramp_length(Mask(layers=(4, 5), steps=100, width=WidthMask(hidden=(32, 64), new_heads=(4, 5)),
        ...                  stages=(("ffn",), ("hidden",), ("heads",))))
        200
    """
    steps = max(1, int(mask.steps))
    return steps * max(1 if mask.layers else 0, len(ramp_stages(mask)))


def ramp_values(mask: Mask, step: int) -> dict[str, float]:
    """c at optimizer step ``step`` of new layers (``layer``) and of each width space.

    Example:
        >>> prts = Mask(layers=(4,), steps=100, width=WidthMask(hidden=(32, 64), ffn={"intermediate_size": (64, 128)},
        ...             new_heads=(4, 5)), stages=(("ffn",), ("hidden",), ("heads",)))
        >>> ramp_values(prts, 150)
        {'layer': 1.0, 'ffn': 1.0, 'hidden': 0.5, 'heads': 0.0}
    """
    steps = max(1, int(mask.steps))
    values = {"layer": min(1.0, step / steps)} | {space: 1.0 for space in WIDTH_SPACES}
    for k, stage in enumerate(ramp_stages(mask)):
        for space in stage:
            values[space] = min(1.0, max(0.0, (step - k * steps) / steps))
    return values


# ---------------------------------------------------------------------------------------------
# Where the residual updates come out
# ---------------------------------------------------------------------------------------------


def _record_call(log: list, module, args, kwargs, output) -> None:
    """Forward hook of the probe pass: (module, its input hidden state, its output)."""
    log.append((module, args[0] if args else kwargs.get("hidden_states"),
                output[0] if isinstance(output, tuple) else output))


def sublayer_outputs(model, blocks, indices) -> dict[int, list | None]:
    """Per block, the modules whose outputs are its attention's and its MLP's residual updates (None: not found).

    The attention and the MLP are the block's children holding its "o" and "down" output projections
    (:func:`hfgrow.arch.roles.kind_of`); a child that adds the residual itself (BLOOM, MPT) is replaced by that
    projection. One no-grad forward pass on two tokens shows whether a module takes such an output as its
    input (a post-norm as in Gemma 2 and OLMo 2, or a dropout); the residual update is then that module's output.

    Example:
        >>> _, blocks = decoder_blocks(model)
        >>> sublayer_outputs(model, blocks, [1])[1] == [blocks[1].self_attn, blocks[1].mlp]
        True
    """
    import torch

    from hfgrow.arch.roles import adds_residual, kind_of

    found, calls, hooks = {}, {}, []
    if any(hasattr(p, "ds_id") for p in model.parameters()):  # DeepSpeed ZeRO-3 partitioned weights: no probe
        return {i: None for i in indices}

    for i in indices:
        block, starts = blocks[i], []
        for kind in ("o", "down"):
            paths = [p for p, _ in [*block.named_modules(), *block.named_parameters()] if p and kind_of(p) == kind]
            child = block.get_submodule(paths[0].split(".")[0]) if paths else None
            if child is not None and adds_residual(child):
                child = dict(block.named_modules()).get(paths[0])
            starts.append(child)
        found[i] = starts if None not in starts and starts[0] is not starts[1] else None
        if found[i]:
            calls[i] = []
            hooks += [m.register_forward_hook(partial(_record_call, calls[i]), with_kwargs=True) for m in block.modules()
                      if m is not block]
    if hooks:
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(input_ids=torch.tensor([[0, 1]], device=next(model.parameters()).device))
        finally:
            for h in hooks:
                h.remove()
            model.train(training)
    return {i: _follow_outputs(starts, calls.get(i, [])) for i, starts in found.items()}


def _follow_outputs(starts: list | None, calls: list) -> list | None:
    """For each module of ``starts``, the last module of the chain that takes its output as input (a post-norm, a
    dropout) on the probe's ``calls``; None when one was not called on the probe."""
    tails = []
    for tail in starts or []:
        out = next((o for m, _, o in calls if m is tail), None)
        if out is None:  # not called on the probe
            return None
        seen = {tail}
        while True:  # follow the modules that take the output as their input
            nxt = next(((m, o) for m, x, o in calls if x is out and m not in seen), None)
            if nxt is None:
                break
            tail, out = nxt
            seen.add(tail)
        tails.append(tail)
    return tails or None


def _subtracts_mean(module) -> bool:
    """Whether a norm module is a LayerNorm (centres its input) rather than an RMSNorm."""
    import torch

    name = type(module).__name__
    return isinstance(module, torch.nn.LayerNorm) or ("LayerNorm" in name and "RMS" not in name)


# ---------------------------------------------------------------------------------------------
# The ramp
# ---------------------------------------------------------------------------------------------


class MaskRamp:
    """MSG's masks on a loaded model: new structure is scaled by c as the recipe's ``mask`` says (module docstring).

    ``set_step(t)`` sets every c for optimizer step t and removes every hook once the ramp is over
    (:func:`ramp_length`), leaving the plain model; it returns the ramp's progress, min(t / length, 1). At
    t = 0 the model computes what the model without the new structure computes (up to float rounding in the
    norms' statistics when the hidden size grew). ``steps`` is the step at which the ramp ends.

    New layers whose attention and MLP :func:`sublayer_outputs` does not find ramp as a whole block, which is
    said once on stderr (with ``form: sublayer``).

    Example:
        >>> ramp = MaskRamp(model, Mask(layers=(2, 3), steps=500))
        >>> ramp.set_step(250), ramp.set_step(500), ramp.active
        (0.5, 1.0, False)
    """

    def __init__(self, model, mask: Mask):
        import torch

        check_mask(mask)
        _, blocks = decoder_blocks(model)
        bad = [i for i in mask.layers if not 0 <= int(i) < len(blocks)]
        if bad:
            raise HfgrowError(f"the recipe masks layer {bad[0]}, but the model has {len(blocks)} layers.")
        self.mask = mask
        self.model = model
        self.steps = max(1, ramp_length(mask))
        # c per _C_NAMES, a tensor so torch.compile does not recompile as c changes; one copy per (device, dtype),
        # filled in place by set_step (no host sync per call), which makes the copies for the model's device first
        self.c = torch.zeros(len(_C_NAMES))
        self._c_on: dict = {(self.c.device, self.c.dtype): self.c}
        self.handles: list = []
        self.new = self._new_units(model, mask)
        # (space, size) -> (new units, fill pattern), built here so the hooks only look them up (no
        # data-dependent Python in a compiled graph); _on holds their copies per device (made by set_step)
        self._patterns = {key: self._pattern(new) for key, new in self.new.items()}
        self._on: dict = {}
        # module -> what scales its output: "layer" (c) and/or spaces whose new units get their c
        self._outputs: dict = {}
        whole = self._hook_blocks(model, blocks, mask)
        self._hook_width(model, mask)
        for module, what in self._outputs.items():
            self.handles.append(module.register_forward_hook(partial(self._scale_output, tuple(sorted(what)))))
        if whole and mask.form == "sublayer":
            log.warning(f"no attention/MLP found in layers {whole}; the MSG mask ramps each of them as a whole "
                        "block, y = x + c·(block(x) − x).")

    # -- where the masks go

    @staticmethod
    def _new_units(model, mask: Mask) -> dict:
        """(space, size) -> which units of a vector of that size are new; spaces: q, kv, qkv, hidden, ffn, gate_up."""
        import torch

        from hfgrow.arch.roles import head_geometry, qkv_layout, qkv_row_order

        new: dict[tuple[str, int], torch.Tensor] = {}
        width = mask.width
        if width is None:
            return new
        cfg = text_config(model.config)
        q_heads, kv_heads, head_dim = head_geometry(cfg)
        heads = {}
        for space, count, listed in (("q", q_heads, width.new_heads), ("kv", kv_heads, width.new_kv_heads)):
            units = torch.arange(count * head_dim) // head_dim
            heads[space] = torch.isin(units, torch.tensor(listed, dtype=torch.long))
            if listed:  # heads of head_dim units each
                new[space, count * head_dim] = heads[space]
        if width.new_heads or width.new_kv_heads:  # a fused q|k|v output, through its row layout
            plain = torch.cat([heads["q"], heads["kv"], heads["kv"]])
            new["qkv", len(plain)] = plain[qkv_row_order(qkv_layout(cfg.to_dict()), q_heads, kv_heads, head_dim)]
        sizes = ([("hidden", width.hidden)] if width.hidden else []) + [("ffn", pair) for pair in width.ffn.values()]
        for space, (old, size) in sizes:  # hidden size and FFN sizes: new units come last
            if size != old:
                new[space, size] = torch.arange(size) >= old
                if space == "ffn":  # a fused gate|up output: the FFN units twice
                    new["gate_up", 2 * size] = torch.cat([new[space, size], new[space, size]])
        return new

    def _spaces(self) -> set[str]:
        return {space for space, _ in self.new}

    def _scale_output_of(self, module, *what: str) -> None:
        self._outputs.setdefault(module, set()).update(what)

    def _hook_blocks(self, model, blocks, mask: Mask) -> list[int]:
        """Scale the residual updates of new layers (and, with ``readers``, every layer's new hidden units);
        return the layers ramped as whole blocks."""
        layers = {int(i) for i in mask.layers}
        hidden = "hidden" in self._spaces() and mask.units_at == "readers"  # writers mask o/down outputs instead
        targets = range(len(blocks)) if hidden else sorted(layers)
        if mask.form == "sublayer":
            found = sublayer_outputs(model, blocks, targets)
        else:  # the recipe asks for y = x + c·(block(x) − x)
            found = {i: None for i in targets}
        whole = []
        for i, tails in found.items():
            what = ({"layer"} if i in layers else set()) | ({"hidden"} if hidden else set())
            if tails is None:
                whole.append(i)
                self.handles.append(blocks[i].register_forward_hook(partial(self._ramp_block, tuple(sorted(what))),
                                                                    with_kwargs=True))
            for tail in tails or []:
                self._scale_output_of(tail, *what)
        return whole

    def _hook_width(self, model, mask: Mask) -> None:
        """Mask new heads, FFN units and hidden units where the recipe says, and the norms over them."""
        from hfgrow.arch.roles import kind_of

        spaces = self._spaces()
        writers = mask.units_at == "writers"
        for path, module in model.named_modules():
            kind = kind_of(path) if path else None
            norm_space = {"norm": "hidden", "q_norm": "q", "k_norm": "kv"}.get(kind)
            weight = getattr(module, "weight", None)
            fused_experts = any(kind_of(f"{path}.{n}") == "down" for n, _ in module.named_parameters(recurse=False))
            if kind in ("embedding", "positions", "proj_in"):
                if "hidden" in spaces:
                    self._scale_output_of(module, "hidden")
            elif norm_space is not None:
                if norm_space in spaces and (weight is None or (norm_space, getattr(weight, "ds_numel", None)
                                                                or weight.numel()) in self.new):
                    # a norm without weights (OLMo) is hooked too: its hooks skip inputs of another size
                    self._hook_norm(module, norm_space, mask.norm_stats)
            elif fused_experts:
                # fused MoE experts: their activation's output is the FFN units, their output the hidden units
                if "ffn" in spaces:
                    for child in module.children():
                        self._scale_output_of(child, "ffn")
                if writers and "hidden" in spaces:
                    self._scale_output_of(module, "hidden")
            elif writers and _WRITES.get(kind) in spaces:
                self._scale_output_of(module, _WRITES[kind])
            elif not writers and ((kind == "o" and "q" in spaces) or (kind == "down" and "ffn" in spaces)):
                # their input columns are the heads (o) or the FFN units (down)
                space = "q" if kind == "o" else "ffn"
                self.handles.append(module.register_forward_pre_hook(partial(self._mask_input, space)))

    def _hook_norm(self, module, space: str, stats: str) -> None:
        """A norm over grown units: ``fill`` or ``masked`` statistics, then (hidden, or masked) its output masked."""
        if stats == "fill":
            self.handles.append(module.register_forward_pre_hook(partial(self._norm_input, space)))
            if space == "hidden":
                self._scale_output_of(module, "hidden")
            return
        centre = _subtracts_mean(module)
        self.handles.append(module.register_forward_pre_hook(partial(self._masked_norm_input, space, centre)))
        self.handles.append(module.register_forward_hook(partial(self._masked_norm_output, space, centre)))
        self._scale_output_of(module, space)  # registered after: runs after the statistics' rescaling

    # -- hooks

    @staticmethod
    def _pattern(new):
        """(new units, fill pattern): the pattern has mean 0 and mean square 1 over the new units."""
        import torch

        k = int(new.sum())
        pattern = torch.zeros(len(new))
        if k > 1:
            ramp = torch.arange(k) - (k - 1) / 2
            pattern[new] = ramp / ramp.square().mean().sqrt()
        return new, pattern

    def _units(self, space: str, x):
        """(new units, fill pattern) for x's last dimension, on x's device; None when nothing there is new."""
        key = (space, x.shape[-1], x.device)
        if key not in self._on:
            units = self._patterns.get(key[:2])
            self._on[key] = None if units is None else (units[0].to(x.device), units[1].to(x.device))
        return self._on[key]

    def _c(self, x, name: str):
        """c of ``name`` (a _C_NAMES entry) on x's device and dtype."""
        key = (x.device, x.dtype)
        if key not in self._c_on:
            self._c_on[key] = self.c.to(x.device, x.dtype)
        return self._c_on[key][_C_NAMES.index(name)]

    def _mask_of(self, space: str, x):
        """The per-unit mask m of ``space`` for x's last dimension (1 on old units, c on new); None: nothing new."""
        import torch

        units = self._units(space, x)
        return None if units is None else torch.where(units[0], self._c(x, _C_OF_SPACE[space]), 1.0)

    def _mask(self, space: str, x):
        """x × m (x itself when nothing in its last dimension is new)."""
        m = self._mask_of(space, x)
        return x if m is None else x * m

    def _scale_output(self, what, module, args, output):
        y = output[0] if isinstance(output, tuple) else output
        for space in what:
            y = y * self._c(y, "layer") if space == "layer" else self._mask(space, y)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    def _ramp_block(self, what, module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        y = output[0] if isinstance(output, tuple) else output
        y = x + self._scale_output(what, module, args, y - x)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    def _mask_input(self, space, module, args):
        return (self._mask(space, args[0]), *args[1:])

    def _norm_input(self, space, module, args):
        """``fill``: the new units replaced by fill + c·(x − fill), fill having the source units' mean and variance."""
        import torch

        x, units = args[0], self._units(space, args[0])
        if units is None:
            return None
        new, pattern = units
        old = (~new).to(torch.float32)
        xf = x.float()
        mean = (xf * old).sum(-1, keepdim=True) / old.sum()
        var = ((xf - mean).square() * old).sum(-1, keepdim=True) / old.sum()
        fill = mean + var.clamp_min(torch.finfo(torch.float32).tiny).sqrt() * pattern
        blended = torch.where(new, fill + self._c(xf, _C_OF_SPACE[space]) * (xf - fill), xf)
        return (blended.to(x.dtype), *args[1:])

    def _masked_norm_input(self, space, centre, module, args):
        """``masked``: the norm sees u·k, u = x·m (a LayerNorm: (x − Σ(x·m)/Σm)·m, whose plain mean is 0) and
        k = sqrt(n / Σm), so that its plain mean square over n units is u's over Σm units."""
        x = args[0]
        m = self._mask_of(space, x)
        if m is None:
            return None
        u = x * m
        if centre:
            u = (x - u.sum(-1, keepdim=True) / m.sum()) * m
        return (u * (m.numel() / m.sum()).sqrt(), *args[1:])

    def _masked_norm_output(self, space, centre, module, args, output):
        """``masked``: the normalised part divided by k again (a LayerNorm's bias stays as it is)."""
        m = self._mask_of(space, output)
        if m is None:
            return None
        scale = (m.sum() / m.numel()).sqrt()
        bias = getattr(module, "bias", None) if centre else None
        if bias is not None and tuple(bias.shape) == tuple(output.shape[-1:]):
            return bias + (output - bias) * scale
        return output * scale

    # -- the ramp

    @property
    def active(self) -> bool:
        return bool(self.handles)

    def values(self) -> dict[str, float]:
        """The c values now in force, by name (``layer``, ``ffn``, ``hidden``, ``heads``)."""
        return dict(zip(_C_NAMES, self.c.tolist()))

    def set_step(self, step: int) -> float:
        """Set every c for optimizer step ``step``; return the ramp's progress (1.0 once it is over)."""
        import torch

        values = ramp_values(self.mask, step)
        now = torch.tensor([values[name] for name in _C_NAMES])
        self._prepare()
        for c in self._c_on.values():
            c.copy_(now)
        if step >= self.steps:
            self.remove()
        return min(1.0, step / self.steps)

    def _prepare(self) -> None:
        """Make the copies of c and of the unit masks the hooks will use on the model's device before its forward
        (a compiled forward that made them would see them change and recompile once)."""
        import torch

        device = next(self.model.parameters()).device
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            self._c(torch.empty(0, device=device, dtype=dtype), "layer")
        for space, size in self._patterns:
            self._units(space, torch.empty(size, device=device))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

