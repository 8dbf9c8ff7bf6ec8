"""MLflow registry → BentoML model store, and back out as runtime models for the service.

`winback package` copies each champion MLflow model directory into a new BentoML model
(`winback-churn`, `winback-uplift`) labelled with its MLflow run id and registry version. The service
reads the runtime directory inside that copy; it never talks to MLflow.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bentoml.exceptions import NotFound
from bentoml.models import BentoModel

from features.errors import DataError, first_line
from serving.runtime.churn import ChurnRuntime
from serving.runtime.registry import registry_version
from serving.runtime.uplift import UpliftRuntime, find_runtime_dir

MLFLOW_DIR = "mlflow_model"  # where the MLflow model directory sits inside the BentoML model


@dataclass(frozen=True)
class PackagedModel:
    """One model the service needs: its BentoML name and the registry URI it is packaged from."""

    name: str
    default_uri: str
    kind: str  # "churn" | "uplift"


CHURN = PackagedModel("winback-churn", "models:/winback-churn@champion", "churn")
UPLIFT = PackagedModel("winback-uplift", "models:/winback-uplift@champion", "uplift")


PACKAGED = {m.name: m for m in (CHURN, UPLIFT)}


class ModelMissing(NotFound):
    """A model the service declares is not in the BentoML store; the message says how to create it."""


def missing_message(model: PackagedModel) -> str:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return (f"model {model.name!r} is not in the BentoML model store ({BentoMLContainer.model_store_dir.get()}); "
            f"create it with `winback package` (imports {model.default_uri} from the MLflow registry; "
            f"first `winback train {model.kind} ... --register-as {model.name}` if it is not registered)")


class PackagedBentoModel(BentoModel):
    """A `bentoml.models.BentoModel` that, when absent, says how to create it (instead of trying
    BentoCloud). BentoML resolves every declared model before the server starts, so a service with a
    model missing refuses to start with this one line."""

    def _require(self) -> None:
        if self.stored is None:
            raise ModelMissing(missing_message(PACKAGED[self.tag.name]))

    def resolve(self, base_path=None):
        self._require()
        return super().resolve(base_path)

    def to_info(self, alias=None):
        self._require()
        return super().to_info(alias)


# -- import ------------------------------------------------------------------------------------
def registry_reference(model_uri: str) -> dict[str, str]:
    """registered_model / registry_version for `models:/name@alias` and `models:/name/version` URIs."""
    from mlflow.exceptions import MlflowException

    try:
        ref = registry_version(model_uri)
    except MlflowException as exc:
        raise DataError(f"{model_uri}: not found in the MLflow registry ({first_line(exc)})") from None
    if ref is None:
        return {}
    name, version = ref
    return {"registered_model": name} if version is None else {"registered_model": name, "registry_version": version}


def import_mlflow_model(model: PackagedModel, model_uri: str | None = None, model_store: Any = None):
    """Download `model_uri` (default: the champion) and save it as a new version of `model.name`.

    Labels: mlflow_run_id, registry_version, registered_model, model_uri. The runtime inside is loaded
    once here, so a URI that is not a winback model fails now and not at service start.
    """
    import bentoml
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    uri = model_uri or model.default_uri
    labels = {"model_uri": uri, **registry_reference(uri)}
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError) as exc:
        raise DataError(f"{uri}: cannot download the {model.kind} model ({first_line(exc)})") from None
    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        run_id = (yaml.safe_load(mlmodel.read_text()) or {}).get("run_id")
        if run_id:
            labels["mlflow_run_id"] = str(run_id)
    runtime = load_runtime(model, local)
    metadata = {"features": list(runtime.encoder.features_)}
    if isinstance(runtime, UpliftRuntime):
        metadata |= {"arms": list(runtime.arms), "control": runtime.control}
    kwargs = {} if model_store is None else {"_model_store": model_store}
    with bentoml.models.create(model.name, labels=labels, metadata=metadata, **kwargs) as stored:
        shutil.copytree(local, Path(stored.path) / MLFLOW_DIR)
    return stored


# -- load ---------------------------------------------------------------------------------------
def load_runtime(model: PackagedModel, mlflow_dir: str | Path) -> ChurnRuntime | UpliftRuntime:
    """The runtime model inside a downloaded MLflow model directory."""
    root = Path(mlflow_dir)
    try:
        if model.kind == "churn":
            return ChurnRuntime.load(root / "artifacts" / "runtime")
        return UpliftRuntime.load(find_runtime_dir(root))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise DataError(f"{root}: not a winback {model.kind} model ({first_line(exc)})") from None


def load_packaged(stored) -> ChurnRuntime | UpliftRuntime:
    """The runtime model inside a packaged BentoML model (the resolved class attribute)."""
    return load_runtime(PACKAGED[stored.tag.name], Path(stored.path) / MLFLOW_DIR)


def describe(stored) -> dict[str, Any]:
    """name, bento_tag, registry_version, mlflow_run_id, model_uri of a packaged model (for /model-info)."""
    labels = stored.info.labels
    return {"name": stored.tag.name, "bento_tag": str(stored.tag),
            "registry_version": labels.get("registry_version"), "mlflow_run_id": labels.get("mlflow_run_id"),
            "model_uri": labels.get("model_uri")}
