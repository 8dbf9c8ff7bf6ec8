"""`winback online …`: read and maintain the online store that `POST /events` and `winback stream` write."""

from __future__ import annotations

from pathlib import Path

import typer

from winback import cli_events
from winback.cli_common import MKDIR_HELP, check_output, console, fail, flag, handle_errors, parse_date

STORE_HELP = "Online store URL: sqlite:///online.db (a file; relative to this folder) or redis://host:6379/0."


def store_option():
    return typer.Option("sqlite:///online.db", "--online-store", help=STORE_HELP)


def open_online_store(url: str):
    """The store behind `url`; one line + exit 2 when it cannot be opened or reached."""
    from serving.online.store import open_store

    try:
        store = open_store(url)
        store.ping()
    except ImportError as exc:
        fail(f"--online-store {url}: {exc} (install the scale extra: pip install 'winback[scale]')")
    except Exception as exc:  # sqlite3 / redis connection errors: one line, not a traceback
        from features.errors import DataError

        if isinstance(exc, DataError):
            raise
        fail(f"--online-store {url}: cannot be opened ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    return store


def read_profiles(path: Path | None, id_col: str = "customer_id"):
    if path is None:
        return None
    from features.contracts import normalize_profiles
    from winback.cli_data import _read

    return normalize_profiles(_read(path, id_col), id_col=id_col)


def packaged_models():
    """(churn, uplift) runtimes of the champions packaged for the service (`winback package`), as it loads them."""
    import bentoml

    from serving.api import model_store

    runtimes = []
    for model in (model_store.CHURN, model_store.UPLIFT):
        try:
            stored = bentoml.models.get(model.name)
        except bentoml.exceptions.NotFound:
            fail(model_store.missing_message(model))
        runtimes.append(model_store.load_packaged(stored))
    return tuple(runtimes)


def trigger_rule(churn: float | None, stages: str):
    from serving.online.engine import TriggerRule

    names = tuple(s.strip() for s in stages.split(",") if s.strip())
    return TriggerRule(churn_threshold=churn, stages=names)


def features_command(
    online_store: str = store_option(),
    as_of: str = typer.Option(..., "--as-of", help="Cutoff date YYYY-MM-DD (inclusive), as for features build."),
    output: Path = typer.Option(..., "--output", help="Where to write features: .csv or .parquet."),
    profiles: Path | None = typer.Option(None, "--profiles", help="Customer attributes to join (.csv or .parquet)."),
    model: str | None = typer.Option(None, "--model", help="Churn model URI: its event types, affinity categories "
                                     "and value-tier rule (as features build --model)."),
    event_types: str | None = cli_events.event_types_option(),
    event_top: int = cli_events.event_top_option(),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Features of every customer in the online store as of a date: the table `winback features build` writes
    for the same rows (same columns, lifecycle stage and value tier)."""
    from features.io import table_format, write_table
    from features.segment import segment
    from serving.online.engine import OnlineEngine, features_table
    from winback.cli_data import FILE_TIER, _segment_rule

    cutoff = parse_date(as_of, "--as-of")
    types, top = cli_events.event_types(event_types, event_top)
    table_format(output)
    check_output(output, "--output", mkdir)
    rule = categories = None
    if model is not None:
        from serving.batch.score import model_affinity_categories
        from serving.runtime.churn import load_churn_runtime
        from winback.cli_data import _model_event_types

        runtime = load_churn_runtime(model)
        rule = _segment_rule(runtime, model)
        types = types if types is not None else _model_event_types(runtime)
        categories = model_affinity_categories(runtime)
    store = open_online_store(online_store)
    engine = OnlineEngine(store, profiles=read_profiles(profiles))
    features = features_table(engine, cutoff, types, categories, top)
    if rule is not None:
        segmented = segment(features, rule[0], thresholds=rule[1])
    else:
        segmented = segment(features).rename(columns={"value_tier": FILE_TIER})
    write_table(segmented.reset_index(), output)
    console.print(f"wrote {len(segmented):,} customers × {segmented.shape[1]} columns to {output} "
                  f"(online store {store.url}, as of {cutoff.date()})", highlight=False, soft_wrap=True)


def load_command(
    transactions: Path = typer.Option(..., "--transactions", help="Purchases: .csv or .parquet, one row per purchase."),
    online_store: str = store_option(),
    events: Path | None = cli_events.events_option(),
    id_col: str = typer.Option("customer_id", "--id-col", help="Customer id column."),
    time_col: str = typer.Option("timestamp", "--time-col", help="Purchase time column (ISO 8601 or YYYYMMDD)."),
    amount_col: str = typer.Option("amount", "--amount-col", help="Purchase amount column."),
    event_id_col: str | None = cli_events.event_id_col_option(),
    event_time_col: str = cli_events.event_time_col_option(),
    event_type_col: str = cli_events.event_type_col_option(),
    row_id_col: str | None = typer.Option(None, "--row-id-col", help="Column holding each row's event id; default "
                                          "<file name>:<row number>, so loading the same file twice applies it once."),
    allow_refunds: bool = flag("--allow-refunds", "Accept negative amounts as refunds."),
    as_of: str | None = typer.Option(None, "--as-of", help="The store's day for the features it keeps "
                                     "(default: today, UTC)."),
    batch: int = typer.Option(5000, "--batch", min=1, help="Rows per write."),
) -> None:
    """Load a transaction file (and an events file) into the online store through the same batches as
    POST /events: the history a live store starts from. Features only (no scores or triggers): run
    `winback online sweep` after it to score everyone."""
    from features.contracts import normalize_transactions
    from serving.online.engine import Clock, OnlineEngine
    from serving.online.loading import load_frames
    from winback.cli_data import _read

    day = parse_date(as_of, "--as-of").date() if as_of else None
    raw = _read(transactions, id_col)
    ids = _row_ids(raw, row_id_col, transactions, "t")
    tx = normalize_transactions(raw, id_col=id_col, time_col=time_col, amount_col=amount_col,
                                allow_refunds=allow_refunds)
    engagement = cli_events.read_events(events, event_id_col or id_col, event_time_col, event_type_col)
    event_ids = None
    if engagement is not None:
        event_ids = _row_ids(_read(events, event_id_col or id_col), row_id_col, events, "e")
    engine = OnlineEngine(open_online_store(online_store), clock=Clock(day), allow_refunds=allow_refunds)
    done = load_frames(engine, tx.assign(event_id=ids), None if engagement is None else
                       engagement.assign(event_id=event_ids), batch)
    console.print(f"{done.received:,} rows read, {done.applied:,} applied, {done.duplicates:,} already in the store; "
                  f"{done.customers:,} customer writes ({engine.store.url})", highlight=False, soft_wrap=True)


def _row_ids(raw, column: str | None, path: Path, kind: str):
    from features.errors import DataError

    if column is not None:
        if column not in raw.columns:
            raise DataError(f"--row-id-col: column {column!r} not in {path}")
        return raw[column].astype(str).to_numpy()
    return [f"{path.name}:{kind}{i}" for i in range(len(raw))]


def sweep_command(
    online_store: str = store_option(),
    as_of: str | None = typer.Option(None, "--as-of", help="The store's day YYYY-MM-DD (default: today, UTC)."),
    profiles: Path | None = typer.Option(None, "--profiles", help="Customer attributes the models need."),
    trigger_churn: float = typer.Option(0.5, "--trigger-churn", help="Churn probability whose crossing is a trigger."),
    trigger_stages: str = typer.Option("at_risk,dormant,churned", "--trigger-stages",
                                       help="Lifecycle stages whose entry or exit is a trigger."),
) -> None:
    """Rescore every customer whose features are older than the store's day (silence moves recency and stages
    without any event) and write the triggers those changes raise. Run it once a day."""
    import datetime as dt

    from serving.online.engine import Clock, OnlineEngine

    day = parse_date(as_of, "--as-of").date() if as_of else None
    churn, uplift = packaged_models()
    engine = OnlineEngine(open_online_store(online_store), churn, uplift, read_profiles(profiles),
                          trigger_rule(trigger_churn, trigger_stages), Clock(day))
    done = engine.sweep()
    console.print(f"rescored {done.customers:,} customers as of {(day or dt.datetime.now(dt.UTC).date())}; "
                  f"{done.triggers:,} trigger(s) written", highlight=False, soft_wrap=True)


def triggers_command(
    online_store: str = store_option(),
    after: str | None = typer.Option(None, "--after", help="Only triggers after this outbox id (the last one read)."),
    limit: int = typer.Option(1000, "--limit", min=1, help="At most this many."),
) -> None:
    """Print outbox triggers as JSON lines, oldest first (customer, kind, old → new, recommended incentive)."""
    import json

    for trigger in open_online_store(online_store).triggers(after, limit):
        typer.echo(json.dumps(trigger, default=str))


def status_command(online_store: str = store_option()) -> None:
    """Customers, applied events and triggers in the store, and the optional columns its data has."""
    store = open_online_store(online_store)
    counts = store.counts()
    columns = ", ".join(k for k, v in store.meta().columns.__dict__.items() if v) or "(none)"
    console.print(f"{store.url}: {counts['customers']:,} customers, {counts['events']:,} events applied, "
                  f"{counts['triggers']:,} triggers; columns: {columns}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    online_app = typer.Typer(help="The online store: features as of a date, daily rescoring, triggers.",
                             no_args_is_help=True)
    app.add_typer(online_app, name="online")
    online_app.command("features")(handle_errors(features_command))
    online_app.command("load")(handle_errors(load_command))
    online_app.command("sweep")(handle_errors(sweep_command))
    online_app.command("triggers")(handle_errors(triggers_command))
    online_app.command("status")(handle_errors(status_command))
