"""hfgrow.mix.optimize: the optimal mixture under a law, against the analytic optimum and a brute-force search."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from helpers.mix_data import TRUE_LAW
from hfgrow.data.mixture import read_mixture, write_mixture
from hfgrow.errors import HfgrowError
from hfgrow.mix import optimize as optimize_module
from hfgrow.mix.law import DomainLaw, Law
from hfgrow.mix.optimize import law_mixture, optimize_mixture


def test_doctests():
    result = doctest.testmod(optimize_module)
    assert result.failed == 0 and result.attempted >= 3


def test_optimize_two_domains_matches_analytic_optimum():
    # L_i = A_i r_i^-α K with K = B S^-β + C equal for both domains (equal B, C, β, α).
    # Minimise Σ A_i K r_i^-α subject to Σ r_i = 1: Lagrange gives α A_i K r_i^(-α-1) = λ, so
    # r_i = (α A_i K / λ)^(1/(1+α)) ∝ A_i^(1/(1+α)); K and λ cancel when normalising.
    alpha = 0.3
    law = Law({"a": DomainLaw(1.5, alpha, 7.0, 0.4, 0.9), "b": DomainLaw(4.0, alpha, 7.0, 0.4, 0.9)})
    r = optimize_mixture(law, 5000, floor=1e-3)
    wa, wb = 1.5 ** (1 / (1 + alpha)), 4.0 ** (1 / (1 + alpha))
    assert abs(r["a"] - wa / (wa + wb)) < 1e-9
    assert abs(r["b"] - wb / (wa + wb)) < 1e-9
    assert sum(r.values()) == pytest.approx(1.0, abs=1e-12)


def test_optimize_general_law_beats_every_feasible_mixture_and_respects_floor():
    law = Law({name: DomainLaw(*p) for name, p in TRUE_LAW.items()} | {"tiny": DomainLaw(1.0, 0.0005, 1.0, 0.5, 1.0)})
    floor = 0.01
    r = optimize_mixture(law, 20000, floor=floor)
    assert min(r.values()) >= floor - 1e-15 and sum(r.values()) == pytest.approx(1.0, abs=1e-12)
    assert r["tiny"] == pytest.approx(floor)  # gains almost nothing from data: held at the floor
    best = law.total(r, 20000)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        x = rng.dirichlet(np.ones(4)) * (1 - 4 * floor) + floor
        assert law.total(dict(zip(law.domains, x)), 20000) >= best - 1e-12
    from scipy.optimize import minimize

    names = list(law.domains)
    res = minimize(lambda x: law.total(dict(zip(names, x)), 20000), np.full(4, 0.25), method="SLSQP",
                   bounds=[(floor, 1)] * 4, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}], options={"ftol": 1e-14})
    assert np.allclose(res.x, [r[n] for n in names], atol=1e-4)


def test_law_mixture_is_written_and_read_back_by_training(tmp_path):
    law = Law({name: DomainLaw(*p) for name, p in TRUE_LAW.items()})
    r = optimize_mixture(law, 10_000, floor=0.02)
    m = law_mixture(law, 10_000, r, floor=0.02)
    assert m["measure"] == "law" and m["steps"] == 10_000 and m["floor"] == 0.02
    for name in TRUE_LAW:
        assert m["domains"][name]["predicted_loss"] == pytest.approx(law.predict(name, r[name], 10_000), rel=1e-15)
    write_mixture(m, tmp_path / "opt.json")
    assert read_mixture(tmp_path / "opt.json", list(TRUE_LAW)) == pytest.approx(r, rel=1e-12)


def test_optimize_errors():
    one = Law({"a": DomainLaw(1.0, 0.1, 1.0, 0.5, 1.0)})
    with pytest.raises(HfgrowError, match=r"^optimising a mixture needs a law with at least 2 domains \(got 1\)\.$"):
        optimize_mixture(one, 100)
    two = Law({"a": DomainLaw(1.0, 0.1, 1.0, 0.5, 1.0), "b": DomainLaw(1.0, 0.1, 1.0, 0.5, 1.0)})
    with pytest.raises(HfgrowError, match=r"^the floor must be above 0 and below 1/2 for 2 domains \(got 0\.5\)\.$"):
        optimize_mixture(two, 100, floor=0.5)
    with pytest.raises(HfgrowError, match=r"^steps must be a positive number"):
        optimize_mixture(two, 0)
