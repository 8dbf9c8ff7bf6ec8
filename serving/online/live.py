"""The online store as the service sees it: features of customers by id, `POST /events`, and what happens when
the store cannot be reached.

`LiveFeatures` is what `serving.api.online.encode_customers` looks customers up in when the service runs with
an online store (`WINBACK_ONLINE_STORE`), in place of the static `FeatureSnapshot`. Every lookup reads the
store, so an event applied by any replica or by `winback stream` is in the next answer.

When the store fails (Redis down, a locked or missing SQLite file), lookups answer from the last row this
worker read for each customer, `ingest` refuses with `StoreUnavailable` (HTTP 503), one log line says so, and
`status()` reports "degraded" (`/readyz`) until a ping succeeds again, tried at most once a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from features.errors import DataError
from serving.online.engine import OnlineEngine, parse_batch
from serving.online.store import Applied, unavailable_errors

LOG = logging.getLogger("winback.online")
LAST_STATE_CUSTOMERS = 200_000  # rows kept per worker to answer from while the store is down
RETRY_SECONDS = 1.0


class StoreUnavailable(RuntimeError):
    """The online store cannot be reached and the answer cannot come from the last state: HTTP 503."""


class LiveFeatures:
    """Lookups by id and event ingestion over an `OnlineEngine`, with a last-state fallback."""

    def __init__(self, engine: OnlineEngine, keep: int = LAST_STATE_CUSTOMERS):
        self.engine = engine
        self.keep = keep
        self._last: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.down_reason = ""
        self._next_ping = 0.0
        self._unavailable = unavailable_errors()

    @property
    def url(self) -> str:
        return self.engine.store.url

    def __len__(self) -> int:
        try:
            return int(self.engine.store.counts()["customers"])
        except self._unavailable:
            return len(self._last)

    # -- reads ----------------------------------------------------------------------------------------------
    def records(self, ids: Sequence[str]) -> dict[str, dict]:
        """Feature rows of these customers (absent ones left out): from the store, else from the last state."""
        try:
            rows = self.engine.lookup(ids)
        except self._unavailable as exc:
            self._failed(exc)
            with self._lock:
                rows = {cid: self._last[cid] for cid in ids if cid in self._last}
            missing = [cid for cid in dict.fromkeys(ids) if cid not in rows]
            if missing:
                raise StoreUnavailable(f"online store {self.url} unreachable ({_one_line(exc)}) and customer "
                                       f"{missing[0]!r} is not in this worker's last state") from None
            return rows
        self._reachable()
        with self._lock:
            last = self._last
            for cid, row in rows.items():
                last[cid] = row
                last.move_to_end(cid)
            while len(last) > self.keep:
                last.popitem(last=False)
        return rows

    def encode(self, ids: Sequence[str], positions: Sequence[int], encoder, where: str = "customers") -> np.ndarray:
        """The encoded rows of `ids` for `encoder`'s model (the `FeatureSnapshot` interface); a customer the
        store does not know is `UnknownCustomer` naming its request position."""
        from serving.api.online import UnknownCustomer

        rows = self.records(list(ids))
        for cid, pos in zip(ids, positions):
            if cid not in rows:
                raise UnknownCustomer(f"{where}[{pos}].customer_id: unknown customer {cid!r} (not in the online "
                                      f"store {self.url}); send its features or its events first")
        return encoder.transform_records([rows[cid] for cid in ids], where="online store")

    # -- writes ---------------------------------------------------------------------------------------------
    def ingest(self, transactions: list[dict], events: list[dict]) -> Applied:
        """Validate (DataError naming the record and field) and apply one batch, whole or not at all."""
        batch = parse_batch(transactions, events, allow_refunds=self.engine.allow_refunds)
        try:
            done = self.engine.ingest(batch)
        except self._unavailable as exc:
            self._failed(exc)
            raise StoreUnavailable(f"online store {self.url} unreachable ({_one_line(exc)}); nothing applied, "
                                   f"send the batch again") from None
        self._reachable()
        return done

    # -- health ---------------------------------------------------------------------------------------------
    def status(self) -> str | None:
        """None when the store answers, else why the service is degraded (pings at most once a second)."""
        if self.down_since is None:
            return None
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + RETRY_SECONDS
            try:
                self.engine.store.ping()
            except self._unavailable as exc:
                self.down_reason = _one_line(exc)
            else:
                self._reachable()
                return None
        return (f"degraded: online store {self.url} unreachable since {time.ctime(self.down_since_wall)} "
                f"({self.down_reason}); answering from the last state of {len(self._last):,} customers, "
                f"POST /events refused")

    def _failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since, self.down_since_wall = time.monotonic(), time.time()
            self._next_ping = self.down_since + RETRY_SECONDS
            LOG.error("online store %s unreachable (%s): answering from the last state of %d customers until it "
                      "is back", self.url, _one_line(exc), len(self._last))
        self.down_reason = _one_line(exc)

    def _reachable(self) -> None:
        if self.down_since is not None:
            LOG.warning("online store %s reachable again after %.1f s", self.url, time.monotonic() - self.down_since)
            self.down_since = None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
