"""The promotion rule shared by churn and uplift, and DeLong's paired AUC behind the churn comparison."""

import numpy as np
import pytest

from training.metrics import auc, paired_auc
from training.promotion import Comparison, PromotionError, champion_version, kind_differences


def test_paired_auc_matches_the_bootstrap_and_its_difference_se_is_smaller_than_either_alone():
    rng = np.random.default_rng(0)
    n = 3000
    y = (rng.random(n) < 0.3).astype(float)
    shared = rng.normal(0, 1, n)  # both scores lean on the same signal: the pairing cancels most of it
    a, b = y + shared + rng.normal(0, 0.4, n), y + shared + rng.normal(0, 0.5, n)
    paired = paired_auc(y, a, b)
    assert paired["value_a"] == pytest.approx(auc(y, a)) and paired["value_b"] == pytest.approx(auc(y, b))
    draws = []
    for _ in range(300):
        i = rng.integers(0, n, n)
        draws.append((auc(y[i], a[i]), auc(y[i], b[i])))
    draws = np.array(draws)
    assert paired["se_a"] == pytest.approx(draws[:, 0].std(), rel=0.15)
    assert paired["se_difference"] == pytest.approx((draws[:, 0] - draws[:, 1]).std(), rel=0.15)
    assert paired["se_difference"] < 0.7 * min(paired["se_a"], paired["se_b"])


def test_paired_auc_of_a_score_with_itself_is_zero_with_zero_error():
    y = np.array([0, 0, 1, 1, 0, 1], dtype=float)
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    paired = paired_auc(y, s, s)
    assert paired["value_a"] == pytest.approx(8 / 9) and paired["difference"] == 0.0 and paired["se_difference"] == 0.0


def test_a_candidate_must_beat_the_champion_by_more_than_the_paired_standard_error():
    assert Comparison("auc", 100, 0.80, 0.02, 0.78, 0.02, 0.02, 0.01).beats
    assert not Comparison("auc", 100, 0.80, 0.02, 0.79, 0.02, 0.01, 0.01).beats  # within noise
    assert not Comparison("auc", 100, 0.80, 0.02, 0.80, 0.02, 0.0, 0.0).beats  # a tie keeps the champion


def test_kind_differences_name_every_field_that_differs():
    champion = {"source": "transactions", "horizon_days": 90, "label_rule": "r/v1"}
    assert kind_differences(dict(champion), champion) == []
    assert kind_differences({**champion, "horizon_days": 120}, champion) == ["horizon_days: champion 90, candidate 120"]


@pytest.fixture
def tracking(monkeypatch):
    """Point MLflow at a URI for one test, also over one an earlier test in this process set with
    `mlflow.set_tracking_uri`; both the variable and MLflow's own setting are restored afterwards."""
    from mlflow.tracking._tracking_service import utils

    def use(uri):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setattr(utils, "_tracking_uri", None)

    return use


def test_a_registry_that_cannot_be_reached_is_an_error_not_no_champion(tracking, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracking("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(PromotionError, match="cannot read the registry for 'winback-churn'"):
        champion_version("winback-churn")


def test_no_registered_model_means_no_champion(tmp_path, tracking):
    tracking(f"sqlite:///{tmp_path}/mlflow.db")
    assert champion_version("never-registered") is None
