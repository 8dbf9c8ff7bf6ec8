"""One customer's purchase and engagement history as a compact binary record, and the point-in-time features
of many such records computed by `build_features` itself.

The online store (`serving.online`) keeps one record per customer and appends the events it receives. The
record holds what the features read, at the resolution they read it: the calendar day of every purchase
row (features count calendar days), its amount, quantity, category and channel, and the day, type and
channel of every engagement event. Nothing is summarised away, for two reasons:

- **exact as of any later time, whatever the arrival order.** A late event (yesterday's purchase arriving
  after today's) slots into the gaps, windows and affinity weights exactly as in a batch build, which
  running totals cannot do for gap standard deviations or for a window that a late row enters and leaves;
- **one implementation.** `history_features` rebuilds the rows of the asked customers and calls
  `build_features` on them, so the online features *are* the batch features (`tests/test_online_store.py`
  compares every column for every customer of CDNOW and of the simulator).

Compact and cheap to grow: a record is a 12-byte header and fixed-width rows, 28 bytes per purchase
(day i4, amount f8, quantity f8, category i4, channel i4) and 12 per engagement event (day i4, type i4,
channel i4). Labels are codes into one store-wide list (`Labels`, −1 = missing), so appending rows is
joining bytes, and the rows of thousands of customers become one table with one `np.frombuffer`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contracts import AMOUNT, ID, TIME

MAGIC = b"WBH2"
_HEADER = struct.Struct("<4sII")  # magic, purchase rows, engagement events
PURCHASE = np.dtype([("day", "<i4"), ("amount", "<f8"), ("quantity", "<f8"), ("category", "<i4"),
                     ("channel", "<i4")])
EVENT = np.dtype([("day", "<i4"), ("type", "<i4"), ("channel", "<i4")])
EPOCH = np.datetime64("1970-01-01", "D")


class History:
    """One customer's record: the bytes themselves (`encode` / `decode` are free), with views of its rows."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes | None = None):
        self.blob = blob if blob is not None else _HEADER.pack(MAGIC, 0, 0)

    @property
    def purchases(self) -> int:
        return _HEADER.unpack_from(self.blob)[1]

    @property
    def events(self) -> int:
        return _HEADER.unpack_from(self.blob)[2]

    def purchase_rows(self) -> np.ndarray:
        return np.frombuffer(self.blob, dtype=PURCHASE, count=self.purchases, offset=_HEADER.size)

    def event_rows(self) -> np.ndarray:
        return np.frombuffer(self.blob, dtype=EVENT, count=self.events,
                             offset=_HEADER.size + self.purchases * PURCHASE.itemsize)

    def last_day(self) -> int | None:
        """The newest day of any row (None for an empty record)."""
        days = [int(rows["day"].max()) for rows in (self.purchase_rows(), self.event_rows()) if len(rows)]
        return max(days) if days else None

    def __eq__(self, other) -> bool:
        return isinstance(other, History) and self.blob == other.blob

    def __repr__(self) -> str:
        return f"History({self.purchases} purchases, {self.events} events)"


def encode(history: History) -> bytes:
    return history.blob


def decode(blob: bytes) -> History:
    """The record of these bytes; ValueError for bytes that are not one."""
    if len(blob) < _HEADER.size:
        raise ValueError("not a winback history record")
    magic, n, m = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not a winback history record")
    if len(blob) != _HEADER.size + n * PURCHASE.itemsize + m * EVENT.itemsize:
        raise ValueError("winback history record: wrong length")
    return History(bytes(blob))


def append(history: History, purchases: bytes = b"", events: bytes = b"") -> History:
    """A new record: `history` plus purchase rows and engagement events (bytes of `PURCHASE` / `EVENT` rows,
    as `by_customer` cuts them), in arrival order."""
    if not purchases and not events:
        return history
    blob = history.blob
    n, m = _HEADER.unpack_from(blob)[1:]
    split = _HEADER.size + n * PURCHASE.itemsize
    return History(b"".join([_HEADER.pack(MAGIC, n + len(purchases) // PURCHASE.itemsize,
                                          m + len(events) // EVENT.itemsize),
                             blob[_HEADER.size:split], purchases, blob[split:], events]))


class Labels:
    """The store-wide list of category, channel and event-type names; a row holds a name's position."""

    def __init__(self, names: Iterable[str] = ()):
        self.names = list(names)
        self._position = {name: i for i, name in enumerate(self.names)}

    def codes(self, values) -> np.ndarray:
        """Codes of `values` (−1 for missing), adding names not seen before."""
        found, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
        mapping = np.empty(len(uniques) + 1, dtype=np.int32)
        for i, name in enumerate(uniques):
            name = str(name)
            code = self._position.get(name)
            if code is None:
                code = self._position[name] = len(self.names)
                self.names.append(name)
            mapping[i] = code
        mapping[-1] = -1
        return mapping[found]

    def lookup(self) -> np.ndarray:
        """names as an object array with None last, so that `lookup()[codes]` maps −1 to None."""
        return np.asarray([*self.names, None], dtype=object)


def purchase_records(frame: pd.DataFrame, labels: Labels) -> np.ndarray:
    """Purchase rows (transactions contract) as `PURCHASE` records, in frame order."""
    out = np.empty(len(frame), dtype=PURCHASE)
    out["day"] = _days(frame[TIME])
    out["amount"] = frame[AMOUNT].to_numpy(dtype=np.float64)
    out["quantity"] = frame["quantity"].to_numpy(dtype=np.float64, na_value=np.nan) if "quantity" in frame else np.nan
    out["category"] = labels.codes(frame["category"].to_numpy(dtype=object)) if "category" in frame else -1
    out["channel"] = labels.codes(frame["channel"].to_numpy(dtype=object)) if "channel" in frame else -1
    return out


def event_records(frame: pd.DataFrame, labels: Labels) -> np.ndarray:
    """Engagement events (events contract) as `EVENT` records, in frame order."""
    out = np.empty(len(frame), dtype=EVENT)
    out["day"] = _days(frame[TIME])
    out["type"] = labels.codes(frame["event_type"].to_numpy(dtype=object))
    out["channel"] = labels.codes(frame["channel"].to_numpy(dtype=object)) if "channel" in frame else -1
    return out


def by_customer(ids, records: np.ndarray) -> dict[str, bytes]:
    """Each customer's records as bytes, in arrival order (one sort and one `tobytes` for the whole batch)."""
    if not len(records):
        return {}
    ids = np.asarray(ids, dtype=object)
    order = np.argsort(ids, kind="stable")
    keys = ids[order]
    raw = records[order].tobytes()
    width = records.dtype.itemsize
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)] * width
    return {str(keys[s]): raw[s * width:e] for s, e in zip(starts.tolist(), ends.tolist())}


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


def frames(histories: Mapping[str, History], columns: Columns,
           labels: Labels | list[str]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(transactions, events) tables of these customers in the contracts `build_features` reads."""
    names = (labels if isinstance(labels, Labels) else Labels(labels)).lookup()
    ids = np.asarray(list(histories), dtype=object)
    records = list(histories.values())
    header = [_HEADER.unpack_from(h.blob) for h in records]
    n = np.fromiter((h[1] for h in header), dtype=np.int64, count=len(header))
    m = np.fromiter((h[2] for h in header), dtype=np.int64, count=len(header))
    split = _HEADER.size + n * PURCHASE.itemsize
    p = np.frombuffer(b"".join([h.blob[_HEADER.size:s] for h, s in zip(records, split.tolist())]), dtype=PURCHASE)
    tx = {ID: pd.array(np.repeat(ids, n), dtype="str"), TIME: _timestamps(p["day"]),
          AMOUNT: p["amount"].astype(np.float64)}
    if columns.quantity:
        tx["quantity"] = p["quantity"].astype(np.float64)
    for name in ("category", "channel"):
        if getattr(columns, name):
            tx[name] = pd.array(names[p[name]], dtype="str")
    transactions = pd.DataFrame(tx)
    if not columns.events:
        return transactions, None
    e = np.frombuffer(b"".join([h.blob[s:] for h, s in zip(records, split.tolist())]), dtype=EVENT)
    ev = {ID: pd.array(np.repeat(ids, m), dtype="str"), TIME: _timestamps(e["day"]),
          "event_type": pd.array(names[e["type"]], dtype="str")}
    if columns.event_channel:
        ev["channel"] = pd.array(names[e["channel"]], dtype="str")
    return transactions, pd.DataFrame(ev)


def _timestamps(days: np.ndarray) -> np.ndarray:
    return (EPOCH + days.astype(np.int64)).astype("datetime64[ns]")


def history_features(histories: Mapping[str, History], as_of, columns: Columns, labels: Labels | list[str],
                     event_types=None, affinity_categories=None, profiles: pd.DataFrame | None = None) -> pd.DataFrame:
    """`build_features` of these customers as of `as_of`: the rows of the customers with a purchase (or, with
    events, an event) on or before it, every column equal to a batch build over all customers' files with the
    same event types and affinity categories (the two inputs that depend on other customers: pass the batch's
    ones, a model's, or the store's totals)."""
    from features import affinity
    from features.build import build_features

    transactions, events = frames(histories, columns, labels)
    reference = None
    if columns.category:
        reference = affinity.AffinityReference(tuple(str(c) for c in (affinity_categories or ())))
    types = tuple(event_types) if event_types is not None else ()
    return build_features(transactions, as_of, profiles=profiles, events=events, event_types=types,
                          affinity_reference=reference,
                          affinity_categories=affinity.MAX_CATEGORIES if columns.category else 0)
