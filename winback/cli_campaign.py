"""`winback campaign plan|evaluate` and `winback simulate respond`: the campaign loop."""

from __future__ import annotations

from pathlib import Path

import typer

from winback.cli_common import MKDIR_HELP, check_output, console, flag, handle_errors, parse_date


@handle_errors
def plan_command(
    recommendations: Path = typer.Option(..., "--recommendations", help="Output of `winback recommend`."),
    campaign_id: str = typer.Option(..., "--campaign-id", help="Name of this campaign."),
    campaign_date: str = typer.Option(..., "--campaign-date", help="YYYY-MM-DD the campaign is sent."),
    control_share: float = typer.Option(0.10, "--control-share", help="Global holdout: share of customers sent "
                                        "nothing, chosen by a salted hash of the customer id."),
    explore_share: float = typer.Option(0.05, "--explore-share", help="Share of customers sent an arm drawn "
                                        "uniformly from every arm, 'send nothing' included."),
    salt: str | None = typer.Option(None, "--salt", help="Salt of the holdout hash (default: a fixed project "
                                    "constant, so the same customers stay held out)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the exploration draw."),
    max_sends: int | None = typer.Option(None, "--max-sends", help="At most this many sends in the model group."),
    budget: float | None = typer.Option(None, "--budget", help="Total send cost of the model group at most this."),
    history: Path | None = typer.Option(None, "--history", help="Earlier plans (for the contact policy)."),
    min_days: int | None = typer.Option(None, "--min-days-between-contacts", help="Send nothing to a customer "
                                        "contacted in the last D days (needs --history)."),
    catalog: Path | None = typer.Option(None, "--catalog", help="Incentive catalogue YAML (arms and costs)."),
    output: Path = typer.Option(..., "--output", help="Plan file (.parquet or .csv)."),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Plan a campaign: global holdout, exploration, caps and contact policy, with exact propensities."""
    from features.errors import DataError
    from features.io import read_table, table_format, write_table
    from serving.batch.plan import DEFAULT_SALT, PlanDesign, plan_campaign, plan_summary
    from serving.runtime.decision.catalog import load_catalog

    if max_sends is not None and budget is not None:
        raise DataError("--max-sends and --budget: give one of them")
    if (history is None) != (min_days is None):
        raise DataError("--history and --min-days-between-contacts go together")
    table_format(output)
    check_output(output, "--output", mkdir)
    design = PlanDesign(campaign_id, parse_date(campaign_date, "--campaign-date"), control_share, explore_share,
                        DEFAULT_SALT if salt is None else salt, seed, max_sends, budget, min_days)
    design.check()
    cat = load_catalog(catalog) if catalog is not None else None
    plan = plan_campaign(read_table(recommendations), design, cat,
                         read_table(history) if history is not None else None)
    write_table(plan, output)
    counts, cost = plan_summary(plan, cat)
    console.print(f"wrote {output}: {len(plan):,} customers, campaign {campaign_id} on {design.campaign_date.date()}",
                  highlight=False)
    console.print(counts.to_string(), highlight=False)
    if cost is not None:
        console.print(f"total send cost: {cost:,.2f}", highlight=False)


@handle_errors
def evaluate_command(
    plan: Path = typer.Option(..., "--plan", help="Output of `winback campaign plan`."),
    outcomes: Path = typer.Option(..., "--outcomes", help="customer_id, converted [, revenue] per planned customer."),
    catalog: Path | None = typer.Option(None, "--catalog", help="Incentive catalogue YAML (costs, outcome value)."),
    training_out: Path | None = typer.Option(None, "--training-out", help="Write the campaign as training data for "
                                             "`winback train uplift` (arm, outcomes, propensity, campaign_id)."),
    experiment: str = typer.Option("winback-campaigns", "--experiment", help="MLflow experiment name."),
    json_out: Path = typer.Option(..., "--json-out", help="Where to write the evaluation JSON."),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Measure what a campaign returned against its holdout (95 % intervals); log it to MLflow."""
    from features.io import read_table, table_format
    from serving.runtime.decision.catalog import load_catalog
    from training.campaign import evaluate_campaign, join, log_campaign, training_table, write_outputs
    from training.tracking import TrackingSettings

    check_output(json_out, "--json-out", mkdir)
    if training_out is not None:
        table_format(training_out)
        check_output(training_out, "--training-out", mkdir)
    cat = load_catalog(catalog) if catalog is not None else None
    plan_frame = read_table(plan)
    campaign = join(plan_frame, read_table(outcomes), cat)
    result = evaluate_campaign(campaign, cat)
    result["run_id"] = log_campaign(result, plan_frame, plan, TrackingSettings.from_env(experiment))
    write_outputs(result, json_out, training_table(campaign) if training_out is not None else None, training_out)
    _print(result)


def _print(result: dict) -> None:
    from rich.table import Table

    table = Table(title=f"campaign {result['campaign_id']}: {result['customers']:,} customers "
                        f"({', '.join(f'{g} {n:,}' for g, n in result['groups'].items())})")
    for column in ("arm", "customers", "conversion", "uplift vs holdout [95 % CI]", "expected uplift"):
        table.add_column(column)
    for arm, v in result["arms"].items():
        interval = "—" if v["uplift"] is None else f"{v['uplift']:+.4f} [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}]"
        table.add_row(arm, f"{v['n']:,}", "—" if v["rate"] is None else f"{v['rate']:.2%}", interval,
                      "—" if v.get("expected_uplift") is None else f"{v['expected_uplift']:+.4f}")
    console.print(table)
    p = result["policy"]
    if p["incremental_value"] is not None:
        console.print(f"model's decisions: {p['incremental_value']:+.4f} net per customer over the holdout "
                      f"[{p['ci_low']:+.4f}, {p['ci_high']:+.4f}] ({result['value_basis']}); incremental conversions "
                      f"{p['incremental_conversions']:+.1f} over {p['n_model']:,} customers"
                      f"{' — the interval includes zero' if p['interval_includes_zero'] else ''}", highlight=False)
    b = result["best_single_arm"]
    if b:
        console.print(f"best single arm (exploration): {b['arm']} {b['incremental_value']:+.4f} "
                      f"[{b['ci_low']:+.4f}, {b['ci_high']:+.4f}]"
                      f"{' — the interval includes zero' if b['interval_includes_zero'] else ''}", highlight=False)


@handle_errors
def respond_command(
    plan: Path = typer.Option(..., "--plan", help="A campaign plan (customer_id, incentive)."),
    truth_dir: Path = typer.Option(..., "--truth-dir", help="The folder `winback simulate` wrote (truth.parquet)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the outcome draws."),
    output: Path = typer.Option(..., "--output", help="Outcomes file: customer_id, converted, revenue."),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Answer a campaign plan with the simulator's true per-arm probabilities and revenue."""
    from features.errors import DataError
    from features.io import read_table, table_format, write_table
    from features.simulate.campaign import respond

    table_format(output)
    check_output(output, "--output", mkdir)
    truth = truth_dir / "truth.parquet"
    if not truth.is_file():
        raise DataError(f"--truth-dir: {truth} not found (the folder `winback simulate` wrote)")
    answered = respond(read_table(plan), read_table(truth), seed)
    write_table(answered, output)
    console.print(f"wrote {output}: {len(answered):,} customers, {answered['converted'].mean():.1%} converted, "
                  f"revenue {answered['revenue'].sum():,.2f}", highlight=False)


def register(app: typer.Typer, simulate_app: typer.Typer) -> None:
    campaign_app = typer.Typer(help="Plan campaigns with a holdout and exploration; measure what they returned.",
                               no_args_is_help=True)
    campaign_app.command("plan")(plan_command)
    campaign_app.command("evaluate")(evaluate_command)
    app.add_typer(campaign_app, name="campaign")
    simulate_app.command("respond")(respond_command)
