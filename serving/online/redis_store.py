"""The online store in Redis, shared by several service replicas and `winback stream` consumers.

URL: `redis://[user:password@]host:port/db[?prefix=winback:]` (also `rediss://` and `unix://`); every key starts
with the prefix (default `winback:`), so one Redis can hold several stores. Layout:

- `{prefix}c:{customer_id}`: a hash per customer — `history` (the `features.history` record), `version`, and
  what was last computed from it: `features` (a `serving.online.codec` blob), `features_day`,
  `churn_probability`, `lifecycle_stage` (fields absent when None);
- `{prefix}customers`: a sorted set of every customer id (all scores 0), so `scan` walks ids in byte order
  (`ZRANGEBYLEX`), like SQLite's `ORDER BY customer_id`;
- `{prefix}applied`: the set of applied event ids; `{prefix}meta`: `StoreMeta` as JSON;
- `{prefix}triggers`: the outbox, a Redis Stream (entry id = trigger id); `{prefix}trigger_keys`: the set of
  trigger keys written, so one crossing is never written twice.

`apply` keeps the store's write protocol with optimistic locking: WATCH the batch's customer keys, the meta key,
the applied set and the trigger keys, read (one pipelined round trip), `plan`, then write everything in one
MULTI/EXEC. A concurrent writer (every batch rewrites the meta key) makes EXEC fail with WatchError, and the
batch is planned again from the new state: whole or not at all, once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from features.contracts import ID
from features.errors import DataError
from features.history import History, decode, encode
from serving.online.store import Applied, Batch, Materialise, OnlineStore, StoredCustomer, StoreMeta, plan

FIELDS = (b"history", b"version", b"features", b"features_day", b"churn_probability", b"lifecycle_stage")
TRIGGER_FIELDS = ("customer_id", "kind", "old", "new", "as_of", "churn_probability", "lifecycle_stage", "incentive",
                  "expected_net_value", "created_at")
_FLOATS = {"churn_probability", "expected_net_value", "created_at"}
DEFAULT_PREFIX = "winback:"
_CHUNK = 2_000  # commands per pipelined round trip when reading many customers


def split_url(url: str) -> tuple[str, str]:
    """(the URL without the `prefix` query parameter, the prefix)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest = []
    for name, value in query:
        if name == "prefix":
            prefix = value
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def connect(url: str, socket_timeout: float = 5.0, **kwargs):
    """A `redis.Redis` client for `url` (without the `prefix` parameter) with timeouts, health checks and retries
    of reads on connection errors (redis-py does not retry commands while keys are watched)."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    options = dict(socket_timeout=socket_timeout, socket_connect_timeout=5.0, health_check_interval=15,
                   socket_keepalive=True, retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), 3),
                   retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError])
    options.update(kwargs)
    return redis.Redis.from_url(url, **options)


class RedisStore(OnlineStore):
    """The online store in one Redis database (see the module docstring for the layout)."""

    def __init__(self, url: str, max_attempts: int = 200):
        try:
            import redis
        except ImportError as exc:
            raise ImportError(f"the redis package is not installed ({exc})") from None
        self._redis_errors = redis.exceptions
        address, self.prefix = split_url(url)
        self.url = shown_url(url)
        try:
            self._r = connect(address)
        except ValueError as exc:  # malformed URL
            raise DataError(f"online store {self.url}: {exc}") from None
        self.max_attempts = max_attempts
        p = self.prefix
        self._meta_key, self._applied_key = f"{p}meta", f"{p}applied"
        self._index_key, self._triggers_key, self._trigger_keys = f"{p}customers", f"{p}triggers", f"{p}trigger_keys"

    def _key(self, cid: str) -> str:
        return f"{self.prefix}c:{cid}"

    # -- writes ---------------------------------------------------------------------------------------------
    def apply(self, batch: Batch, materialise: Materialise | None = None, touch: Iterable[str] = ()) -> Applied:
        touch = list(touch)
        ids = list(dict.fromkeys([*batch.purchases[ID].tolist(), *batch.events[ID].tolist(), *touch]))
        event_ids = batch.event_ids
        watched = [*(self._key(c) for c in ids), self._meta_key, self._applied_key, self._trigger_keys]
        for attempt in range(self.max_attempts):
            with self._r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watched)
                    # reads after WATCH on another connection: any write to a watched key from now on fails EXEC
                    seen, loaded, meta = self._read_state(event_ids, ids)
                    update = plan(batch, seen, loaded, meta, materialise, touch)
                    triggers = self._new_triggers(pipe, update.triggers)
                    pipe.multi()
                    self._write(pipe, update, triggers)
                    pipe.execute()
                except self._redis_errors.WatchError:
                    time.sleep(min(0.2, 0.002 * 2 ** min(attempt, 7)) * random.random())
                    continue
            return Applied(update.received, update.duplicates, len(update.event_ids), len(update.customers),
                           len(triggers))
        raise DataError(f"online store {self.url}: batch not applied after {self.max_attempts} attempts "
                        "(other writers kept changing the same keys)")

    def _read_state(self, event_ids: list[str], ids: list[str]):
        reads = self._r.pipeline(transaction=False)
        reads.get(self._meta_key)
        if event_ids:
            reads.smismember(self._applied_key, event_ids)
        for cid in ids:
            reads.hmget(self._key(cid), FIELDS)
        out = reads.execute()
        meta = StoreMeta.from_json(out[0])
        seen = {e for e, hit in zip(event_ids, out[1]) if hit} if event_ids else set()
        rows = out[2:] if event_ids else out[1:]
        loaded = {cid: _stored(row) for cid, row in zip(ids, rows) if row[1] is not None}
        return seen, loaded, meta

    def _new_triggers(self, pipe, triggers: list[dict]) -> list[dict]:
        """The triggers whose key is not written yet (read on the watched connection), each key once."""
        triggers = list({t["trigger_key"]: t for t in reversed(triggers)}.values())[::-1]  # first of each key
        if not triggers:
            return []
        known = pipe.smismember(self._trigger_keys, [t["trigger_key"] for t in triggers])
        return [t for t, hit in zip(triggers, known) if not hit]

    def _write(self, pipe, update, triggers: list[dict]) -> None:
        now = time.time()
        for cid, c in update.customers.items():
            key = self._key(cid)
            mapping = {"history": encode(c.history), "version": c.version, "features": c.features,
                       "features_day": c.features_day, "churn_probability": _float_text(c.churn_probability),
                       "lifecycle_stage": c.lifecycle_stage}
            pipe.delete(key)  # fields that became None go away, as SQLite's INSERT OR REPLACE writes NULL
            pipe.hset(key, mapping={k: v for k, v in mapping.items() if v is not None})
        if update.customers:
            pipe.zadd(self._index_key, {cid: 0 for cid in update.customers})
        for start in range(0, len(update.event_ids), 10_000):
            pipe.sadd(self._applied_key, *update.event_ids[start:start + 10_000])
        for t in triggers:
            fields = {name: _trigger_text(t.get(name)) for name in TRIGGER_FIELDS if name != "created_at"}
            fields["created_at"] = repr(now)
            fields["trigger_key"] = t["trigger_key"]
            pipe.xadd(self._triggers_key, {k: v for k, v in fields.items() if v is not None})
            pipe.sadd(self._trigger_keys, t["trigger_key"])
        pipe.set(self._meta_key, update.meta.to_json())

    # -- reads ----------------------------------------------------------------------------------------------
    def customers(self, ids: Iterable[str], history: bool = True) -> dict[str, StoredCustomer]:
        ids = list(dict.fromkeys(ids))
        fields = FIELDS if history else FIELDS[1:]
        out: dict[str, StoredCustomer] = {}
        for start in range(0, len(ids), _CHUNK):
            part = ids[start:start + _CHUNK]
            reads = self._r.pipeline(transaction=False)
            for cid in part:
                reads.hmget(self._key(cid), fields)
            for cid, row in zip(part, reads.execute()):
                row = row if history else [None, *row]
                if row[1] is not None:
                    out[cid] = _stored(row)
        return out

    def scan(self, batch_size: int = 10_000) -> Iterator[dict[str, StoredCustomer]]:
        low = "-"
        while True:
            ids = self._r.zrangebylex(self._index_key, low, "+", start=0, num=batch_size)
            if not ids:
                return
            names = [i.decode() for i in ids]
            low = "(" + names[-1]
            found = self.customers(names)
            yield {cid: found[cid] for cid in names if cid in found}

    def meta(self) -> StoreMeta:
        return StoreMeta.from_json(self._r.get(self._meta_key))

    def triggers(self, after: str | int | None = None, limit: int = 1000) -> list[dict]:
        start = "-" if after in (None, "", 0, "0") else f"({after}"
        out = []
        for entry_id, fields in self._r.xrange(self._triggers_key, start, "+", count=limit):
            values = {k.decode(): v.decode() for k, v in fields.items()}
            row = {"id": entry_id.decode()}
            for name in TRIGGER_FIELDS:
                value = values.get(name)
                row[name] = float(value) if value is not None and name in _FLOATS else value
            out.append(row)
        return out

    def counts(self) -> dict[str, int]:
        reads = self._r.pipeline(transaction=False)
        reads.zcard(self._index_key)
        reads.scard(self._applied_key)
        reads.xlen(self._triggers_key)
        customers, events, triggers = reads.execute()
        return {"customers": int(customers), "events": int(events), "triggers": int(triggers)}

    def ping(self) -> None:
        self._r.ping()

    def close(self) -> None:
        self._r.close()


def _float_text(value: float | None) -> str | None:
    return None if value is None else repr(float(value))


def _trigger_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _stored(row) -> StoredCustomer:
    history, version, features, day, p, stage = row
    return StoredCustomer(History() if history is None else decode(history), int(version), features,
                          None if day is None else int(day), None if p is None else float(p),
                          None if stage is None else stage.decode())
