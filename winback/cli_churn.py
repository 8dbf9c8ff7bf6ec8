"""`winback train churn` and `winback score`: parse and check options, call training / serving, report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from winback import cli_events, cli_spark
from winback.cli_common import (MKDIR_HELP, check_output, compiled_trees_option, console, flag, handle_errors, parse_date,
                                print_registered, progress, start_compiled_trees)


def _quiet_mlflow() -> None:
    """No per-file download bars from MLflow on the terminal (our own progress bar says enough)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _read_transactions(path: Path, as_of=None):
    """Transactions from .csv / .parquet (contract columns) or a CDNOW master .txt file."""
    from features.contracts import normalize_transactions
    from features.io import read_table, table_format
    from features.loaders import read_cdnow

    if path.suffix.lower() == ".txt":
        return normalize_transactions(read_cdnow(path), as_of=as_of)
    raw = read_table(path, dtype={"customer_id": "str"}) if table_format(path) == "csv" else read_table(path)
    return normalize_transactions(raw, as_of=as_of)


def _read_profiles(path: Path | None):
    if path is None:
        return None
    from features.contracts import normalize_profiles
    from features.io import read_table, table_format

    raw = read_table(path, dtype={"customer_id": "str"}) if table_format(path) == "csv" else read_table(path)
    return normalize_profiles(raw)


def _read_customer_table(path: Path, id_col: str | None):
    from features.io import read_table, table_format

    ids = id_col or "customer_id"
    return read_table(path, dtype={ids: "str"}) if table_format(path) == "csv" else read_table(path)


def _check_source(transactions, table, cutoff, horizon_days: int, target) -> None:
    from features.errors import DataError

    if (transactions is None) == (table is None):
        raise DataError("give either --transactions (with --cutoff, --horizon-days) or --table (with --target)")
    if transactions is not None and cutoff is None:
        raise DataError("--transactions needs --cutoff")
    if table is not None and target is None:
        raise DataError("--table needs --target (the churn label column)")
    if horizon_days <= 0:
        raise DataError(f"--horizon-days must be positive, got {horizon_days}")


def _validation_table(result: dict) -> None:
    from rich.table import Table

    v, b = result["validation"], result["baselines"]
    table = Table(title=f"Churn validation ({v['n']:,} customers, churn rate {v['churn_rate']:.1%})")
    for header in ("model", "AUC", "PR AUC", "log loss", "Brier", "lift@10%"):
        table.add_column(header, justify="left" if header == "model" else "right")
    table.add_row("LightGBM (calibrated)", f"{v['auc']:.4f}", f"{v['pr_auc']:.4f}", f"{v['logloss']:.4f}",
                  f"{v['brier']:.4f}", f"{v['lift_at_10']:.2f}")
    for name in ("recency", "frequency"):
        value = b.get(f"{name}_auc")
        if value is not None:
            table.add_row(f"baseline: {name} only", f"{value:.4f}", "", "", "", "")
    console.print(table)
    scorer = result["scorer"]
    shipped = f"{scorer['kind']} (weight {scorer['weight']:.1f} on LightGBM)" if scorer["kind"] == "blend" else \
        scorer["kind"]
    console.print(f"validation: {result['validation_scheme']}; shipped scorer {shipped}; candidates' AUC "
                  + ", ".join(f"{k} {v['validation_auc']:.4f}" for k, v in result["candidates"].items()),
                  highlight=False)
    t = result["test"]
    console.print(f"test ({t['n']:,} customers seen by no tuning, early stopping or calibration): AUC {t['auc']:.4f}, "
                  f"PR AUC {t['pr_auc']:.4f}, Brier {t['brier']:.4f}", highlight=False)
    from training.churn.levels import EXTRAPOLATION_WARNING, LEVEL_WARNING

    extrapolated = False
    for column, seen in (result.get("extrapolation") or {}).items():
        if seen["share_beyond"] >= EXTRAPOLATION_WARNING:
            extrapolated = True
            console.print(f"note: as of the cutoff {seen['share_beyond']:.0%} of customers have {column} beyond every "
                          f"labelled row (at most {seen['labelled_max']:,.0f}): the churn level there is extrapolated, "
                          "and totals such as expected_spend can be off by more than the test figures show",
                          highlight=False)
    levels = result.get("cutoff_levels")
    if levels and levels["expected_buyers_bgnbd"] > 0 and levels["expected_spend_btyd"] > 0:
        buyers = levels["expected_buyers"] / levels["expected_buyers_bgnbd"] - 1
        spend = levels["expected_spend"] / levels["expected_spend_btyd"] - 1
        console.print(f"as of the cutoff ({levels['customers']:,} customers): expected buyers "
                      f"{levels['expected_buyers']:,.0f} (BG/NBD on the same customers "
                      f"{levels['expected_buyers_bgnbd']:,.0f}, {buyers:+.0%}), expected spend "
                      f"{levels['expected_spend']:,.0f} (BG/NBD × Gamma-Gamma {levels['expected_spend_btyd']:,.0f}, "
                      f"{spend:+.0%})", highlight=False)
        resampled = levels.get("bootstrap")
        if resampled:
            (b_low, b_high), (s_low, s_high) = resampled["expected_buyers"], resampled["expected_spend"]
            console.print(f"the same totals with the calibration and the regression refitted on {resampled['replicates']} "
                          f"resamples of their rows, {resampled['interval']:.0%} interval: expected buyers "
                          f"{b_low:,.0f}–{b_high:,.0f}, expected spend {s_low:,.0f}–{s_high:,.0f}; a floor under the "
                          "totals' uncertainty (the booster and an extrapolation's bias are not in it)", highlight=False)
        if extrapolated and max(abs(buyers), abs(spend)) > LEVEL_WARNING:
            console.print("note: where the level is extrapolated, BG/NBD fitted on the same customers disagrees by "
                          f"more than {LEVEL_WARNING:.0%}: treat totals as uncertain by at least that much",
                          highlight=False)


@handle_errors
def train_churn_command(
    json_out: Path = typer.Option(None, "--json-out", help="Where to write the run summary (JSON); "
                                  "it is always logged to the MLflow run too."),
    transactions: Path | None = typer.Option(None, "--transactions", help="Purchases (.csv/.parquet, or CDNOW .txt)."),
    profiles: Path | None = typer.Option(None, "--profiles", help="Customer attributes to join (.csv/.parquet)."),
    cutoff: str | None = typer.Option(None, "--cutoff", help="YYYY-MM-DD: only transactions on or before it are read."),
    horizon_days: int = typer.Option(180, "--horizon-days", help="Churn = no purchase within N days after a snapshot."),
    table: Path | None = typer.Option(None, "--table", help="Customer table that already holds a churn label."),
    target: str | None = typer.Option(None, "--target", help="Label column of --table (yes/no, true/false, 1/0)."),
    id_col: str | None = typer.Option(None, "--id-col", help="Customer id column of --table (default customer_id)."),
    snapshots: int = typer.Option(1, "--snapshots", help="Number of stacked snapshots (K ≥ 2: out-of-time validation)."),
    snapshot_step_days: int = typer.Option(30, "--snapshot-step-days", help="Days between snapshots."),
    trials: int = typer.Option(30, "--trials", help="Optuna trials to run."),
    timeout: float | None = typer.Option(None, "--timeout", help="Stop tuning after this many seconds."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the sampler and LightGBM."),
    max_rounds: int = typer.Option(2000, "--max-rounds", help="Cap on boosting rounds (early stopping picks fewer)."),
    cv: str = typer.Option("auto", "--cv", help="auto: 5-fold cross-validation by customer when training + validation "
                           "rows are under 20,000, else the holdout; always; never."),
    refit: bool = flag("--refit/--no-refit", "Holdout scheme: after tuning, retrain on every labelled row but the "
                       "test slice, the newest snapshot included (rounds scaled to the larger set). Default: on.",
                       default=True),
    level_bootstrap: int = typer.Option(20, "--level-bootstrap", help="Refits of the calibration and the regression on "
                                        "resamples of their rows behind the cutoff totals' interval; 0: none."),
    experiment: str = typer.Option("winback-churn", "--experiment", help="MLflow experiment name."),
    register_as: str | None = typer.Option(None, "--register-as", help="Registered model name, e.g. winback-churn."),
    storage: str | None = typer.Option(None, "--storage", help="Optuna RDB URL shared by several processes."),
    study_name: str | None = typer.Option(None, "--study-name", help="Optuna study name (needed with --storage)."),
    events: Path | None = cli_events.events_option(),
    event_id_col: str | None = cli_events.event_id_col_option(),
    event_time_col: str = cli_events.event_time_col_option(),
    event_type_col: str = cli_events.event_type_col_option(),
    event_types: str | None = cli_events.event_types_option(),
    event_top: int = cli_events.event_top_option(),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Tune, calibrate and log a LightGBM churn model in MLflow; optionally register it as champion."""
    from features.errors import DataError

    _check_source(transactions, table, cutoff, horizon_days, target)
    if trials < 1:
        raise DataError(f"--trials must be at least 1, got {trials}")
    if cv not in ("auto", "always", "never"):
        raise DataError(f"--cv must be auto, always or never, got {cv!r}")
    if max_rounds < 1:
        raise DataError(f"--max-rounds must be at least 1, got {max_rounds}")
    if timeout is not None and timeout <= 0:
        raise DataError(f"--timeout must be positive, got {timeout}")
    if level_bootstrap != 0 and level_bootstrap < 2:
        raise DataError(f"--level-bootstrap must be 0 (none) or at least 2, got {level_bootstrap}")
    if storage and not study_name:
        raise DataError("--storage needs --study-name so that several processes join the same study")
    if events is not None and transactions is None:
        raise DataError("--events goes with --transactions (events add features to the purchase snapshots)")
    types, top = cli_events.event_types(event_types, event_top)
    check_output(json_out, "--json-out", mkdir)
    _quiet_mlflow()
    if storage:
        from training.studies import open_storage

        open_storage(storage)  # an unreachable or malformed URL fails now, before the data is read

    from training.churn.train import ChurnTrainConfig, train_churn
    from training.churn.data import prepare_table, prepare_transactions
    from training.tracking import TrackingSettings

    if transactions is not None:
        from training.labels import snapshot_dates

        cut = parse_date(cutoff, "--cutoff")
        snapshot_dates(cut, horizon_days, snapshots, snapshot_step_days)  # argument checks before reading data
        engagement = cli_events.read_events(events, event_id_col, event_time_col, event_type_col)
        data = prepare_transactions(_read_transactions(transactions, as_of=cut), cut, horizon_days, snapshots,
                                    snapshot_step_days, _read_profiles(profiles), seed, events=engagement,
                                    event_types=types, event_top=top)
    else:
        data = prepare_table(_read_customer_table(table, id_col), target, id_col, seed)
    config = ChurnTrainConfig(trials=trials, timeout=timeout, seed=seed, storage=storage, study_name=study_name,
                              register_as=register_as, max_rounds=max_rounds, cv=cv, refit=refit,
                              level_bootstrap=level_bootstrap)
    result = train_churn(data, config, TrackingSettings.from_env(experiment))
    if json_out is not None:
        from features.io import write_text_atomic

        write_text_atomic(json_out, json.dumps(result, indent=2, default=str))
    _validation_table(result)
    console.print(f"run {result['run_id']}: {result['n_trials']} trials ({result['n_pruned']} pruned), "
                  f"model {result['model_uri']}", highlight=False)
    print_registered(result["registered"])


@handle_errors
def score_command(
    model: str = typer.Option(..., "--model", help="MLflow model URI, e.g. models:/winback-churn@champion."),
    output: Path = typer.Option(..., "--output", help="Scores: .csv or .parquet (written atomically)."),
    transactions: Path | None = typer.Option(None, "--transactions", help="Purchases (.csv/.parquet, or CDNOW .txt)."),
    profiles: Path | None = typer.Option(None, "--profiles", help="Customer attributes (.csv/.parquet)."),
    as_of: str | None = typer.Option(None, "--as-of", help="YYYY-MM-DD: score customers as of this date."),
    table: Path | None = typer.Option(None, "--table", help="Customer table (for models trained with --table)."),
    id_col: str | None = typer.Option(None, "--id-col", help="Customer id column of --table."),
    features: Path | None = typer.Option(None, "--features", help="Feature table (output of `winback features "
                                         "build`: customer_id + features); with --engine spark a Parquet directory "
                                         "too."),
    engine: str = cli_spark.engine_option(),
    spark_master: str | None = cli_spark.master_option(),
    compiled_trees: bool = compiled_trees_option(),
    reasons: int = typer.Option(0, "--reasons", help="Also write reason_1..reason_N: the N features raising each "
                                "customer's churn risk most (TreeSHAP), for `winback report`. Default 0 (off): "
                                "it multiplies the scoring time (see README)."),
    events: Path | None = cli_events.events_option(),
    event_id_col: str | None = cli_events.event_id_col_option(),
    event_time_col: str = cli_events.event_time_col_option(),
    event_type_col: str = cli_events.event_type_col_option(),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Churn probability, risk tier, lifecycle stage, value tier and value at risk per customer."""
    from features.errors import DataError
    from features.io import table_format

    if sum(x is not None for x in (transactions, table, features)) != 1:
        raise DataError("give one of --transactions (with --as-of), --table or --features")
    if transactions is not None and as_of is None:
        raise DataError("--transactions needs --as-of")
    if reasons < 0:
        raise DataError(f"--reasons: must be >= 0, got {reasons}")
    spark = cli_spark.check_engine(engine)
    if spark and reasons:
        raise DataError("--reasons: with the pandas engine only (drop it, or --engine pandas)")
    cli_events.refuse_spark(events, spark)
    if events is not None and transactions is None:
        raise DataError("--events goes with --transactions (a --features table already holds the event features)")
    if spark and features is None:
        raise DataError("--engine spark scores a feature table: give --features (build it with "
                        "`winback features build --engine spark`)")
    if spark and compiled_trees:
        raise DataError("--compiled-trees: with the pandas engine only (drop it, or --engine pandas)")
    if compiled_trees:
        from serving.runtime.compiled import require

        require()
    if not spark:
        table_format(output)
    check_output(output, "--output", mkdir)
    day = parse_date(as_of, "--as-of") if transactions is not None else None
    from serving.batch.score import score_feature_table, score_table, score_transactions
    from serving.runtime.churn import load_churn_runtime

    _quiet_mlflow()
    runtime = load_churn_runtime(model)
    if compiled_trees:
        start_compiled_trees(runtime)
    if spark:
        rows = cli_spark.score(spark_master, runtime, features, output)
        console.print(f"wrote {rows:,} scored customers to {output} (Parquet directory; Spark; model {model})",
                      highlight=False)
        return
    with progress() as bar:
        task = bar.add_task("scoring", total=None)
        advance = lambda n: bar.advance(task, n)  # noqa: E731
        if transactions is not None:
            rows = score_transactions(runtime, _read_transactions(transactions, as_of=day), day, output,
                                      _read_profiles(profiles), on_chunk=advance, reasons=reasons,
                                      events=cli_events.read_events(events, event_id_col, event_time_col,
                                                                    event_type_col))
        elif features is not None:
            rows = score_feature_table(runtime, _read_customer_table(features, "customer_id"), output,
                                       on_chunk=advance, reasons=reasons)
        else:
            rows = score_table(runtime, _read_customer_table(table, id_col), output, id_col, on_chunk=advance,
                               reasons=reasons)
    version = runtime.metadata.get("model_version")
    console.print(f"wrote {rows:,} scored customers to {output} (model {model}"
                  f"{f' version {version}' if version else ''}, horizon {runtime.horizon_days} days)",
                  highlight=False)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add `train churn` and `score`."""
    train_app.command("churn")(train_churn_command)
    app.command("score")(score_command)
