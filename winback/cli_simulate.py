"""`winback simulate`: write the synthetic data platform (purchases, profiles, campaign, truth)."""

from __future__ import annotations

from pathlib import Path

import typer

from winback.cli_common import MKDIR_HELP, check_output, console, flag, handle_errors


@handle_errors
def simulate_command(
    ctx: typer.Context,
    customers: int = typer.Option(5000, "--customers", help="Number of customers to simulate."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same files."),
    shift: float = typer.Option(0.0, "--shift", help="Change the population (0 = none; 0.5: fewer, larger "
                                "purchases, more drop-outs, more app customers) to demonstrate drift."),
    personalised: bool = flag("--personalised", "Add a personalised category coupon to the catalogue and the "
                              "campaign (its effect is larger when it features the customer's preferred category)."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Directory for the output files "
                                           "(created; its parent must exist unless --mkdir). Required."),
    events: bool = flag("--events/--no-events", "Also write events.parquet: engagement events (visits, app "
                        "sessions, e-mails, tickets) that fade before each hidden drop-out. Default: on.", default=True),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Simulate two years of purchases and a randomised win-back campaign, with the true effects.

    `winback simulate respond` answers a campaign plan with the simulation's true effects."""
    from features.errors import DataError
    from features.simulate import simulate, write_simulation

    if ctx.invoked_subcommand is not None:
        return
    if output_dir is None:
        raise DataError("--output-dir: missing (the folder to write the simulation to)")
    if customers <= 0:
        raise DataError(f"--customers: must be a positive number, got {customers}")
    check_output(output_dir, "--output-dir", mkdir)  # the folder itself is created, its parent must exist
    sim = simulate(customers=customers, seed=seed, shift=shift, events=events, personalised=personalised)
    paths = write_simulation(sim, output_dir)
    console.print(
        f"wrote {', '.join(paths)} to {output_dir}: {len(sim.transactions):,} transactions of "
        f"{len(sim.customers):,} customers"
        + (f", {len(sim.events):,} engagement events" if sim.events is not None else "")
        + f", {sim.history_start.date()} to {sim.history_end.date()} (seed {seed})",
        highlight=False,
    )
    console.print(
        f"true 180-day churn rate {sim.truth['churn_probability'].mean():.1%}; "
        f"campaign on {sim.campaign_date.date()}:",
        highlight=False,
    )
    arms = sim.campaign.groupby("incentive", sort=False).agg(
        customers=("converted", "size"), conversion=("converted", "mean"), revenue=("revenue", "mean")
    )
    arms = arms.reindex([sim.catalog["control"]] + [item["name"] for item in sim.catalog["incentives"]], fill_value=0)
    for arm, row in arms.iterrows():
        console.print(
            f"  {arm:<16} {int(row['customers']):>9,} customers  {row['conversion']:6.1%} converted  "
            f"{row['revenue']:7.2f} revenue per customer",
            highlight=False,
        )


def register(app: typer.Typer) -> typer.Typer:
    """Add `simulate` (a command with sub-commands) to the top-level app; returns its group."""
    simulate_app = typer.Typer(invoke_without_command=True)
    simulate_app.callback()(simulate_command)
    app.add_typer(simulate_app, name="simulate")
    return simulate_app
