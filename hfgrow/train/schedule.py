"""The learning-rate schedule of a training run: max LR by model size, linear warmup, cosine decay.

Recipe of Du et al. 2024 ("Stacking Your Transformers", §4.2; shared/REFERENCE.md §1): warmup, then
cosine decay to 10% of the max LR; the max LR is 6e-4 at ≤410M parameters, 3e-4 at 1.1B, 1.6e-4 at
3B and 1e-4 at ≥7B, interpolated linearly in log(params) vs log(lr) between those points (total
parameter count, embeddings included). The paper warms up for 3000 steps of ~2M-token batches; the
default here is 5% of the steps, at least 100 steps or half the run when it is shorter than 200 steps, at
most 3000 (:func:`default_warmup`): 5% alone is 1 step of a 6-step run, which then starts at the full LR
(at the paper's 6e-4 a small model's loss went 6.3 -> 28.9 in 2 steps).

Across growth (``--grow``) the run keeps one schedule: the global warmup + cosine continues through every
growth (the default, ``--grow-warmup-steps 0``), or, with ``--grow-warmup-steps N``, the LR is re-warmed
after each growth: it ramps linearly from 0 to the global cosine's value over the N steps that follow
(a fresh AdamW takes full-size steps at once; a re-warm softens that). The paper's reference code starts
a new run, with its own warmup and cosine, on the grown model; one global cosine is what a single run
over the whole budget (as the paper's FLOPs accounting assumes) does.

Example:
    >>> s = Schedule.plan(n_params=1.1e9, max_steps=1000)
    >>> round(s.max_lr, 6), round(s.min_lr, 7), s.warmup
    (0.0003, 3e-05, 100)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hfgrow.units import counted

LR_BY_SIZE = [(410e6, 6e-4), (1.1e9, 3e-4), (3e9, 1.6e-4), (7e9, 1e-4)]  # (params, max LR), paper §4.2
MIN_LR_FRACTION = 0.1  # cosine decays to 10% of the max LR
MAX_WARMUP_STEPS = 3000
MIN_WARMUP_STEPS = 100  # the floor of the default warmup (half the run when the run is shorter than twice this)
WARMUP_FRACTION = 0.05


def default_warmup(max_steps: int) -> int:
    """Warmup steps of a run of ``max_steps`` when ``--warmup-steps`` is not given.

    5% of the steps, at least :data:`MIN_WARMUP_STEPS` (half the run when that is shorter), at most
    :data:`MAX_WARMUP_STEPS`: a short run does not take its first step at the full LR.

    Example:
        >>> [default_warmup(n) for n in (1, 6, 150, 1000, 10_000, 100_000)]
        [1, 3, 75, 100, 500, 3000]
    """
    floor = min(MIN_WARMUP_STEPS, max_steps // 2)
    return max(1, min(MAX_WARMUP_STEPS, max(math.ceil(WARMUP_FRACTION * max_steps), floor)))


def describe_warmup(warmup: int, max_steps: int, given: bool) -> str:
    """The line a run prints about its warmup: its length and, for the default, the rule that chose it.

    Example:
        >>> describe_warmup(3, 6, given=False)
        'warmup: 3 steps of 6 (default: 5% of the run, at least 100 steps or half the run, at most 3000)'
    """
    rule = "--warmup-steps" if given else (f"default: {WARMUP_FRACTION:.0%} of the run, at least {MIN_WARMUP_STEPS} "
                                           f"steps or half the run, at most {MAX_WARMUP_STEPS}")
    return f"warmup: {counted(warmup, 'step')} of {max_steps:,} ({rule})"


def default_lr(n_params: float) -> float:
    """Max LR for a model size, log-log interpolated between the paper's four points, clamped.

    Example:
        >>> round(default_lr(1.1e9), 6), default_lr(100e6), default_lr(70e9)
        (0.0003, 0.0006, 0.0001)
    """
    pts = LR_BY_SIZE
    if n_params <= pts[0][0]:
        return pts[0][1]
    if n_params >= pts[-1][0]:
        return pts[-1][1]
    for (n0, l0), (n1, l1) in zip(pts, pts[1:]):
        if n_params <= n1:
            t = (math.log(n_params) - math.log(n0)) / (math.log(n1) - math.log(n0))
            return math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0)))
    return pts[-1][1]


def lr_at(step: int, max_lr: float, min_lr: float, warmup: int, max_steps: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine from ``max_lr`` to ``min_lr`` (nanoGPT's schedule).

    Example:
        >>> lr_at(0, 1.0, 0.1, 10, 100), lr_at(9, 1.0, 0.1, 10, 100), lr_at(100, 1.0, 0.1, 10, 100)
        (0.1, 1.0, 0.1)
    """
    if warmup > 0 and step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= max_steps:
        return min_lr
    span = max(1, max_steps - warmup)
    ratio = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def steps_for(max_steps: int | None, max_tokens: int | None, tokens_per_step: int) -> int:
    """Optimizer steps of a run: ``--max-steps``, else enough steps to see ``--max-tokens`` tokens.

    Example:
        >>> steps_for(None, 2_000_000_000, 2 * 2**20), steps_for(10, 2_000_000_000, 4096)
        (954, 10)
    """
    if max_steps:
        return max_steps
    return max(1, math.ceil((max_tokens or 0) / tokens_per_step))


@dataclass(frozen=True)
class Schedule:
    """The LR of every step of a run."""

    max_lr: float
    min_lr: float
    warmup: int
    max_steps: int
    rewarm: int = 0  # steps of linear re-warm after each growth (0: the global cosine continues)
    growth_steps: tuple[int, ...] = ()  # optimizer steps (0-based) before which the model grows

    @classmethod
    def plan(cls, *, n_params: float, max_steps: int, lr: float | None = None, min_lr: float | None = None,
             warmup: int | None = None, rewarm: int = 0, growth_steps: tuple[int, ...] = ()) -> Schedule:
        """The schedule for a model of ``n_params`` parameters; given values override the recipe's defaults."""
        max_lr = lr if lr is not None else default_lr(n_params)
        return cls(
            max_lr=max_lr,
            min_lr=min_lr if min_lr is not None else MIN_LR_FRACTION * max_lr,
            warmup=warmup if warmup is not None else default_warmup(max_steps),
            max_steps=max_steps,
            rewarm=rewarm,
            growth_steps=tuple(growth_steps),
        )

    def lr(self, step: int) -> float:
        """The LR of optimizer step ``step`` (0-based); after a growth, scaled by the re-warm ramp if any.

        Example:
            >>> s = Schedule(1.0, 0.1, 0, 100, rewarm=4, growth_steps=(50,))
            >>> [round(s.lr(i) / lr_at(i, 1.0, 0.1, 0, 100), 2) for i in (49, 50, 51, 53, 54)]
            [1.0, 0.25, 0.5, 1.0, 1.0]
        """
        lr = lr_at(step, self.max_lr, self.min_lr, self.warmup, self.max_steps)
        since = [step - g for g in self.growth_steps if 0 <= step - g < self.rewarm]
        return lr * (min(since) + 1) / self.rewarm if since else lr
