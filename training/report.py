"""The MLflow run of `winback report`: the page and its JSON as artifacts, the headline as metrics, the input
files' hashes and the models behind them as parameters."""

from __future__ import annotations

from pathlib import Path

HEADLINE_METRICS = ("customers", "expected_churners", "value_at_risk", "sends", "send_cost", "expected_net_value",
                    "do_not_disturb")


def _params(doc: dict) -> dict:
    params = {"cost_source": doc["cost_source"] or "unknown", "segments": len(doc["segments"]),
              "reasons": doc["reasons"]["available"]}
    for role, p in doc["provenance"].items():
        if p is None:
            continue
        params[f"{role}.sha256"] = p["sha256"]
        for key in ("model_uri", "model_version", "run_id", "as_of"):
            value = (p.get("written_by") or {}).get(key)
            if value is not None:
                params[f"{role}.{key}"] = value
    return params


def log_report(doc: dict, html: Path, json_path: Path, tracking) -> str:
    """One run named `report` in the tracking settings' experiment; returns its id."""
    import mlflow

    from training.tracking import describe_run, log_params

    tracking.activate()
    h = doc["headline"]
    with mlflow.start_run(run_name="report") as run:
        mlflow.set_tags({"command": "report"})
        log_params(_params(doc))
        metrics = {k: float(h[k]) for k in HEADLINE_METRICS if h.get(k) is not None}
        campaign = h.get("campaign")
        if campaign and campaign["total_incremental_value"] is not None:
            metrics.update({"campaign_incremental_value": campaign["total_incremental_value"],
                            "campaign_ci_low": campaign["total_ci_low"], "campaign_ci_high": campaign["total_ci_high"]})
        curve = doc["budget_curve"]
        if curve["available"]:
            metrics.update({"peak_budget": curve["peak_budget"], "peak_net_value": curve["peak_net_value"]})
            if curve["break_even_budget"] is not None:
                metrics["break_even_budget"] = curve["break_even_budget"]
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(json_path))
        mlflow.log_artifact(str(html))
        describe_run(f"Retention strategy: {h['customers']:,} customers, value at risk {h['value_at_risk']:,.2f}, "
                     f"{h['sends']:,} sends, expected net value {h['expected_net_value']:+,.2f}.")
        return run.info.run_id
