"""The optimal mixture under a fitted BiMix law (BiMix part 3).

r* = argmin Σ_i L_i(r_i, S) subject to Σ r_i = 1, r_i ≥ floor, solved exactly from the KKT
conditions (every term is convex in r_i for α_i ≥ 0). :func:`law_mixture` turns the result into a
mixture object (``"measure": "law"``, predicted losses beside the proportions) for
:func:`hfgrow.data.mixture.write_mixture`.

Example:
    >>> from hfgrow.mix.law import DomainLaw, Law
    >>> law = Law({"a": DomainLaw(1.0, 0.5, 1.0, 0.5, 1.0), "b": DomainLaw(4.0, 0.5, 1.0, 0.5, 1.0)})
    >>> {k: round(v, 4) for k, v in optimize_mixture(law, 1000).items()}
    {'a': 0.2841, 'b': 0.7159}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from hfgrow.data.jsonfile import is_number
from hfgrow.errors import HfgrowError
from hfgrow.mix.law import Law

__all__ = ["optimize_mixture", "law_mixture", "extrapolation_warning", "MAX_EXTRAPOLATION"]

#: Optimising for more than this many times the longest fitted run gets a warning. The reducible loss
#: B·s^-β is extrapolated as (S / s_max)^-β, so an error δβ in the fitted exponent scales the prediction by
#: (S / s_max)^δβ: with δβ = 0.05 that is 12% at 10x, 57% at 10^4x. Scaling-law fits are trusted about a
#: decade beyond their data; the BiMix law is no exception.
MAX_EXTRAPOLATION = 10.0


def extrapolation_warning(law: Law, steps: float) -> str | None:
    """One sentence when ``steps`` lies more than :data:`MAX_EXTRAPOLATION` times beyond the runs the law was
    fitted on (None otherwise, or when the law file does not record its steps).

    Example:
        >>> from hfgrow.mix.law import DomainLaw
        >>> law = Law({"a": DomainLaw(2.0, 0.1, 4.0, 0.5, 1.0, fit={"steps": [1.0, 6.0]})})
        >>> extrapolation_warning(law, 50_000)[:60]
        '--steps 50,000 is 8,333x the longest run the law was fitted '
    """
    longest = law.max_step()
    if longest is None or steps <= MAX_EXTRAPOLATION * longest:
        return None
    ratio = steps / longest
    return (f"--steps {steps:,.0f} is {ratio:,.0f}x the longest run the law was fitted on ({longest:,.0f} steps), "
            f"more than {MAX_EXTRAPOLATION:g}x: an error of 0.05 in a fitted beta changes the predicted loss above the "
            f"floor by a factor {ratio ** 0.05:.2f} there; fit the law on runs of at least "
            f"{steps / MAX_EXTRAPOLATION:,.0f} steps")


def optimize_mixture(law: Law, steps: float, floor: float = 1e-3) -> dict[str, float]:
    """r* = argmin Σ_i L_i(r_i, steps) subject to Σ r_i = 1 and r_i ≥ floor > 0.

    With K_i = B_i·S^-β_i + C_i each term A_i·K_i·r^-α_i is convex, so the KKT conditions give the
    exact optimum: r_i(λ) = max(floor, (α_i·A_i·K_i / λ)^(1/(1+α_i))) with λ chosen (by a bracketed
    root search on log λ) so that Σ r_i(λ) = 1. Domains with α_i = 0 gain nothing from data and
    get the floor; if every α_i = 0 the objective is flat and the uniform mixture is returned.

    Example:
        >>> from hfgrow.mix.law import DomainLaw
        >>> law = Law({"a": DomainLaw(1.0, 0.5, 1.0, 0.5, 1.0), "b": DomainLaw(4.0, 0.5, 1.0, 0.5, 1.0)})
        >>> {k: round(v, 4) for k, v in optimize_mixture(law, 1000).items()}   # r ∝ A^(2/3)
        {'a': 0.2841, 'b': 0.7159}
    """
    from scipy.optimize import brentq

    names = list(law.domains)
    n = len(names)
    if n < 2:
        raise HfgrowError(f"optimising a mixture needs a law with at least 2 domains (got {n}).")
    if not (is_number(steps) and steps > 0):
        raise HfgrowError(f"steps must be a positive number (got {steps}).")
    if not (is_number(floor) and 0 < floor and floor * n < 1):
        raise HfgrowError(f"the floor must be above 0 and below 1/{n} for {n} domains (got {floor}).")
    alpha = np.array([law.domains[k].alpha for k in names])
    K = np.array([law.domains[k].B * steps ** (-law.domains[k].beta) + law.domains[k].C for k in names])
    weight = alpha * np.array([law.domains[k].A for k in names]) * K
    active = weight > 0
    if not active.any():
        return {k: 1.0 / n for k in names}
    log_w = np.log(weight[active])
    a1 = alpha[active] + 1.0
    lo_floor = math.log(floor)

    def proportions(log_lam: float) -> np.ndarray:
        r = np.full(n, floor)
        r[active] = np.exp(np.clip((log_w - log_lam) / a1, lo_floor, 0.0))
        return r

    def excess(log_lam: float) -> float:
        return float(proportions(log_lam).sum() - 1.0)

    lo = float(log_w.min()) - 1.0  # every active r_i clipped at 1: sum ≥ 1
    hi = float((log_w - a1 * lo_floor).max()) + 1.0  # every r_i at the floor: sum = n·floor < 1
    log_lam = brentq(excess, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    r = proportions(log_lam)
    free = r > floor
    r[free] += (1.0 - r.sum()) / free.sum()  # remove the root-finder's last ~1e-15
    return {k: float(v) for k, v in zip(names, r)}


def law_mixture(law: Law, steps: float, proportions: Mapping[str, float], floor: float | None = None) -> dict:
    """The mixture JSON for optimised proportions (``"measure": "law"``, with predicted losses).

    Example:
        >>> m = law_mixture(law, 10_000, optimize_mixture(law, 10_000))     # doctest: +SKIP
        >>> write_mixture(m, "mix.json")                                     # doctest: +SKIP
    """
    out: dict[str, Any] = {"measure": "law", "steps": steps}
    if floor is not None:
        out["floor"] = floor
    out["domains"] = {
        name: {"proportion": float(proportions[name]), "predicted_loss": float(law.predict(name, proportions[name], steps))}
        for name in law.domains
    }
    return out
