"""The online store: one history record per customer, the features and scores last computed from it, the
event ids already applied, and the outbox of triggers.

Every backend follows one write protocol, so that a batch is applied whole or not at all:

1. in one transaction (SQLite `BEGIN IMMEDIATE`; Redis `WATCH` + `MULTI`), find which event ids were already
   applied and load the customers the new ones touch;
2. `plan` (backend-free) appends the new rows to the records, asks the engine's `materialise` for their
   features, scores and triggers, and returns everything to write;
3. write records, event ids, features, triggers and the store's totals, and commit.

A batch replayed after a crash (at-least-once delivery) finds its event ids applied and changes nothing, so
no event counts twice and no crossing is written twice. `open_store` picks the backend from a URL:
`sqlite:///path/online.db` (embedded default) or `redis://host:port/db`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.contracts import AMOUNT, ID
from features.errors import DataError
from features.history import (Columns, History, Labels, append, by_customer, decode, encode, event_records,
                              purchase_records)

EVENT_ID = "event_id"


@dataclass
class StoredCustomer:
    """A customer's entry: the history record, its version (one more per applied batch), and what was last
    computed from it: the feature row (a `serving.online.codec` blob) as of `features_day`, churn probability
    and lifecycle stage."""

    history: History
    version: int = 0
    features: bytes | None = None
    features_day: int | None = None
    churn_probability: float | None = None
    lifecycle_stage: str | None = None


@dataclass
class StoreMeta:
    """Store-wide facts the features need: which optional columns the data has had, spend per category and
    events per type (they choose the affinity categories and event types when no model fixes them), and the
    schemas of the stored feature rows (`serving.online.codec`), and the names the records' label codes
    point to (`features.history.Labels`)."""

    columns: Columns = field(default_factory=Columns)
    category_spend: dict[str, float] = field(default_factory=dict)
    type_counts: dict[str, int] = field(default_factory=dict)
    schemas: dict[str, list[list[str]]] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"columns": self.columns.__dict__, "category_spend": self.category_spend,
                           "type_counts": self.type_counts, "schemas": self.schemas, "labels": self.labels})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "StoreMeta":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(Columns(**data["columns"]), dict(data["category_spend"]), dict(data["type_counts"]),
                   dict(data.get("schemas", {})), list(data.get("labels", [])))


@dataclass
class Batch:
    """Validated incoming rows: purchases (transactions contract) and engagement events (events contract),
    each with an `event_id` column (unique within the batch: `engine.parse_batch` keeps the first)."""

    purchases: pd.DataFrame
    events: pd.DataFrame

    @property
    def event_ids(self) -> list[str]:
        return [*self.purchases[EVENT_ID].tolist(), *self.events[EVENT_ID].tolist()]

    def __len__(self) -> int:
        return len(self.purchases) + len(self.events)


@dataclass
class Materialised:
    """What the engine computed for one customer."""

    features: bytes | None
    features_day: int
    churn_probability: float | None = None
    lifecycle_stage: str | None = None


# engine callback: (customers after the append, their entries before it, store meta) →
# (per customer what was computed, triggers to write)
Materialise = Callable[[dict[str, StoredCustomer], dict[str, StoredCustomer], StoreMeta],
                       tuple[dict[str, Materialised], list[dict]]]


@dataclass
class Update:
    customers: dict[str, StoredCustomer]
    event_ids: list[str]
    triggers: list[dict]
    meta: StoreMeta
    received: int
    duplicates: int


@dataclass(frozen=True)
class Applied:
    """The answer to one batch: rows received, already applied before (skipped), applied now, customers
    touched, triggers written."""

    received: int
    duplicates: int
    applied: int
    customers: int
    triggers: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan(batch: Batch, seen: set[str], loaded: dict[str, StoredCustomer], meta: StoreMeta,
         materialise: Materialise | None, touch: Iterable[str] = ()) -> Update:
    """Everything one batch writes (step 2 of the protocol). `seen`: the batch's event ids already applied;
    `loaded`: the stored entries of the customers in the batch (and of `touch`, refreshed without new rows)."""
    purchases = batch.purchases[~batch.purchases[EVENT_ID].isin(seen)] if seen else batch.purchases
    events = batch.events[~batch.events[EVENT_ID].isin(seen)] if seen else batch.events
    labels = Labels(meta.labels)
    p_rows = by_customer(purchases[ID].to_numpy(dtype=object), purchase_records(purchases, labels))
    e_rows = by_customer(events[ID].to_numpy(dtype=object), event_records(events, labels))
    before: dict[str, StoredCustomer] = {}
    after: dict[str, StoredCustomer] = {}
    empty = StoredCustomer(History())
    for cid in dict.fromkeys([*p_rows, *e_rows, *touch]):
        old = before[cid] = loaded.get(cid, empty)
        after[cid] = StoredCustomer(append(old.history, p_rows.get(cid, b""), e_rows.get(cid, b"")), old.version + 1,
                                    old.features, old.features_day, old.churn_probability, old.lifecycle_stage)
    meta = _updated_meta(meta, purchases, events)
    meta.labels = labels.names
    triggers: list[dict] = []
    if materialise is not None and after:
        computed, triggers = materialise(after, before, meta)
        for cid, m in computed.items():
            entry = after[cid]  # a new object of this batch: set in place
            entry.features, entry.features_day = m.features, m.features_day
            entry.churn_probability, entry.lifecycle_stage = m.churn_probability, m.lifecycle_stage
    ids = [*purchases[EVENT_ID].tolist(), *events[EVENT_ID].tolist()]
    return Update(after, ids, triggers, meta, len(batch), len(batch) - len(ids))


def _updated_meta(meta: StoreMeta, purchases: pd.DataFrame, events: pd.DataFrame) -> StoreMeta:
    def has(frame: pd.DataFrame, name: str) -> bool:
        return bool(name in frame and frame[name].notna().any())

    columns = Columns(quantity=meta.columns.quantity or has(purchases, "quantity"),
                      category=meta.columns.category or has(purchases, "category"),
                      channel=meta.columns.channel or has(purchases, "channel"),
                      events=meta.columns.events or len(events) > 0,
                      event_channel=meta.columns.event_channel or has(events, "channel"))
    spend = dict(meta.category_spend)
    if "category" in purchases and len(purchases):
        known = purchases["category"].notna()
        sums = np.maximum(purchases.loc[known, AMOUNT].to_numpy(dtype=float), 0.0)
        for name, value in pd.Series(sums).groupby(purchases.loc[known, "category"].to_numpy()).sum().items():
            spend[str(name)] = spend.get(str(name), 0.0) + float(value)
    counts = dict(meta.type_counts)
    if len(events):
        for name, value in events["event_type"].value_counts().items():
            counts[str(name)] = counts.get(str(name), 0) + int(value)
    return StoreMeta(columns, spend, counts, dict(meta.schemas))


class OnlineStore:
    """The contract every backend keeps (SQLite here, Redis in `redis_store`)."""

    url: str

    def apply(self, batch: Batch, materialise: Materialise | None = None, touch: Iterable[str] = ()) -> Applied:
        """Apply a batch whole or not at all; `touch`: customers to recompute without new rows (a sweep)."""
        raise NotImplementedError

    def customers(self, ids: Iterable[str], history: bool = True) -> dict[str, StoredCustomer]:
        """The stored entries of these customers (absent ones left out); `history=False` leaves the records
        out (empty `History()`), for reads of the computed features only."""
        raise NotImplementedError

    def scan(self, batch_size: int = 10_000) -> Iterator[dict[str, StoredCustomer]]:
        """Every customer, in batches."""
        raise NotImplementedError

    def meta(self) -> StoreMeta:
        raise NotImplementedError

    def triggers(self, after: str | int | None = None, limit: int = 1000) -> list[dict]:
        """Outbox entries after the given id, oldest first."""
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        """{"customers", "events" (applied event ids), "triggers"}."""
        raise NotImplementedError

    def ping(self) -> None:
        """Raise if the store cannot be reached."""
        raise NotImplementedError

    def close(self) -> None:
        pass


SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    customer_id TEXT PRIMARY KEY, history BLOB NOT NULL, version INTEGER NOT NULL, features BLOB,
    features_day INTEGER, churn_probability REAL, lifecycle_stage TEXT, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS applied_events (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, trigger_key TEXT NOT NULL UNIQUE, customer_id TEXT NOT NULL,
    kind TEXT NOT NULL, old TEXT, new TEXT, as_of TEXT NOT NULL, churn_probability REAL, lifecycle_stage TEXT,
    incentive TEXT, expected_net_value REAL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_CHUNK = 900  # parameters per IN (...) query


class SQLiteStore(OnlineStore):
    """The embedded store: one SQLite file in WAL mode. Several processes (service workers, `winback stream`)
    may share it: writers take turns (`BEGIN IMMEDIATE`, waiting up to `timeout` seconds), readers never wait."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        if not self.path.parent.is_dir():
            raise DataError(f"online store {self.url}: folder {self.path.parent} does not exist")
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit survives a process crash
        self._conn.executescript(SCHEMA)

    def apply(self, batch: Batch, materialise: Materialise | None = None, touch: Iterable[str] = ()) -> Applied:
        conn = self._conn
        touch = list(touch)
        conn.execute("BEGIN IMMEDIATE")
        try:
            seen = self._applied(batch.event_ids)
            ids = [*batch.purchases[ID].tolist(), *batch.events[ID].tolist(), *touch]
            loaded = self.customers(dict.fromkeys(ids))
            update = plan(batch, seen, loaded, self.meta(), materialise, touch)
            now = time.time()
            conn.executemany(
                "INSERT OR REPLACE INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(cid, encode(c.history), c.version, c.features,
                  c.features_day, c.churn_probability, c.lifecycle_stage, now) for cid, c in update.customers.items()])
            conn.executemany("INSERT INTO applied_events VALUES (?)", [(i,) for i in update.event_ids])
            written = 0
            for t in update.triggers:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO triggers (trigger_key, customer_id, kind, old, new, as_of, churn_probability,"
                    " lifecycle_stage, incentive, expected_net_value, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (t["trigger_key"], t["customer_id"], t["kind"], _text(t["old"]), _text(t["new"]), t["as_of"],
                     t.get("churn_probability"), t.get("lifecycle_stage"), t.get("incentive"),
                     t.get("expected_net_value"), now))
                written += cursor.rowcount
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('meta', ?)", (update.meta.to_json(),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return Applied(update.received, update.duplicates, len(update.event_ids), len(update.customers), written)

    def _applied(self, event_ids: list[str]) -> set[str]:
        out: set[str] = set()
        for start in range(0, len(event_ids), _CHUNK):
            part = event_ids[start:start + _CHUNK]
            rows = self._conn.execute(f"SELECT event_id FROM applied_events WHERE event_id IN "
                                      f"({','.join('?' * len(part))})", part)
            out.update(r[0] for r in rows)
        return out

    def customers(self, ids: Iterable[str], history: bool = True) -> dict[str, StoredCustomer]:
        ids = list(ids)
        out: dict[str, StoredCustomer] = {}
        record = "history" if history else "NULL"
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            rows = self._conn.execute(
                f"SELECT customer_id, {record}, version, features, features_day, churn_probability, lifecycle_stage "
                f"FROM customers WHERE customer_id IN ({','.join('?' * len(part))})", part)
            out.update((r[0], _stored(r)) for r in rows)
        return out

    def scan(self, batch_size: int = 10_000) -> Iterator[dict[str, StoredCustomer]]:
        last = ""
        while True:
            rows = self._conn.execute(
                "SELECT customer_id, history, version, features, features_day, churn_probability, lifecycle_stage "
                "FROM customers WHERE customer_id > ? ORDER BY customer_id LIMIT ?", (last, batch_size)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield {r[0]: _stored(r) for r in rows}

    def meta(self) -> StoreMeta:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'meta'").fetchone()
        return StoreMeta.from_json(row[0] if row else None)

    def triggers(self, after: str | int | None = None, limit: int = 1000) -> list[dict]:
        rows = self._conn.execute(
            "SELECT id, customer_id, kind, old, new, as_of, churn_probability, lifecycle_stage, incentive, "
            "expected_net_value, created_at FROM triggers WHERE id > ? ORDER BY id LIMIT ?",
            (int(after or 0), limit)).fetchall()
        names = ("id", "customer_id", "kind", "old", "new", "as_of", "churn_probability", "lifecycle_stage",
                 "incentive", "expected_net_value", "created_at")
        return [dict(zip(names, r)) for r in rows]

    def counts(self) -> dict[str, int]:
        one = self._conn.execute
        return {"customers": one("SELECT count(*) FROM customers").fetchone()[0],
                "events": one("SELECT count(*) FROM applied_events").fetchone()[0],
                "triggers": one("SELECT count(*) FROM triggers").fetchone()[0]}

    def ping(self) -> None:
        self._conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        self._conn.close()


def _text(value) -> str | None:
    return None if value is None else str(value)


def _stored(row) -> StoredCustomer:
    return StoredCustomer(History() if row[1] is None else decode(row[1]), row[2], row[3], row[4], row[5], row[6])


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the store cannot be reached or written now" rather than a bug: SQLite's
    operational errors (locked past the timeout, disk I/O, file gone), OS errors, Redis connection errors and
    timeouts (when the redis client is installed)."""
    errors: list[type[BaseException]] = [sqlite3.OperationalError, OSError]
    try:
        import redis.exceptions as redis_errors
    except ImportError:
        pass
    else:
        errors += [redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError]
    return tuple(errors)


def open_store(url: str) -> OnlineStore:
    """The store behind a URL: `sqlite:///relative.db`, `sqlite:////absolute.db`, or `redis://host:port/db`."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///"):])
    if url.startswith(("redis://", "rediss://", "unix://")):
        from serving.online.redis_store import RedisStore

        return RedisStore(url)
    raise DataError(f"online store {url!r}: expected sqlite:///path.db or redis://host:port/db")
