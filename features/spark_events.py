"""Engagement events on the Spark engine: read and check the whole events file once, and fix the event types.

`prepare_events_spark` runs `normalize_events` (the pandas path's contract) over every partition of the file in
one Spark pass that also counts the events per type on or before `as_of`: a bad row anywhere is a `DataError`
naming the file and the column (exit 2; its row numbers count within the partition), and without given types
the most frequent ones are chosen from the summed counts, once for all customers. `build_features_spark` then
brings each bucket's events to the same `build_features` as the pandas path, with those types.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from features.errors import DataError
from features.events import DEFAULT_TOP_TYPES, event_type_counts, most_frequent_types, normalize_events


@dataclass(frozen=True)
class EventSource:
    """An events file and how to read it: its column names, and the types with their own columns (or how many
    of the most frequent ones)."""

    path: str | os.PathLike
    id_col: str = "customer_id"
    time_col: str = "timestamp"
    type_col: str = "event_type"
    types: tuple[str, ...] | None = None
    top: int = DEFAULT_TOP_TYPES

    def normalize(self, part: pd.DataFrame) -> pd.DataFrame:
        try:
            return normalize_events(part, id_col=self.id_col, time_col=self.time_col, type_col=self.type_col)
        except DataError as exc:
            raise DataError(f"--events {self.path}: {exc}") from None


def prepare_events_spark(spark, source: EventSource, as_of):
    """(raw Spark frame, an empty normalised frame, event types) of `source`, every row checked."""
    from pyspark.sql import functions as F

    from features.spark import read_table_spark

    raw = read_table_spark(spark, source.path, source.id_col)
    head = source.normalize(raw.limit(200).toPandas())  # missing columns, an empty file: the pandas message

    def counted(parts):
        for part in parts:
            if not len(part):
                continue
            try:
                counts = event_type_counts(source.normalize(part), as_of)
            except DataError as exc:
                yield pd.DataFrame({"event_type": [None], "events": [0], "error": [str(exc)]})
                continue
            yield pd.DataFrame({"event_type": counts.index.astype(object), "events": counts.to_numpy(dtype="int64"),
                                "error": None})

    totals = raw.mapInPandas(counted, "event_type string, events bigint, error string") \
        .groupBy("event_type", "error").agg(F.sum("events").alias("events")).toPandas()
    errors = sorted(totals["error"].dropna())
    if errors:
        raise DataError(errors[0])
    counts = totals.dropna(subset=["event_type"]).set_index("event_type")["events"]
    types = source.types if source.types is not None else most_frequent_types(counts, source.top)
    return raw, head.iloc[:0], tuple(types)
