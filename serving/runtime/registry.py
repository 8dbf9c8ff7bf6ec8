"""Which registered model and version an MLflow model URI points at (`models:/name@alias`, `models:/name/3`)."""

from __future__ import annotations

from pathlib import Path

from features.errors import DataError


def registry_version(model_uri: str) -> tuple[str, str | None] | None:
    """(name, version) of a `models:/` URI, an alias resolved through the registry; (name, None) for a
    bare `models:/name`; None for any other URI. Raises MlflowException when the registry has no such alias."""
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri[len("models:/"):].strip("/")
    if "@" in ref:
        from mlflow.tracking import MlflowClient

        name, alias = ref.split("@", 1)
        return name, str(MlflowClient().get_model_version_by_alias(name, alias).version)
    if "/" in ref:
        name, version = ref.split("/", 1)
        return name, version
    return ref, None


def download_model(model_uri: str) -> Path:
    """Local directory of any MLflow model URI (`runs:/…`, `models:/name@alias`, a path); DataError naming
    the URI when MLflow cannot resolve it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"--model: cannot load {model_uri!r}: {first}") from None
