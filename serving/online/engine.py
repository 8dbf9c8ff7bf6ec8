"""What a batch of events does to the online store, and how fresh features are read back.

`OnlineEngine` holds the store, the churn and uplift runtimes, optional customer profiles, the trigger rule and
the clock. `ingest` applies a validated batch (`parse_batch`) through the store's write protocol with
`materialise` as the callback: the touched customers' features are rebuilt from their records as of the
clock's day (`features.history.history_features`, i.e. `build_features`), scored by the churn runtime
(`score_columns`, the code `/score` calls), and a trigger is written for each threshold crossing. `lookup`
answers the features of customers by id as of the clock's day: the stored row when it was computed that day,
else rebuilt from the record (a day has passed: recency, windows and decay move with the calendar).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contracts import ID, normalize_transactions
from features.errors import DataError
from features.events import normalize_events
from features.history import Columns, History, history_features
from serving.online import codec
from serving.online.store import EVENT_ID, Applied, Batch, Materialised, OnlineStore, StoredCustomer, StoreMeta

TRANSACTION_FIELDS = ("event_id", "customer_id", "timestamp", "amount", "quantity", "category", "channel")
EVENT_FIELDS = ("event_id", "customer_id", "timestamp", "event_type", "channel")
DEFAULT_STAGES = ("at_risk", "dormant", "churned")


@dataclass(frozen=True)
class TriggerRule:
    """When a trigger is written: the churn probability crosses `churn_threshold` (either way), or the
    lifecycle stage changes into or out of one of `stages`. A customer's first score is not a crossing."""

    churn_threshold: float | None = 0.5
    stages: tuple[str, ...] = DEFAULT_STAGES

    def __post_init__(self):
        if self.churn_threshold is not None and not 0.0 < self.churn_threshold < 1.0:
            raise DataError(f"--trigger-churn: {self.churn_threshold} must be between 0 and 1")
        from features.segment import STAGES

        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise DataError(f"--trigger-stages: unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")


@dataclass(frozen=True)
class Clock:
    """The store's "now": a fixed day (replays, back-tests: `--as-of`) or today in UTC."""

    fixed: dt.date | None = None

    def today(self) -> pd.Timestamp:
        return pd.Timestamp(self.fixed) if self.fixed is not None else pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()

    def day(self) -> int:
        from features.build import as_of_day

        return as_of_day(self.today())


def _records(frame: pd.DataFrame) -> list[dict]:
    """Feature rows as dicts (NaN → None, categories → text), in frame order: what stored rows decode to."""
    sid, schema, blobs = codec.pack(frame)
    decoder = codec.Decoder({sid: schema})
    return [decoder(blob) for blob in blobs]


class OnlineEngine:
    """The store plus what computes features, scores and triggers from it."""

    def __init__(self, store: OnlineStore, churn=None, uplift=None, profiles: pd.DataFrame | None = None,
                 rule: TriggerRule = TriggerRule(), clock: Clock = Clock(), allow_refunds: bool = False):
        self.store, self.churn, self.uplift, self.profiles = store, churn, uplift, profiles
        self.rule, self.clock, self.allow_refunds = rule, clock, allow_refunds
        self.event_types, self.affinity_categories = None, None
        self.decode = codec.Decoder(refresh=lambda _: self.store.meta().schemas)
        if churn is not None:
            from features.events import event_types_in
            from serving.batch.score import model_affinity_categories

            self.event_types = event_types_in(churn.feature_names)
            self.affinity_categories = model_affinity_categories(churn)

    # -- features -------------------------------------------------------------------------------------------
    def spec(self, meta: StoreMeta) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        """(event types, affinity categories): the churn model's, else the store's most frequent / most spent."""
        from features.affinity import top_categories
        from features.events import most_frequent_types

        types = self.event_types
        if types is None and meta.columns.events:
            types = most_frequent_types(pd.Series(meta.type_counts, dtype="int64"))
        categories = self.affinity_categories
        if categories is None and meta.columns.category:
            categories = top_categories(pd.Series(meta.category_spend, dtype="float64"))
        return (None if types is None else tuple(types)), (None if categories is None else tuple(categories))

    def features(self, histories: Mapping[str, History], as_of, meta: StoreMeta | None = None,
                 event_types=None, affinity_categories=None) -> pd.DataFrame:
        """`build_features` of these records as of `as_of` (the model's or the store's event types and
        affinity categories unless given), with the profiles joined."""
        meta = meta if meta is not None else self.store.meta()
        types, categories = self.spec(meta)
        types = tuple(event_types) if event_types is not None else types
        categories = tuple(affinity_categories) if affinity_categories is not None else categories
        return history_features(histories, as_of, meta.columns, meta.labels, types, categories, self.profiles)

    def lookup(self, ids: Sequence[str]) -> dict[str, dict]:
        """Feature rows of these customers as of the clock's day; customers the store does not know (or with
        nothing on or before that day) are left out."""
        today = self.clock.day()
        stored = self.store.customers(dict.fromkeys(ids), history=False)
        out = {cid: self.decode(c.features) for cid, c in stored.items()
               if c.features_day == today and c.features is not None}
        stale = [cid for cid in stored if cid not in out]
        if stale:
            records = {cid: c.history for cid, c in self.store.customers(stale).items()}
            frame = self.features(records, self.clock.today())
            out.update(zip(frame.index.tolist(), _records(frame)))
        return out

    # -- writes ---------------------------------------------------------------------------------------------
    def ingest(self, batch: Batch) -> Applied:
        return self.store.apply(batch, self.materialise)

    def sweep(self, batch_size: int = 5_000) -> Applied:
        """Recompute every customer whose stored features are older than the clock's day (recency grows while a
        customer is silent, so stages and churn probabilities cross thresholds without any event), and, with a
        churn model, every customer with features but no score yet (a history loaded without models)."""
        today = self.clock.day()
        empty = parse_batch([], [])
        totals = np.zeros(5, dtype=np.int64)
        unscored = self.churn is not None
        for part in self.store.scan(batch_size):
            stale = [cid for cid, c in part.items() if c.features_day != today
                     or (unscored and c.churn_probability is None and c.features is not None)]
            if stale:
                done = self.store.apply(empty, self.materialise, touch=stale)
                totals += [done.received, done.duplicates, done.applied, done.customers, done.triggers]
        return Applied(*(int(v) for v in totals))

    def materialise(self, after: dict[str, StoredCustomer], before: dict[str, StoredCustomer],
                    meta: StoreMeta) -> tuple[dict[str, Materialised], list[dict]]:
        """The store's callback: features, churn probability and stage of the touched customers as of today,
        and the triggers their changes raise."""
        as_of = self.clock.today()
        day = self.clock.day()
        frame = self.features({cid: c.history for cid, c in after.items()}, as_of, meta)
        sid, schema, blobs = codec.pack(frame)
        if len(frame):
            meta.schemas.setdefault(sid, schema)  # written with this batch (plan passes the meta it writes)
        rows = dict(zip(frame.index.tolist(), blobs))
        p = stage = None
        if self.churn is not None and len(frame):
            from serving.api.online import score_columns

            X = self.churn.encoder.transform(frame)
            cols = score_columns(self.churn, X, reasons_top=0)
            p, stage = cols.churn_probability, cols.lifecycle_stage
        position = {cid: i for i, cid in enumerate(frame.index.tolist())}
        computed: dict[str, Materialised] = {}
        crossings: list[tuple[str, str, object, object]] = []
        for cid, entry in after.items():
            i = position.get(cid)
            old = before[cid]
            if i is None:  # nothing on or before today yet (only future-dated rows)
                computed[cid] = Materialised(None, day, old.churn_probability, old.lifecycle_stage)
                continue
            new_p = None if p is None else float(p[i])
            new_stage = None if stage is None or stage[i] is None else str(stage[i])
            computed[cid] = Materialised(rows[cid], day, new_p, new_stage)
            crossings.extend((cid, kind, a, b) for kind, a, b in self._crossings(old, new_p, new_stage))
        return computed, self._triggers(crossings, frame, position, after, computed, as_of)

    def _crossings(self, old: StoredCustomer, p: float | None, stage: str | None):
        threshold = self.rule.churn_threshold
        if threshold is not None and old.churn_probability is not None and p is not None \
                and (old.churn_probability >= threshold) != (p >= threshold):
            yield "churn_probability", old.churn_probability, p
        if old.lifecycle_stage is not None and stage is not None and old.lifecycle_stage != stage \
                and (old.lifecycle_stage in self.rule.stages or stage in self.rule.stages):
            yield "lifecycle_stage", old.lifecycle_stage, stage

    def _triggers(self, crossings, frame: pd.DataFrame, position: dict, after, computed, as_of) -> list[dict]:
        if not crossings:
            return []
        incentive = value = None
        ids = list(dict.fromkeys(c[0] for c in crossings))
        if self.uplift is not None:
            rows = frame.iloc[[position[cid] for cid in ids]]
            pred = self.uplift.predict(self.uplift.encoder.transform(rows))
            incentive = dict(zip(ids, pred.incentive.tolist()))
            value = dict(zip(ids, pred.expected_net_value.tolist()))
        return [{"trigger_key": f"{cid}:{kind}:{after[cid].version}", "customer_id": cid, "kind": kind,
                 "old": old, "new": new, "as_of": str(as_of.date()),
                 "churn_probability": computed[cid].churn_probability, "lifecycle_stage": computed[cid].lifecycle_stage,
                 "incentive": None if incentive is None else str(incentive[cid]),
                 "expected_net_value": None if value is None else float(value[cid])}
                for cid, kind, old, new in crossings]


_ROW = re.compile(r"^column '(?P<column>[^']+)'(?: \([^)]*\))?: (?P<what>[^;]*); \d+ bad value\(s\): row (?P<row>\d+)")


def parse_batch(transactions: Sequence[Mapping], events: Sequence[Mapping], allow_refunds: bool = False,
                names: tuple[str, str] = ("transactions", "events")) -> Batch:
    """Request or stream records → a validated `Batch`. The contracts of `winback features build` apply
    (`normalize_transactions`, `normalize_events`); every row also needs an `event_id`. Errors name the
    record and field, e.g. `transactions[3].amount: missing or non-numeric value ('x')`. Rows whose event id
    repeats one earlier in the batch are dropped (the first counts)."""
    purchases = _table(transactions, TRANSACTION_FIELDS, ("event_id", "customer_id", "timestamp", "amount"),
                       names[0], lambda df: normalize_transactions(df, allow_refunds=allow_refunds))
    engaged = _table(events, EVENT_FIELDS, ("event_id", "customer_id", "timestamp", "event_type"), names[1],
                     normalize_events)
    repeated = pd.Index([*purchases[EVENT_ID], *engaged[EVENT_ID]]).duplicated()
    if repeated.any():
        n = len(purchases)
        purchases = purchases[~repeated[:n]].reset_index(drop=True)
        engaged = engaged[~repeated[n:]].reset_index(drop=True)
    return Batch(purchases, engaged)


def _table(records: Sequence[Mapping], fields: tuple[str, ...], required: tuple[str, ...], where: str,
           normalize) -> pd.DataFrame:
    if not records:
        empty = {f: pd.Series([], dtype="str") for f in required}
        empty["timestamp"] = pd.Series([], dtype="datetime64[ns]")
        if "amount" in empty:
            empty["amount"] = pd.Series([], dtype="float64")
        return pd.DataFrame(empty)
    for i, record in enumerate(records):
        for name in required:
            value = record.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{where}[{i}].{name}: missing")
        unknown = [k for k in record if k not in fields]
        if unknown:
            raise DataError(f"{where}[{i}].{unknown[0]}: unknown field (fields are {', '.join(fields)})")
    frame = pd.DataFrame.from_records(list(records), columns=[f for f in fields if any(f in r for r in records)])
    ids = frame[EVENT_ID].astype(str).str.strip()
    try:
        out = normalize(frame.drop(columns=[EVENT_ID]))
    except DataError as exc:
        match = _ROW.match(str(exc))
        if match:
            row = int(match["row"]) - 1
            raise DataError(f"{where}[{row}].{match['column']}: {match['what']} "
                            f"({records[row].get(match['column'])!r})") from None
        raise DataError(f"{where}: {exc}") from None
    out.insert(0, EVENT_ID, ids.to_numpy())
    return out



def features_table(engine: OnlineEngine, as_of, event_types=None, affinity_categories=None,
                   event_top: int | None = None, batch_size: int = 20_000) -> pd.DataFrame:
    """Features of every customer in the store as of `as_of`, indexed by customer_id, as `winback features
    build` computes them over the same rows: event types and affinity categories are the given ones, else
    chosen over every customer's rows on or before `as_of` (a first pass over the store)."""
    from features.affinity import category_spend, top_categories
    from features.events import DEFAULT_TOP_TYPES, event_type_counts, most_frequent_types
    from features.history import frames

    meta = engine.store.meta()
    if (event_types is None and meta.columns.events) or (affinity_categories is None and meta.columns.category):
        spend, counts = [], []
        for part in engine.store.scan(batch_size):
            tx, ev = frames({cid: c.history for cid, c in part.items()}, meta.columns, meta.labels)
            if meta.columns.category and len(tx):
                spend.append(category_spend(tx, as_of))
            if ev is not None and len(ev):
                counts.append(event_type_counts(ev, as_of))
        if event_types is None and meta.columns.events:
            total = pd.concat(counts).groupby(level=0).sum() if counts else pd.Series(dtype="int64")
            event_types = most_frequent_types(total, event_top or DEFAULT_TOP_TYPES)
        if affinity_categories is None and meta.columns.category:
            affinity_categories = top_categories(pd.concat(spend) if spend else pd.Series(dtype="float64"))
    parts = [engine.features({cid: c.history for cid, c in part.items()}, as_of, meta, event_types or (),
                             affinity_categories or ())
             for part in engine.store.scan(batch_size)]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise DataError(f"online store {engine.store.url}: no customer with a purchase or event on or before "
                        f"{pd.Timestamp(as_of).date()}")
    return pd.concat(parts).sort_index() if len(parts) > 1 else parts[0]
