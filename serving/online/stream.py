"""Consuming a Redis Stream of purchases and engagement events into the online store (`winback stream`).

Each stream entry is one record. Purchases carry the transaction contract's fields (`event_id`, `customer_id`,
`timestamp`, `amount`, optional `quantity`, `category`, `channel`), engagement events `event_id`,
`customer_id`, `timestamp`, `event_type`, optional `channel`; an optional field `kind` (`purchase` | `event`)
says which, else an entry with `amount` is a purchase and one with `event_type` an event.

Delivery is at least once and state is written exactly once: the consumer reads a batch with XREADGROUP,
applies it through the store's write protocol (`engine.ingest`), and only then acknowledges it (XACK). A
consumer killed between the two leaves the batch pending: restarted under the same name it reads its own
pending entries first (id `0`); another consumer claims them once they are idle for `min_idle_ms` (XAUTOCLAIM).
Either way the store finds their event ids applied and counts nothing twice.

A bad entry (refused by `parse_batch`) goes to the dead-letter stream `{stream}:dead` with the error text and
is acknowledged; the rest of its batch is applied. SIGTERM / SIGINT finish the current batch, acknowledge it
and return.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from features.errors import DataError
from serving.online.engine import EVENT_FIELDS, TRANSACTION_FIELDS, OnlineEngine, parse_batch
from serving.online.store import Applied, unavailable_errors

logger = logging.getLogger("winback.stream")

DEFAULT_MIN_IDLE_MS = 60_000


@dataclass
class Consumed:
    """What a consumer did: entries read (including redeliveries), the store's totals over its batches
    (`Applied`'s fields), entries sent to the dead-letter stream, batches written."""

    entries: int = 0
    received: int = 0
    duplicates: int = 0
    applied: int = 0
    customers: int = 0
    triggers: int = 0
    dead: int = 0
    batches: int = 0
    seconds: float = 0.0
    busy_seconds: float = 0.0  # reading a batch's entries, applying them and acknowledging (no waiting)

    def add(self, done: Applied) -> None:
        for name in ("received", "duplicates", "applied", "customers", "triggers"):
            setattr(self, name, getattr(self, name) + getattr(done, name))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _text(value) -> str:
    return value if type(value) is str else value.decode("utf-8", errors="replace") if isinstance(value, bytes) \
        else str(value)


def record(fields_: dict) -> tuple[str, dict]:
    """A stream entry's fields → ("purchase" | "event", the record without `kind`); DataError when neither."""
    values = fields_ if all(type(k) is str and type(v) is str for k, v in fields_.items()) \
        else {_text(k): _text(v) for k, v in fields_.items()}
    values = dict(values)
    kind = values.pop("kind", None)
    if kind is None:
        kind = "purchase" if "amount" in values else "event" if "event_type" in values else None
        if kind is None:
            raise DataError("neither `amount` (a purchase) nor `event_type` (an event), and no `kind` field")
    elif kind not in ("purchase", "event"):
        raise DataError(f"kind: {kind!r} is not purchase or event")
    return kind, values


def _split(entries: Sequence[tuple[str, dict]]):
    """(purchases, events, bad) of parsed entries: bad = [(entry id, fields, error)] for unreadable ones."""
    purchases, events, bad = [], [], []
    for entry_id, data in entries:
        try:
            kind, values = record(data)
        except DataError as exc:
            bad.append((entry_id, data, str(exc)))
            continue
        (purchases if kind == "purchase" else events).append((entry_id, data, values))
    return purchases, events, bad


def parse_entries(entries: Sequence[tuple[str, dict]]) -> tuple[list, list]:
    """(Batches of the good entries, bad entries [(id, fields, error)]): one batch, unless `parse_batch` refuses
    it; then the entries are parsed one by one to find the bad ones, and the good ones form the batch."""
    purchases, events, bad = _split(entries)
    try:
        return [parse_batch([p[2] for p in purchases], [e[2] for e in events])], bad
    except DataError:
        pass
    good_p, good_e = [], []
    for entry, into, where in [*((p, good_p, "transactions") for p in purchases),
                               *((e, good_e, "events") for e in events)]:
        try:
            parse_batch([entry[2]], []) if where == "transactions" else parse_batch([], [entry[2]])
        except DataError as exc:
            bad.append((entry[0], entry[1], str(exc).replace(f"{where}[0]", where, 1)))
        else:
            into.append(entry[2])
    if not good_p and not good_e:
        return [], bad
    try:
        return [parse_batch(good_p, good_e)], bad
    except DataError:  # refused only together (never seen): apply them one by one
        return [*(parse_batch([p], []) for p in good_p), *(parse_batch([], [e]) for e in good_e)], bad


class _Stopper:
    """SIGTERM / SIGINT set a flag (when called from the main thread); `stop` may also be an Event or a callable."""

    def __init__(self, stop):
        self.flag = threading.Event()
        self.stop = stop
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        logger.info("signal %s: finishing the current batch", signum)
        self.flag.set()

    def __call__(self) -> bool:
        if self.flag.is_set():
            return True
        if self.stop is None:
            return False
        return bool(self.stop.is_set() if hasattr(self.stop, "is_set") else self.stop())

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def connect_stream(redis_url: str, block_ms: int):
    """A client for the stream's Redis whose read timeout outlasts a blocking XREADGROUP; DataError naming the
    URL when it cannot be reached."""
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        raise DataError(f"--redis {redis_url}: the redis package is not installed ({exc}); "
                        "pip install 'winback[scale]'") from None
    from serving.online.redis_store import connect, shown_url, split_url

    address, _ = split_url(redis_url)
    try:
        client = connect(address, socket_timeout=block_ms / 1000 + 10, decode_responses=True)
        client.ping()
    except ValueError as exc:
        raise DataError(f"--redis {shown_url(redis_url)}: {exc}") from None
    except Exception as exc:
        raise DataError(f"--redis {shown_url(redis_url)}: cannot be reached ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return client


def ensure_group(client, stream: str, group: str) -> None:
    import redis

    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def consume(engine: OnlineEngine, redis_url: str, stream: str, group: str, consumer: str | None = None,
            count: int = 5000, block_ms: int = 1000, stop=None, max_batches: int | None = None, *,
            min_idle_ms: int = DEFAULT_MIN_IDLE_MS, max_idle_s: float | None = None, dead_stream: str | None = None,
            log: Callable[[str], None] | None = None, retry_s: float = 60.0) -> Consumed:
    """Read `stream` as `consumer` of `group` and apply its entries to `engine`'s store in batches of up to
    `count`, acknowledging each batch after it is written. Order: this consumer's own pending entries, then
    entries of other consumers idle over `min_idle_ms` (XAUTOCLAIM, again every `min_idle_ms` while running),
    then new ones (blocking `block_ms` per read). Returns on `stop` (an Event or a callable), SIGTERM/SIGINT,
    after `max_batches` batches, or after `max_idle_s` seconds without entries. Redis or store outages are
    retried (the batch stays pending) for up to `retry_s` seconds."""
    import redis

    log = log or logger.warning
    consumer = consumer or default_consumer()
    dead_stream = dead_stream or f"{stream}:dead"
    client = connect_stream(redis_url, block_ms)
    ensure_group(client, stream, group)
    totals = Consumed()
    started = time.monotonic()
    stopper = _Stopper(stop)
    transient = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, *unavailable_errors())
    failing_since: float | None = None
    own_pending = True  # first: what this consumer read before a crash and never acknowledged
    claim_from, next_claim = "0-0", 0.0
    last_entry = time.monotonic()

    def handle(entries) -> None:
        nonlocal last_entry
        began = time.monotonic()
        live = [(i, f) for i, f in entries if f]  # entries trimmed away from the stream come back without fields
        gone = [i for i, f in entries if not f]
        parsed, bad = parse_entries(live) if live else ([], [])
        for batch in parsed:
            if len(batch):
                totals.add(engine.ingest(batch))
        done = client.pipeline(transaction=True)
        for entry_id, data, error in bad:
            done.xadd(dead_stream, {**{_text(k): _text(v) for k, v in data.items()}, "error": error,
                                    "source_id": _text(entry_id), "consumer": consumer})
        ids = [i for i, _ in entries]
        if ids:
            done.xack(stream, group, *ids)
        done.execute()
        for entry_id, data, error in bad:
            log(f"dead-lettered entry {_text(entry_id)} of {stream} to {dead_stream}: {error}")
        totals.entries += len(live)
        totals.dead += len(bad)
        totals.batches += 1
        if gone:
            logger.info("acknowledged %d entries deleted from %s", len(gone), stream)
        last_entry = time.monotonic()
        totals.busy_seconds += last_entry - began

    try:
        while not stopper():
            if max_batches is not None and totals.batches >= max_batches:
                break
            try:
                if own_pending:
                    got = client.xreadgroup(group, consumer, {stream: "0"}, count=count)
                    entries = got[0][1] if got else []
                    if not entries:
                        own_pending = False
                        continue
                elif time.monotonic() >= next_claim:
                    claim_from, entries, *_ = client.xautoclaim(stream, group, consumer, min_idle_ms,
                                                                start_id=claim_from, count=count)
                    claim_from = _text(claim_from)
                    if claim_from in ("0-0", "0"):
                        claim_from = "0-0"
                        next_claim = time.monotonic() + max(min_idle_ms, 100) / 1000
                    if not entries:
                        continue
                else:
                    got = client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
                    entries = got[0][1] if got else []
                    if not entries:
                        if max_idle_s is not None and time.monotonic() - last_entry >= max_idle_s:
                            break
                        continue
                handle(entries)
                failing_since = None
            except transient as exc:
                # not acknowledged: the batch is read again (own pending entries) once things are back
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > retry_s:
                    raise DataError(f"stream {stream} ({redis_url}) or online store {engine.store.url}: unavailable "
                                    f"for {retry_s:.0f} s ({type(exc).__name__}: {exc})") from None
                log(f"retrying after {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                own_pending = True
                time.sleep(min(2.0, 0.1 + (now - failing_since) / 10))
    finally:
        stopper.restore()
        totals.seconds = time.monotonic() - started
        client.close()
    return totals


def publish(client, stream: str, purchases, events, batch: int = 10_000, maxlen: int | None = None) -> int:
    """XADD the rows of the contract frames (each with an `event_id` column) to `stream` in time order (purchases
    and events interleaved by timestamp), `batch` entries per pipelined round trip; the number written.
    Missing optional values are left out of the entry."""
    import numpy as np
    import pandas as pd

    frames = []
    for frame, names, kind in ((purchases, TRANSACTION_FIELDS, "purchase"), (events, EVENT_FIELDS, "event")):
        if frame is None or not len(frame):
            continue
        cols = [c for c in names if c in frame.columns]
        out = pd.DataFrame({c: frame[c] for c in cols})
        out["timestamp"] = pd.to_datetime(out["timestamp"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
        for c in cols:
            if c != "timestamp" and pd.api.types.is_float_dtype(out[c]):
                out[c] = out[c].map(lambda v: None if v != v else repr(float(v)), na_action="ignore")
        text = out.astype(object).where(out.notna(), None)
        frames.append((pd.to_datetime(frame["timestamp"]).to_numpy(), cols, text.to_numpy(), kind))
    if not frames:
        return 0
    times = np.concatenate([f[0] for f in frames])
    which = np.concatenate([np.full(len(f[0]), k) for k, f in enumerate(frames)])
    row = np.concatenate([np.arange(len(f[0])) for f in frames])
    order = np.argsort(times, kind="stable")
    written = 0
    for start in range(0, len(order), batch):
        commands = []
        for position in order[start:start + batch]:
            _, cols, values, kind = frames[which[position]]
            args = ["XADD", stream, *(("MAXLEN", "~", str(maxlen)) if maxlen is not None else ()), "*", "kind", kind]
            for c, v in zip(cols, values[row[position]]):
                if v is not None:
                    args += (c, v if isinstance(v, str) else str(v))
            commands.append(args)
        written += _send(client, commands)
    return written


def _send(client, commands: list[list[str]]) -> int:
    """Pipeline `commands` (packed by hiredis when installed: redis-py's own packing costs more than Redis)."""
    try:
        import hiredis
    except ImportError:
        pipe = client.pipeline(transaction=False)
        for args in commands:
            pipe.execute_command(*args)
        return len(pipe.execute())
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(hiredis.pack_command(tuple(args)) for args in commands)])
        replies = [conn.read_response() for _ in commands]
    except BaseException:
        conn.disconnect()  # replies left unread: the connection cannot be reused
        raise
    finally:
        pool.release(conn)
    errors = [r for r in replies if isinstance(r, Exception)]
    if errors:
        raise errors[0]
    return len(replies)
