"""The logistic-regression candidate and the blend: fitted in training, applied by the runtime (numpy only)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from serving.runtime.churn import ChurnRuntime
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.linear import blend, decision_function, design
from training.churn.linear import fit_linear, predict_linear
from training.churn.train import choose_scorer
from training.metrics import auc


def _frame(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    spend = rng.lognormal(3, 1.2, n)
    visits = rng.poisson(3, n).astype(float)
    visits[rng.random(n) < 0.1] = np.nan
    region = rng.choice(["north", "south", "east"], n)
    z = -1.2 * np.log1p(spend) + 3.5 + 0.8 * (region == "south") - 0.3 * np.nan_to_num(visits, nan=3)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    frame = pd.DataFrame({"spend": spend, "visits": visits, "region": pd.Categorical(region)})
    return frame, y


def test_design_logs_non_negative_columns_fills_missing_flags_them_and_one_hot_encodes_levels():
    frame, y = _frame()
    encoder = FeatureEncoder().fit(frame)
    model = fit_linear(encoder.transform(frame), y, encoder)
    spend, visits, region = model["columns"]
    assert (spend["log"], spend["missing_flag"], visits["missing_flag"]) == (True, False, True)
    assert region == {"name": "region", "index": 2, "kind": "category", "levels": 3}
    Z = design(encoder.transform(frame), model)
    assert Z.shape == (len(frame), 1 + 2 + 3)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-9)
    raw = np.log1p(frame["spend"].to_numpy())
    np.testing.assert_allclose(Z[:, 0], (raw - raw.mean()) / raw.std())


def test_linear_model_equals_sklearn_on_its_design_and_learns_the_true_direction():
    frame, y = _frame()
    encoder = FeatureEncoder().fit(frame)
    X = encoder.transform(frame)
    model = fit_linear(X, y, encoder)
    Z = design(X, model)
    reference = LogisticRegression(max_iter=2000).fit(Z, y.astype(int))
    np.testing.assert_allclose(predict_linear(X, model), reference.predict_proba(Z)[:, 1], rtol=1e-6)
    assert model["coef"][0] < 0  # more spend, less churn


def test_linear_runtime_scores_gives_reasons_that_add_up_and_survives_save_and_load(tmp_path):
    frame, y = _frame()
    encoder = FeatureEncoder().fit(frame)
    X = encoder.transform(frame)
    model = fit_linear(X, y, encoder)
    import lightgbm as lgb

    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(X, y), 10)
    runtime = ChurnRuntime(encoder, booster.model_to_string(), {"method": "none"}, {"high": 0.8, "medium": 0.5},
                           scorer={"kind": "linear"}, linear=model)
    p = runtime.predict_proba(X)
    np.testing.assert_allclose(p, predict_linear(X, model))
    contributions = runtime.contributions(X[:50])
    np.testing.assert_allclose(contributions.sum(axis=1), decision_function(X[:50], model), rtol=1e-9)
    loaded = ChurnRuntime.load(runtime.save(tmp_path / "rt"))
    np.testing.assert_array_equal(loaded.predict_proba(X), p)
    blended = ChurnRuntime(encoder, booster.model_to_string(), {"method": "none"}, {"high": 0.8, "medium": 0.5},
                           scorer={"kind": "blend", "weight": 0.3}, linear=model)
    np.testing.assert_allclose(blended.predict_proba(X), blend(booster.predict(X), p, 0.3))


def test_the_blend_ships_unless_one_model_alone_beats_it_by_more_than_the_paired_se():
    rng = np.random.default_rng(1)
    n = 3000
    y = (rng.random(n) < 0.4).astype(float)
    squash = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731
    signal = y + rng.normal(0, 0.8, n)
    # the two see the same signal with independent errors: their mix beats either alone
    a, b = squash(signal + rng.normal(0, 0.6, n)), squash(signal + rng.normal(0, 0.6, n))
    scorer, candidates, p = choose_scorer(y, a, b)
    assert scorer["kind"] == "blend" and 0.3 <= scorer["weight"] <= 0.7
    np.testing.assert_allclose(p, blend(a, b, scorer["weight"]))
    assert candidates["blend"]["validation_auc"] > max(candidates["lightgbm"]["validation_auc"],
                                                       candidates["linear"]["validation_auc"])
    # the regression sees the signal, the trees only noise: the regression alone wins clearly
    noise = squash(rng.normal(0, 1, n))
    scorer, candidates, p = choose_scorer(y, noise, squash(signal))
    assert scorer == {"kind": "linear"} and candidates["linear"]["difference_to_blend"] > \
        candidates["linear"]["difference_se"] > 0
    assert auc(y, p) == candidates["linear"]["validation_auc"]
    # and the other way round
    assert choose_scorer(y, squash(signal), noise)[0] == {"kind": "lightgbm"}


def test_unknown_scorer_or_a_missing_linear_model_is_refused():
    from features.errors import DataError

    frame, y = _frame(200)
    encoder = FeatureEncoder().fit(frame)
    with pytest.raises(DataError, match="needs the linear model"):
        ChurnRuntime(encoder, "", {"method": "none"}, {}, scorer={"kind": "blend", "weight": 0.5})
    with pytest.raises(DataError, match="unknown churn scorer"):
        ChurnRuntime(encoder, "", {"method": "none"}, {}, scorer={"kind": "forest"})


def test_a_warm_start_reaches_the_same_regression_and_a_start_of_another_shape_is_ignored():
    frame, y = _frame()
    encoder = FeatureEncoder().fit(frame)
    X = encoder.transform(frame)
    full = fit_linear(X, y, encoder)
    rows = np.random.default_rng(1).integers(0, len(y), len(y))  # a bootstrap resample, as the level interval draws
    cold, warm = fit_linear(X[rows], y[rows], encoder), fit_linear(X[rows], y[rows], encoder, start=full)
    assert np.abs(predict_linear(X, cold) - predict_linear(X, warm)).max() < 1e-3
    assert np.abs(predict_linear(X, cold) - predict_linear(X, full)).max() > 1e-3  # the resample moved the fit
    other = {**full, "coef": full["coef"][:-1]}
    assert fit_linear(X[rows], y[rows], encoder, start=other)["coef"] == pytest.approx(cold["coef"])
