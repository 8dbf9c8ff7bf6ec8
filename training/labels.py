"""Churn labels on point-in-time snapshots, and churn tables that already hold a label.

A snapshot at date T sees only transactions on or before T (features) and labels a customer
`churned = 1` when they have no transaction in (T, T + horizon]. Dates are calendar days, as in
`features.build_features`: every purchase on day T is history, every purchase on day T + horizon is
inside the label window. Stacking several snapshots adds
training rows; validation is out of time on the latest one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.contracts import ids_as_strings, parse_numbers
from features.errors import DataError

LABEL = "churned"
SNAPSHOT = "snapshot_date"
FUTURE_SPEND = "future_spend"  # what the customer spent in the label window: the value model's target
_TRUE = {"1", "yes", "y", "true", "t", "churn", "churned"}
_FALSE = {"0", "no", "n", "false", "f", "retained", "active"}


def snapshot_dates(cutoff: pd.Timestamp, horizon_days: int, snapshots: int = 1,
                   step_days: int = 30) -> list[pd.Timestamp]:
    """`T_k = cutoff − horizon − k·step` for k = 0…K−1, newest first: every label window ends by cutoff."""
    if horizon_days <= 0:
        raise DataError(f"--horizon-days must be positive, got {horizon_days}")
    if snapshots < 1:
        raise DataError(f"--snapshots must be at least 1, got {snapshots}")
    if step_days < 1:
        raise DataError(f"--snapshot-step-days must be at least 1, got {step_days}")
    cutoff = pd.Timestamp(cutoff).normalize()
    return [cutoff - pd.Timedelta(days=horizon_days + k * step_days) for k in range(snapshots)]


def day_end(day: pd.Timestamp) -> pd.Timestamp:
    """First instant after calendar day `day`: `timestamp < day_end(day)` means "on or before day"."""
    return pd.Timestamp(day).normalize() + pd.Timedelta(days=1)


def churn_labels(transactions: pd.DataFrame, customers: Sequence[str], as_of: pd.Timestamp,
                 horizon_days: int) -> pd.Series:
    """1 for each customer with no transaction in (as_of, as_of + horizon], else 0; indexed by customer."""
    start, end = day_end(as_of), day_end(as_of + pd.Timedelta(days=horizon_days))
    ts = transactions["timestamp"]
    window = transactions.loc[(ts >= start) & (ts < end), "customer_id"]
    returned = pd.Index(window.unique())
    index = pd.Index(customers, name="customer_id")
    return pd.Series((~index.isin(returned)).astype(np.int8), index=index, name=LABEL)


def future_spend(transactions: pd.DataFrame, customers: Sequence[str], as_of: pd.Timestamp,
                 horizon_days: int) -> pd.Series:
    """Each customer's spend in (as_of, as_of + horizon] (0 without a purchase), indexed by customer."""
    start, end = day_end(as_of), day_end(as_of + pd.Timedelta(days=horizon_days))
    ts = transactions["timestamp"]
    window = transactions.loc[(ts >= start) & (ts < end)]
    spend = window.groupby("customer_id", sort=False)["amount"].sum()
    index = pd.Index(customers, name="customer_id")
    return spend.reindex(index).fillna(0.0).astype(float).rename(FUTURE_SPEND)


def snapshot_frame(transactions: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int,
                   profiles: pd.DataFrame | None = None, events: pd.DataFrame | None = None,
                   event_types=None, categories=None) -> pd.DataFrame:
    """Features as of `as_of` (built from transactions and events ≤ as_of only) plus the churn label and the
    spend in the label window (`future_spend`, the value model's target; never a feature). With events,
    prospects (events, no purchase yet) are rows too: churned = no first purchase in the window."""
    from features import build_features

    seen = transactions[transactions["timestamp"] < day_end(as_of)]
    if seen.empty:
        raise DataError(f"no transactions on or before snapshot date {as_of.date()}; "
                        "use a later --cutoff or fewer --snapshots")
    if events is not None:
        events = events[events["timestamp"] < day_end(as_of)]
    feats = build_features(seen, as_of, profiles=profiles, events=events, event_types=event_types,
                           affinity_reference=affinity_reference_of(seen, as_of, categories))
    labels = churn_labels(transactions, feats.index, as_of, horizon_days)
    out = feats.copy()
    out[SNAPSHOT] = as_of
    out[LABEL] = labels.to_numpy()
    out[FUTURE_SPEND] = future_spend(transactions, feats.index, as_of, horizon_days).to_numpy()
    return out


def affinity_reference_of(transactions: pd.DataFrame, as_of: pd.Timestamp, categories):
    """The affinity reference of `categories` as of `as_of` (priors from these customers); None without a
    category column or categories (build_features then picks the top categories itself)."""
    if categories is None or "category" not in transactions.columns:
        return None
    from features.affinity import affinity_reference

    return affinity_reference(transactions, as_of, categories)


def snapshot_categories(transactions: pd.DataFrame, as_of: pd.Timestamp) -> list[str] | None:
    """The categories with affinity columns in every snapshot: the top categories by spend up to the newest
    snapshot `as_of`, so stacked snapshots share one schema (None without a category column)."""
    if "category" not in transactions.columns:
        return None
    from features.affinity import category_spend, top_categories

    return top_categories(category_spend(transactions, as_of))


def stack_snapshots(transactions: pd.DataFrame, dates: Sequence[pd.Timestamp], horizon_days: int,
                    profiles: pd.DataFrame | None = None, events: pd.DataFrame | None = None,
                    event_types=None) -> pd.DataFrame:
    """One `snapshot_frame` per date, stacked (customers repeat across snapshots); the same event types and
    affinity categories (`snapshot_categories` of the newest date) in each."""
    categories = snapshot_categories(transactions, max(dates))
    return pd.concat([snapshot_frame(transactions, d, horizon_days, profiles, events, event_types, categories)
                      for d in dates])


def parse_label(values: pd.Series, column: str) -> pd.Series:
    """yes/no, true/false, 1/0 (any case) → 1/0 int8; anything else is a DataError naming the column."""
    text = values.astype("string").str.strip().str.lower()
    text = text.str.replace(r"\.0+$", "", regex=True)
    bad = text.isna() | ~(text.isin(_TRUE) | text.isin(_FALSE))
    if bad.any():
        examples = ", ".join(sorted({repr(v) for v in values[bad].head(3).tolist()}))
        raise DataError(f"column {column!r}: {int(bad.sum())} value(s) are not a churn label "
                        f"(yes/no, true/false, 1/0), e.g. {examples}")
    return text.isin(_TRUE).astype(np.int8).rename(LABEL)


def coerce_attributes(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns become numbers when every non-blank value parses, else categories; blanks → missing."""
    out = {}
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_bool_dtype(col):
            out[name] = col.astype("float64")
            continue
        if pd.api.types.is_numeric_dtype(col):
            out[name] = col
            continue
        numbers, not_numbers = parse_numbers(col)
        if numbers.notna().any() and not not_numbers.any():
            out[name] = numbers
        else:
            text = col.astype("string").str.strip()
            text = text.mask(text == "")
            out[name] = text.astype(object).where(text.notna(), None)
    return pd.DataFrame(out, index=frame.index)


def table_frame(table: pd.DataFrame, target: str, id_col: str | None = None) -> pd.DataFrame:
    """A customer table with a label column → attributes (coerced) + `churned`, indexed by customer_id."""
    if target not in table.columns:
        raise DataError(f"--target: column {target!r} not in the table (columns: {', '.join(map(str, table.columns))})")
    if id_col is not None and id_col not in table.columns:
        raise DataError(f"--id-col: column {id_col!r} not in the table")
    if id_col is None and "customer_id" in table.columns:
        id_col = "customer_id"
    ids = ids_as_strings(table[id_col], repr(id_col)) if id_col else pd.Series(np.arange(len(table)).astype(str),
                                                                                 index=table.index)
    if ids.duplicated().any():
        raise DataError(f"column {id_col!r}: customer ids repeat (e.g. {ids[ids.duplicated()].iloc[0]!r})")
    attributes = table.drop(columns=[c for c in (target, id_col) if c is not None])
    if attributes.shape[1] == 0:
        raise DataError("the table holds no attribute columns besides the id and the target")
    out = coerce_attributes(attributes)
    out[LABEL] = parse_label(table[target], target).to_numpy()
    out.index = pd.Index(ids.to_numpy(), name="customer_id")
    return out
