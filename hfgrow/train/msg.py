"""MSG (masked structural growth, Yao et al. 2023): new structure ramps in over the first training steps.

A grown folder's recipe (``hfgrow.yaml``, :class:`hfgrow.growth.recipe.Mask`) says which layers and
which width units are new and over how many steps their mask c goes 0 -> 1. :class:`MaskRamp` applies
c to a loaded model with forward hooks and removes them once c reaches 1;
:func:`sublayer_outputs` finds where each block's attention and MLP residual updates come out.

Example:
    >>> ramp = MaskRamp(model, Recipe.read(Path("grown")).operation.mask)
    >>> ramp.set_step(0)  # the grown model now computes its source's function
    0.0
"""

from __future__ import annotations

import os
import sys
from functools import partial

from hfgrow.arch.layout import decoder_blocks
from hfgrow.errors import HfgrowError
from hfgrow.growth.recipe import Mask


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
    for i, starts in found.items():
        tails = []
        for tail in starts or []:
            out = next((o for m, _, o in calls[i] if m is tail), None)
            if out is None:  # not called on the probe
                tails = None
                break
            seen = {tail}
            while True:  # follow the modules that take the output as their input
                nxt = next(((m, o) for m, x, o in calls[i] if x is out and m not in seen), None)
                if nxt is None:
                    break
                tail, out = nxt
                seen.add(tail)
            tails.append(tail)
        found[i] = tails or None
    return found


class MaskRamp:
    """MSG's masks (Yao et al. 2023): new structure is scaled by c, which ramps 0 -> 1 over ``steps`` steps.

    * New layers (``mask.layers``, ``grow --op random`` in depth): each sublayer's residual update is scaled,
      h = x + c·attn(norm x), y = h + c·mlp(norm h) (parallel blocks: y = x + c·attn + c·mlp), by forward
      hooks on the modules :func:`sublayer_outputs` finds. A block where they are not found ramps as a whole,
      y = x + c·(block(x) − x), which is said once on stderr; with ``mask.form == "block"`` every new layer does.
    * New width (``mask.width`` from ``grow --op random --hidden-size ...``): new heads'
      outputs and new FFN units' activations (the input columns of the o and down projections; in fused MoE
      experts, their activation's output) are scaled by c, and so are new hidden units wherever they are
      written: embedding outputs, every sublayer's residual update and the hidden-size norms' outputs. A norm
      over grown units (the hidden units; OLMo 2's q/k norms over all heads) sees, in place of the new units,
      values with the source units' mean and variance (exactly so for two or more new units), blended into
      the real values as c grows: at c = 0 its statistics are the source units' own, as with MSG's masked
      norm statistics. New key/value heads only serve new query heads, so need no mask.

    ``set_step(s)`` sets c = s / mask.steps and removes every hook once c reaches 1, leaving the plain model. At
    c = 0 the model computes what the model without the new structure computes (up to float rounding in the
    norms' statistics when the hidden size grew).

    Example:
        >>> ramp = MaskRamp(model, Mask(layers=(2, 3), steps=500))
        >>> ramp.set_step(250), ramp.set_step(500), ramp.active
        (0.5, 1.0, False)
    """

    def __init__(self, model, mask: Mask):
        import torch

        _, blocks = decoder_blocks(model)
        bad = [i for i in mask.layers if not 0 <= int(i) < len(blocks)]
        if bad:
            raise HfgrowError(f"the recipe masks layer {bad[0]}, but the model has {len(blocks)} layers.")
        self.steps = max(1, int(mask.steps))
        self.c = torch.zeros(())  # a tensor, so torch.compile does not recompile as c changes
        self._c_on: dict = {(self.c.device, self.c.dtype): self.c}  # c per (device, dtype), filled in place
        self.handles: list = []
        self.new = self._new_units(model, mask)
        # (space, size) -> (new units, fill pattern), built here so the hooks only look them up (no
        # data-dependent Python in a compiled graph); _on holds their copies per device, made on first use
        self._patterns = {key: self._pattern(new) for key, new in self.new.items()}
        self._on: dict = {}
        # module -> what scales its output: "layer" (c) and/or spaces whose new units get c
        self._outputs: dict = {}
        whole = self._hook_blocks(model, blocks, mask)
        self._hook_width(model)
        for module, what in self._outputs.items():
            self.handles.append(module.register_forward_hook(partial(self._scale_output, frozenset(what))))
        if whole and mask.form == "sublayer" and int(os.environ.get("RANK", "0")) == 0:
            print(f"warning: no attention/MLP found in layers {whole}; the MSG mask ramps each of them as a whole "
                  "block, y = x + c·(block(x) − x).", file=sys.stderr)

    # -- where the masks go

    @staticmethod
    def _new_units(model, mask: Mask) -> dict:
        """(space, size) -> which units of a vector of that size are new; spaces: q, kv, hidden, ffn."""
        import torch

        from hfgrow.arch.roles import head_geometry

        new: dict[tuple[str, int], torch.Tensor] = {}
        width = mask.width
        if width is None:
            return new
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        q_heads, kv_heads, head_dim = head_geometry(cfg)
        for space, heads, listed in (("q", q_heads, width.new_heads), ("kv", kv_heads, width.new_kv_heads)):
            if listed:  # heads of head_dim units each
                units = torch.arange(heads * head_dim) // head_dim
                new[space, heads * head_dim] = torch.isin(units, torch.tensor(listed))
        sizes = ([("hidden", width.hidden)] if width.hidden else []) + [("ffn", pair) for pair in width.ffn.values()]
        for space, (old, size) in sizes:  # hidden size and FFN sizes: new units come last
            if size != old:
                new[space, size] = torch.arange(size) >= old
        return new

    def _scale_output_of(self, module, *what: str) -> None:
        self._outputs.setdefault(module, set()).update(what)

    def _hook_blocks(self, model, blocks, mask: Mask) -> list[int]:
        """Scale the residual updates of new layers (and every layer's, for new hidden units); return the
        layers ramped as whole blocks."""
        spaces = {space for space, _ in self.new}
        layers = {int(i) for i in mask.layers}
        targets = range(len(blocks)) if "hidden" in spaces else sorted(layers)
        if mask.form == "sublayer":
            found = sublayer_outputs(model, blocks, targets)
        else:  # the recipe asks for y = x + c·(block(x) − x)
            found = {i: None for i in targets}
        whole = []
        for i, tails in found.items():
            what = ({"layer"} if i in layers else set()) | ({"hidden"} & spaces)
            if tails is None:
                whole.append(i)
                self.handles.append(blocks[i].register_forward_hook(partial(self._ramp_block, what), with_kwargs=True))
            for tail in tails or []:
                self._scale_output_of(tail, *what)
        return whole

    def _hook_width(self, model) -> None:
        """Mask new heads, FFN units and hidden units where they are read or written, and the norms over them."""
        from hfgrow.arch.roles import kind_of

        spaces = {space for space, _ in self.new}
        for path, module in model.named_modules():
            kind = kind_of(path) if path else None
            norm_space = {"norm": "hidden", "q_norm": "q", "k_norm": "kv"}.get(kind)
            weight = getattr(module, "weight", None)
            if kind in ("embedding", "positions", "proj_in") and "hidden" in spaces:
                self._scale_output_of(module, "hidden")
            elif norm_space in spaces and (weight is None or (norm_space, getattr(weight, "ds_numel", None)
                                                               or weight.numel()) in self.new):
                # a norm without weights (OLMo) is hooked too: its hooks skip inputs of another size
                self.handles.append(module.register_forward_pre_hook(partial(self._norm_input, norm_space)))
                if norm_space == "hidden":
                    self._scale_output_of(module, "hidden")
            elif (kind == "o" and "q" in spaces) or (kind == "down" and "ffn" in spaces):
                # their input columns are the heads (o) or the FFN units (down)
                space = "q" if kind == "o" else "ffn"
                self.handles.append(module.register_forward_pre_hook(partial(self._mask_input, space)))
            elif "ffn" in spaces and any(kind_of(f"{path}.{n}") == "down" for n, _ in module.named_parameters(recurse=False)):
                for child in module.children():  # fused experts: their activation's output is the FFN units
                    self._scale_output_of(child, "ffn")

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

    def _c(self, x):
        """c on x's device and dtype (one copy each, updated in place by set_step: no host sync per call)."""
        key = (x.device, x.dtype)
        if key not in self._c_on:
            self._c_on[key] = self.c.to(x.device, x.dtype)
        return self._c_on[key]

    def _mask(self, space: str, x):
        """x × (c on the new units of ``space``, 1 elsewhere)."""
        import torch

        units = self._units(space, x)
        return x if units is None else x * torch.where(units[0], self._c(x), 1.0)

    def _scale_output(self, what, module, args, output):
        y = output[0] if isinstance(output, tuple) else output
        for space in what:
            y = y * self._c(y) if space == "layer" else self._mask(space, y)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    def _ramp_block(self, what, module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        y = output[0] if isinstance(output, tuple) else output
        y = x + self._scale_output(what, module, args, y - x)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    def _mask_input(self, space, module, args):
        return (self._mask(space, args[0]), *args[1:])

    def _norm_input(self, space, module, args):
        """The new units replaced by fill + c·(x − fill), fill having the source units' mean and variance."""
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
        blended = torch.where(new, fill + self._c(xf) * (xf - fill), xf)
        return (blended.to(x.dtype), *args[1:])

    # -- the ramp

    @property
    def active(self) -> bool:
        return bool(self.handles)

    def set_step(self, step: int) -> float:
        value = min(1.0, step / self.steps)
        for c in self._c_on.values():
            c.fill_(value)
        if value >= 1.0:
            self.remove()
        return value

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

