"""MLflow plumbing: where runs go and what makes them reproducible."""

import pandas as pd

from training.tracking import DEFAULT_TRACKING_URI, TrackingSettings, frame_hash, reproducibility_tags


def test_tracking_uri_defaults_to_sqlite_file_in_working_directory():
    assert TrackingSettings.from_env(environ={}).tracking_uri == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"


def test_tracking_uri_comes_from_mlflow_tracking_uri_variable():
    settings = TrackingSettings.from_env("exp", environ={"MLFLOW_TRACKING_URI": "postgresql://h/db"})
    assert (settings.tracking_uri, settings.experiment) == ("postgresql://h/db", "exp")


def test_frame_hash_changes_with_any_value_and_not_otherwise():
    a = pd.DataFrame({"customer_id": ["1", "2"], "amount": [1.0, 2.0]})
    b = a.copy()
    b.loc[1, "amount"] = 2.5
    assert frame_hash(a) == frame_hash(a.copy())
    assert frame_hash(a) != frame_hash(b)
    assert frame_hash(a) != frame_hash(a.rename(columns={"amount": "value"}))


def test_reproducibility_tags_name_commit_and_library_versions():
    import platform
    import subprocess
    from importlib import metadata
    from pathlib import Path

    tags = reproducibility_tags()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                          text=True).stdout.strip()
    if head:  # in a git checkout (CI clones one): the real commit, not "unknown"
        assert tags["git_commit"] == head and len(head) == 40
    assert tags["python_version"] == platform.python_version()
    assert tags["version.lightgbm"] == metadata.version("lightgbm")
    assert tags["version.mlflow"] == metadata.version("mlflow")


def test_a_worker_that_loses_the_race_to_create_the_experiment_still_logs_into_it(tmp_path, monkeypatch):
    # two workers start on a new experiment: the other one creates it between this one's lookup and its create, so
    # MLflow's create fails with RESOURCE_ALREADY_EXISTS (forced here by hiding the first lookup; the store is real)
    import mlflow
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    existing = mlflow.MlflowClient().create_experiment("workers")  # by the other worker
    lookup = TrackingServiceClient.get_experiment_by_name
    calls = []

    def first_lookup_misses(self, name):
        calls.append(name)
        return None if len(calls) == 1 else lookup(self, name)

    monkeypatch.setattr(TrackingServiceClient, "get_experiment_by_name", first_lookup_misses)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    TrackingSettings(tracking_uri=uri, experiment="workers").activate()
    assert len(calls) >= 2  # the race path was taken
    with mlflow.start_run() as run:
        pass
    assert run.info.experiment_id == existing != "0"
