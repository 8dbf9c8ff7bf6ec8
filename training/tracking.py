"""MLflow plumbing shared by every training command: tracking URI, joining `mlflow run`, reproducibility tags
(registry aliases: training.promotion)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import subprocess
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
TRACKED_PACKAGES = ("winback", "lightgbm", "optuna", "mlflow", "pandas", "numpy", "scikit-learn", "scikit-uplift")


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs go. Built once by the CLI from the environment and passed down."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = "winback"
    run_id: str | None = None  # set by `mlflow run` (MLFLOW_RUN_ID): the command joins that run

    @classmethod
    def from_env(cls, experiment: str = "winback", environ: dict | None = None) -> "TrackingSettings":
        env = os.environ if environ is None else environ
        return cls(tracking_uri=env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI, experiment=experiment,
                   run_id=env.get("MLFLOW_RUN_ID") or None)

    def activate(self) -> None:
        """Point MLflow at the tracking store and the experiment. Under `mlflow run`, the run it created
        (in the experiment of `--experiment-name`, else Default) is joined, so `--experiment` is not used."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        if self.run_id:
            experiment = mlflow.set_experiment(experiment_id=mlflow.get_run(self.run_id).info.experiment_id)
        else:
            try:
                experiment = mlflow.set_experiment(self.experiment)
            except mlflow.exceptions.MlflowException:
                # workers creating the same new experiment at once: the store may refuse the second insert with
                # an error MLflow does not read as "already exists"; by now it exists
                experiment = mlflow.set_experiment(self.experiment)
            # MLflow 3's set_experiment returns without making the experiment active when its create loses the race
            # to another worker (RESOURCE_ALREADY_EXISTS): the runs would go to Default (seen in the PostgreSQL
            # workers test). Setting it by id always makes it active.
            experiment = mlflow.set_experiment(experiment_id=experiment.experiment_id)
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            # MLflow 3's UI opens an experiment without this tag on its GenAI overview (traces, tokens)
            client = mlflow.MlflowClient()
            try:
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            except mlflow.exceptions.MlflowException:
                # workers starting together on a new experiment all set it; a PostgreSQL-backed server refuses
                # the second insert of the same tag (measured): fine when another worker set the same value
                tags = client.get_experiment(experiment.experiment_id).tags
                if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                    raise


def log_dataset(frame: pd.DataFrame, name: str, context: str, target: str | None = None) -> None:
    """Log a table as a dataset input of the active run (the run page's "Datasets"), with its digest and
    schema; `context` is e.g. "training", "validation" or "test"."""
    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's schema inference warns about integer columns with missing values
        dataset = mlflow.data.from_pandas(frame.reset_index(), name=name, targets=target)
        try:
            mlflow.log_input(dataset, context=context)
        except mlflow.exceptions.MlflowException as error:
            # workers logging the same table at once (same experiment, name, digest): MLflow's SQL store looks the
            # dataset up, then inserts it, and a PostgreSQL-backed server refuses the second insert (measured,
            # UniqueViolation on dataset_pk). By now the dataset exists, and a second call links it to this run.
            if "dataset_pk" not in str(error) and "UNIQUE constraint" not in str(error):
                raise
            mlflow.log_input(dataset, context=context)


def describe_run(text: str) -> None:
    """The run's description (shown at the top of the run page in the MLflow UI)."""
    import mlflow

    mlflow.set_tag("mlflow.note.content", text)


def log_params(params: dict) -> None:
    """Log `params` on the active run. Under `mlflow run`, the run already holds the MLproject step's raw
    parameters ('' for "not given", numbers as typed); a resolved value that differs is logged as
    `resolved.<key>` instead of clashing with it (MLflow refuses to change a logged parameter)."""
    import mlflow

    run = mlflow.active_run()
    logged = mlflow.get_run(run.info.run_id).data.params if run is not None else {}
    mlflow.log_params({(key if key not in logged or logged[key] == str(value) else f"resolved.{key}"): value
                       for key, value in params.items()})


@contextlib.contextmanager
def explicit_signature():
    """While logging a pyfunc whose signature is given explicitly: MLflow's advice to add type hints to
    `predict` (for signature inference) does not apply, so it is not printed on every training run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
        # MLflow's own input-example check trips a pandas 3 deprecation (not ours to fix)
        warnings.filterwarnings("ignore", message="Operation with range is deprecated", module="mlflow")
        yield


def metric_key(*parts: str) -> str:
    """An MLflow-safe metric name from parts such as arm, policy and feature names."""
    return re.sub(r"[^\w./ -]", "_", ".".join(parts))


def pyfunc_example(frame: pd.DataFrame, encoder) -> pd.DataFrame:
    """A few rows as a pyfunc takes them: the feature columns, categories as text and numbers as float, as the
    encoder reads them. The customer id is not part of the input: MLflow drops columns its signature does not
    name, and a signature without optional columns is what `mlflow.pyfunc.spark_udf` can call with no arguments."""
    example = frame[encoder.features_].head(5).copy()
    for name in encoder.features_:
        if name in encoder.categories_:
            example[name] = example[name].astype(object).where(example[name].notna(), None).astype(str)
        else:
            example[name] = pd.to_numeric(example[name]).astype("float64")
    return example.reset_index(drop=True)


def loose_signature(example: pd.DataFrame, output: pd.DataFrame):
    """A pyfunc signature whose input columns are all required and typed `Any`.

    MLflow still rejects a missing feature column, while types stay the encoder's to check: MLflow's own
    check refuses int64 for double and pandas categories for string, both normal in the table
    `winback features build` writes (and in Spark frames given to `mlflow.pyfunc.spark_udf`). Extra columns
    (`customer_id`, segments) are dropped by MLflow before the model sees them; outputs keep the input order."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inferred = infer_signature(example, output)
    inputs = Schema([ColSpec(AnyType(), c.name) for c in inferred.inputs.inputs])
    return ModelSignature(inputs, inferred.outputs)


def frame_hash(*frames: pd.DataFrame | None) -> str:
    """A stable content hash of input tables (values, columns and order), logged with every run."""
    digest = hashlib.sha256()
    for frame in frames:
        if frame is None:
            continue
        digest.update(",".join(map(str, frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def git_commit(path: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def reproducibility_tags() -> dict[str, str]:
    """Git commit, Python and package versions: what it takes to rerun a run."""
    tags = {"git_commit": git_commit(), "python_version": platform.python_version()}
    for pkg in TRACKED_PACKAGES:
        try:
            tags[f"version.{pkg}"] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return tags
