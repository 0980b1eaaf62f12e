"""hfgrow.mix.law: observations, fitting a known law back from noisy data, and the law file."""

from __future__ import annotations

import doctest
import json

import pytest

from helpers.mix_data import STEPS, TRUE_LAW, synthetic_observations, true_loss
from hfgrow.mix import law as law_module
from hfgrow.mix.law import (
    Observation,
    fit_law,
    load_law,
    load_observations,
    parse_observation,
    save_law,
    save_observations,
    split_holdout,
)
from helpers.errors import raises


def test_doctests():
    result = doctest.testmod(law_module)
    assert result.failed == 0 and result.attempted >= 3


def test_fit_recovers_known_law_and_predicts_held_out_points_within_1pct():
    obs = synthetic_observations()
    train, held = split_holdout(obs, 0.2, by="mixture", seed=0)  # 2 of 10 mixtures unseen
    assert held and train
    law = fit_law(train)
    for d, (A, a, B, b, C) in TRUE_LAW.items():
        fit = law.domains[d]
        assert fit.fit["r2"] > 0.99 and fit.fit["mre"] < 0.012
        assert fit.alpha == pytest.approx(a, abs=0.02)
        assert fit.beta == pytest.approx(b, abs=0.05)
        # (A, B, C) is known only up to (A k, B/k, C/k): compare the products the data fixes
        assert fit.A * fit.C == pytest.approx(A * C, rel=0.05)
        assert fit.A * fit.B == pytest.approx(A * B, rel=0.3)
    for o in held:  # unseen mixtures, every step: against the noise-free truth
        assert law.predict(o.domain, o.proportion, o.step) == pytest.approx(true_loss(o.domain, o.proportion, o.step), rel=0.01)
    # extrapolation to 4x the longest run: within 1.5%
    for d in TRUE_LAW:
        for r in (0.1, 0.3, 0.8):
            assert law.predict(d, r, 4 * STEPS[-1]) == pytest.approx(true_loss(d, r, 4 * STEPS[-1]), rel=0.015)


def test_fit_law_holdout_reports_and_law_json_roundtrips(tmp_path):
    law = fit_law(synthetic_observations(noise=0.0), holdout=0.3, holdout_by="step")
    for d in TRUE_LAW:
        assert law.domains[d].fit["holdout"]["mre"] < 1e-6  # exact data: exact fit
    save_law(law, tmp_path / "law.json")
    again = load_law(tmp_path / "law.json")
    for d in TRUE_LAW:
        assert again.predict(d, 0.25, 3000) == pytest.approx(law.predict(d, 0.25, 3000), rel=1e-15)
        assert again.predict(d, 0.25, 3000) == pytest.approx(true_loss(d, 0.25, 3000), rel=1e-6)


def test_observations_round_trip_and_proportion_zero_is_left_out(tmp_path):
    obs = synthetic_observations(noise=0.0)
    zero = Observation({"web": 0.0, "code": 0.5, "books": 0.5}, 100.0, "web", 9.0)
    save_observations([*obs, zero], tmp_path / "eval.jsonl")
    again = load_observations(tmp_path / "eval.jsonl")
    assert again == [*obs, zero]
    assert fit_law(again).domains["web"].fit["skipped_r0"] == 1


OBS = {"mixture": {"a": 0.5, "b": 0.5}, "step": 100, "domain": "a", "loss": 3.2}
BAD_OBSERVATIONS = {
    "not an object": ([OBS], "observation is not a JSON object."),
    "no loss": ({k: v for k, v in OBS.items() if k != "loss"}, 'observation has no "loss" field.'),
    "sum": ({**OBS, "mixture": {"a": 0.5, "b": 0.4}}, "observation: the mixture's proportions sum to 0.9, not 1."),
    "negative r": ({**OBS, "mixture": {"a": 1.5, "b": -0.5}}, "observation: the proportion of 'b' is not a number ≥ 0."),
    "unknown domain": ({**OBS, "domain": "c"}, "observation: domain 'c' is not in its mixture."),
    "step": ({**OBS, "step": 0}, "observation: step must be a positive number."),
    "loss": ({**OBS, "loss": True}, "observation: loss must be a positive number."),
}


@pytest.mark.parametrize("case", list(BAD_OBSERVATIONS))
def test_bad_observations(case):
    obj, message = BAD_OBSERVATIONS[case]
    with raises(message):
        parse_observation(obj)


def test_observation_log_errors(tmp_path):
    with raises(f"the observation log '{tmp_path / 'nope.jsonl'}' does not exist."):
        load_observations(tmp_path / "nope.jsonl")
    log = tmp_path / "eval.jsonl"
    log.write_text(json.dumps(OBS) + "\n\n" + '{"mixture": {"a": 1}, "mixture": {"a": 1}}\n')
    with raises(f"{log}:3 names 'mixture' twice."):
        load_observations(log)


def test_law_file_errors(tmp_path):
    path = tmp_path / "law.json"
    with raises(f"the law file '{path}' does not exist."):
        load_law(path)
    path.write_text(json.dumps({"law": "bimix"}))
    with raises(f"the law file '{path}' has no \"domains\" object."):
        load_law(path)
    path.write_text(json.dumps({"domains": {"a": {"A": 0, "alpha": 0.1, "B": 1, "beta": 0.5, "C": 1}}}))
    with raises(f"the law file '{path}': domain 'a' needs a finite A > 0."):
        load_law(path)
    path.write_text(json.dumps({"domains": {"a": {"A": 1, "alpha": 0.1, "B": 0, "beta": 0.5, "C": 0}}}))
    with raises(f"the law file '{path}': domain 'a' has B = C = 0."):
        load_law(path)


def test_fit_needs_enough_observations():
    few = [Observation({"a": 0.5, "b": 0.5}, s, "a", 3.0 - s / 1e4) for s in (100.0, 200.0, 300.0, 400.0)]
    with raises("domain 'a' has 4 observations; fitting needs at least 5."):
        fit_law(few)
    one_r = [Observation({"a": 0.5, "b": 0.5}, s, "a", 3.0 - s / 1e4) for s in (100.0, 200.0, 300.0, 400.0, 500.0)]
    with raises("domain 'a' is observed at a single proportion; fitting alpha needs at least 2 mixtures that differ in it."):
        fit_law(one_r)
    with raises("unknown holdout split 'time': use mixture, step or random."):
        split_holdout(one_r, 0.5, by="time")
