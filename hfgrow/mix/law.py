"""The BiMix law (BiMix part 2): evaluation observations, the per-domain fit, the law file.

L_i(r_i, s) = A_i / r_i^α_i · (B_i / s^β_i + C_i), fitted per domain by trust-region-reflective
least squares on the log of the loss (i.e. relative error). The five coefficients are one too
many: (A·k, B/k, C/k) gives the same law for any k > 0, so fitted laws are reported in the gauge
C = 1 (A is then the loss at r = 1 as s → ∞).

File formats (JSON, read strictly: a key given twice is refused, see :mod:`hfgrow.data.jsonfile`):

- observations (JSONL, one per line, what ``hfgrow train`` writes to ``eval_observations.jsonl``):
  ``{"mixture": {"domain": r, ...}, "step": s, "domain": "name", "loss": L}``; the mixture's
  proportions must sum to 1 (they are the r of the law, not weights);
- law: ``{"law": "bimix", "domains": {"name": {"A":.., "alpha":.., "B":.., "beta":.., "C":..,
  "fit": {...}}}}``.

Example:
    >>> law = Law({"a": DomainLaw(A=2.0, alpha=0.1, B=4.0, beta=0.5, C=1.0)})
    >>> law.predict("a", 1.0, 100.0)
    2.8
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hfgrow.data.jsonfile import is_number, parse_json, read_json
from hfgrow.io.folder import user_lines
from hfgrow.io.output import atomic_write
from hfgrow.errors import HfgrowError

__all__ = [
    "MIN_OBSERVATIONS",
    "Observation",
    "parse_observation",
    "load_observations",
    "save_observations",
    "split_holdout",
    "DomainLaw",
    "Law",
    "fit_domain",
    "fit_law",
    "save_law",
    "load_law",
]

#: Fewest observations of one domain a fit accepts.
MIN_OBSERVATIONS = 5
#: A fit is called poor below this R² (in the fit or on held-out observations). BiMix reports R² 0.97-0.99 on
#: unseen mixtures; below 0.9 the law explains less than 90% of how the loss varies with r and s.
MIN_R2 = 0.9
#: ... or above this mean relative error: ten times the ~0.2% BiMix reports (and twice the scatter of an
#: evaluation whose losses carry 1% noise, whose mean relative error is about 0.8%).
MAX_MRE = 0.02
#: A fitted loss floor A·C below this fraction of the lowest observed loss means the runs never showed the
#: loss levelling off: the fit is a pure power law in s with a floor of ~0, which no language model reaches.
MIN_FLOOR_FRACTION = 0.01
#: How far an observed mixture's proportions may sum from 1.
SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Observation:
    """One evaluation: the loss on ``domain`` after ``step`` steps of training on ``mixture``."""

    mixture: dict[str, float]
    step: float
    domain: str
    loss: float

    @property
    def proportion(self) -> float:
        """r of the observed domain in its mixture."""
        return self.mixture[self.domain]

    def to_json(self) -> dict:
        return {"mixture": self.mixture, "step": self.step, "domain": self.domain, "loss": self.loss}


def parse_observation(obj: Any, where: str = "observation") -> Observation:
    """Validate one observation object (see the module docstring for the format).

    Example:
        >>> parse_observation({"mixture": {"a": 0.5, "b": 0.5}, "step": 100, "domain": "a", "loss": 3.2}).proportion
        0.5
    """
    if not isinstance(obj, dict):
        raise HfgrowError(f"{where} is not a JSON object.")
    missing = [k for k in ("mixture", "step", "domain", "loss") if k not in obj]
    if missing:
        raise HfgrowError(f"{where} has no \"{missing[0]}\" field.")
    mixture, step, domain, loss = obj["mixture"], obj["step"], obj["domain"], obj["loss"]
    if not isinstance(mixture, dict) or not mixture:
        raise HfgrowError(f'{where}: "mixture" is not a non-empty object of proportions.')
    for name, r in mixture.items():
        if not is_number(r) or r < 0:
            raise HfgrowError(f"{where}: the proportion of '{name}' is not a number ≥ 0.")
    total = float(sum(mixture.values()))
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise HfgrowError(f"{where}: the mixture's proportions sum to {total:.9g}, not 1.")
    if not isinstance(domain, str) or domain not in mixture:
        raise HfgrowError(f"{where}: domain {domain!r} is not in its mixture.")
    if not is_number(step) or step <= 0:
        raise HfgrowError(f"{where}: step must be a positive number.")
    if not is_number(loss) or loss <= 0:
        raise HfgrowError(f"{where}: loss must be a positive number.")
    return Observation({k: float(v) for k, v in mixture.items()}, float(step), domain, float(loss))


def load_observations(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Observation]:
    """Read observation JSONL files (blank lines skipped).

    Example:
        >>> obs = load_observations(["run1/eval.jsonl", "run2/eval.jsonl"])   # doctest: +SKIP
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Observation] = []
    for path in paths:
        for lineno, line in user_lines(path, "observation log"):
            if line.strip():
                where = f"{path}:{lineno}"
                out.append(parse_observation(parse_json(line, where), where))
    return out


def save_observations(observations: Iterable[Observation], path: str | os.PathLike) -> None:
    """Write observations as JSONL (the format ``load_observations`` and the trainer use).

    Example:
        >>> save_observations([Observation({"a": 0.5, "b": 0.5}, 100.0, "a", 3.2)], "eval.jsonl")  # doctest: +SKIP
    """
    atomic_write(path, "".join(json.dumps(ob.to_json()) + "\n" for ob in observations))


def split_holdout(
    observations: Sequence[Observation], fraction: float, by: str = "mixture", seed: int = 0
) -> tuple[list[Observation], list[Observation]]:
    """Split observations into (train, held out).

    ``by="mixture"``: hold out round(fraction × #mixtures) whole mixtures (at least 1), chosen at
    random with ``seed`` — the paper's "unseen mixtures" test. ``by="step"``: hold out the latest
    fraction of distinct steps (extrapolation in s). ``by="random"``: random observations.

    Example:
        >>> train, held = split_holdout(obs, 0.25)                          # doctest: +SKIP
    """
    if not 0 < fraction < 1:
        raise HfgrowError(f"the holdout fraction must be between 0 and 1 (got {fraction}).")
    rng = random.Random(seed)
    if by == "mixture":
        keys = sorted({tuple(sorted(o.mixture.items())) for o in observations})
        if len(keys) < 2:
            raise HfgrowError("holding out mixtures needs observations from at least 2 mixtures.")
        n = min(len(keys) - 1, max(1, round(fraction * len(keys))))
        held_keys = set(rng.sample(keys, n))
        is_held = [tuple(sorted(o.mixture.items())) in held_keys for o in observations]
    elif by == "step":
        steps = sorted({o.step for o in observations})
        n = min(len(steps) - 1, max(1, round(fraction * len(steps))))
        cut = steps[-n]
        is_held = [o.step >= cut for o in observations]
    elif by == "random":
        idx = list(range(len(observations)))
        held = set(rng.sample(idx, max(1, round(fraction * len(idx)))))
        is_held = [i in held for i in idx]
    else:
        raise HfgrowError(f"unknown holdout split '{by}': use mixture, step or random.")
    train = [o for o, h in zip(observations, is_held) if not h]
    held = [o for o, h in zip(observations, is_held) if h]
    return train, held


@dataclass
class DomainLaw:
    """L(r, s) = A / r^alpha · (B / s^beta + C) for one domain, with fit diagnostics in ``fit``."""

    A: float
    alpha: float
    B: float
    beta: float
    C: float
    fit: dict[str, Any] = field(default_factory=dict)

    def predict(self, r: float | np.ndarray, s: float | np.ndarray) -> float | np.ndarray:
        """Predicted loss at proportion ``r`` after ``s`` steps (numpy broadcasting).

        Example:
            >>> DomainLaw(A=2.0, alpha=0.1, B=4.0, beta=0.5, C=1.0).predict(1.0, 100.0)
            2.8
        """
        r = np.asarray(r, dtype=np.float64)
        s = np.asarray(s, dtype=np.float64)
        out = self.A * r ** (-self.alpha) * (self.B * s ** (-self.beta) + self.C)
        return float(out) if out.ndim == 0 else out

    @property
    def scale(self) -> float:
        """A·B: the decaying term's size at r = 1, s = 1. With A·C, what the data fix (A, B, C alone are not)."""
        return self.A * self.B

    @property
    def floor(self) -> float:
        """A·C: the loss at r = 1 as s → ∞."""
        return self.A * self.C

    def warnings(self, name: str) -> list[str]:
        """Why this fit should not be trusted, one sentence each (empty when nothing is wrong).

        Example:
            >>> DomainLaw(1.96e-11, 0.1, 2.18e11, 0.3, 1.0, fit={"r2": -3.57, "mre": 0.09, "losses": [4.1, 6.0]}
            ...           ).warnings("web")[0]
            "the fit of domain 'web' is poor (R² -3.57, mean relative error 9.0%; BiMix reports R² 0.97-0.99 and ~0.2%)"
        """
        fit, found = self.fit, []
        checks = [("", fit)] + ([("held-out ", fit["holdout"])] if isinstance(fit.get("holdout"), dict) else [])
        for label, metrics in checks:
            r2, mre = metrics.get("r2"), metrics.get("mre")
            if (is_number(r2) and r2 < MIN_R2) or (is_number(mre) and mre > MAX_MRE):
                found.append(f"the {label}fit of domain '{name}' is poor (R² {r2:.3g}, mean relative error {mre:.1%}; "
                             "BiMix reports R² 0.97-0.99 and ~0.2%)")
        losses = fit.get("losses")
        if isinstance(losses, list) and losses and self.floor < MIN_FLOOR_FRACTION * min(losses):
            found.append(f"domain '{name}' has a loss floor A·C = {self.floor:.3g}, under {MIN_FLOOR_FRACTION:.0%} of "
                         f"its lowest observed loss {min(losses):.4g}: the runs never show the loss levelling off, so "
                         "the law is a bare power law in s and cannot be extrapolated; train longer runs")
        return found

    def to_json(self) -> dict:
        return {"A": self.A, "alpha": self.alpha, "B": self.B, "beta": self.beta, "C": self.C, "fit": self.fit}


@dataclass
class Law:
    """A fitted BiMix law: one :class:`DomainLaw` per domain."""

    domains: dict[str, DomainLaw]

    def predict(self, domain: str, r: float | np.ndarray, s: float | np.ndarray) -> float | np.ndarray:
        """Predicted loss of ``domain`` at proportion ``r`` after ``s`` steps.

        Example:
            >>> law = Law({"a": DomainLaw(2.0, 0.1, 4.0, 0.5, 1.0)})
            >>> law.predict("a", 1.0, 100.0)
            2.8
        """
        if domain not in self.domains:
            raise HfgrowError(f"the law has no domain '{domain}' (it has {', '.join(self.domains)}).")
        return self.domains[domain].predict(r, s)

    def total(self, proportions: Mapping[str, float], steps: float) -> float:
        """Σ_i L_i(r_i, steps), the quantity :func:`optimize_mixture` minimises."""
        return float(sum(self.predict(name, proportions[name], steps) for name in self.domains))

    def max_step(self) -> float | None:
        """The longest run the law was fitted on (None for a law file that does not record it)."""
        steps = [d.fit["steps"][1] for d in self.domains.values()
                 if isinstance(d.fit.get("steps"), list) and len(d.fit["steps"]) == 2 and is_number(d.fit["steps"][1])]
        return max(steps) if steps else None

    def warnings(self) -> list[str]:
        """Every domain's :meth:`DomainLaw.warnings`."""
        return [text for name, d in self.domains.items() for text in d.warnings(name)]

    def to_json(self) -> dict:
        return {
            "law": "bimix",
            "formula": "L(r, s) = A / r**alpha * (B / s**beta + C)",
            "domains": {name: d.to_json() for name, d in self.domains.items()},
        }


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    ss_res = float(((y - pred) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else float("-inf"))


def _metrics(law: DomainLaw, r: np.ndarray, s: np.ndarray, loss: np.ndarray) -> dict[str, Any]:
    pred = law.predict(r, s)
    return {"n": int(loss.size), "r2": _r2(loss, pred), "mre": float(np.mean(np.abs(pred - loss) / loss)),
            "steps": [float(s.min()), float(s.max())], "losses": [float(loss.min()), float(loss.max())]}


# parameter vector θ = (alpha, beta, u = log(A·B), v = log(A·C));  log L = -α log r + logaddexp(u - β log s, v)
_LOWER = np.array([0.0, 0.0, -60.0, -60.0])
_UPPER = np.array([10.0, 10.0, 60.0, 60.0])


def _log_model(theta: np.ndarray, log_r: np.ndarray, log_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    alpha, beta, u, v = theta
    t = u - beta * log_s
    lse = np.logaddexp(t, v)
    return -alpha * log_r + lse, np.exp(t - lse), np.exp(v - lse)


def _initial_guesses(log_r: np.ndarray, log_s: np.ndarray, loss: np.ndarray, keep: int = 4) -> list[np.ndarray]:
    """Grid over (α, β); (A·B, A·C) by linear least squares in relative error for each; best ``keep``."""
    alphas = np.array([0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0])
    betas = np.geomspace(0.01, 3.0, 25)
    log_loss = np.log(loss)
    found: list[tuple[float, np.ndarray]] = []
    for alpha in alphas:
        target = loss * np.exp(alpha * log_r)  # = b s^-β + c  if α is right
        for beta in betas:
            x = np.exp(-beta * log_s)
            w = 1.0 / target  # relative error weights
            X = np.stack([x * w, w], axis=1)
            coef, *_ = np.linalg.lstsq(X, target * w, rcond=None)
            b, c = coef
            if c <= 0:  # keep both terms positive: refit with the other term only
                b, c = max(float((x * target).sum() / (x * x).sum()), 1e-12), 1e-12 * target.mean()
            elif b <= 0:
                b, c = 1e-12 * target.mean(), float(target.mean())
            theta = np.array([alpha, beta, math.log(b), math.log(c)])
            theta = np.clip(theta, _LOWER, _UPPER)
            pred, _, _ = _log_model(theta, log_r, log_s)
            found.append((float(((pred - log_loss) ** 2).sum()), theta))
    found.sort(key=lambda t: t[0])
    return [theta for _, theta in found[:keep]]


def fit_domain(r: Sequence[float], s: Sequence[float], loss: Sequence[float], name: str = "domain") -> DomainLaw:
    """Fit one domain's law to arrays of proportions, steps and losses.

    Least squares on log L (relative error) with ``scipy.optimize.least_squares(method="trf")``,
    bounds α, β ∈ [0, 10], an analytic Jacobian, and restarts from the best points of an (α, β)
    grid. Needs ≥5 observations, ≥2 distinct proportions and ≥3 distinct steps. The result is in
    the gauge C = 1.

    Example:
        >>> law = fit_domain(r, s, loss, "code")                        # doctest: +SKIP
        >>> law.fit["mre"] < 0.01                                       # doctest: +SKIP
        True
    """
    from scipy.optimize import least_squares

    r_arr, s_arr, l_arr = (np.asarray(v, dtype=np.float64) for v in (r, s, loss))
    if r_arr.size < MIN_OBSERVATIONS:
        raise HfgrowError(f"domain '{name}' has {r_arr.size} observations; fitting needs at least {MIN_OBSERVATIONS}.")
    if np.unique(r_arr).size < 2:
        raise HfgrowError(f"domain '{name}' is observed at a single proportion; fitting alpha needs at least 2 mixtures that differ in it.")
    if np.unique(s_arr).size < 3:
        raise HfgrowError(f"domain '{name}' is observed at {np.unique(s_arr).size} distinct steps; fitting needs at least 3.")
    log_r, log_s, log_l = np.log(r_arr), np.log(s_arr), np.log(l_arr)

    def residuals(theta: np.ndarray) -> np.ndarray:
        return _log_model(theta, log_r, log_s)[0] - log_l

    def jacobian(theta: np.ndarray) -> np.ndarray:
        _, pb, pc = _log_model(theta, log_r, log_s)
        return np.stack([-log_r, -log_s * pb, pb, pc], axis=1)

    best = None
    for theta0 in _initial_guesses(log_r, log_s, l_arr):
        theta0 = np.clip(theta0, _LOWER + 1e-9, _UPPER - 1e-9)
        res = least_squares(
            residuals, theta0, jac=jacobian, bounds=(_LOWER, _UPPER), method="trf",
            x_scale="jac", ftol=1e-14, xtol=1e-14, gtol=1e-14, max_nfev=2000,
        )  # fmt: skip
        if best is None or res.cost < best.cost:
            best = res
    alpha, beta, u, v = (float(x) for x in best.x)
    law = DomainLaw(A=math.exp(v), alpha=alpha, B=math.exp(u - v), beta=beta, C=1.0)
    law.fit = _metrics(law, r_arr, s_arr, l_arr)
    return law


def fit_law(
    observations: Sequence[Observation], *, holdout: float = 0.0, holdout_by: str = "mixture", seed: int = 0
) -> Law:
    """Fit the BiMix law for every domain that has observations.

    Observations whose domain has proportion 0 in its mixture are left out (the law is infinite at
    r = 0); their number is in ``law.domains[name].fit["skipped_r0"]``. With ``holdout`` > 0 a
    part of the observations (see :func:`split_holdout`) is kept out of the fit and each domain's
    ``fit["holdout"]`` gives n, R² and mean relative error on it.

    Example:
        >>> law = fit_law(load_observations("eval.jsonl"), holdout=0.2)   # doctest: +SKIP
        >>> law.domains["code"].fit                                        # doctest: +SKIP
        {'n': 40, 'r2': 0.998, 'mre': 0.002, 'holdout': {'n': 10, 'r2': 0.99, 'mre': 0.004}}
    """
    usable = [o for o in observations if o.proportion > 0]
    skipped: dict[str, int] = {}
    for o in observations:
        if o.proportion <= 0:
            skipped[o.domain] = skipped.get(o.domain, 0) + 1
    if not usable:
        raise HfgrowError("there are no observations to fit (none with a positive proportion of its domain).")
    train, held = (usable, []) if not holdout else split_holdout(usable, holdout, holdout_by, seed)
    names = list(dict.fromkeys(o.domain for o in usable))
    domains: dict[str, DomainLaw] = {}
    for name in names:
        rows = [o for o in train if o.domain == name]
        if held and len(rows) < MIN_OBSERVATIONS:
            raise HfgrowError(
                f"domain '{name}' keeps {len(rows)} observations after the holdout; fitting needs at least {MIN_OBSERVATIONS}."
            )
        law = fit_domain([o.proportion for o in rows], [o.step for o in rows], [o.loss for o in rows], name)
        if held:
            hrows = [o for o in held if o.domain == name]
            if hrows:
                law.fit["holdout"] = _metrics(
                    law, np.array([o.proportion for o in hrows]), np.array([o.step for o in hrows]), np.array([o.loss for o in hrows])
                )
        if skipped.get(name):
            law.fit["skipped_r0"] = skipped[name]
        domains[name] = law
    return Law(domains)


def save_law(law: Law, path: str | os.PathLike) -> None:
    """Write a law JSON (atomically).

    Example:
        >>> save_law(fit_law(load_observations("eval.jsonl")), "law.json")   # doctest: +SKIP
    """
    atomic_write(path, law.to_json())


def load_law(path: str | os.PathLike) -> Law:
    """Read and validate a law JSON: each domain needs finite A > 0, alpha ≥ 0, B ≥ 0, beta ≥ 0, C ≥ 0.

    Example:
        >>> law = load_law("law.json")                                     # doctest: +SKIP
        >>> law.predict("code", 0.3, 10_000)                               # doctest: +SKIP
        2.41
    """
    obj = read_json(path, "law file")
    if not isinstance(obj, dict) or not isinstance(obj.get("domains"), dict) or not obj["domains"]:
        raise HfgrowError(f'the law file \'{path}\' has no "domains" object.')
    domains: dict[str, DomainLaw] = {}
    for name, d in obj["domains"].items():
        if not isinstance(d, dict):
            raise HfgrowError(f"the law file '{path}': domain '{name}' is not an object.")
        for key in ("A", "alpha", "B", "beta", "C"):
            if not is_number(d.get(key)) or d[key] < 0 or (key == "A" and d[key] == 0):
                raise HfgrowError(f"the law file '{path}': domain '{name}' needs a finite {key} {'> 0' if key == 'A' else '≥ 0'}.")
        if d["B"] + d["C"] <= 0:
            raise HfgrowError(f"the law file '{path}': domain '{name}' has B = C = 0.")
        domains[name] = DomainLaw(float(d["A"]), float(d["alpha"]), float(d["B"]), float(d["beta"]), float(d["C"]), dict(d.get("fit", {})))
    return Law(domains)
