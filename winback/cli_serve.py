"""`winback package` (MLflow registry → BentoML model store) and `winback serve` (runs `bentoml serve`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from winback.cli_common import console, fail, handle_errors

SERVICE = "serving.service:Winback"
SERVICE_NAME = "winback"


def package(
    churn_model: str = typer.Option("models:/winback-churn@champion", help="MLflow model URI of the churn model."),
    uplift_model: str = typer.Option("models:/winback-uplift@champion", help="MLflow model URI of the uplift model."),
) -> None:
    """Import the champion models into the BentoML model store (tags winback-churn, winback-uplift)."""
    import mlflow

    from serving import model_store
    from training.tracking import TrackingSettings

    mlflow.set_tracking_uri(TrackingSettings.from_env().tracking_uri)
    for model, uri in ((model_store.CHURN, churn_model), (model_store.UPLIFT, uplift_model)):
        stored = model_store.import_mlflow_model(model, uri)
        labels = stored.info.labels
        console.print(f"{stored.tag}  ← {uri}  (registry version {labels.get('registry_version', '-')}, "
                      f"run {labels.get('mlflow_run_id', '-')})", highlight=False, soft_wrap=True)


def serve(
    port: int = typer.Option(3000, min=1, max=65535, help="HTTP port."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 for every interface."),
    workers: int = typer.Option(None, min=1, help="Worker processes (default: the service's 2, one per core)."),
    features: Path = typer.Option(None, "--features", help="Feature snapshot for lookups by customer_id "
                                  "(sets WINBACK_FEATURES)."),
) -> None:
    """Start the online service (a thin wrapper around `bentoml serve serving.service:Winback`)."""
    import bentoml

    from serving import model_store

    for model in (model_store.CHURN, model_store.UPLIFT):
        try:
            bentoml.models.get(model.name)
        except bentoml.exceptions.NotFound:
            fail(model_store.missing_message(model))
    env = dict(os.environ)
    if features is not None:
        if not features.is_file():
            fail(f"--features: {features}: file not found")
        env["WINBACK_FEATURES"] = str(features.resolve())
    if workers is not None:
        options = [o for o in env.get("BENTOML_CONFIG_OPTIONS", "").split() if o]
        env["BENTOML_CONFIG_OPTIONS"] = " ".join([*options, f"services.{SERVICE_NAME}.workers={workers}"])
    working_dir = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--port", str(port), "--host", host,
            "--working-dir", str(working_dir)]
    os.execve(sys.executable, argv, env)


def register(app: typer.Typer) -> None:
    app.command("package")(handle_errors(package))
    app.command("serve")(handle_errors(serve))
