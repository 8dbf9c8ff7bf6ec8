"""Training and validation sets for the churn model, and the description logged with each run.

From transactions: stacked point-in-time snapshots; out-of-time validation on the newest snapshot
`T_0` when there are two or more, otherwise a stratified customer holdout. From a customer table
with a label: a stratified holdout.

Held-out customers are cut in two: `valid` drives tuning, early stopping and calibration; `test` is
seen by nothing before the model is final, and promotion compares candidate and champion on it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from features.errors import DataError, DataWarning
from training.labels import (FUTURE_SPEND, LABEL, SNAPSHOT, affinity_reference_of, day_end, snapshot_categories,
                             snapshot_dates, stack_snapshots, table_frame)
from training.tracking import frame_hash

HOLDOUT_FRACTION = 0.25  # validation: tuning, early stopping, calibration
TEST_FRACTION = 0.15  # final test slice for promotion, taken first


@dataclass
class ChurnData:
    """What training needs: feature rows with labels split into train / valid, and a description."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    feature_columns: list[str]
    kind: str  # "transactions" or "table"
    description: dict = field(default_factory=dict)
    latest_features: pd.DataFrame | None = None  # features as of cutoff, for value-tier thresholds
    refit: pd.DataFrame | None = None  # every labelled row but the test customers' (a refit's training set)

    @property
    def y_train(self) -> np.ndarray:
        return self.train[LABEL].to_numpy(dtype=float)

    @property
    def y_valid(self) -> np.ndarray:
        return self.valid[LABEL].to_numpy(dtype=float)

    @property
    def y_test(self) -> np.ndarray:
        return self.test[LABEL].to_numpy(dtype=float)


def _split(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = frame[LABEL]
    counts = labels.value_counts()
    if len(counts) < 2 or counts.min() < 4:
        raise DataError(f"need at least four churned and four retained customers to train, validate and test, "
                        f"got {counts.to_dict()}")
    keep_idx, out_idx = train_test_split(np.arange(len(frame)), test_size=fraction,
                                         stratify=labels.to_numpy(), random_state=seed)
    return frame.iloc[np.sort(keep_idx)], frame.iloc[np.sort(out_idx)]


def _holdout(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Stratified customer holdout (train, valid, test); every row of one customer lands on one side."""
    rest, test = _split(frame, TEST_FRACTION, seed)
    train, valid = _split(rest, HOLDOUT_FRACTION, seed)
    return train, valid, test


def _out_of_time(stacked: pd.DataFrame, latest: pd.Timestamp,
                 seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Validate and test on the newest snapshot, train on older ones — and keep held-out customers out of
    training altogether: their older rows share most of the label window with the newest one, so a
    model that memorises customers would otherwise look good on validation and generalise badly."""
    newest = stacked[stacked[SNAPSHOT] == latest]
    _, valid, test = _holdout(newest, seed)
    held_out = stacked.index.isin(valid.index) | stacked.index.isin(test.index)
    train = stacked[(stacked[SNAPSHOT] != latest) & ~held_out]
    return train, valid, test


def _check_both_classes(frame: pd.DataFrame, what: str) -> None:
    counts = frame[LABEL].value_counts()
    if len(counts) < 2:
        only = "churned" if counts.index[0] == 1 else "retained"
        raise DataError(f"every customer in the {what} is {only}; churn cannot be learned — "
                        "check --cutoff / --horizon-days against the data's date range")


_SHARES = (f"{TEST_FRACTION:.0%} test, {(1 - TEST_FRACTION) * HOLDOUT_FRACTION:.0%} validation for tuning, early "
           f"stopping and calibration")


def _check_sets(train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame) -> None:
    _check_both_classes(train, "training set")
    _check_both_classes(valid, "validation set")
    _check_both_classes(test, "test set")


_TIME_VARYING = re.compile(r"(_count|_counts|_days|_total|_balance|_score)$|^(last|latest|current|days_since)_",
                           re.IGNORECASE)


def label_window_overlap_days(horizon_days: int, step_days: int) -> int:
    """Days shared by the label windows (T_k, T_k + horizon] of snapshots `step_days` apart."""
    return max(0, int(horizon_days) - int(step_days))


def warn_time_varying_profiles(profiles: pd.DataFrame) -> None:
    """Profiles are joined as they are to every snapshot, also to past ones: a column that changes over time
    (a count, a balance, "last_…") would tell a past snapshot about its future. Profile columns must be
    static attributes (age band, region, signup channel); warn for names that look time-varying."""
    suspects = [c for c in profiles.columns if c != "customer_id" and _TIME_VARYING.search(str(c))]
    if suspects:
        warnings.warn(f"profile column(s) {', '.join(suspects)} look time-varying, but profiles are joined as they "
                      f"are to every (past) snapshot, which leaks the present into the past; keep only static "
                      f"attributes in --profiles, or build such columns from transactions", DataWarning, stacklevel=3)


def prepare_transactions(transactions: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int,
                         snapshots: int = 1, step_days: int = 30, profiles: pd.DataFrame | None = None,
                         seed: int = 0, events: pd.DataFrame | None = None, event_types=None,
                         event_top: int = 5) -> ChurnData:
    """Snapshots from transactions (and engagement events) on or before `cutoff` (later rows are dropped
    here, never read). The event types with their own columns are `event_types`, else the `event_top` most
    frequent ones up to the oldest snapshot, fixed for every snapshot and stored as the model's feature names."""
    from features import build_features

    dates = snapshot_dates(cutoff, horizon_days, snapshots, step_days)
    cutoff = pd.Timestamp(cutoff).normalize()
    history = transactions[transactions["timestamp"] < day_end(cutoff)]
    if history.empty:
        first = transactions["timestamp"].min()
        raise DataError(f"--cutoff {cutoff.date()} is before all data (first transaction {first.date()})")
    first = history["timestamp"].min().normalize()
    if dates[-1] < first:
        raise DataError(f"snapshot date {dates[-1].date()} (cutoff − horizon − {snapshots - 1}·step) is before the "
                        f"first transaction {first.date()}; use a later --cutoff, a shorter --horizon-days "
                        "or fewer --snapshots")
    if profiles is not None:
        warn_time_varying_profiles(profiles)
    if events is not None:
        from features.events import top_event_types

        events = events[events["timestamp"] < day_end(cutoff)]
        if event_types is None:
            event_types = top_event_types(events, dates[-1], event_top)
    stacked = stack_snapshots(history, dates, horizon_days, profiles, events, event_types)
    features = [c for c in stacked.columns if c not in (LABEL, SNAPSHOT, FUTURE_SPEND)]
    if snapshots >= 2:
        train, valid, test = _out_of_time(stacked, dates[0], seed)
        overlap = label_window_overlap_days(horizon_days, step_days)
        windows = (f"label windows of consecutive snapshots overlap by {overlap} of {horizon_days} days (the newest "
                   f"training labels share {overlap} days with the validation labels; --snapshot-step-days "
                   f"{horizon_days} or more removes that)" if overlap else
                   "label windows do not overlap: every training label is observed before the validation window starts")
        validation = (f"out of time and out of customer: train on {len(dates) - 1} older snapshot(s), validate and "
                      f"test on {dates[0].date()} for held-out customers ({_SHARES}); {windows}")
    else:
        train, valid, test = _holdout(stacked, seed)
        validation = f"stratified customer holdout ({_SHARES}) at {dates[0].date()}"
    _check_sets(train, valid, test)
    description = {
        "kind": "transactions",
        "cutoff": str(cutoff.date()),
        "horizon_days": int(horizon_days),
        "snapshots": int(snapshots),
        "snapshot_step_days": int(step_days),
        "snapshot_dates": [str(d.date()) for d in dates],
        "label_window_overlap_days": label_window_overlap_days(horizon_days, step_days) if snapshots >= 2 else 0,
        "validation": validation,
        "transaction_rows": int(len(history)),
        "rows": int(len(stacked)),
        "customers": int(stacked.index.nunique()),
        "churn_rate": float(stacked[LABEL].mean()),
        "train_rows": int(len(train)),
        "valid_rows": int(len(valid)),
        "test_rows": int(len(test)),
        "data_hash": frame_hash(history, profiles, events),
    }
    if events is not None:
        description["event_rows"] = int(len(events))
        description["event_types"] = list(event_types)
    latest = build_features(history, cutoff, profiles=profiles, events=events, event_types=event_types,
                            affinity_reference=affinity_reference_of(history, cutoff,
                                                                     snapshot_categories(history, dates[0])))
    refit = stacked[~stacked.index.isin(test.index)]  # with K ≥ 2 this includes T_0 for training customers too
    description["refit_rows"] = int(len(refit))
    return ChurnData(train=train, valid=valid, test=test, feature_columns=features, kind="transactions",
                     description=description, latest_features=latest, refit=refit)


def prepare_table(table: pd.DataFrame, target: str, id_col: str | None = None, seed: int = 0) -> ChurnData:
    frame = table_frame(table, target, id_col)
    _check_both_classes(frame, "table")
    train, valid, test = _holdout(frame, seed)
    _check_sets(train, valid, test)
    features = [c for c in frame.columns if c != LABEL]
    description = {
        "kind": "table",
        "target": target,
        "id_col": id_col,
        "validation": f"stratified customer holdout ({_SHARES})",
        "rows": int(len(frame)),
        "customers": int(len(frame)),
        "churn_rate": float(frame[LABEL].mean()),
        "train_rows": int(len(train)),
        "valid_rows": int(len(valid)),
        "test_rows": int(len(test)),
        "data_hash": frame_hash(table),
    }
    return ChurnData(train=train, valid=valid, test=test, feature_columns=features, kind="table", description=description,
                     refit=pd.concat([train, valid]))
