"""Lifecycle stages follow each customer's rhythm; value tiers rank recent spend; both are fixed categories."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from features.segment import (
    STAGES,
    TIERS,
    SegmentConfig,
    assign_stage,
    assign_value_tier,
    segment,
    segment_summary,
    value_tier_thresholds,
)

NAN = np.nan
# (recency_days, tenure_days, overdue_ratio) → stage under the default config
STAGE_CASES = [
    ((10, 60, NAN), "new"),        # tenure 60 ≤ new_max_tenure_days 60
    ((50, 55, 10.0), "new"),       # new wins over a bad rhythm
    ((10, 61, NAN), "active"),     # one purchase day: recency 10 ≤ 90
    ((30, 200, 1.5), "active"),    # overdue 1.5 ≤ 1.5
    ((31, 200, 1.55), "at_risk"),  # 1.55 > 1.5
    ((60, 200, 3.0), "at_risk"),
    ((61, 200, 3.05), "dormant"),
    ((120, 200, 6.0), "dormant"),
    ((121, 200, 6.05), "churned"),  # past 6 usual gaps
    ((90, 90, NAN), "active"),
    ((91, 91, NAN), "at_risk"),
    ((180, 180, NAN), "at_risk"),
    ((181, 181, NAN), "dormant"),
    ((365, 365, NAN), "dormant"),
    ((366, 366, NAN), "churned"),
    ((366, 1000, 0.5), "churned"),  # past churned_min_days whatever the rhythm
]


def test_each_stage_and_its_boundaries_under_default_config():
    rows, expected = zip(*STAGE_CASES)
    recency, tenure, overdue = map(np.array, zip(*rows))
    assert assign_stage(recency, tenure, overdue, SegmentConfig()).tolist() == list(expected)


def test_config_override_changes_the_stage():
    recency, tenure, overdue = np.array([31, 10]), np.array([200, 60]), np.array([1.55, NAN])
    assert assign_stage(recency, tenure, overdue).tolist() == ["at_risk", "new"]
    looser = SegmentConfig(active_max_overdue=2.0, new_max_tenure_days=30)
    assert assign_stage(recency, tenure, overdue, looser).tolist() == ["active", "active"]


def test_config_is_frozen_and_round_trips_through_a_dict():
    config = SegmentConfig(churned_min_days=200)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.churned_min_days = 1
    assert SegmentConfig(**dataclasses.asdict(config)) == config


def test_value_thresholds_are_quantiles_of_positive_spend():
    # positives 1..10: 50 % quantile 5.5, 80 % quantile 1 + 0.8 * 9 = 8.2; zero and refunds are ignored
    features = pd.DataFrame({"spend_365d": [0.0, *range(1, 11), -3.0]})
    assert value_tier_thresholds(features) == pytest.approx((5.5, 8.2))
    tiers = assign_value_tier(features["spend_365d"], (5.5, 8.2)).tolist()
    assert tiers == ["low"] * 6 + ["mid"] * 3 + ["high"] * 2 + ["low"]


def test_ties_at_a_threshold_go_to_the_higher_tier_and_zero_stays_low():
    features = pd.DataFrame({"spend_365d": [5.0, 5.0, 5.0, 5.0, 0.0]})
    thresholds = value_tier_thresholds(features)
    assert thresholds == (5.0, 5.0)
    assert assign_value_tier(features["spend_365d"], thresholds).tolist() == ["high"] * 4 + ["low"]


def test_nobody_with_spend_makes_everyone_low():
    features = pd.DataFrame({"spend_365d": [0.0, 0.0]})
    assert value_tier_thresholds(features) == (np.inf, np.inf)
    assert assign_value_tier(features["spend_365d"], (np.inf, np.inf)).tolist() == ["low", "low"]


def features_frame():
    return pd.DataFrame(
        {
            "recency_days": [5.0, 40.0, 400.0, 20.0],
            "tenure_days": [300.0, 300.0, 900.0, 20.0],
            "overdue_ratio": [0.5, 1.0, 2.0, NAN],
            "spend_365d": [10.0, 20.0, 0.0, 5.0],
        },
        index=pd.Index(["a", "b", "c", "d"], dtype="str", name="customer_id"),
    )


def test_segment_adds_stage_and_tier_as_ordered_categories_without_touching_input():
    features = features_frame()
    out = segment(features)
    # positives 5, 10, 20: mid_min = median 10; high_min at position 0.8 * 2 = 1.6 → 10 + 0.6 * 10 = 16
    assert out["lifecycle_stage"].tolist() == ["active", "active", "churned", "new"]
    assert out["value_tier"].tolist() == ["mid", "high", "low", "low"]
    assert out["lifecycle_stage"].cat.categories.tolist() == list(STAGES)
    assert out["value_tier"].cat.categories.tolist() == list(TIERS)
    assert "lifecycle_stage" not in features.columns


def test_segment_uses_given_thresholds_and_config_value_column():
    features = features_frame().assign(monetary_total=[1.0, 2.0, 300.0, 4.0])
    assert segment(features, thresholds=(1.0, 100.0))["value_tier"].tolist() == ["mid", "mid", "low", "mid"]
    by_total = segment(features, SegmentConfig(value_column="monetary_total"))["value_tier"]
    assert by_total.tolist()[2] == "high"


def test_summary_counts_share_and_spend_per_stage_and_tier():
    summary = segment_summary(segment(features_frame()))
    assert len(summary) == len(STAGES) * len(TIERS)  # every stage × tier, empty cells included
    cells = summary.set_index(["lifecycle_stage", "value_tier"])
    assert cells.loc[("active", "high")].tolist() == [1, 0.25, 20.0]
    assert cells.loc[("active", "mid")].tolist() == [1, 0.25, 10.0]
    assert cells.loc[("churned", "low")].tolist() == [1, 0.25, 0.0]
    assert cells.loc[("new", "low")].tolist() == [1, 0.25, 5.0]
    assert cells["customers"].sum() == 4 and cells["spend_365d"].sum() == 35.0
