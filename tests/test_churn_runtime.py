"""Unit tests of the churn runtime model: calibration, tiers, segments, reasons, persistence."""

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from serving.runtime.churn import ChurnRuntime, apply_calibration, stack_terms
from serving.runtime.encoding import FeatureEncoder

FEATURES = ["recency_days", "frequency", "tenure_days", "overdue_ratio", "spend_365d", "top_channel"]


def feature_frame(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers whose churn follows recency; the label is returned separately."""
    rng = np.random.default_rng(seed)
    recency = rng.integers(0, 400, n).astype(float)
    frame = pd.DataFrame({
        "recency_days": recency,
        "frequency": rng.integers(1, 10, n).astype(float),
        "tenure_days": recency + rng.integers(0, 300, n),
        "overdue_ratio": np.where(rng.random(n) < 0.2, np.nan, rng.random(n) * 5),
        "spend_365d": rng.gamma(2.0, 50.0, n),
        "top_channel": rng.choice(["app", "store", "web"], n),
    }, index=pd.Index([f"c{i}" for i in range(n)], name="customer_id"))
    y = (rng.random(n) < recency / 400).astype(float)
    return frame, y


def make_runtime(calibration=None, horizon_days: int = 180) -> tuple[ChurnRuntime, pd.DataFrame]:
    frame, y = feature_frame()
    encoder = FeatureEncoder(FEATURES).fit(frame)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 4, "seed": 0, "num_threads": 1},
                        lgb.Dataset(encoder.transform(frame), y, categorical_feature=encoder.categorical_indices),
                        num_boost_round=20)
    runtime = ChurnRuntime(encoder, booster.model_to_string(), calibration or {"method": "platt", "a": 1.0, "b": 0.0},
                           {"high": 0.8, "medium": 0.5}, horizon_days=horizon_days,
                           value_tier_thresholds=(100.0, 500.0), segment_config={},
                           metadata={"run_id": "r1", "horizon_days": horizon_days})
    return runtime, frame


def test_identity_platt_calibration_returns_the_booster_probability():
    runtime, frame = make_runtime()
    X = runtime.encoder.transform(frame)
    np.testing.assert_allclose(runtime.predict_proba(X), runtime.booster.predict(X), rtol=1e-9, atol=1e-6)


def test_platt_calibration_by_hand():
    # sigmoid(2 · logit(0.75)) = 0.75² / (0.75² + 0.25²) = 0.9
    assert apply_calibration(np.array([0.5, 0.75]), {"method": "platt", "a": 2.0, "b": 0.0}) == pytest.approx([0.5, 0.9])
    assert apply_calibration(np.array([0.25]), {"method": "isotonic", "x": [0, 0.5], "y": [0.1, 0.3]}) == \
        pytest.approx([0.2])


def test_logistic_stack_adds_log1p_terms_to_the_booster_logit_by_hand():
    # columns frequency, recency_days of rows (recency 0, frequency e−1) and (recency e²−1, frequency −3 → 0):
    # terms = [[1, 0], [0, 2]]; z = 2·logit(0.5) + 0.5 + terms·[−1, 0.25] = [−0.5, 1.0]
    X = np.array([[0.0, np.e - 1], [np.e**2 - 1, -3.0]])
    terms = stack_terms(X, ["recency_days", "frequency"], ["frequency", "recency_days"])
    np.testing.assert_allclose(terms, [[1.0, 0.0], [0.0, 2.0]])
    calibration = {"method": "logistic_stack", "a": 2.0, "b": 0.5, "columns": ["frequency", "recency_days"],
                   "weights": [-1.0, 0.25]}
    expected = 1 / (1 + np.exp([0.5, -1.0]))
    assert apply_calibration(np.array([0.5, 0.5]), calibration, terms) == pytest.approx(expected)


def test_btyd_stack_term_is_bgnbd_log_odds_of_no_purchase_by_hand():
    from serving.runtime.churn import btyd_silent_logit
    from serving.runtime.value.btyd import BgNbd

    bgnbd = {"r": 0.5, "alpha": 20.0, "a": 0.8, "b": 2.5}
    names = ["frequency", "recency_days", "tenure_days"]
    # one purchase 10 days ago (x = 0: alive for sure); 4 purchase days, last 200 days ago over 300 days; no purchase
    X = np.array([[1.0, 10.0, 10.0], [4.0, 200.0, 300.0], [np.nan, np.nan, np.nan]])
    model = BgNbd(**bgnbd)
    silent_new = ((20.0 + 10.0) / (20.0 + 10.0 + 90.0)) ** 0.5  # x = 0: alive, P(silent) = E[exp(−λt)]
    p_old = model.p_alive(3.0, 100.0, 300.0) * (1 - ((20.0 + 300.0) / (20.0 + 390.0)) ** 3.5)
    p_none = 1 - (20.0 / 110.0) ** 0.5
    expected = np.log(np.array([silent_new / (1 - silent_new), (1 - p_old) / p_old, (1 - p_none) / p_none]))
    np.testing.assert_allclose(btyd_silent_logit(X, names, bgnbd, 90), expected, rtol=1e-9, atol=1e-12)
    # the stack appends it after the log1p terms, and the runtime reads the stored fit
    terms = stack_terms(X, names, ["frequency"], {"bgnbd": bgnbd, "horizon_days": 90})
    np.testing.assert_allclose(terms[:, 1], expected, rtol=1e-9, atol=1e-12)
    assert stack_terms(X, names, ["frequency"]).shape == (3, 1)


def test_stacked_runtime_ranks_beyond_the_booster_and_survives_save_and_load(tmp_path):
    calibration = {"method": "logistic_stack", "a": 1.0, "b": 0.0, "columns": ["recency_days"], "weights": [1.0]}
    runtime, frame = make_runtime(calibration)
    rows = pd.concat([frame.head(1).assign(recency_days=500.0), frame.head(1).assign(recency_days=1500.0)])
    X = runtime.encoder.transform(rows)
    raw = runtime.predict_raw(X)
    assert raw[0] == raw[1]  # both lie beyond every training recency (< 400), so the trees tie them
    p = runtime.predict_proba(X)
    logit = np.log(raw / (1 - raw)) + np.log1p(X[:, 0])
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-logit)))
    assert p[1] > p[0]
    runtime.save(tmp_path / "rt")
    np.testing.assert_array_equal(ChurnRuntime.load(tmp_path / "rt").predict_proba(X), p)


def test_risk_tiers_use_inclusive_thresholds():
    runtime, _ = make_runtime()
    assert runtime.risk_tier([0.9, 0.8, 0.6, 0.5, 0.1]).tolist() == ["high", "high", "medium", "medium", "low"]


def test_segments_follow_segment_rules_and_stored_value_thresholds():
    runtime, _ = make_runtime()
    rows = pd.DataFrame({"recency_days": [400.0, 10, 20], "frequency": [3.0, 1, 4], "tenure_days": [500.0, 30, 300],
                         "overdue_ratio": [2.0, np.nan, 1.0], "spend_365d": [0.0, 200.0, 600.0],
                         "top_channel": ["app", "web", "store"]})
    stage, tier = runtime.segments(runtime.encoder.transform(rows))
    assert stage.tolist() == ["churned", "new", "active"]
    assert tier.tolist() == ["low", "mid", "high"]


def test_a_model_without_purchase_totals_has_no_value_model_and_answers_missing_values():
    runtime, frame = make_runtime(horizon_days=180)
    scored = runtime.score_frame(frame.head(3))
    assert runtime.value is None
    assert scored[["expected_spend", "value_if_retained", "value_at_risk", "clv_12m"]].isna().all().all()


def test_contributions_add_up_to_the_raw_log_odds_and_reasons_rank_them():
    runtime, frame = make_runtime()
    X = runtime.encoder.transform(frame.head(5))
    contrib = runtime.contributions(X)
    np.testing.assert_allclose(contrib.sum(axis=1), runtime.booster.predict(X, raw_score=True), atol=1e-9)
    reasons = runtime.reasons(X, top=2)
    first = contrib[0, :-1]
    assert [name for name, _ in reasons[0]] == [FEATURES[j] for j in np.argsort(-first)[:2]]
    assert reasons[0][0][1] == pytest.approx(first.max())


def test_saved_runtime_is_json_plus_booster_text_and_predicts_identically(tmp_path):
    runtime, frame = make_runtime()
    runtime.save(tmp_path / "rt")
    assert sorted(p.name for p in (tmp_path / "rt").iterdir()) == ["booster.txt", "runtime.json"]
    doc = json.loads((tmp_path / "rt" / "runtime.json").read_text())
    assert doc["encoder"]["categories"]["top_channel"] == ["app", "store", "web"]
    loaded = ChurnRuntime.load(tmp_path / "rt")
    X = runtime.encoder.transform(frame)
    np.testing.assert_array_equal(loaded.predict_proba(X), runtime.predict_proba(X))
    assert loaded.metadata == {"run_id": "r1", "horizon_days": 180} and loaded.value_tier_thresholds == (100.0, 500.0)


def test_score_frame_keeps_the_customer_index_and_has_the_value_columns():
    runtime, frame = make_runtime()
    scored = runtime.score_frame(frame.head(3))
    assert list(scored.columns) == ["churn_probability", "risk_tier", "lifecycle_stage", "value_tier",
                                    "expected_spend", "value_if_retained", "value_at_risk", "clv_12m"]
    assert list(scored.index) == ["c0", "c1", "c2"]
