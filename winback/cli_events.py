"""`--events` and its options, shared by every command that accepts transactions."""

from __future__ import annotations

from pathlib import Path

import typer

EVENTS_HELP = ("Engagement events (.csv/.parquet): customer_id, timestamp, event_type (free text: visit, "
               "email_open, ...), optional channel. Adds point-in-time engagement features; customers with "
               "events but no purchase are kept (stage prospect).")


def events_option():
    return typer.Option(None, "--events", help=EVENTS_HELP)


def event_id_col_option():
    return typer.Option(None, "--event-id-col", help="Customer id column of --events (default customer_id, or "
                        "--id-col where the command has it).")


def event_time_col_option():
    return typer.Option("timestamp", "--event-time-col", help="Event time column of --events (ISO 8601 or YYYYMMDD).")


def event_type_col_option():
    return typer.Option("event_type", "--event-type-col", help="Event type column of --events.")


def event_types_option():
    return typer.Option(None, "--event-types", help="Event types with their own columns, comma-separated (e.g. "
                        "visit,email_open); default the --event-top most frequent. Fixed with the model at training.")


def event_top_option():
    return typer.Option(5, "--event-top", help="Without --event-types: how many of the most frequent event types "
                        "get their own columns.")


def read_events(path: Path | None, id_col: str | None = None, time_col: str = "timestamp",
                type_col: str = "event_type", as_of=None):
    """The events file in the events contract, or None; errors name the file and the column (exit 2)."""
    if path is None:
        return None
    from features.errors import DataError
    from features.events import normalize_events
    from features.io import read_table, table_format

    ids = id_col or "customer_id"
    raw = read_table(path, dtype={ids: "str"}) if table_format(path) == "csv" else read_table(path)
    try:
        return normalize_events(raw, id_col=ids, time_col=time_col, type_col=type_col, as_of=as_of)
    except DataError as exc:
        raise DataError(f"--events {path}: {exc}") from None


def event_types(text: str | None, top: int):
    """(types or None, top) from --event-types / --event-top, checked."""
    from features.errors import DataError
    from features.events import parse_event_types

    if top < 0:
        raise DataError(f"--event-top must be zero or more, got {top}")
    return parse_event_types(text), top


def refuse_spark(events: Path | None, spark: bool) -> None:
    """Where `--engine spark` reads a feature table, not transactions (`score`), events have no place: exit 2.
    `features build --engine spark` takes them."""
    if events is not None and spark:
        from features.errors import DataError

        raise DataError("--events: --engine spark builds event features in `winback features build --engine spark "
                        "--events FILE`; give that table to --features, or use --engine pandas")
