"""`winback train uplift` and `winback recommend`: parse options, call training / serving, report."""

from __future__ import annotations

from pathlib import Path

import typer

from features.errors import DataError
from winback import cli_events, cli_spark
from winback.cli_common import (MKDIR_HELP, check_output, compiled_trees_option, console, fail, flag, handle_errors,
                                parse_date, print_registered, progress, start_compiled_trees)


@handle_errors
def train_uplift_command(
    campaign: list[Path] = typer.Option(..., "--campaign", help="Campaign table (.csv/.parquet): arm, outcome(s), "
                                        "features. Repeat to stack campaigns (one campaign_id each; a logged "
                                        "propensity column is used, else the arm shares)."),
    treatment_col: str = typer.Option(..., "--treatment-col", help="Column holding the arm each customer got."),
    control: str = typer.Option(..., "--control", help="The arm meaning 'send nothing'."),
    outcome: str = typer.Option(..., "--outcome", help="Binary (0/1) outcome column."),
    catalog: Path = typer.Option(..., "--catalog", help="Incentive catalogue YAML (costs, outcome value)."),
    json_out: Path = typer.Option(None, "--json-out", help="Where to write the JSON summary; it is always "
                                  "logged to the MLflow run too."),
    revenue_col: str | None = typer.Option(None, "--revenue-col", help="Revenue outcome: net value uses its uplift."),
    id_col: str = typer.Option("customer_id", "--id-col", help="Customer id column."),
    features: str | None = typer.Option(None, "--features", help="Comma-separated feature columns (default: all others)."),
    transactions: str | None = typer.Option(None, "--transactions", help="Purchases for point-in-time features."),
    profiles: str | None = typer.Option(None, "--profiles", help="Customer attributes joined to those features."),
    as_of: str | None = typer.Option(None, "--as-of", help="Feature cutoff YYYY-MM-DD (with --transactions); "
                                     "must be before the campaign date."),
    campaign_date: str | None = typer.Option(None, "--campaign-date", help="YYYY-MM-DD the campaign started (else "
                                             "the table's campaign_date column); --as-of must be before it."),
    trials: int = typer.Option(20, "--trials", help="Optuna trials."),
    timeout: float | None = typer.Option(None, "--timeout", help="Stop tuning after this many seconds."),
    seed: int = typer.Option(42, "--seed", help="Seed of splits, sampler and LightGBM."),
    experiment: str = typer.Option("winback-uplift", "--experiment", help="MLflow experiment name."),
    register_as: str | None = typer.Option(None, "--register-as", help="Register the model under this name."),
    churn_model: str | None = typer.Option(None, "--churn-model", help="Churn model URI for the top-risk policy."),
    refit: bool = flag("--refit/--no-refit", "After tuning and validation, ship the chosen learner refitted on every "
                       "row (the validation figures are of the fit on the training split). Default: on.",
                       default=True),
    decision_confidence: float = typer.Option(0.95, "--decision-confidence", min=0.5, max=0.999,
                                              help="An incentive is sent only if the customers the model sends it to "
                                              "were worth more sent than not, out of fold, at this confidence "
                                              "(split between the incentives); 0.5: when the estimate says so."),
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
    """Tune multi-arm uplift models with Optuna, evaluate policies offline, log and register in MLflow."""
    from serving.runtime.decision.catalog import load_catalog
    from training.tracking import TrackingSettings
    from training.uplift.train import train_uplift
    from training.uplift.data import UpliftConfig

    # an empty value means "not given" (MLproject parameters cannot be left out)
    revenue_col, features, as_of = revenue_col or None, features or None, as_of or None
    campaign_date = campaign_date or None
    register_as, churn_model = register_as or None, churn_model or None
    transactions = Path(transactions) if transactions else None
    profiles = Path(profiles) if profiles else None
    if trials < 1:
        fail(f"--trials: must be at least 1, got {trials}")
    if transactions is not None and as_of is None:
        fail("--transactions needs --as-of")
    if events is not None and transactions is None:
        fail("--events goes with --transactions (and --as-of)")
    types, top = cli_events.event_types(event_types, event_top)
    storage, study_name = storage or None, study_name or None
    if storage and not study_name:
        fail("--storage needs --study-name so that several processes join the same study")
    check_output(json_out, "--json-out", mkdir)
    if storage:
        from training.studies import open_storage

        open_storage(storage)  # an unreachable or malformed URL fails now, before the data is read
    config = UpliftConfig(
        campaign=campaign[0], more_campaigns=tuple(campaign[1:]), treatment_col=treatment_col, control=control, outcome=outcome,
        catalog=load_catalog(catalog), catalog_path=catalog, json_out=json_out, revenue_col=revenue_col,
        id_col=id_col, features=tuple(f.strip() for f in features.split(",") if f.strip()) if features else None,
        transactions=transactions, profiles=profiles, as_of=parse_date(as_of, "--as-of") if as_of else None,
        campaign_date=parse_date(campaign_date, "--campaign-date") if campaign_date else None,
        trials=trials, timeout=timeout, seed=seed, experiment=experiment, register_as=register_as,
        churn_model=churn_model, refit=refit, decision_confidence=decision_confidence, storage=storage, study_name=study_name, events=events,
        event_columns=(event_id_col or "customer_id", event_time_col, event_type_col), event_types=types,
        event_top=top)
    with progress() as bar:
        task = bar.add_task("tuning", total=trials)
        result = train_uplift(config, TrackingSettings.from_env(experiment),
                              on_trial=lambda number, state: bar.advance(task))
    _print_result(result)


def _print_result(result: dict) -> None:
    from rich.table import Table

    v = result["validation"]
    console.print(f"run {result['run_id']}  learner {result['learner']}  model {result['model_uri']}", highlight=False)
    print_registered(result["registered"])
    arms = Table(title=f"validation ({v['n']:,} customers)")
    for col in ("arm", "Qini AUC", "uplift AUC", "uplift@30%"):
        arms.add_column(col)
    for arm in result["arms"]:
        arms.add_row(arm, f"{v['qini_auc'][arm]:.4f}", f"{v['uplift_auc'][arm]:.4f}", f"{v['uplift_at_30'][arm]:.4f}")
    console.print(arms)
    decision = v["decision"]
    table = Table(title="policy value per customer (IPW)")
    for col in ("policy", "outcome", "net value vs control", "sent", "vs model (± se)"):
        table.add_column(col)
    for name in v["policy_value"]:
        shown = decision["rules"].get(name)
        table.add_row(name, f"{v['policy_value'][name]:.4f}", f"{v['net_policy_value'][name]:+.4f}",
                      f"{v['send_share'][name]:.0%}", "" if shown is None or name == "model" else
                      f"{shown['minus_model']:+.4f} ± {shown['minus_model_se']:.4f}")
    console.print(table)
    from training.uplift.train import shipped_note

    dropped = [a for a in result["arms"] if a not in decision["validated_arms"]]
    if dropped:
        console.print(f"not sent: {', '.join(dropped)} (the validation customers the model would send it to were "
                      f"not shown to be worth its cost, at {decision['confidence']:.0%})", highlight=False)
    note = shipped_note(v)
    console.print(f"shipped decision rule: {decision['rule']} ({decision['net_policy_value']:+.4f} net per customer "
                  f"on the validation rows, sends {decision['send_share']:.0%})" + (f" — {note[2:]}" if note else ""),
                  highlight=False)


@handle_errors
def recommend_command(
    model: str = typer.Option(..., "--model", help="Uplift model URI (models:/winback-uplift@champion, runs:/…)."),
    input: Path = typer.Option(..., "--input", help="Customer table (.csv/.parquet) with the model's features."),
    output: Path = typer.Option(..., "--output", help="Where to write recommendations (.csv/.parquet)."),
    id_col: str = typer.Option("customer_id", "--id-col", help="Customer id column of the input."),
    catalog: Path | None = typer.Option(None, "--catalog", help="Catalogue YAML overriding the packaged one."),
    max_sends: int | None = typer.Option(None, "--max-sends", help="Send at most this many incentives (the highest net values)."),
    budget: float | None = typer.Option(None, "--budget", help="Total send cost at most this amount (best net value per unit of cost "
                                        "first); with --max-sends both hold."),
    engine: str = cli_spark.engine_option(),
    spark_master: str | None = cli_spark.master_option(),
    compiled_trees: bool = compiled_trees_option(),
    net_values: bool = flag("--net-values", "Also write net_value:<arm> per arm (the budget curve of "
                            "`winback report` ranks every customer's best arm, sent or not). pandas engine only."),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Choose an incentive (or none) per customer; optional send/budget cap over the whole batch."""
    from features.io import table_format
    from serving.batch.recommend import recommend
    from serving.runtime.decision.catalog import load_catalog
    from serving.runtime.uplift import load_uplift_runtime

    if max_sends is not None and max_sends < 0:
        fail(f"--max-sends: must be >= 0, got {max_sends}")
    if budget is not None and budget < 0:
        fail(f"--budget: must be >= 0, got {budget}")
    spark = cli_spark.check_engine(engine)
    if spark and (max_sends is not None or budget is not None):
        fail("--engine spark: --max-sends / --budget need the whole base in one place; use the pandas engine")
    if spark and compiled_trees:
        fail("--compiled-trees: with the pandas engine only (drop it, or --engine pandas)")
    if spark and net_values:
        fail("--net-values: with the pandas engine only (drop it, or --engine pandas)")
    if compiled_trees:
        from serving.runtime.compiled import require

        require()
    if not spark:
        table_format(output)
    check_output(output, "--output", mkdir)
    override = load_catalog(catalog) if catalog else None
    try:
        runtime = load_uplift_runtime(model)
    except DataError:
        raise  # already names --model
    except Exception as exc:  # any other failure to read the model is a bad --model value for the user
        fail(f"--model: cannot load {model!r}: {exc}".splitlines()[0])
    if compiled_trees:
        start_compiled_trees(runtime)
    if spark:
        rows = cli_spark.recommend(spark_master, runtime, input, output, id_col, override)
        console.print(f"wrote {rows:,} recommendations to {output} (Parquet directory; Spark)", highlight=False)
        return
    with progress() as bar:
        task = bar.add_task("recommending", total=None)
        summary = recommend(runtime, input, output, id_col=id_col, catalog=override, max_sends=max_sends,
                            budget=budget, on_rows=lambda n: bar.advance(task, n), with_net_values=net_values,
                            model_uri=model)
    sends = ", ".join(f"{arm} {count:,}" for arm, count in summary.sends.items())
    console.print(f"wrote {summary.rows:,} recommendations to {summary.output}: {sends}; send cost "
                  f"{summary.total_send_cost:,.2f}, expected net value {summary.total_expected_net_value:,.2f}",
                  highlight=False)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add `train uplift` and `recommend`."""
    train_app.command("uplift")(train_uplift_command)
    app.command("recommend")(recommend_command)
