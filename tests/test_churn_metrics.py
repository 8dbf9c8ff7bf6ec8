"""Unit tests of the validation metrics against hand-computed values."""

import math

import numpy as np
import pytest

from features.errors import DataError
from training.metrics import auc, brier, classification_summary, lift_at, logloss, pr_auc


def test_auc_counts_correctly_ordered_pairs():
    # pairs (pos, neg): (0.35 vs 0.1 ✓), (0.35 vs 0.4 ✗), (0.8 vs 0.1 ✓), (0.8 vs 0.4 ✓) → 3/4
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_lift_at_ten_percent_is_top_decile_rate_over_base_rate():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1] * 2)  # base rate 0.2
    score = np.arange(20)[::-1].astype(float)  # rows 0 and 1 score highest: labels 1 and 0
    assert lift_at(y, score, 0.10) == pytest.approx(0.5 / 0.2)


def test_brier_and_logloss_by_hand():
    assert brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    assert logloss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))


def test_pr_auc_is_one_when_every_positive_ranks_first():
    assert pr_auc([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2]) == pytest.approx(1.0)


def test_summary_reports_size_and_churn_rate():
    summary = classification_summary([1, 1, 1, 0], [0.9, 0.8, 0.3, 0.2])
    assert summary["n"] == 4 and summary["churn_rate"] == 0.75 and summary["auc"] == pytest.approx(1.0)


@pytest.mark.parametrize("y,score", [([0, 1], [0.5]), ([0, 2], [0.1, 0.2]), ([0, 1], [np.nan, 0.2])])
def test_metrics_refuse_mismatched_or_invalid_inputs(y, score):
    with pytest.raises(DataError):
        auc(y, score)
