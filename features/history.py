"""One customer's purchase and engagement history as a compact binary record, and the point-in-time features
of many such records computed by `build_features` itself.

The online store (`serving.online`) keeps one record per customer and appends the events it receives. The
record holds what the features read, at the resolution they read it: the calendar day of every purchase
row (features count calendar days), its amount, quantity, category and channel, and the day, type and
channel of every engagement event. Nothing is summarised away, for two reasons:

- **exact as of any later time, whatever the arrival order.** A late event (yesterday's purchase arriving
  after today's) slots into the gaps, windows and affinity weights exactly as in a batch build, which
  running totals cannot do for gap standard deviations or for a window that a late row enters and leaves;
- **one implementation.** `history_features` rebuilds the few rows of the asked customers and calls
  `build_features` on them, so the online features *are* the batch features (`tests/test_online_store.py`
  compares every column for every customer of CDNOW and of the simulator).

Compact means binary and small: 4 bytes a day, 8 an amount, 8 a quantity, 4 + 4 label codes per purchase
row, 12 bytes per engagement event, labels stored once per record (`encode` / `decode`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.contracts import AMOUNT, ID, TIME

MAGIC = b"WBH1"
_HEADER = struct.Struct("<4sIII")  # magic, purchase rows, engagement events, label bytes
_SEP = "\x1f"  # between labels (unit separator: never part of a category, channel or type name)
EPOCH = np.datetime64("1970-01-01", "D")


@dataclass
class History:
    """One customer's rows. Days are days since 1970-01-01; labels are index into `labels` (−1 = missing)."""

    day: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    amount: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    quantity: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    category: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    channel: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    event_day: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    event_type: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    event_channel: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    labels: list[str] = field(default_factory=list)

    @property
    def purchases(self) -> int:
        return len(self.day)

    @property
    def events(self) -> int:
        return len(self.event_day)

    def last_day(self) -> int | None:
        """The newest day of any row (None for an empty record)."""
        days = [int(a.max()) for a in (self.day, self.event_day) if len(a)]
        return max(days) if days else None


def encode(history: History) -> bytes:
    """The record as bytes (see the module docstring for the layout)."""
    text = _SEP.join(history.labels).encode()
    return b"".join([
        _HEADER.pack(MAGIC, history.purchases, history.events, len(text)),
        history.day.astype("<i4").tobytes(), history.amount.astype("<f8").tobytes(),
        history.quantity.astype("<f8").tobytes(), history.category.astype("<i4").tobytes(),
        history.channel.astype("<i4").tobytes(), history.event_day.astype("<i4").tobytes(),
        history.event_type.astype("<i4").tobytes(), history.event_channel.astype("<i4").tobytes(), text])


def decode(blob: bytes) -> History:
    """The record written by `encode`; ValueError for bytes that are not one."""
    magic, n, m, text_len = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not a winback history record")
    offset = _HEADER.size
    parts = []
    for dtype, count in (("<i4", n), ("<f8", n), ("<f8", n), ("<i4", n), ("<i4", n), ("<i4", m), ("<i4", m),
                         ("<i4", m)):
        parts.append(np.frombuffer(blob, dtype=dtype, count=count, offset=offset))
        offset += parts[-1].nbytes
    text = blob[offset:offset + text_len].decode()
    if offset + text_len != len(blob):
        raise ValueError("winback history record: wrong length")
    return History(*parts, labels=text.split(_SEP) if text_len else [])


@dataclass(frozen=True)
class Rows:
    """Incoming rows as arrays, sliced per customer without a DataFrame per customer: purchase rows
    (transactions contract) or engagement events (events contract; `amount` and `quantity` unused)."""

    day: np.ndarray
    amount: np.ndarray
    quantity: np.ndarray
    first: np.ndarray  # category of a purchase, type of an event (object array, None = missing)
    channel: np.ndarray

    @classmethod
    def purchases(cls, frame: pd.DataFrame) -> "Rows":
        n = len(frame)
        return cls(_days(frame[TIME]), frame[AMOUNT].to_numpy(dtype=np.float64),
                   frame["quantity"].to_numpy(dtype=np.float64) if "quantity" in frame else np.full(n, np.nan),
                   _labels(frame, "category"), _labels(frame, "channel"))

    @classmethod
    def events(cls, frame: pd.DataFrame) -> "Rows":
        n = len(frame)
        return cls(_days(frame[TIME]), np.zeros(n), np.zeros(n), _labels(frame, "event_type"),
                   _labels(frame, "channel"))

    def take(self, positions: np.ndarray) -> "Rows":
        return Rows(self.day[positions], self.amount[positions], self.quantity[positions], self.first[positions],
                    self.channel[positions])


def _labels(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), None, dtype=object)
    values = frame[name]
    return values.astype(object).where(values.notna(), None).to_numpy(dtype=object)


def append(history: History, purchases: Rows | None = None, events: Rows | None = None) -> History:
    """A new record: `history` plus this customer's purchase rows and engagement events, in arrival order."""
    labels = list(history.labels)
    position = {name: i for i, name in enumerate(labels)}

    def codes(values) -> np.ndarray:
        out = np.full(len(values), -1, dtype=np.int32)
        for i, value in enumerate(values):
            if value is None:
                continue
            code = position.get(value)
            if code is None:
                code = position[value] = len(labels)
                labels.append(value)
            out[i] = code
        return out

    out = History(**{name: getattr(history, name) for name in History.__dataclass_fields__ if name != "labels"},
                  labels=labels)
    if purchases is not None and len(purchases.day):
        out.day = np.concatenate([history.day, purchases.day])
        out.amount = np.concatenate([history.amount, purchases.amount])
        out.quantity = np.concatenate([history.quantity, purchases.quantity])
        out.category = np.concatenate([history.category, codes(purchases.first)])
        out.channel = np.concatenate([history.channel, codes(purchases.channel)])
    if events is not None and len(events.day):
        out.event_day = np.concatenate([history.event_day, events.day])
        out.event_type = np.concatenate([history.event_type, codes(events.first)])
        out.event_channel = np.concatenate([history.event_channel, codes(events.channel)])
    return out


def _days(timestamps: pd.Series) -> np.ndarray:
    return timestamps.to_numpy().astype("datetime64[D]").astype(np.int64).astype(np.int32)


@dataclass(frozen=True)
class Columns:
    """Which optional transaction columns the rebuilt rows carry: those the data has ever had, as in a batch
    build over the same file (a column present changes which features exist, absent values are missing)."""

    quantity: bool = False
    category: bool = False
    channel: bool = False
    events: bool = False
    event_channel: bool = False


def frames(histories: dict[str, History], columns: Columns) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(transactions, events) tables of these customers in the contracts `build_features` reads."""
    ids, days, amounts, quantities, cats, chans = [], [], [], [], [], []
    e_ids, e_days, e_types, e_chans = [], [], [], []
    for cid, h in histories.items():
        labels = np.asarray([*h.labels, None], dtype=object)  # code −1 picks the None
        if h.purchases:
            ids.append(np.full(h.purchases, cid, dtype=object))
            days.append(h.day)
            amounts.append(h.amount)
            quantities.append(h.quantity)
            cats.append(labels[h.category])
            chans.append(labels[h.channel])
        if h.events:
            e_ids.append(np.full(h.events, cid, dtype=object))
            e_days.append(h.event_day)
            e_types.append(labels[h.event_type])
            e_chans.append(labels[h.event_channel])

    def cat(parts, dtype=None):
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype or object)

    tx = {ID: pd.array(cat(ids), dtype="str"), TIME: _timestamps(cat(days, np.int32)),
          AMOUNT: cat(amounts, np.float64)}
    if columns.quantity:
        tx["quantity"] = cat(quantities, np.float64)
    for name, parts in (("category", cats), ("channel", chans)):
        if getattr(columns, name):
            tx[name] = pd.array(cat(parts), dtype="str")
    transactions = pd.DataFrame(tx)
    if not columns.events:
        return transactions, None
    ev = {ID: pd.array(cat(e_ids), dtype="str"), TIME: _timestamps(cat(e_days, np.int32)),
          "event_type": pd.array(cat(e_types), dtype="str")}
    if columns.event_channel:
        ev["channel"] = pd.array(cat(e_chans), dtype="str")
    return transactions, pd.DataFrame(ev)


def _timestamps(days: np.ndarray) -> np.ndarray:
    return (EPOCH + days.astype(np.int64)).astype("datetime64[ns]")


def history_features(histories: dict[str, History], as_of, columns: Columns, event_types=None,
                     affinity_categories=None, profiles: pd.DataFrame | None = None) -> pd.DataFrame:
    """`build_features` of these customers as of `as_of`: the rows of the customers with a purchase (or, with
    events, an event) on or before it, every column equal to a batch build over all customers' files with the
    same event types and affinity categories (the two inputs that depend on other customers: pass the batch's
    ones, a model's, or the store's totals)."""
    from features import affinity
    from features.build import build_features

    transactions, events = frames(histories, columns)
    reference = None
    if columns.category:
        reference = affinity.AffinityReference(tuple(str(c) for c in (affinity_categories or ())))
    types = tuple(event_types) if event_types is not None else ()
    return build_features(transactions, as_of, profiles=profiles, events=events, event_types=types,
                          affinity_reference=reference,
                          affinity_categories=affinity.MAX_CATEGORIES if columns.category else 0)
