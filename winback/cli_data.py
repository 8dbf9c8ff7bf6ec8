"""`winback features build` and `winback segment summary`: parse options, call `features`, report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd  # already loaded by cli_common
import typer

from winback import cli_events, cli_spark
from winback.cli_common import MKDIR_HELP, check_output, console, flag, handle_errors, parse_date


def _read(path: Path, id_col: str):
    """A CSV or Parquet table; CSV ids are read as text so that '007' stays '007'."""
    from features.io import read_table, table_format

    if table_format(path) == "csv":
        return read_table(path, dtype={id_col: "str"})
    return read_table(path)


FILE_TIER = "value_tier_in_file"  # value tier by this file's quantiles: not the rule a model stores


def _segment_rule(runtime, model: str):
    """(SegmentConfig, value-tier thresholds) stored with a churn model."""
    from features.errors import DataError
    from features.segment import SegmentConfig

    if not runtime.has_segments or runtime.value_tier_thresholds is None:
        raise DataError(f"--model: {model!r} was trained on a customer table; it has no value-tier rule")
    return SegmentConfig(**runtime.segment_config), tuple(runtime.value_tier_thresholds)


def _model_event_types(runtime):
    """The event types a churn model was trained with (its feature names), so the table fits the model."""
    from features.events import event_types_in

    return event_types_in(runtime.feature_names) or ()


def build_command(
    transactions: Path = typer.Option(..., "--transactions", help="Purchases: .csv or .parquet, one row per purchase."),
    as_of: str = typer.Option(..., "--as-of", help="Cutoff date YYYY-MM-DD (inclusive); later purchases are ignored."),
    output: Path = typer.Option(..., "--output", help="Where to write features: .csv or .parquet."),
    profiles: Path | None = typer.Option(None, "--profiles", help="Customer attributes to join (.csv or .parquet)."),
    id_col: str = typer.Option("customer_id", "--id-col", help="Customer id column (transactions and profiles)."),
    time_col: str = typer.Option("timestamp", "--time-col", help="Purchase time column (ISO 8601 or YYYYMMDD)."),
    amount_col: str = typer.Option("amount", "--amount-col", help="Purchase amount column."),
    allow_refunds: bool = flag("--allow-refunds", "Accept negative amounts as refunds."),
    model: str | None = typer.Option(None, "--model", help="Churn model URI: value tiers with its stored thresholds "
                                     "(the rule /score and `winback score` use), written as value_tier."),
    engine: str = cli_spark.engine_option(),
    spark_master: str | None = cli_spark.master_option(),
    events: Path | None = cli_events.events_option(),
    event_id_col: str | None = cli_events.event_id_col_option(),
    event_time_col: str = cli_events.event_time_col_option(),
    event_type_col: str = cli_events.event_type_col_option(),
    event_types: str | None = cli_events.event_types_option(),
    event_top: int = cli_events.event_top_option(),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Build point-in-time features with lifecycle stage and value tier, one row per customer.

    With --model the value tier follows the model's stored rule (column `value_tier`, as `/score` gives
    it) and the affinity columns are the model's; without, it uses the quantiles of this file (column
    `value_tier_in_file`, another rule) and the categories with the most spend in it."""
    from features.affinity import affinity_reference
    from features.build import build_features
    from features.contracts import normalize_profiles, normalize_transactions
    from features.io import table_format, write_table
    from features.segment import segment

    cutoff = parse_date(as_of, "--as-of")
    spark = cli_spark.check_engine(engine)
    types, top = cli_events.event_types(event_types, event_top)
    if not spark:
        table_format(output)
    check_output(output, "--output", mkdir)
    rule = categories = None
    if model is not None:
        from serving.batch.score import model_affinity_categories
        from serving.runtime.churn import load_churn_runtime

        runtime = load_churn_runtime(model)
        rule = _segment_rule(runtime, model)
        if events is not None and types is None:
            types = _model_event_types(runtime)
        categories = model_affinity_categories(runtime)  # its affinity columns; without a model, the data's top ones
    if spark:
        source = None
        if events is not None:
            from features.spark_events import EventSource

            source = EventSource(events, event_id_col or id_col, event_time_col, event_type_col, types, top)
        rows = cli_spark.features_build(spark_master, transactions, profiles, cutoff, output, id_col, time_col,
                                        amount_col, allow_refunds, rule, FILE_TIER, categories, source)
        console.print(f"wrote {rows:,} customers to {output} (Parquet directory; Spark; as of {cutoff.date()})",
                      highlight=False)
        return
    raw = _read(transactions, id_col)
    tx = normalize_transactions(raw, id_col=id_col, time_col=time_col, amount_col=amount_col,
                                allow_refunds=allow_refunds, as_of=cutoff)
    attributes = normalize_profiles(_read(profiles, id_col), id_col=id_col) if profiles else None
    engagement = cli_events.read_events(events, event_id_col or id_col, event_time_col, event_type_col)
    if engagement is not None and types is None:
        from features.events import top_event_types

        types = top_event_types(engagement, cutoff, top)
    reference = affinity_reference(tx, cutoff, categories) if categories is not None and "category" in tx.columns \
        else None
    features = build_features(tx, cutoff, attributes, events=engagement, event_types=types,
                              affinity_reference=reference)
    if rule is not None:
        segmented = segment(features, rule[0], thresholds=rule[1])
    else:
        segmented = segment(features).rename(columns={"value_tier": FILE_TIER})
    write_table(segmented.reset_index(), output)
    ignored = int((tx["timestamp"] >= cutoff + pd.Timedelta(days=1)).sum())
    console.print(
        f"wrote {len(segmented):,} customers × {segmented.shape[1]} columns to {output} "
        f"(as of {cutoff.date()}, {len(tx):,} transactions, {ignored:,} after as-of ignored"
        + (f"; {len(engagement):,} events, types {', '.join(types) or '(none)'}" if engagement is not None else "")
        + ")",
        highlight=False,
    )


def summary_command(
    features: Path = typer.Option(..., "--features", help="Output of `winback features build` (.csv or .parquet)."),
) -> None:
    """Customers, share and spend in the last 365 days per lifecycle stage × value tier."""
    from rich.table import Table

    from features.errors import DataError
    from features.io import read_table
    from features.segment import STAGES, TIERS, segment_summary

    table = read_table(features)
    if "value_tier" not in table.columns and FILE_TIER in table.columns:
        table = table.rename(columns={FILE_TIER: "value_tier"})
    for name in ("lifecycle_stage", "value_tier", "spend_365d"):
        if name not in table.columns:
            raise DataError(f"{features}: column {name!r} is missing; build it with `winback features build`")
    for name, allowed in (("lifecycle_stage", STAGES), ("value_tier", TIERS)):
        unknown = sorted(set(table[name].astype("str").fillna("(missing)")) - set(allowed))
        if unknown:
            raise DataError(f"{features}: column {name!r} has unknown value(s) {unknown}; expected {list(allowed)}")
    summary = segment_summary(table)
    out = Table(title=f"Segments in {features} ({len(table):,} customers)")
    for header in ("lifecycle stage", "value tier", "customers", "share", "spend 365d"):
        out.add_column(header, justify="left" if "stage" in header or "tier" in header else "right")
    for row in summary.itertuples(index=False):
        out.add_row(row.lifecycle_stage, row.value_tier, f"{row.customers:,}", f"{row.share:.1%}",
                    f"{row.spend_365d:,.2f}")
    console.print(out)


def register(app: typer.Typer, features_app: typer.Typer, segment_app: typer.Typer) -> None:
    """Attach the data commands to the `winback` app and its `features` / `segment` groups."""
    features_app.command("build")(handle_errors(build_command))
    segment_app.command("summary")(handle_errors(summary_command))
