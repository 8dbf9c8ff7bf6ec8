"""Replaying tables through the online engine in batches (`winback online load`, tests, benchmarks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.online.engine import OnlineEngine
from serving.online.store import EVENT_ID, Applied, Batch


def batches(purchases: pd.DataFrame, events: pd.DataFrame | None, size: int):
    """`Batch`es of about `size` rows in time order (purchases and events interleaved by timestamp), as a
    live feed would deliver them. The frames are in the contracts, with an `event_id` column."""
    events = events if events is not None else purchases.iloc[:0][[EVENT_ID, "customer_id", "timestamp"]].assign(
        event_type=pd.Series([], dtype="str"))
    times = np.concatenate([purchases["timestamp"].to_numpy(), events["timestamp"].to_numpy()])
    order = np.argsort(times, kind="stable")
    n = len(purchases)
    for start in range(0, len(order), size):
        part = order[start:start + size]
        p, e = np.sort(part[part < n]), np.sort(part[part >= n] - n)
        bought, engaged = _unique(purchases.iloc[p]), _unique(events.iloc[e])
        # an id used by a purchase and an event counts once, as in `parse_batch` (the purchase)
        yield Batch(bought, engaged[~engaged[EVENT_ID].isin(bought[EVENT_ID])].reset_index(drop=True))


def _unique(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~frame[EVENT_ID].duplicated()].reset_index(drop=True)


def load_frames(engine: OnlineEngine, purchases: pd.DataFrame, events: pd.DataFrame | None,
                size: int = 5000) -> Applied:
    """Apply the tables in time-ordered batches; the totals of every batch's answer."""
    totals = np.zeros(5, dtype=np.int64)
    for batch in batches(purchases, events, size):
        done = engine.ingest(batch)
        totals += [done.received, done.duplicates, done.applied, done.customers, done.triggers]
    return Applied(*(int(v) for v in totals))
