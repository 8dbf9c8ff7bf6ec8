"""Engagement events (visits, app sessions, e-mails, tickets): their contract and point-in-time features.

A customer data platform sees engagement fall weeks before purchases stop. Events follow the same
rules as transactions: `as_of` is an inclusive calendar day, nothing later is read, day counts are
calendar days, and the computation is vectorised over integer customer codes with `np.bincount`.

Event types are free text. Each is turned into a column-safe name (`type_name`): Unicode folded to
ASCII, lower case, every run of other characters than a-z and 0-9 replaced by one `_`, leading and
trailing `_` dropped ("E-mail Open" → "e_mail_open", "app session" → "app_session"). Types with the
same safe name are one type. Which types get their own columns is fixed when a model is trained
(the most frequent ones by default) and read back from the model's feature names when scoring, so
training and scoring always build the same columns.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd

from features.contracts import ID, TIME, _label, _rename, _require_columns, _show_rows, _timestamps, ids_as_strings
from features.errors import DataError

TYPE = "event_type"
CHANNEL = "channel"
EVENT_WINDOWS_DAYS = (7, 30, 90)
TREND_RECENT_DAYS, TREND_BEFORE_DAYS = 30, 60  # trend: the last 30 days against the 60 before them
RATE_DAYS = 90
DEFAULT_TOP_TYPES = 5
# Types with a fixed meaning (after `type_name`): e-mail funnel and service contacts.
EMAIL_SEND = frozenset({"email_send", "email_sent", "e_mail_send", "e_mail_sent"})
EMAIL_OPEN = frozenset({"email_open", "email_opened", "e_mail_open", "e_mail_opened"})
EMAIL_CLICK = frozenset({"email_click", "email_clicked", "e_mail_click", "e_mail_clicked"})
COMPLAINT = frozenset({"complaint", "complaints"})
SUPPORT = frozenset({"support_ticket", "support_tickets", "support", "ticket"})
FIXED_FEATURES = ("email_open_rate_90d", "email_click_rate_90d", "complaints_90d", "support_tickets_90d")
_PER_TYPE = re.compile(r"^events_(?P<type>[a-z0-9_]+)_7d$")


def type_name(text: str) -> str:
    """Column-safe name of a free-text event type (the rule in the module docstring); '' if nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")


def normalize_events(df: pd.DataFrame, id_col: str = ID, time_col: str = TIME, type_col: str = TYPE,
                     as_of=None) -> pd.DataFrame:
    """Validate a raw event table: customer_id (str), timestamp (naive UTC), event_type (safe name), and
    channel (str) when present. Errors name the column as the user called it; rows keep their order."""
    what = "events"
    _require_columns(df, {id_col: ID, time_col: TIME, type_col: TYPE}, what)
    df = _rename(df, {id_col: ID, time_col: TIME, type_col: TYPE}, what)
    if len(df) == 0:
        raise DataError(f"{what}: the table is empty (no rows)")
    shown = {ID: _label(id_col, ID), TIME: _label(time_col, TIME), TYPE: _label(type_col, TYPE)}
    codes, uniques = pd.factorize(df[TYPE], sort=False)
    names = np.array([type_name(u) for u in uniques], dtype=object)
    bad = (codes < 0) | (np.append(names, "")[codes] == "")  # missing (code −1 picks the "") or no letter/digit
    if bad.any():
        raise DataError(f"column {shown[TYPE]}: missing or empty event type; {_show_rows(df[TYPE], bad)}")
    out = pd.DataFrame({
        ID: ids_as_strings(df[ID], shown[ID]),
        TIME: _timestamps(df[TIME], shown[TIME]),
        TYPE: pd.array(names[codes], dtype="str"),
    })
    if CHANNEL in df.columns:
        out[CHANNEL] = df[CHANNEL].astype("str").where(df[CHANNEL].notna())
    if as_of is not None and not (out[TIME] < pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1)).any():
        raise DataError(f"column {shown[TIME]}: all {len(out):,} events are after as_of {pd.Timestamp(as_of).date()}")
    return out.reset_index(drop=True)


def parse_event_types(text: str | None) -> tuple[str, ...] | None:
    """'visit, Email Open' → ('visit', 'email_open'); None or '' → None (choose the top types)."""
    if not text or not text.strip():
        return None
    names = [type_name(part) for part in text.split(",") if part.strip()]
    if any(not name for name in names):
        raise DataError(f"--event-types: {text!r} holds a type with no letter or digit")
    return tuple(dict.fromkeys(names))


def _ages(events: pd.DataFrame, as_of) -> np.ndarray:
    from features.build import as_of_day

    return as_of_day(as_of) - events[TIME].to_numpy().astype("datetime64[D]").astype(np.int64)


def top_event_types(events: pd.DataFrame, as_of, top: int = DEFAULT_TOP_TYPES) -> tuple[str, ...]:
    """The `top` most frequent types among events on or before `as_of` (ties: alphabetical)."""
    return most_frequent_types(event_type_counts(events, as_of), top)


def event_type_counts(events: pd.DataFrame, as_of) -> pd.Series:
    """Events on or before `as_of` per type (summed over parts, they rank the types of a whole file)."""
    return events.loc[_ages(events, as_of) >= 0, TYPE].value_counts()


def most_frequent_types(counts: pd.Series, top: int = DEFAULT_TOP_TYPES) -> tuple[str, ...]:
    """The `top` types with the largest counts (type → count; ties: alphabetical)."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(name for name, _ in ranked[:top])


def event_feature_names(types) -> list[str]:
    """Columns `build_event_features` writes for `types`, in order."""
    per_type = [name for t in types for name in (*(f"events_{t}_{d}d" for d in EVENT_WINDOWS_DAYS),
                                                 f"days_since_{t}", f"events_{t}_trend")]
    return per_type + list(FIXED_FEATURES)


def event_types_in(feature_names) -> tuple[str, ...] | None:
    """The event types a model was trained with, read from its feature names; None without event features."""
    if not any(name in FIXED_FEATURES for name in feature_names):
        return None
    return tuple(m["type"] for m in map(_PER_TYPE.match, feature_names) if m)


def is_event_feature(name: str, types=None) -> bool:
    """Whether a feature name is one `build_event_features` makes (for the given types, or any)."""
    if name in FIXED_FEATURES:
        return True
    names = event_feature_names(types) if types is not None else None
    if names is not None:
        return name in names
    return bool(re.match(r"^(events_[a-z0-9_]+_(7d|30d|90d|trend)|days_since_[a-z0-9_]+)$", name))


def never_negative(name: str) -> bool:
    """Event features that cannot be below zero (all but the trends): a model records a lower bound of 0."""
    return is_event_feature(name) and not name.endswith("_trend")


def event_feature_descriptions(types) -> dict[str, str]:
    """What each event feature means, for the feature table's documentation."""
    out = {}
    for t in types:
        for d in EVENT_WINDOWS_DAYS:
            out[f"events_{t}_{d}d"] = f"'{t}' events in the trailing {d} days (as_of - {d} days, as_of]."
        out[f"days_since_{t}"] = f"Calendar days from the last '{t}' event to as_of; NaN with none."
        out[f"events_{t}_trend"] = (f"(last30 - prev60/2) / (last30 + prev60/2) of '{t}' events, in [-1, 1]; 0 with "
                                    "none: the last 30 days against the daily rate of the 60 days before them.")
    out["email_open_rate_90d"] = "E-mail opens / e-mail sends in the trailing 90 days; NaN without sends."
    out["email_click_rate_90d"] = "E-mail clicks / e-mail sends in the trailing 90 days; NaN without sends."
    out["complaints_90d"] = "Complaint events in the trailing 90 days."
    out["support_tickets_90d"] = "Support-ticket events in the trailing 90 days."
    return out


def build_event_features(events: pd.DataFrame, as_of, customers: pd.Index | None = None,
                         types=None) -> pd.DataFrame:
    """Engagement features as of `as_of`, one row per customer, indexed by customer_id.

    `events` follows `normalize_events`. `customers` fixes the rows (customers without events get counts
    0, trends 0, days-since and rates NaN); by default every customer with an event on or before
    `as_of`, sorted. `types` fixes the per-type columns (default: `top_event_types`). See
    `event_feature_descriptions`.
    """
    from features.build import _customer_codes

    age = _ages(events, as_of)
    keep = age >= 0
    types = tuple(types) if types is not None else top_event_types(events, as_of)
    if customers is None:
        codes, index = _customer_codes(events[ID], keep)
    else:
        index = pd.Index(customers, dtype="str", name=ID)
        codes = index.get_indexer(events[ID].to_numpy()[keep])
    type_code, names = pd.factorize(events[TYPE])
    known = codes >= 0
    codes, age, type_code = codes[known], age[keep][known], type_code[keep][known]
    n, k = len(index), len(types)
    fixed = (EMAIL_SEND, EMAIL_OPEN, EMAIL_CLICK, COMPLAINT, SUPPORT)
    slots = {t: i for i, t in enumerate(types)}
    slot_of = np.array([slots.get(t, -1) for t in names] + [-1], dtype=np.int64)
    group_of = np.array([next((g for g, group in enumerate(fixed) if t in group), -1) for t in names] + [-1],
                        dtype=np.int64)

    columns: dict[str, np.ndarray] = {}
    slot = slot_of[type_code]
    mine = slot >= 0
    counts = _window_counts(codes[mine] * max(k, 1) + slot[mine], age[mine], n * k)
    days_since = np.full(n * k, np.inf)
    np.minimum.at(days_since, codes[mine] * max(k, 1) + slot[mine], age[mine].astype(float))
    days_since[np.isinf(days_since)] = np.nan
    for i, t in enumerate(types):
        rows = slice(i, n * k, k)
        for j, d in enumerate(EVENT_WINDOWS_DAYS):
            columns[f"events_{t}_{d}d"] = counts[rows, j]
        columns[f"days_since_{t}"] = days_since[rows]
        columns[f"events_{t}_trend"] = _trend(counts[rows, len(EVENT_WINDOWS_DAYS)], counts[rows, -1])

    group = group_of[type_code]
    recent = (group >= 0) & (age < RATE_DAYS)
    per_group = np.bincount(codes[recent] * len(fixed) + group[recent], minlength=n * len(fixed))
    sends, opens, clicks, complaints, support = per_group.reshape(n, len(fixed)).T.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        columns["email_open_rate_90d"] = np.where(sends > 0, opens / sends, np.nan)
        columns["email_click_rate_90d"] = np.where(sends > 0, clicks / sends, np.nan)
    columns["complaints_90d"] = complaints
    columns["support_tickets_90d"] = support
    return pd.DataFrame({name: columns[name] for name in event_feature_names(types)}, index=index)


def _window_counts(flat: np.ndarray, age: np.ndarray, size: int) -> np.ndarray:
    """(size, 5) counts per flat key: trailing 7 / 30 / 90 days, then the 30 and the 60 days of the trend."""
    edges = np.array(sorted({*EVENT_WINDOWS_DAYS, TREND_RECENT_DAYS, TREND_RECENT_DAYS + TREND_BEFORE_DAYS}))
    bucket = np.searchsorted(edges, age, side="right")
    hist = np.bincount(flat * (len(edges) + 1) + bucket, minlength=size * (len(edges) + 1))
    cum = hist.reshape(size, len(edges) + 1).cumsum(axis=1).astype(float)
    at = {d: cum[:, list(edges).index(d)] for d in edges}
    recent = at[TREND_RECENT_DAYS]
    before = at[TREND_RECENT_DAYS + TREND_BEFORE_DAYS] - recent
    return np.column_stack([*(at[d] for d in EVENT_WINDOWS_DAYS), recent, before])


def _trend(recent: np.ndarray, before: np.ndarray) -> np.ndarray:
    """(recent − before·30/60) / (recent + before·30/60): the last 30 days against the earlier daily rate."""
    scaled = before * TREND_RECENT_DAYS / TREND_BEFORE_DAYS
    total = recent + scaled
    return np.divide(recent - scaled, total, out=np.zeros(len(recent)), where=total > 0)
