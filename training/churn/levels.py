"""How far the churn level as of the cutoff can be trusted: how far scoring leaves what the labels covered, the
totals the model predicts for the cutoff's customers beside BG/NBD's, and how much those totals move when the
layers that set the level are refitted on resamples of their own rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from serving.runtime.churn import ChurnRuntime
from serving.runtime.value import rfm_from_columns
from serving.runtime.value.btyd import expected_spend
from training.churn.data import ChurnData

EXTRAPOLATION_COLUMNS = ("tenure_days", "recency_days")
EXTRAPOLATION_WARNING = 0.5  # share of customers beyond every labelled row above which training says so


def extrapolation(data: ChurnData) -> dict | None:
    """How far scoring as of the cutoff leaves what the labels covered: per column of EXTRAPOLATION_COLUMNS, the
    largest value among the labelled rows (training + validation) and the share of customers as of the cutoff
    beyond it. Labelled snapshots are a horizon or more older than the cutoff, so every customer is older there;
    when most are older (or silent for longer) than any labelled customer, the churn level as of the cutoff is an
    extrapolation of the models (trees stay flat, regression terms go on), which no validation figure checks."""
    latest = data.latest_features
    if data.kind != "transactions" or latest is None:
        return None
    labelled = pd.concat([data.train, data.valid])
    out = {}
    for column in EXTRAPOLATION_COLUMNS:
        if column in labelled and column in latest:
            most = float(labelled[column].max())
            out[column] = {"labelled_max": most, "share_beyond": float((latest[column] > most).mean())}
    return out or None


LEVEL_WARNING = 0.10  # |model / BTYD − 1| of the cutoff's totals above which training says so, when extrapolated
LEVEL_BOOTSTRAP = 20  # resamples behind the totals' interval (`ChurnTrainConfig.level_bootstrap`)
LEVEL_INTERVAL = 0.90  # the interval: the total × exp(± z·sd of the log of the resampled totals), z of 90 %
LEVEL_Z = 1.6449
# customers per resample at most: a larger layer is resampled m out of n and the spread scaled by √(m/n)
LEVEL_BOOTSTRAP_GROUPS = 100_000


@dataclass(frozen=True)
class LevelLayers:
    """The two fitted layers that set the churn level and how to refit each on a resample of its rows: the
    booster's calibration (`calibration(rows)` → a calibration dict) and the logistic regression (`linear(rows)` →
    its dict), `rows` being positions into that layer's own rows. Each layer's rows carry their customer ids
    (`*_groups`; a customer's rows are resampled together) and labels (`*_labels`)."""

    calibration: Callable[[np.ndarray], dict]
    calibration_groups: np.ndarray
    calibration_labels: np.ndarray
    linear: Callable[[np.ndarray], dict]
    linear_groups: np.ndarray
    linear_labels: np.ndarray


def grouped_resample(groups: np.ndarray, rng: np.random.Generator, share: float = 1.0) -> np.ndarray:
    """Row positions of a bootstrap resample by group: `share` of the groups there are (rounded up), drawn with
    replacement, each with all its rows."""
    codes, uniques = pd.factorize(np.asarray(groups))
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(uniques))
    starts = np.cumsum(counts) - counts
    drawn = rng.integers(0, len(uniques), int(np.ceil(share * len(uniques))))
    lengths = counts[drawn]
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return order[np.repeat(starts[drawn], lengths) + offsets]


def _both_classes(labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator, share: float) -> np.ndarray | None:
    for _ in range(10):
        rows = grouped_resample(groups, rng, share)
        if len(np.unique(labels[rows])) == 2:
            return rows
    return None


def resampled_totals(runtime: ChurnRuntime, X: np.ndarray, retained: np.ndarray, layers: LevelLayers,
                     replicates: int, seed: int, raw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(expected buyers, expected spend) of the encoded customers `X` under `replicates` refits of the level layers
    the runtime's scorer uses, each on a bootstrap resample of its own rows (by customer), the booster and
    `value_if_retained` (`retained`) held fixed. Layers of more than LEVEL_BOOTSTRAP_GROUPS customers are
    resampled m out of n (the same share m/n for both), each total's departure from the runtime's own scaled by
    √(m/n): the refits stay as cheap as at that size. `raw`: the booster's scores of X, when at hand. None when
    resamples keep missing a class."""
    rng = np.random.default_rng(seed)
    kind = runtime.scorer["kind"]
    if raw is None and kind != "linear":
        raw = runtime.predict_raw(X)  # the booster is held fixed: its scores once
    largest = max(len(pd.unique(np.asarray(layers.calibration_groups))), len(pd.unique(np.asarray(layers.linear_groups))))
    share = min(1.0, LEVEL_BOOTSTRAP_GROUPS / max(largest, 1))
    buyers, spend = np.empty(replicates), np.empty(replicates)
    for b in range(replicates):
        other = runtime.with_calibration(runtime.calibration)
        if kind != "linear":
            rows = _both_classes(layers.calibration_labels, layers.calibration_groups, rng, share)
            if rows is None:
                return None
            other.calibration = layers.calibration(rows)
        if kind != "lightgbm":
            rows = _both_classes(layers.linear_labels, layers.linear_groups, rng, share)
            if rows is None:
                return None
            other.linear = layers.linear(rows)
        retained_share = 1.0 - other.predict_proba(X, raw)
        buyers[b], spend[b] = retained_share.sum(), (retained_share * retained).sum()
    if share < 1.0:
        point = 1.0 - runtime.predict_proba(X, raw)
        for totals, own in ((buyers, point.sum()), (spend, (point * retained).sum())):
            totals[:] = own + (totals - own) * np.sqrt(share)
    return buyers, spend


def cutoff_levels(runtime: ChurnRuntime, latest: pd.DataFrame | None, layers: LevelLayers | None = None,
                  replicates: int = LEVEL_BOOTSTRAP, seed: int = 0) -> dict | None:
    """The totals the model predicts for every customer as of the cutoff, beside those of BG/NBD (× Gamma-Gamma)
    fitted on the same customers: expected buyers in the horizon (Σ 1 − churn_probability against Σ P(purchase))
    and expected spend (Σ expected_spend against BG/NBD × Gamma-Gamma's). Where the labels cover the scored
    customers, the model's level is the validated one and a gap is mostly BG/NBD's own error; where scoring
    leaves them (`extrapolation`), no label checks the model's level, and the gap says how unsure it is.

    With `layers` and `replicates` > 0, also `bootstrap`: a LEVEL_INTERVAL interval of both totals, each total
    × exp(± z · the standard deviation of log `resampled_totals`) (a normal interval: steadier than percentiles of
    a few dozen resamples). It is the spread from the rows the calibration and regression were fitted on alone —
    a floor under the totals' uncertainty, not a coverage promise: the booster's own variance and any bias of an
    extrapolation are left out. None without a value model (a customer table, or BTYD not fitted)."""
    value = runtime.value
    if latest is None or value is None or latest.empty or not set(runtime.feature_names) <= set(latest.columns):
        return None
    X = runtime.encoder.transform(latest)
    raw = runtime.predict_raw(X) if runtime.scorer["kind"] != "linear" else None  # once, for the resamples too
    p = runtime.predict_proba(X, raw)
    scores = runtime.values(X, p)
    rfm = rfm_from_columns(lambda name: X[:, runtime.feature_names.index(name)])
    horizon = float(value.horizon_days)
    out = {"customers": int(len(X)),
           "expected_buyers": float((1.0 - p).sum()),
           "expected_buyers_bgnbd": float(value.bgnbd.p_purchase(rfm.x, rfm.t_x, rfm.age, horizon).sum()),
           "expected_spend": float(scores["expected_spend"].sum()),
           "expected_spend_btyd": float(expected_spend(value.bgnbd, value.gamma_gamma, rfm, horizon).sum())}
    if layers is not None and replicates > 0:
        totals = resampled_totals(runtime, X, scores["value_if_retained"], layers, replicates, seed, raw)
        if totals is not None:
            out["bootstrap"] = {"replicates": int(replicates), "interval": LEVEL_INTERVAL}
            for name, resampled in zip(("expected_buyers", "expected_spend"), totals):
                spread = LEVEL_Z * float(np.std(np.log(np.maximum(resampled, 1e-300)), ddof=1))
                out["bootstrap"][name] = [out[name] * float(np.exp(-spread)), out[name] * float(np.exp(spread))]
    return out
