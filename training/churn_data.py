"""Training and validation sets for the churn model, and the description logged with each run.

From transactions: stacked point-in-time snapshots; out-of-time validation on the newest snapshot
`T_0` when there are two or more, otherwise a stratified customer holdout. From a customer table
with a label: a stratified holdout.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from features.errors import DataError, DataWarning
from training.labels import LABEL, SNAPSHOT, day_end, snapshot_dates, stack_snapshots, table_frame
from training.tracking import frame_hash

HOLDOUT_FRACTION = 0.25


@dataclass
class ChurnData:
    """What training needs: feature rows with labels split into train / valid, and a description."""

    train: pd.DataFrame
    valid: pd.DataFrame
    feature_columns: list[str]
    kind: str  # "transactions" or "table"
    description: dict = field(default_factory=dict)
    latest_features: pd.DataFrame | None = None  # features as of cutoff, for value-tier thresholds

    @property
    def y_train(self) -> np.ndarray:
        return self.train[LABEL].to_numpy(dtype=float)

    @property
    def y_valid(self) -> np.ndarray:
        return self.valid[LABEL].to_numpy(dtype=float)


def _holdout(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified customer holdout; every row of one customer lands on the same side."""
    labels = frame[LABEL]
    counts = labels.value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise DataError(f"need at least two churned and two retained customers to validate, got {counts.to_dict()}")
    train_idx, valid_idx = train_test_split(np.arange(len(frame)), test_size=HOLDOUT_FRACTION,
                                            stratify=labels.to_numpy(), random_state=seed)
    return frame.iloc[np.sort(train_idx)], frame.iloc[np.sort(valid_idx)]


def _out_of_time(stacked: pd.DataFrame, latest: pd.Timestamp, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate on the newest snapshot, train on older ones — and keep validation customers out of
    training altogether: their older rows share most of the label window with the newest one, so a
    model that memorises customers would otherwise look good on validation and generalise badly."""
    newest = stacked[stacked[SNAPSHOT] == latest]
    _, valid = _holdout(newest, seed)
    held_out = stacked.index.isin(valid.index)
    train = stacked[(stacked[SNAPSHOT] != latest) & ~held_out]
    return train, valid


def _check_both_classes(frame: pd.DataFrame, what: str) -> None:
    counts = frame[LABEL].value_counts()
    if len(counts) < 2:
        only = "churned" if counts.index[0] == 1 else "retained"
        raise DataError(f"every customer in the {what} is {only}; churn cannot be learned — "
                        "check --cutoff / --horizon-days against the data's date range")


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
                         seed: int = 0) -> ChurnData:
    """Snapshots from transactions on or before `cutoff` (later rows are dropped here, never read)."""
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
    stacked = stack_snapshots(history, dates, horizon_days, profiles)
    features = [c for c in stacked.columns if c not in (LABEL, SNAPSHOT)]
    if snapshots >= 2:
        train, valid = _out_of_time(stacked, dates[0], seed)
        overlap = label_window_overlap_days(horizon_days, step_days)
        windows = (f"label windows of consecutive snapshots overlap by {overlap} of {horizon_days} days (the newest "
                   f"training labels share {overlap} days with the validation labels; --snapshot-step-days "
                   f"{horizon_days} or more removes that)" if overlap else
                   "label windows do not overlap: every training label is observed before the validation window starts")
        validation = (f"out of time and out of customer: train on {len(dates) - 1} older snapshot(s), validate on "
                      f"{dates[0].date()} for a held-out {HOLDOUT_FRACTION:.0%} of customers; {windows}")
    else:
        train, valid = _holdout(stacked, seed)
        validation = f"stratified customer holdout ({HOLDOUT_FRACTION:.0%}) at {dates[0].date()}"
    _check_both_classes(train, "training set")
    _check_both_classes(valid, "validation set")
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
        "data_hash": frame_hash(history, profiles),
    }
    latest = build_features(history, cutoff, profiles=profiles)
    return ChurnData(train=train, valid=valid, feature_columns=features, kind="transactions",
                     description=description, latest_features=latest)


def prepare_table(table: pd.DataFrame, target: str, id_col: str | None = None, seed: int = 0) -> ChurnData:
    frame = table_frame(table, target, id_col)
    _check_both_classes(frame, "table")
    train, valid = _holdout(frame, seed)
    features = [c for c in frame.columns if c != LABEL]
    description = {
        "kind": "table",
        "target": target,
        "id_col": id_col,
        "validation": f"stratified customer holdout ({HOLDOUT_FRACTION:.0%})",
        "rows": int(len(frame)),
        "customers": int(len(frame)),
        "churn_rate": float(frame[LABEL].mean()),
        "train_rows": int(len(train)),
        "valid_rows": int(len(valid)),
        "data_hash": frame_hash(table),
    }
    return ChurnData(train=train, valid=valid, feature_columns=features, kind="table", description=description)
