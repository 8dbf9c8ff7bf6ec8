"""`winback report`: the retention strategy page (HTML) and its tables (JSON) from scores and recommendations."""

from __future__ import annotations

from pathlib import Path

import typer

from winback.cli_common import MKDIR_HELP, check_output, console, flag, handle_errors


def _catalog(path: Path | None, recommendations: Path):
    """The catalogue and where it came from: --catalog, else the one the recommendations file records."""
    from features.io import read_provenance
    from serving.runtime.decision.catalog import Catalog, load_catalog

    if path is not None:
        return load_catalog(path), f"--catalog {path}"
    stored = (read_provenance(recommendations) or {}).get("catalog") if recommendations.suffix.lower() in (
        ".parquet", ".pq") else None
    return (Catalog.from_dict(stored, where=str(recommendations)), "the recommendations file") if stored else (None, None)


@handle_errors
def report_command(
    scores: Path = typer.Option(..., "--scores", help="Output of `winback score` (.csv/.parquet)."),
    recommendations: Path = typer.Option(..., "--recommendations", help="Output of `winback recommend` for the same "
                                         "customers (.csv/.parquet; with --net-values the budget curve goes past the plan)."),
    campaign_eval: Path | None = typer.Option(None, "--campaign-eval", help="JSON of `winback campaign evaluate`: "
                                              "what the last campaign really returned."),
    catalog: Path | None = typer.Option(None, "--catalog", help="Incentive catalogue YAML (send costs); default: the "
                                        "one a Parquet recommendations file records, else costs are unknown."),
    experiment: str = typer.Option("winback-report", "--experiment", help="MLflow experiment name."),
    html_out: Path = typer.Option(..., "--html-out", help="The self-contained HTML page."),
    json_out: Path | None = typer.Option(None, "--json-out", help="The same tables as JSON."),
    mkdir: bool = flag("--mkdir", MKDIR_HELP),
) -> None:
    """One page for the retention manager: segments slipping away, their value, what to send to whom, what it
    costs and returns; logged to MLflow as a `report` run."""
    import json
    import tempfile

    from features.io import write_text_atomic
    from serving.strategy import inputs
    from serving.strategy.html import render
    from serving.strategy.report import build_report
    from training.report import log_report
    from training.tracking import TrackingSettings

    check_output(html_out, "--html-out", mkdir)
    check_output(json_out, "--json-out", mkdir)
    score_table = inputs.read_scores(scores)
    recommendation_table = inputs.read_recommendations(recommendations)
    campaign = inputs.read_campaign(campaign_eval) if campaign_eval is not None else None
    cat, cost_source = _catalog(catalog, recommendations)
    provenance = {"scores": inputs.file_provenance(scores, len(score_table)),
                  "recommendations": inputs.file_provenance(recommendations, len(recommendation_table)),
                  "catalog": inputs.file_provenance(catalog), "campaign_eval": inputs.file_provenance(campaign_eval)}
    doc = build_report(score_table, recommendation_table, cat, cost_source, campaign, provenance)
    page = render(doc)
    with tempfile.TemporaryDirectory() as tmp:
        staged_html, staged_json = Path(tmp) / "report.html", Path(tmp) / "report.json"
        staged_html.write_text(page)
        staged_json.write_text(json.dumps(doc, indent=2))
        doc["mlflow_run_id"] = log_report(doc, staged_html, staged_json, TrackingSettings.from_env(experiment))
    write_text_atomic(html_out, page)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(doc, indent=2))
    h = doc["headline"]
    cost = "unknown" if h["send_cost"] is None else f"{h['send_cost']:,.2f}"
    console.print(f"{h['customers']:,} customers, {len(doc['segments'])} segments: {h['expected_churners']:,.1f} "
                  f"expected churners, value at risk {h['value_at_risk']:,.2f}; {h['sends']:,} sends costing {cost}, "
                  f"expected net value {h['expected_net_value']:+,.2f}", highlight=False)
    console.print(f"wrote {html_out}" + (f" and {json_out}" if json_out else "")
                  + f" (MLflow run {doc['mlflow_run_id']})", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
