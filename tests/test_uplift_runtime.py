"""Model: the uplift runtime reproduces scikit-uplift's predictions from bare boosters, and round-trips."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklift.models import ClassTransformation, SoloModel, TwoModels

from serving.runtime.decision.catalog import Catalog, Incentive
from serving.runtime.decision import CONTROL
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.uplift import UpliftRuntime
from training.uplift.learners import fit_runtime, lgbm_params

PARAMS = {"n_estimators": 30, "num_leaves": 7, "min_child_samples": 20}
CATALOG = Catalog("none", (Incentive("email", 0.1), Incentive("coupon", 0.5, redemption_cost=2.0)), 10.0)


@pytest.fixture(scope="module")
def campaign():
    """Randomised 3-arm log: the e-mail helps customers with x > 0, the coupon helps the 'b' region."""
    rng = np.random.default_rng(0)
    n = 1800
    frame = pd.DataFrame({"x": rng.normal(size=n), "region": rng.choice(["a", "b"], size=n)})
    arm = rng.choice([CONTROL, 0, 1], size=n)
    p = 0.2 + 0.2 * ((arm == 0) & (frame.x > 0)) + 0.25 * ((arm == 1) & (frame.region == "b"))
    y = (rng.random(n) < p).astype(int)
    encoder = FeatureEncoder().fit(frame)
    return frame, encoder, encoder.transform(frame), arm, y


def _sklift_uplift(kind, X, arm, y, j, categorical):
    rows = (arm == j) | (arm == CONTROL)
    treatment = (arm[rows] == j).astype(int)
    fit = {"categorical_feature": categorical}
    clf = lambda: lgb.LGBMClassifier(**lgbm_params(PARAMS, 7))  # noqa: E731
    if kind == "two_models":
        model = TwoModels(clf(), clf()).fit(X[rows], y[rows], treatment, fit, fit)
    elif kind == "solo_model":
        model = SoloModel(clf()).fit(X[rows], y[rows], treatment, fit)
    else:
        model = ClassTransformation(clf()).fit(X[rows], y[rows], treatment, fit)
    return model.predict(X)


@pytest.mark.parametrize("kind", ["two_models", "solo_model", "class_transformation"])
def test_runtime_uplift_equals_scikit_uplift_predict(campaign, kind):
    frame, encoder, X, arm, y = campaign
    runtime = fit_runtime(X, arm, y, encoder, CATALOG, kind, PARAMS, seed=7)
    if kind == "class_transformation":  # scikit-uplift decodes 2·P − 1, i.e. a treated share of ½
        runtime.recipes["outcome"]["treated_shares"] = [0.5, 0.5]
    uplift = runtime.predict(X).uplift
    for j in range(2):
        np.testing.assert_allclose(uplift[:, j], _sklift_uplift(kind, X, arm, y, j, encoder.categorical_indices),
                                   atol=1e-12)


def test_two_models_store_the_shared_control_booster_once(campaign):
    frame, encoder, X, arm, y = campaign
    runtime = fit_runtime(X, arm, y, encoder, CATALOG, "two_models", PARAMS, seed=7)
    assert len(runtime.boosters) == 3  # two treated models + one control model


def test_net_value_and_decision_follow_the_catalogue_formula(campaign):
    frame, encoder, X, arm, y = campaign
    runtime = fit_runtime(X, arm, y, encoder, CATALOG, "two_models", PARAMS, seed=7)
    pred = runtime.predict(X[:50])
    expected = 10.0 * pred.uplift - np.array([0.1, 0.5]) - np.array([0.0, 2.0]) * pred.p_arm
    np.testing.assert_allclose(pred.net_value, expected)
    best = np.argmax(expected, axis=1)
    want = np.where(expected.max(axis=1) > 0, best, CONTROL)
    assert pred.decision.tolist() == want.tolist()
    names = np.array(["email", "coupon", "none"], dtype=object)
    assert pred.incentive.tolist() == names[np.where(want == CONTROL, 2, want)].tolist()
    assert pred.expected_net_value.tolist() == [expected[i, w] if w >= 0 else 0.0 for i, w in enumerate(want)]


def test_catalogue_override_with_prohibitive_costs_sends_nothing(campaign):
    frame, encoder, X, arm, y = campaign
    runtime = fit_runtime(X, arm, y, encoder, CATALOG, "solo_model", PARAMS, seed=7)
    dear = Catalog("none", (Incentive("coupon", 100.0), Incentive("email", 100.0)), 10.0)
    pred = runtime.predict(X, catalog=dear)
    assert (pred.decision == CONTROL).all()
    np.testing.assert_allclose(pred.net_value, 10.0 * pred.uplift - 100.0)


@pytest.mark.parametrize("kind", ["two_models", "solo_model", "class_transformation"])
def test_saved_runtime_predicts_identically_without_pickle(campaign, tmp_path, kind):
    frame, encoder, X, arm, y = campaign
    runtime = fit_runtime(X, arm, y, encoder, CATALOG, kind, PARAMS, seed=7,
                          revenue=None if kind == "class_transformation" else y * 25.0,
                          metadata={"run_id": "r1", "learner": kind})
    loaded = UpliftRuntime.load(runtime.save(tmp_path / "rt"))
    assert {p.suffix for p in (tmp_path / "rt").iterdir()} == {".txt", ".json"}
    a, b = runtime.predict(X), loaded.predict(X)
    np.testing.assert_array_equal(a.net_value, b.net_value)
    np.testing.assert_array_equal(a.decision, b.decision)
    assert loaded.arms == ["email", "coupon"] and loaded.control == "none"
    assert loaded.metadata["learner"] == kind


def test_revenue_outcome_uses_revenue_uplift_in_net_value(campaign):
    frame, encoder, X, arm, y = campaign
    runtime = fit_runtime(X, arm, y, encoder, CATALOG, "two_models", PARAMS, seed=7, revenue=y * 25.0)
    pred = runtime.predict(X[:20])
    np.testing.assert_allclose(pred.revenue_uplift, pred.revenue_arm - pred.revenue_control[:, None])
    np.testing.assert_allclose(pred.net_value, pred.revenue_uplift - [0.1, 0.5] - np.array([0.0, 2.0]) * pred.p_arm)


def test_records_and_frame_encode_to_the_same_decision(campaign):
    frame, encoder, X, arm, y = campaign
    runtime = fit_runtime(X, arm, y, encoder, CATALOG, "solo_model", PARAMS, seed=7)
    head = frame.head(30)
    a = runtime.predict_frame(head)
    b = runtime.predict_records(head.to_dict("records"))
    np.testing.assert_array_equal(a.net_value, b.net_value)


def test_class_transformation_invents_no_uplift_on_an_unbalanced_split():
    """No true effect, 40 % treated, 10 % base rate: 2·P(z=1) − 1 would say +0.16 for everyone (and send
    to all); decoded with the treated share, the uplift is about zero and (almost) nobody gets a send."""
    import pandas as pd

    from serving.runtime.decision.catalog import Catalog
    from serving.runtime.encoding import FeatureEncoder
    from training.uplift.learners import fit_runtime

    rng = np.random.default_rng(7)
    n = 60_000
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.integers(0, 5, n).astype(float)})
    arm = np.where(rng.random(n) < 0.4, 0, -1)
    y = (rng.random(n) < 0.1).astype(int)
    encoder = FeatureEncoder().fit(frame)
    catalog = Catalog.from_dict({"control": "none", "outcome_value": 40.0,
                                 "incentives": [{"name": "mail", "cost": 1.5}]})
    params = {"n_estimators": 40, "learning_rate": 0.05, "num_leaves": 4, "min_child_samples": 2000, "n_jobs": 1}
    runtime = fit_runtime(encoder.transform(frame), arm, y, encoder, catalog, "class_transformation", params, seed=0)
    assert runtime.recipes["outcome"]["treated_shares"] == [pytest.approx(0.4, abs=0.01)]
    X = encoder.transform(frame)
    prediction = runtime.predict(X)
    observed = y[arm == 0].mean() - y[arm == -1].mean()
    assert abs(np.mean(prediction.uplift) - observed) < 0.005  # unbiased: centred on the observed difference
    assert np.mean(np.abs(prediction.uplift)) < 0.02
    assert np.mean(prediction.incentive == "mail") < 0.05

    runtime.recipes["outcome"].pop("treated_shares")  # read as a model saved before the share was recorded
    assert np.mean(runtime.predict_uplift(X)) > 0.1  # the textbook 2·P − 1: about +0.16 at this split
    assert np.mean(runtime.predict(X).incentive == "mail") > 0.95  # ... and a send for everyone


@pytest.mark.parametrize("learner", ["x_learner", "dr_learner"])
def test_effect_learners_find_who_each_incentive_moves_and_round_trip(campaign, learner, tmp_path):
    frame, encoder, X, arm, y = campaign
    runtime = fit_runtime(X, arm, y, encoder, CATALOG, learner, {**PARAMS, "n_estimators": 60}, 7)
    assert runtime.learner == learner and runtime.recipes["outcome"]["kind"] == "effect"
    uplift = runtime.predict_uplift(X)
    x_positive, region_b = (frame.x > 0).to_numpy(), (frame.region == "b").to_numpy()
    # the e-mail's estimated effect is larger where x > 0, the coupon's in region b (true effects .2 and .25)
    assert uplift[x_positive, 0].mean() - uplift[~x_positive, 0].mean() > 0.08
    assert uplift[region_b, 1].mean() - uplift[~region_b, 1].mean() > 0.08
    prediction = runtime.predict(X)
    np.testing.assert_allclose(prediction.p_arm, np.clip(prediction.p_control[:, None] + uplift, 0, 1))
    loaded = UpliftRuntime.load(runtime.save(tmp_path / "rt"))
    np.testing.assert_array_equal(loaded.predict_uplift(X), uplift)


def test_revenue_is_conversion_probability_times_each_arms_mean_revenue_per_conversion(campaign):
    from training.uplift.learners import revenue_per_conversion

    frame, encoder, X, arm, y = campaign
    revenue = np.where(y == 1, np.where(arm == 1, 50.0, 80.0), 0.0)  # the coupon's conversions spend less
    recipe = revenue_per_conversion(arm, y, revenue, 2)
    assert recipe == {"kind": "hurdle", "amount_control": 80.0, "amounts": [80.0, 50.0]}
    runtime = fit_runtime(X, arm, y, encoder, CATALOG, "two_models", PARAMS, 7, revenue=revenue)
    prediction = runtime.predict(X)
    np.testing.assert_allclose(prediction.revenue_arm, prediction.p_arm * [80.0, 50.0])
    np.testing.assert_allclose(prediction.revenue_uplift,
                               prediction.p_arm * [80.0, 50.0] - 80.0 * prediction.p_control[:, None])
