"""`winback stream`: consume a Redis Stream of purchases and events into the online store; `winback stream
publish`: write a transaction file (and an events file) to a stream, in time order."""

from __future__ import annotations

from pathlib import Path

import typer

from winback import cli_events
from winback.cli_common import console, err_console, fail, flag, handle_errors, parse_date
from winback.cli_online import open_online_store, packaged_models, read_profiles, store_option, trigger_rule

REDIS_HELP = "Redis holding the stream: redis://host:6379/0."
STREAM_HELP = "Stream name."


def _check_redis(url: str) -> None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        fail(f"--redis {url}: expected redis://host:port/db")


def stream_command(
    ctx: typer.Context,
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0", "--redis", help=REDIS_HELP),
    stream: str = typer.Option("winback:events", "--stream", help=STREAM_HELP),
    group: str = typer.Option("winback", "--group", help="Consumer group (consumers of one group share the stream)."),
    consumer: str | None = typer.Option(None, "--consumer", help="This consumer's name, kept across restarts so it "
                                        "reads its unacknowledged entries first (default: hostname-pid)."),
    online_store: str = store_option(),
    count: int = typer.Option(5000, "--count", min=1, help="Entries per batch (one store write each)."),
    block_ms: int = typer.Option(1000, "--block-ms", min=1, help="How long one read waits for new entries."),
    as_of: str | None = typer.Option(None, "--as-of", help="The store's day YYYY-MM-DD (default: today, UTC)."),
    profiles: Path | None = typer.Option(None, "--profiles", help="Customer attributes the models need."),
    trigger_churn: float = typer.Option(0.5, "--trigger-churn", help="Churn probability whose crossing is a trigger."),
    trigger_stages: str = typer.Option("at_risk,dormant,churned", "--trigger-stages",
                                       help="Lifecycle stages whose entry or exit is a trigger."),
    no_models: bool = flag("--no-models", "Features only: no scores or triggers (replays without packaged models)."),
    allow_refunds: bool = flag("--allow-refunds", "Accept negative amounts as refunds."),
    max_idle_s: float | None = typer.Option(None, "--max-idle-s", help="Exit after this many seconds without "
                                            "entries (default: run until SIGTERM / Ctrl-C)."),
    min_idle_ms: int = typer.Option(60_000, "--min-idle-ms", min=0, help="Claim other consumers' unacknowledged "
                                    "entries idle this long (a consumer that died)."),
) -> None:
    """Apply a Redis Stream of purchases and engagement events to the online store, batch by batch: features
    rebuilt, scored, triggers written, then acknowledged. Bad entries go to <stream>:dead. Stops cleanly on
    SIGTERM / Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from serving.online.engine import Clock, OnlineEngine
    from serving.online.stream import connect_stream, consume, default_consumer

    _check_redis(redis_url)
    day = parse_date(as_of, "--as-of").date() if as_of else None
    connect_stream(redis_url, block_ms).close()  # unreachable: one line naming the URL, before loading anything
    churn = uplift = None
    if not no_models:
        churn, uplift = packaged_models()
    store = open_online_store(online_store)
    engine = OnlineEngine(store, churn, uplift, read_profiles(profiles), trigger_rule(trigger_churn, trigger_stages),
                          Clock(day), allow_refunds=allow_refunds)
    consumer = consumer or default_consumer()
    err_console.print(f"consuming {stream} ({redis_url}) as {consumer} of group {group} into {store.url}",
                      highlight=False, soft_wrap=True)
    done = consume(engine, redis_url, stream, group, consumer, count, block_ms, min_idle_ms=min_idle_ms,
                   max_idle_s=max_idle_s,
                   log=lambda line: err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True))
    rate = done.entries / done.busy_seconds if done.busy_seconds > 0 else 0.0
    console.print(f"{done.entries:,} entries in {done.batches:,} batches ({rate:,.0f}/s while applying; "
                  f"{done.seconds:,.1f} s in all): {done.applied:,} applied, "
                  f"{done.duplicates:,} already in the store, {done.dead:,} dead-lettered; {done.customers:,} customer "
                  f"writes, {done.triggers:,} trigger(s) ({store.url})", highlight=False, soft_wrap=True)


def publish_command(
    transactions: Path = typer.Option(..., "--transactions", help="Purchases: .csv or .parquet, one row per purchase."),
    redis_url: str = typer.Option("redis://127.0.0.1:6379/0", "--redis", help=REDIS_HELP),
    stream: str = typer.Option("winback:events", "--stream", help=STREAM_HELP),
    events: Path | None = cli_events.events_option(),
    id_col: str = typer.Option("customer_id", "--id-col", help="Customer id column."),
    time_col: str = typer.Option("timestamp", "--time-col", help="Purchase time column (ISO 8601 or YYYYMMDD)."),
    amount_col: str = typer.Option("amount", "--amount-col", help="Purchase amount column."),
    event_id_col: str | None = cli_events.event_id_col_option(),
    event_time_col: str = cli_events.event_time_col_option(),
    event_type_col: str = cli_events.event_type_col_option(),
    row_id_col: str | None = typer.Option(None, "--row-id-col", help="Column holding each row's event id; default "
                                          "<file name>:t<row> / :e<row>, so publishing a file twice applies it once."),
    allow_refunds: bool = flag("--allow-refunds", "Accept negative amounts as refunds."),
    batch: int = typer.Option(10_000, "--batch", min=1, help="Entries per pipelined round trip."),
) -> None:
    """Write the rows of a transaction file (and an events file) to a Redis Stream in time order, one entry per
    row, as a live feed would: for replays, tests and benchmarks."""
    from features.contracts import normalize_transactions
    from serving.online.stream import connect_stream, publish
    from winback.cli_data import _read
    from winback.cli_online import _row_ids

    _check_redis(redis_url)
    raw = _read(transactions, id_col)
    ids = _row_ids(raw, row_id_col, transactions, "t")
    tx = normalize_transactions(raw, id_col=id_col, time_col=time_col, amount_col=amount_col,
                                allow_refunds=allow_refunds)
    engagement = cli_events.read_events(events, event_id_col or id_col, event_time_col, event_type_col)
    if engagement is not None:
        engagement = engagement.assign(event_id=_row_ids(_read(events, event_id_col or id_col), row_id_col, events,
                                                         "e"))
    import redis

    client = connect_stream(redis_url, 1000)
    try:
        written = publish(client, stream, tx.assign(event_id=ids), engagement, batch)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        fail(f"--redis {redis_url}: lost while publishing ({type(exc).__name__}: {exc})")
    finally:
        client.close()
    console.print(f"published {written:,} entries to {stream} ({redis_url})", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    stream_app = typer.Typer(invoke_without_command=True, help="Consume a Redis Stream of events into the online "
                             "store (`winback stream`), or publish files to one (`winback stream publish`).")
    stream_app.callback()(handle_errors(stream_command))
    stream_app.command("publish")(handle_errors(publish_command))
    app.add_typer(stream_app, name="stream")
