"""`winback monitor`: drift of today's customers and realised performance against the model's reference."""

from __future__ import annotations

from pathlib import Path

import typer

from winback.cli_common import MKDIR_HELP, check_output, console, flag, handle_errors


@handle_errors
def monitor_command(
    model: str = typer.Option(..., "--model", help="Model URI (churn or uplift), e.g. models:/winback-churn@champion."),
    features: Path = typer.Option(..., "--features", help="Today's customers (output of `winback features build`)."),
    outcomes: Path | None = typer.Option(None, "--outcomes", help="Realised labels of the scored customers "
                                         "(customer_id + --label-col), for churn models."),
    label_col: str | None = typer.Option(None, "--label-col", help="0/1 column of --outcomes."),
    psi_warn: float = typer.Option(0.1, "--psi-warn", help="PSI from which a feature is 'warn'."),
    psi_alert: float = typer.Option(0.25, "--psi-alert", help="PSI from which a feature is 'alert' (exit 3)."),
    experiment: str = typer.Option("winback-monitoring", "--experiment", help="MLflow experiment name."),
    html_out: Path | None = typer.Option(None, "--html-out", help="A self-contained HTML report."),
    json_out: Path = typer.Option(..., "--json-out", help="Where to write the JSON document."),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """Compare today's features and scores with the model's training reference (PSI, KS, missing, unseen
    levels) and, with --outcomes, realised AUC with the validation one. Exit 3 on alert or decay."""
    import json
    import tempfile

    from features.io import read_table, write_text_atomic
    from serving.monitoring.report import render
    from training.monitoring import MonitorSettings, exit_code, log_monitoring, monitor
    from training.tracking import TrackingSettings

    check_output(json_out, "--json-out", mkdir)
    check_output(html_out, "--html-out", mkdir)
    settings = MonitorSettings(psi_warn=psi_warn, psi_alert=psi_alert, label_col=label_col or None)
    settings.check()
    doc, context = monitor(model, read_table(features), settings,
                           read_table(outcomes) if outcomes is not None else None)
    page = render(doc, context) if html_out is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        staged_json = Path(tmp) / "monitoring.json"
        staged_json.write_text(json.dumps(doc, indent=2))
        staged_html = None
        if page is not None:
            staged_html = Path(tmp) / "monitoring.html"
            staged_html.write_text(page)
        doc["mlflow_run_id"] = log_monitoring(doc, staged_html, staged_json, TrackingSettings.from_env(experiment))
    if page is not None:
        write_text_atomic(html_out, page)
    write_text_atomic(json_out, json.dumps(doc, indent=2))
    worst = list(doc["features"].items())[:5]
    console.print(f"{doc['status'].upper()}: {doc['rows']:,} customers, model {doc['model']['uri']} "
                  f"({doc['model']['kind']}); output PSI {doc['output']['psi']:.3f} ({doc['output']['status']})",
                  highlight=False)
    for name, f in worst:
        console.print(f"  {name:<28} PSI {f['psi']:.3f}  {f['status']}", highlight=False)
    if "performance" in doc:
        p = doc["performance"]
        console.print(f"  realised AUC {p['auc']:.4f} (training {p['training_auc']:.4f}): {p['status']}", highlight=False)
    code = exit_code(doc)
    if code:
        raise typer.Exit(code=code)


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor_command)
