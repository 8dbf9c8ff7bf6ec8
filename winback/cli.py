"""`winback` command: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import typer

from winback import (cli_campaign, cli_churn, cli_data, cli_monitor, cli_online, cli_report, cli_serve,
                     cli_simulate, cli_stream, cli_uplift)

app = typer.Typer(help="winback: churn, lifecycle segments and which incentive to send.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
features_app = typer.Typer(help="Point-in-time customer features.", no_args_is_help=True)
segment_app = typer.Typer(help="Lifecycle and value segments.", no_args_is_help=True)
train_app = typer.Typer(help="Train, track in MLflow and register models.", no_args_is_help=True)
app.add_typer(features_app, name="features")
app.add_typer(segment_app, name="segment")
app.add_typer(train_app, name="train")

simulate_app = cli_simulate.register(app)
cli_data.register(app, features_app, segment_app)
cli_churn.register(app, train_app)
cli_uplift.register(app, train_app)
cli_serve.register(app)
cli_campaign.register(app, simulate_app)
cli_monitor.register(app)
cli_report.register(app)
cli_online.register(app)
cli_stream.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
