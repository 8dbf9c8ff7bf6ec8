"""Lifecycle stage and value tier per customer, from the point-in-time features.

The stage follows each customer's own rhythm: `overdue_ratio` says how many usual gaps a customer
has been silent. Customers with a single purchase day have no rhythm, so absolute day limits
stand in. The rules are plain numpy functions so that the serving layer applies the very same
code to one request; value tiers there use thresholds computed once from a population.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

STAGES = ("new", "active", "at_risk", "dormant", "churned", "prospect")
TIERS = ("high", "mid", "low")


@dataclass(frozen=True)
class SegmentConfig:
    """Limits of the lifecycle stages and value tiers; every limit is inclusive ("up to").

    Stage rules, first match wins:
      0. no purchase yet (recency_days missing: engagement events only) → prospect
      1. recency_days > churned_min_days                  → churned (whatever the rhythm)
      2. tenure_days <= new_max_tenure_days               → new
      3. with a rhythm (2+ purchase days), overdue_ratio  ≤ active_max_overdue → active,
         ≤ at_risk_max_overdue → at_risk, ≤ dormant_max_overdue → dormant, else churned
      4. one purchase day: recency_days ≤ single_active_days → active,
         ≤ single_at_risk_days → at_risk, ≤ single_dormant_days → dormant, else churned
    Value tiers rank customers with positive `value_column` (spend in the last 365 days by
    default): the top `high_share` of them are high, the next `mid_share` mid; the rest and
    everyone with zero or negative value are low. Ties at a threshold go to the higher tier.
    """

    new_max_tenure_days: float = 60
    active_max_overdue: float = 1.5
    at_risk_max_overdue: float = 3.0
    dormant_max_overdue: float = 6.0
    single_active_days: float = 90
    single_at_risk_days: float = 180
    single_dormant_days: float = 365
    churned_min_days: float = 365
    value_column: str = "spend_365d"
    high_share: float = 0.20
    mid_share: float = 0.30


def _categorical(labels: np.ndarray, categories: tuple[str, ...]) -> pd.Categorical:
    return pd.Categorical(labels, categories=pd.Index(categories, dtype="str"))


def assign_stage(recency_days, tenure_days, overdue_ratio, config: SegmentConfig = SegmentConfig()) -> np.ndarray:
    """Lifecycle stage label per customer (numpy array of str) from three aligned arrays."""
    recency = np.asarray(recency_days, dtype=float)
    tenure = np.asarray(tenure_days, dtype=float)
    overdue = np.asarray(overdue_ratio, dtype=float)
    rhythm = ~np.isnan(overdue)
    conditions = [
        np.isnan(recency),
        recency > config.churned_min_days,
        tenure <= config.new_max_tenure_days,
        np.where(rhythm, overdue <= config.active_max_overdue, recency <= config.single_active_days),
        np.where(rhythm, overdue <= config.at_risk_max_overdue, recency <= config.single_at_risk_days),
        np.where(rhythm, overdue <= config.dormant_max_overdue, recency <= config.single_dormant_days),
    ]
    choices = ["prospect", "churned", "new", "active", "at_risk", "dormant"]
    return np.select(conditions, choices, default="churned")


def value_tier_thresholds(features: pd.DataFrame, config: SegmentConfig = SegmentConfig()) -> tuple[float, float]:
    """(mid_min, high_min): the lowest value that is mid and that is high, over positive values.

    Linear-interpolated quantiles of the positive values at 1 - high_share - mid_share and
    1 - high_share; (inf, inf) when nobody has a positive value, so everyone is low.
    """
    values = features[config.value_column].to_numpy(dtype=float)
    positive = values[values > 0]
    if len(positive) == 0:
        return (np.inf, np.inf)
    mid_min, high_min = np.quantile(positive, [1 - config.high_share - config.mid_share, 1 - config.high_share])
    return (float(mid_min), float(high_min))


def assign_value_tier(spend, thresholds: tuple[float, float]) -> np.ndarray:
    """Value tier label per customer (numpy array of str); zero or negative spend is always low."""
    value = np.asarray(spend, dtype=float)
    mid_min, high_min = thresholds
    positive = value > 0
    conditions = [positive & (value >= high_min), positive & (value >= mid_min)]
    return np.select(conditions, ["high", "mid"], default="low")


def segment(
    features: pd.DataFrame, config: SegmentConfig = SegmentConfig(), thresholds: tuple[float, float] | None = None
) -> pd.DataFrame:
    """Copy of `features` with `lifecycle_stage` and `value_tier` (categoricals in fixed order).

    Value thresholds come from `features` itself unless given (e.g. fixed at training time).
    """
    thresholds = value_tier_thresholds(features, config) if thresholds is None else thresholds
    out = features.copy()
    stage = assign_stage(features["recency_days"], features["tenure_days"], features["overdue_ratio"], config)
    out["lifecycle_stage"] = _categorical(stage, STAGES)
    out["value_tier"] = _categorical(assign_value_tier(features[config.value_column], thresholds), TIERS)
    return out


def segment_summary(segmented: pd.DataFrame) -> pd.DataFrame:
    """Customers, share of customers and spend in the last 365 days per stage × tier (every cell, empty ones too)."""
    total = len(segmented)
    cells = pd.DataFrame({
        "lifecycle_stage": _categorical(segmented["lifecycle_stage"].to_numpy(), STAGES),
        "value_tier": _categorical(segmented["value_tier"].to_numpy(), TIERS),
        "spend_365d": segmented["spend_365d"].to_numpy(dtype=float),
    })
    grouped = cells.groupby(["lifecycle_stage", "value_tier"], observed=False)["spend_365d"]
    summary = grouped.agg(customers="size", spend_365d="sum").reset_index()
    summary["customers"] = summary["customers"].astype("int64")
    summary["share"] = summary["customers"] / total if total else 0.0
    return summary[["lifecycle_stage", "value_tier", "customers", "share", "spend_365d"]]
