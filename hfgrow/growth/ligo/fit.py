"""The learning phase of G-learn (LiGO): the grown model as a function of the growth operator, and its fit.

Only the growth parameters are trained; the source weights stay frozen:

* depth: every grown block's weight of each kind is ``W'_l = Σ_j D[l, j]·W_j`` over the source blocks,
  one D per weight kind, starting at the stacking map (step 0 = Gstack);
* width: expansion matrices per space (:class:`hfgrow.growth.ops.learn.WidthExpansion`); a grown weight
  is ``B_out·W·B_inᵀ``, starting at the function-preserving widening (or LiGO's identity-plus-noise).

:class:`GrownModel` runs the grown model's skeleton (no weights of its own) with every decoder block
wrapped so that it builds its weights when it runs: the source layers of each kind combined with D,
then widened with B. That arithmetic is the same with or without a
:class:`~hfgrow.growth.ligo.placement.Placement`, so where the source lives never changes the result.
With a placement the blocks are also recomputed in the backward pass (activation checkpointing), so at
most one grown block's weights exist at a time; without one, autograd keeps every grown weight until the
backward pass, as a plain training step of the grown model would.

Memory, with S the source parameter count, g = N/L the depth factor, w the width factor:
  without placement  4·S (frozen source, float32) + about 3·4·S·w²·g (every grown weight and what
                     autograd keeps of it) + the grown model's activations + 16 bytes per entry of B;
  with placement     4·S spread over the map's devices and disk; on the compute device one grown
                     block (≈ 3·4·S·w²/L) + one checkpointed hidden state per grown block
                     (4·batch·seq·H·w·N) + one block's activations + 16 bytes per entry of B.
                     Disk-offloaded source blocks are read twice per grown block per step.

:func:`fit` trains D and B with AdamW for a few steps and keeps the operator with the lowest held-out
loss among the ones it evaluated, step 0 included, so LiGO never writes a model worse than its start.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from hfgrow.arch.layout import (Layout, context_length, decoder_blocks, hf_config_from_dict, quiet_transformers,
                                 text_config)
from hfgrow.arch.roles import embed_scale_for, kind_of
from hfgrow.console import log, progress as progress_bar
from hfgrow.errors import HfgrowError
from hfgrow.growth.ligo.placement import Placement, SourceWeights, source_devices
from hfgrow.growth.ops.learn import Coefficients, WidthExpansion, initial_coefficients, kind_members
from hfgrow.io.checkpoint import Checkpoint


#: Default ``--learn-lr`` and the relative step of the width matrices. Every growth parameter takes the LR
#: divided by its fan-in: a row of D (one grown layer's weight of one kind) mixes L source layers, so each
#: entry of D takes ``lr / L``; a width matrix B ``[new, old]`` takes ``WIDTH_LR_SCALE·lr / old``. Chosen by
#: ``bench/bench_ligo_lr.py`` (on sources of 2 and 24 layers for D); README, "LiGO learning rate", has the table.
DEFAULT_LR = 3e-2
WIDTH_LR_SCALE = 1.0


@dataclass(frozen=True)
class FitSettings:
    """How the growth operator is fitted: AdamW steps, LR, batches of ``seq_len`` tokens, held-out size.

    Adam moves every entry of a parameter by about the LR per step, whatever its gradient's size, so a
    parameter whose entries are summed must take smaller steps the more entries each output sums (the
    muP rule for Adam). D: a grown layer's weight is ``Σ_j D[l, j]·W_j`` over the L source layers that
    have that kind, so D's entries take ``lr / L`` (``depth_fan_in``): with one LR for all (hfgrow <= 0.2),
    a 30-layer source moves each grown weight by up to 30·lr per step, and the default chosen on 2-layer
    sources made SmolLM2 and Gemma 3 worse from the first step. B (``[new, old]``): each entry takes
    ``lr · width_lr_scale / old`` (``fan_in_scaling``). ``False`` for either gives that parameter ``lr``
    itself (the old rules, kept for the benchmark that compares them).

    Example:
        >>> FitSettings(steps=100).lr == DEFAULT_LR
        True
    """

    steps: int = 100
    lr: float = DEFAULT_LR
    seq_len: int = 256
    batch_size: int = 4
    seed: int = 0
    eval_sequences: int = 64
    evals: int = 4  # held-out evaluations during the fit (besides step 0): the best operator is kept
    width_lr_scale: float = WIDTH_LR_SCALE
    fan_in_scaling: bool = True
    depth_fan_in: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise HfgrowError(f"--learn-steps must be 0 or more, got {self.steps}.")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise HfgrowError(f"--learn-lr must be a positive number, got {self.lr}.")
        if not math.isfinite(self.width_lr_scale) or self.width_lr_scale <= 0:
            raise HfgrowError(f"the width LR scale must be a positive number, got {self.width_lr_scale}.")
        for flag, value in (("--seq-len", self.seq_len), ("--batch-size", self.batch_size)):
            if value < 1:
                raise HfgrowError(f"{flag} must be at least 1, got {value}.")


@dataclass
class LearnReport:
    """What the fit did: the operator kept, the losses seen, and why that operator was kept."""

    coefficients: Coefficients
    expansion: WidthExpansion | None = None
    losses: list[float] = field(default_factory=list)  # training loss per step
    step_seconds: list[float] = field(default_factory=list)  # wall time per training step
    evals: dict[int, float] = field(default_factory=dict)  # step -> held-out loss of the operator at that step
    kept_step: int = 0  # the step whose operator was kept (0: the initial one)

    @property
    def eval_before(self) -> float:
        return self.evals.get(0, math.nan)

    @property
    def eval_after(self) -> float:
        """Held-out loss of the operator that is written out."""
        return self.evals.get(self.kept_step, math.nan)

    def summary(self, data: str) -> str:
        steps = max(self.evals) if self.evals else 0
        text = (f"LiGO: {len(self.losses)} steps on {data}; held-out loss {self.eval_before:.4f} at step 0 -> "
                f"{self.eval_after:.4f} kept (step {self.kept_step})")
        if self.kept_step != steps and self.evals:
            text += (f"; the operator of step {self.kept_step} is kept because it beat every later one on held-out "
                     f"text (step {steps}: {self.evals[steps]:.4f}): lower --learn-lr or raise --learn-steps")
        return text


# ---------------------------------------------------------------- data


def read_sequences(folder: Path, data: list[str], seq_len: int, vocab_size: int | None = None) -> torch.Tensor:
    """The text of ``data`` tokenized with the tokenizer in ``folder``, cut into ``seq_len`` sequences."""
    from hfgrow.data.tokenization import token_stream
    from hfgrow.data.text import read_documents
    from hfgrow.io.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(folder, what=f"{folder} (--op learn reads --data with it)")
    documents = [doc for path in data for doc in read_documents(path)]
    ids = token_stream(tokenizer, documents)
    if vocab_size is not None and ids and max(ids) >= vocab_size:
        raise HfgrowError(f"the tokenizer in {folder} gives token id {max(ids)}, but the model has only {vocab_size} "
                          "embeddings; the tokenizer does not belong to this model.")
    count = len(ids) // seq_len
    if count < 2:
        raise HfgrowError(
            f"--data has {len(ids)} tokens, fewer than two sequences of --seq-len {seq_len}; give more text."
        )
    return torch.tensor(ids[: count * seq_len]).view(count, seq_len)


def split_sequences(sequences: torch.Tensor, seed: int, eval_sequences: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out, training) sequences: a seeded tenth of them held out, at most ``eval_sequences``."""
    order = list(range(len(sequences)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, len(order) // 10), eval_sequences)
    return sequences[order[:n_eval]], sequences[order[n_eval:]]


# ---------------------------------------------------------------- the parametrised grown model


class _GrownBlock(torch.nn.Module):
    """A grown decoder block whose weights are built from the growth parameters when it runs.

    With ``checkpointing`` the block is re-run in the backward pass, so its weights are not kept between
    the forward and backward passes. Attributes the model reads from its blocks (``attention_type``, ...)
    are forwarded to the wrapped block.
    """

    def __init__(self, block: torch.nn.Module, weights: Callable[[], dict[str, torch.Tensor]], checkpointing: bool):
        super().__init__()
        self.block = block
        self._weights = weights
        self._checkpointing = checkpointing

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["block"], name)

    def _run(self, *args, **kwargs):
        return torch.func.functional_call(self.block, self._weights(), args, kwargs)

    def forward(self, *args, **kwargs):
        if self._checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(self._run, *args, use_reentrant=False, **kwargs)
        return self._run(*args, **kwargs)


def _renamed_global(name: str, layout: Layout) -> str:
    """The checkpoint tensor for an in-memory global that transformers renames on load (GPT-NeoX keeps
    ``embed_out`` on disk, ``lm_head`` in memory): the one global of the same kind by the name rules."""
    module, _, param = name.rpartition(".")
    kind = kind_of(module)
    found = [g for g in layout.globals if kind and g.rpartition(".")[2] == param
             and kind_of(g.rpartition(".")[0]) == kind]
    if len(found) != 1:
        raise HfgrowError(f"the grown model's {name} has no tensor in the source checkpoint; --op learn cannot "
                          "build it.")
    return found[0]


class GrownModel:
    """The grown model as a function of the growth operator (D and B) and the frozen source weights.

    Example:
        >>> model = GrownModel.build(checkpoint, layout, grown_config, [0, 1, 0, 1])
        >>> model.loss(batch).backward()          # gradients reach D (and B) only
    """

    def __init__(self, skeleton, layout: Layout, layer_map: list[int], weights: SourceWeights,
                 coefficients: dict[str, torch.nn.Parameter], expansion: WidthExpansion | None, roles,
                 global_sources: dict[str, str], embed_factor: float, checkpointing: bool, compute: torch.device):
        self.skeleton, self.layout, self.layer_map, self.weights = skeleton, layout, layer_map, weights
        self.coefficients, self.expansion, self.roles = coefficients, expansion, roles
        self.global_sources, self.embed_factor = global_sources, embed_factor
        self.checkpointing, self.compute = checkpointing, compute
        self.members = kind_members(layout)
        self._cache: dict[Any, dict[str, torch.Tensor]] | None = None  # weights, while D and B are fixed
        _, blocks = decoder_blocks(skeleton, len(layer_map), layout.prefix.rstrip(".").split(".")[-1])
        self.block_params = [[rest for rest, _ in block.named_parameters()] for block in blocks]
        for position in range(len(blocks)):
            blocks[position] = _GrownBlock(blocks[position], partial(self._block_weights, position), checkpointing)

    @classmethod
    def build(cls, checkpoint: Checkpoint, layout: Layout, grown_config: dict, layer_map: list[int], *, roles=None,
              expansion: WidthExpansion | None = None, learn_depth: bool = True, placement: Placement | None = None,
              progress: bool = False) -> GrownModel:
        """The grown skeleton on the meta device, the frozen source placed, D at the stacking map."""
        from accelerate import init_empty_weights
        from transformers import AutoModelForCausalLM

        compute = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        with quiet_transformers(), init_empty_weights():
            skeleton = AutoModelForCausalLM.from_config(hf_config_from_dict(grown_config)).eval()
        for module in skeleton.modules():  # buffers (rotary tables, masks) are real; parameters stay on meta
            for key, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[key] = buffer.to(compute)
        blocks_name, blocks = decoder_blocks(skeleton, len(layer_map), layout.prefix.rstrip(".").split(".")[-1])
        members = kind_members(layout)
        block_names = {rest for block in blocks for rest, _ in block.named_parameters()}
        unknown = sorted(rest for rest in block_names if rest not in members)
        if unknown:
            raise HfgrowError(f"{layout.model_type} stores block weights differently in memory ('{unknown[0]}') than "
                              "on disk; --op learn supports models whose in-memory and checkpoint names agree.")
        global_sources = {}
        for name, _ in skeleton.named_parameters():
            if not name.startswith(blocks_name + "."):
                source = name if name in checkpoint.tensors else layout.tied.get(name)
                global_sources[name] = source if source in checkpoint.tensors else _renamed_global(name, layout)
        names = sorted(set(global_sources.values()) | {layout.layer_tensor(j, rest) for rest in block_names
                                                       for j in members[rest]})
        devices = source_devices(names, layout.skeleton, placement) if placement is not None else None
        weights = SourceWeights(checkpoint.load, names, compute, devices,
                                placement.offload_folder if placement else None, progress=progress)
        coefficients = {rest: torch.nn.Parameter(torch.tensor(rows, device=compute), requires_grad=learn_depth)
                        for rest, rows in initial_coefficients(layout, layer_map).items() if rest in block_names}
        embed_factor = 1.0
        if expansion is not None:
            expansion.to(compute)
            if roles.embed_scale != 1.0:  # Gemma: the model scales its embedding by sqrt(new hidden)
                embed_factor = roles.embed_scale / embed_scale_for(grown_config)
        return cls(skeleton, layout, layer_map, weights, coefficients, expansion, roles, global_sources,
                   embed_factor, placement is not None, compute)

    # -- weights

    def _grow(self, x: torch.Tensor, role) -> torch.Tensor:
        if self.expansion is None:
            return x
        norm = (self.roles.norm_offset, 0.0 if role.is_bias else self.roles.norm_init) if role.is_norm else None
        return self.expansion.expand(x, role, self.embed_factor if role.kind == "embedding" else 1.0, norm)

    def _cached(self, key: Any, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if self._cache is None:
            return build()
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def _block_weights(self, position: int) -> dict[str, torch.Tensor]:
        def build() -> dict[str, torch.Tensor]:
            layout, source = self.layout, self.layer_map[position]
            result = {}
            for rest in self.block_params[position]:
                names = tuple(layout.layer_tensor(j, rest) for j in self.members[rest])
                combined = torch.einsum("j,j...->...", self.coefficients[rest][position], self.weights.stack(names))
                if self.expansion is not None:
                    combined = self._grow(combined, self.roles.role(layout.layer_tensor(source, rest)))
                result[rest] = combined
            return result

        # with a placement only one block's weights may exist at a time, in evaluation too
        return build() if self.checkpointing else self._cached(position, build)

    def _global_weights(self) -> dict[str, torch.Tensor]:
        def role(name: str, source: str):  # an untied LM head grown from a tied embedding reads the hidden units
            return self.roles.lm_head_role() if name != source else self.roles.role(source)

        return self._cached("globals", lambda: {
            name: self._grow(self.weights.get(src), role(name, src) if self.roles is not None else None)
            for name, src in self.global_sources.items()})

    # -- running it

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.compute)
        return torch.func.functional_call(self.skeleton, self._global_weights(), (batch,),
                                          {"labels": batch, "use_cache": False}).loss

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Build the grown weights once for every batch inside the block (D and B must not change)."""
        self._cache = {}
        try:
            yield
        finally:
            self._cache = None

    def evaluate(self, sequences: torch.Tensor, batch_size: int, progress: bool = False) -> float:
        """Mean held-out loss (per sequence, equal lengths) of the current operator; ``progress`` shows a bar over
        the batches (the first batch also builds every grown block's weights)."""
        if not len(sequences):
            return math.nan
        starts = range(0, len(sequences), batch_size)
        if progress:
            starts = progress_bar(starts, desc="held-out loss", unit="batch")
        with torch.no_grad(), self.frozen():
            total = sum(self.loss(sequences[i: i + batch_size]).item() * len(sequences[i: i + batch_size])
                        for i in starts)
        return total / len(sequences)

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the growth parameters (to restore the best operator seen)."""
        state = {f"D.{rest}": p.detach().clone() for rest, p in self.coefficients.items()}
        if self.expansion is not None:
            state.update({f"B.{name}": p.detach().clone() for name, p in self.expansion.matrices.items()})
        return state

    def restore(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for rest, p in self.coefficients.items():
                p.copy_(state[f"D.{rest}"])
            if self.expansion is not None:
                for name, p in self.expansion.matrices.items():
                    p.copy_(state[f"B.{name}"])

    def close(self) -> None:
        self.weights.close()
        if self.expansion is not None:
            self.expansion.to("cpu")


# ---------------------------------------------------------------- the fit


class Progress:
    """What the learning phase prints: one ``LiGO: ...`` line on stderr as each phase starts and ends, so a
    long run (a big source being placed, a long step-0 evaluation) is never silent; nothing when disabled.

    Example:
        >>> say = Progress(True)
        >>> say("tokenizing --data ...")
        LiGO: tokenizing --data ...
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        if self.enabled:
            log.info(f"LiGO: {text}")  # written above a progress bar, if one is showing

    def lap(self) -> float:
        """Seconds since the last lap (or since this object was made)."""
        now = time.perf_counter()
        elapsed, self.started = now - self.started, now
        return elapsed


def param_groups(model: GrownModel, settings: FitSettings) -> list[dict[str, Any]]:
    """AdamW parameter groups: D's kinds at ``lr / L`` (L source layers mixed per row); each width matrix at
    ``lr·width_lr_scale / fan-in``.

    Example:
        >>> [round(g["lr"], 6) for g in param_groups(model, FitSettings(lr=1e-2))]   # D (24 layers), B [128, 64]
        [0.000417, 0.000156, ...]
    """
    groups: list[dict[str, Any]] = []
    depth: dict[int, list[torch.nn.Parameter]] = {}
    for p in model.coefficients.values():
        if p.requires_grad:
            depth.setdefault(p.shape[1] if settings.depth_fan_in else 1, []).append(p)
    for fan_in, params in sorted(depth.items()):
        groups.append({"params": params, "lr": settings.lr / fan_in, "name": "D", "fan_in": fan_in})
    if model.expansion is not None:
        for name, matrix in model.expansion.matrices.items():
            fan_in = matrix.shape[1] if settings.fan_in_scaling else 1
            scale = settings.width_lr_scale if settings.fan_in_scaling else 1.0
            groups.append({"params": [matrix], "lr": settings.lr * scale / fan_in, "name": f"B {name}"})
    return groups


def _describe_lrs(groups: list[dict[str, Any]]) -> str:
    width = [g["lr"] for g in groups if g["name"] != "D"]
    parts = [f"D at lr {g['lr']:.3g}" + (f" (lr/{g['fan_in']} source layers)" if g["fan_in"] > 1 else "")
             for g in groups if g["name"] == "D"]
    if width:
        low, high = min(width), max(width)
        parts.append(f"{len(width)} width matrices at lr {low:.3g}" + (f"-{high:.3g}" if high != low else "")
                     + " (lr/fan-in)")
    return ", ".join(parts)


def fit(model: GrownModel, train_set: torch.Tensor, eval_set: torch.Tensor, settings: FitSettings,
        progress: bool = True) -> LearnReport:
    """Train the growth parameters with AdamW; keep the operator with the lowest held-out loss seen.

    Held-out loss is measured at step 0 and ``settings.evals`` times during the fit; when learning made
    things worse than an earlier evaluation (e.g. an LR too high for the model), the earlier operator wins.
    """
    say = Progress(progress)
    report = LearnReport(coefficients={}, expansion=model.expansion)
    if len(eval_set):
        say(f"held-out loss at step 0 on {len(eval_set)} sequences ...")
        say.lap()
    report.evals[0] = best = model.evaluate(eval_set, settings.batch_size, progress)
    if len(eval_set):
        say(f"held-out loss at step 0: {best:.4f} ({say.lap():.1f} s)")
    kept = model.snapshot()
    groups = param_groups(model, settings)
    if settings.steps and groups:
        rng = random.Random(settings.seed)
        checkpoints = {round(settings.steps * k / settings.evals) for k in range(1, settings.evals + 1)} \
            if len(eval_set) else set()
        optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=0.0)
        say(f"learning for {settings.steps} steps of {settings.batch_size} x {train_set.shape[1]} tokens: "
            f"{_describe_lrs(groups)}; held-out loss at steps {', '.join(map(str, sorted(checkpoints))) or 'none'}")
        bar = None
        if progress:
            bar = progress_bar(total=settings.steps, desc="learning growth (LiGO)")
        for step in range(1, settings.steps + 1):
            started = time.perf_counter()
            picks = [rng.randrange(len(train_set)) for _ in range(settings.batch_size)]
            loss = model.loss(train_set[picks])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            report.losses.append(loss.item())
            report.step_seconds.append(time.perf_counter() - started)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if step in checkpoints:
                say.lap()
                report.evals[step] = value = model.evaluate(eval_set, settings.batch_size, progress)
                verdict = "best so far" if value < best else f"worse than step {report.kept_step} ({best:.4f})"
                if value < best:  # NaN never wins
                    best, report.kept_step, kept = value, step, model.snapshot()
                recent = report.step_seconds[-min(10, len(report.step_seconds)):]
                say(f"step {step}/{settings.steps}: training loss {loss.item():.4f}, held-out {value:.4f}, {verdict} "
                    f"({sum(recent) / len(recent):.2f} s/step, evaluation {say.lap():.1f} s)")
        if bar is not None:
            bar.close()
    if len(eval_set):
        model.restore(kept)
    else:  # nothing held out to judge by: the operator of the last step
        report.kept_step = settings.steps
    report.coefficients = {rest: d.detach().cpu().tolist() for rest, d in model.coefficients.items()}
    if len(eval_set) and settings.steps:
        say(f"kept the operator of step {report.kept_step} (held-out loss {report.eval_after:.4f})")
    return report


def learn_growth(checkpoint: Checkpoint, layout: Layout, grown_config: dict, layer_map: list[int], data: list[str],
                 settings: FitSettings = FitSettings(), *, roles=None, expansion: WidthExpansion | None = None,
                 learn_depth: bool = True, placement: Placement | None = None, progress: bool = True) -> LearnReport:
    """Fit LiGO's growth parameters on ``data``: D (``learn_depth``) and the matrices of ``expansion``.

    ``grown_config`` is the grown model's config; ``roles`` (:func:`hfgrow.arch.roles.derive_roles`) is needed
    with ``expansion``; ``placement`` puts the frozen source on devices or disk. With ``progress`` every phase
    (tokenizing, placing the source, the step-0 evaluation, learning, each evaluation) prints a line on stderr.

    Example:
        >>> ckpt, layout = open_model(Path("small"))
        >>> report = learn_growth(ckpt, layout, plan.config, [0, 1, 0, 1], ["corpus.txt"])
        >>> report.eval_after <= report.eval_before
        True
    """
    torch.manual_seed(settings.seed)
    say = Progress(progress)
    max_len = context_length(hf_config_from_dict(grown_config))
    if max_len and settings.seq_len > max_len:
        raise HfgrowError(f"--seq-len {settings.seq_len} is longer than the model's context ({max_len} tokens).")
    vocab_size = text_config(hf_config_from_dict(grown_config)).vocab_size
    say(f"tokenizing {', '.join(data)} ...")
    sequences = read_sequences(checkpoint.folder, data, settings.seq_len, vocab_size)
    eval_set, train_set = split_sequences(sequences, settings.seed, settings.eval_sequences)
    say(f"{sequences.numel():,} tokens: {len(train_set):,} training and {len(eval_set)} held-out sequences of "
        f"{settings.seq_len} ({say.lap():.1f} s)")
    where = "on the compute device" if placement is None else f"by --device-map {placement.device_map!r}"
    say(f"placing the frozen source weights (float32) {where} ...")
    model = GrownModel.build(checkpoint, layout, grown_config, layer_map, roles=roles, expansion=expansion,
                             learn_depth=learn_depth, placement=placement, progress=progress)
    try:
        say(f"source placed on {model.compute} ({say.lap():.1f} s)")
        report = fit(model, train_set, eval_set, settings, progress)
    finally:
        model.close()
    stacking = initial_coefficients(layout, layer_map)
    for rest in set(stacking) - set(report.coefficients):  # buffers stored in the checkpoint: plain stacking copies
        report.coefficients[rest] = stacking[rest]
    return report
