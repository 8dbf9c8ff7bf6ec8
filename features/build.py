"""Point-in-time customer features: one row per customer, computed only from purchases up to `as_of`.

`as_of` is a calendar date and is inclusive: every purchase on that day counts, nothing later is
read. Day counts are calendar days (a purchase at 23:59 the day before `as_of` is 1 day old).
The computation is vectorised over integer customer codes (`np.bincount` on codes, one sort of
(customer, day) keys) so that ten million rows take seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import affinity
from features.contracts import AMOUNT, ID, TIME
from features.errors import DataError

WINDOWS_DAYS = (30, 90, 180, 365)
TREND_DAYS = 90  # trend compares the last TREND_DAYS with the TREND_DAYS before them
LABEL_COLUMNS = {"category": ("category_count", "top_category"), "channel": ("channel_count", "top_channel")}

FEATURE_DESCRIPTIONS = {
    "recency_days": "Calendar days from the last purchase day to as_of (0 = bought on as_of).",
    "frequency": "Number of distinct days with a purchase.",
    "purchase_count": "Number of purchase rows.",
    "monetary_total": "Sum of amounts over all purchases.",
    "monetary_mean": "Mean amount per purchase row.",
    "tenure_days": "Calendar days from the first purchase day to as_of.",
    **{
        name: text
        for days in WINDOWS_DAYS
        for name, text in (
            (f"purchases_{days}d", f"Purchase rows in the trailing {days} days (as_of - {days} days, as_of]."),
            (f"spend_{days}d", f"Sum of amounts in the trailing {days} days (as_of - {days} days, as_of]."),
        )
    },
    "trend_90d": "(last90 - prev90) / (|last90| + |prev90|) of spend, in [-1, 1]; 0 when both are 0. "
    "last90 = spend in the trailing 90 days, prev90 = spend in the 90 days before those.",
    "gap_mean_days": "Mean days between consecutive distinct purchase days; NaN with fewer than 2 purchase days.",
    "gap_std_days": "Sample standard deviation of those gaps; NaN with fewer than 3 purchase days.",
    "overdue_ratio": "recency_days / gap_mean_days: how many usual gaps the customer is into silence.",
    "quantity_total": "Sum of quantity (only when transactions have a quantity column).",
    "category_count": "Distinct categories bought (only with a category column).",
    "top_category": "Most frequent category by purchase rows; ties go to the alphabetically first.",
    "channel_count": "Distinct channels used (only with a channel column).",
    "top_channel": "Most frequent channel by purchase rows; ties go to the alphabetically first.",
    **affinity.DESCRIPTIONS,  # only with a category column
}

# Features that cannot be below zero however the data looks (counts, days, ratios of days), and those
# that are amounts (below zero only when refunds are accepted). A model records a lower bound of 0 for
# the ones its training data kept at or above zero, and refuses anything below it when scoring.
COUNT_FEATURES = frozenset({"recency_days", "frequency", "purchase_count", "tenure_days", "gap_mean_days",
                            "gap_std_days", "overdue_ratio", "category_count", "channel_count",
                            *(f"purchases_{days}d" for days in WINDOWS_DAYS)})
AMOUNT_FEATURES = frozenset({"monetary_total", "monetary_mean", *(f"spend_{days}d" for days in WINDOWS_DAYS)})


def as_of_day(as_of) -> int:
    """Days since 1970-01-01 of the calendar date of `as_of` (date, Timestamp or ISO string)."""
    day = pd.Timestamp(as_of).normalize().to_datetime64().astype("datetime64[D]")
    return int(day.astype(np.int64))


def _customer_codes(ids: pd.Series, keep: np.ndarray) -> tuple[np.ndarray, pd.Index]:
    """Integer code per kept row, numbered in sorted id order, and the sorted ids themselves.

    Factorising the whole column and filtering the codes avoids copying ten million strings.
    """
    codes, uniques = pd.factorize(ids, sort=False)
    codes = codes[keep]
    present = np.flatnonzero(np.bincount(codes, minlength=len(uniques)))
    kept_ids = pd.Index(uniques.take(present), dtype="str")
    order = np.asarray(kept_ids.argsort())
    new_code = np.full(len(uniques), -1, dtype=np.int64)
    new_code[present[order]] = np.arange(len(present))
    return new_code[codes], pd.Index(kept_ids.take(order), dtype="str", name=ID)


def _purchases(transactions: pd.DataFrame, as_of) -> tuple[np.ndarray, pd.Index, np.ndarray, np.ndarray, np.ndarray]:
    """(customer code, sorted customer ids, age in days, amount) of the purchase rows on or before `as_of`, and
    which rows those are."""
    days = transactions[TIME].to_numpy().astype("datetime64[D]").astype(np.int64)
    age = as_of_day(as_of) - days
    keep = age >= 0
    codes, index = _customer_codes(transactions[ID], keep)
    return codes, index, age[keep], transactions[AMOUNT].to_numpy(dtype=float)[keep], keep


def _rhythm(codes: np.ndarray, age: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Recency, tenure, distinct purchase days and gap statistics from one sort of (customer, day)."""
    if len(age) == 0:
        empty = np.empty(0)
        return dict.fromkeys(("recency_days", "frequency", "tenure_days", "gap_mean_days", "gap_std_days"), empty)
    shift = int(age.max()).bit_length()
    keys = np.sort((codes << shift) | age)
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # distinct (customer, day), newest day first
    pair_code, pair_age = keys >> shift, keys & ((1 << shift) - 1)
    days = np.bincount(pair_code, minlength=n)
    ends = np.cumsum(days)
    recency = pair_age[ends - days].astype(float)
    tenure = pair_age[ends - 1].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap_mean = np.where(days >= 2, (tenure - recency) / (days - 1), np.nan)
        same = pair_code[1:] == pair_code[:-1]
        gap_code = pair_code[1:][same]
        deviation = (pair_age[1:] - pair_age[:-1])[same] - gap_mean[gap_code]
        squares = np.bincount(gap_code, weights=deviation**2, minlength=n)
        gap_std = np.where(days >= 3, np.sqrt(squares / (days - 2)), np.nan)
    return {
        "recency_days": recency,
        "frequency": days.astype(float),
        "tenure_days": tenure,
        "gap_mean_days": gap_mean,
        "gap_std_days": gap_std,
    }


def _windows(codes: np.ndarray, age: np.ndarray, amount: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Counts and spend in every trailing window with two bincounts over (customer, age bucket)."""
    buckets = len(WINDOWS_DAYS) + 1
    bucket = np.searchsorted(np.asarray(WINDOWS_DAYS), age, side="right")
    flat = codes * buckets + bucket
    counts = np.bincount(flat, minlength=n * buckets).reshape(n, buckets).cumsum(axis=1).astype(float)
    spend = np.bincount(flat, weights=amount, minlength=n * buckets).reshape(n, buckets).cumsum(axis=1)
    out = {"purchase_count": counts[:, -1], "monetary_total": spend[:, -1]}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["monetary_mean"] = spend[:, -1] / counts[:, -1]
    for i, days in enumerate(WINDOWS_DAYS):
        out[f"purchases_{days}d"] = counts[:, i]
        out[f"spend_{days}d"] = spend[:, i]
    last = spend[:, WINDOWS_DAYS.index(TREND_DAYS)]
    prev = spend[:, WINDOWS_DAYS.index(2 * TREND_DAYS)] - last
    scale = np.abs(last) + np.abs(prev)
    out["trend_90d"] = np.divide(last - prev, scale, out=np.zeros(n), where=scale > 0)
    return out


def _top_label(codes: np.ndarray, labels: pd.Series, n: int) -> tuple[np.ndarray, pd.Categorical]:
    """Distinct non-missing labels per customer and the most frequent one (ties: alphabetical)."""
    label_code, names = pd.factorize(labels, sort=True)
    known = label_code >= 0
    shift = max(len(names) - 1, 0).bit_length()
    keys = np.sort((codes[known] << shift) | label_code[known])
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.empty(0, dtype=np.intp)
    pairs = keys[starts]
    rows = np.diff(np.r_[starts, len(keys)])
    pair_code, pair_label = pairs >> shift, pairs & ((1 << shift) - 1)
    best = np.lexsort((pair_label, -rows, pair_code))
    first = best[np.r_[True, pair_code[best][1:] != pair_code[best][:-1]]] if len(best) else best
    top = np.full(n, -1, dtype=np.int64)
    top[pair_code[first]] = pair_label[first]
    distinct = np.bincount(pair_code, minlength=n).astype(float)
    return distinct, pd.Categorical.from_codes(top, categories=pd.Index(names, dtype="str"))


def build_features(transactions: pd.DataFrame, as_of, profiles: pd.DataFrame | None = None,
                   events: pd.DataFrame | None = None, event_types=None,
                   affinity_categories: int = affinity.MAX_CATEGORIES,
                   affinity_reference: affinity.AffinityReference | None = None) -> pd.DataFrame:
    """One row per customer with a purchase on or before `as_of`, indexed and sorted by customer_id.

    `transactions` follows the contract of `normalize_transactions`; `profiles` that of
    `normalize_profiles` (its columns are joined as they are). See FEATURE_DESCRIPTIONS; with a category
    column, also `features.affinity`'s columns for the `affinity_categories` categories with the most spend,
    or for the categories of `affinity_reference` (one
    computed over the whole input, so that features built in chunks equal those of one pass).
    With `events` (`features.events.normalize_events`) the engagement features of `event_types` (default:
    the most frequent types) are joined, and customers with an event but no purchase yet (prospects) are
    kept, with purchase counts and amounts 0 and the rest of their purchase features NaN.
    """
    codes, index, age, amount, keep = _purchases(transactions, as_of)
    n = len(index)

    columns = _rhythm(codes, age, n)
    columns.update(_windows(codes, age, amount, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        columns["overdue_ratio"] = columns["recency_days"] / columns["gap_mean_days"]
    if "quantity" in transactions.columns:
        quantity = np.nan_to_num(transactions["quantity"].to_numpy(dtype=float)[keep])
        columns["quantity_total"] = np.bincount(codes, weights=quantity, minlength=n)
    for source, (count_name, top_name) in LABEL_COLUMNS.items():
        if source in transactions.columns:
            columns[count_name], columns[top_name] = _top_label(codes, transactions[source][keep], n)

    order = [name for name in FEATURE_DESCRIPTIONS if name in columns]
    if "category" in transactions.columns and (affinity_reference is not None or affinity_categories > 0):
        extra = affinity.affinity(codes, age, amount, transactions["category"][keep], n, affinity_reference,
                                  affinity_categories)
        columns.update(extra)
        order += [name for name in extra if name not in order]
    features = pd.DataFrame({name: columns[name] for name in order}, index=index)
    if events is not None:
        features = _join_events(features, events, as_of, event_types)
    return features if profiles is None else join_profiles(features, profiles)


def join_profiles(features: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """`profiles`' columns left-joined to `features` on customer_id (the last step of `build_features`)."""
    if ID in profiles.columns:  # a raw profile table: index it by customer id first (else every join misses)
        from features.contracts import normalize_profiles

        profiles = normalize_profiles(profiles)
    clash = sorted(set(profiles.columns) & set(features.columns))
    if clash:
        raise DataError(f"profiles: column(s) {', '.join(map(repr, clash))} clash with feature names; rename them")
    return features.join(profiles, how="left")


# Purchase features that are 0, not unknown, for a customer without purchases (a prospect).
_ZERO_WITHOUT_PURCHASES = ("frequency", "purchase_count", "monetary_total", "trend_90d", "quantity_total",
                           "category_count", "channel_count", *(f"{kind}_{days}d" for days in WINDOWS_DAYS
                                                                for kind in ("purchases", "spend")))


def _join_events(features: pd.DataFrame, events: pd.DataFrame, as_of, event_types) -> pd.DataFrame:
    """Outer join of purchase and engagement features on customer_id (sorted)."""
    from features.events import build_event_features, top_event_types

    types = tuple(event_types) if event_types is not None else top_event_types(events, as_of)
    seen = events.loc[events[TIME] < pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1), ID].unique()
    customers = features.index.union(pd.Index(seen, dtype="str")).rename(ID)
    engaged = build_event_features(events, as_of, customers=customers, types=types)
    out = features.reindex(customers)
    zero = [name for name in _ZERO_WITHOUT_PURCHASES if name in out.columns]
    out[zero] = out[zero].fillna(0.0)
    return out.join(engaged)
