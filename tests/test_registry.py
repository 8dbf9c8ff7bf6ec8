"""Model URIs → registered name and version, as labels of packaged models and in model metadata."""

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from serving.runtime.registry import registry_version


def test_run_and_path_uris_name_no_registered_model():
    assert registry_version("runs:/abc/model") is None
    assert registry_version("/tmp/some/model") is None


def test_version_uri_and_bare_name_are_read_without_the_registry():
    assert registry_version("models:/winback-churn/3") == ("winback-churn", "3")
    assert registry_version("models:/winback-churn") == ("winback-churn", None)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    # no run is started: an experiment made active by an earlier test in this process does not matter
    """A fresh SQLite registry, the previous tracking URI restored afterwards."""
    monkeypatch.chdir(tmp_path)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    yield
    mlflow.set_tracking_uri(previous)


def test_alias_uri_resolves_through_the_registry(registry, tmp_path):
    client = mlflow.tracking.MlflowClient()
    client.create_registered_model("m")
    source = tmp_path / "model"
    source.mkdir()
    v1 = client.create_model_version("m", str(source)).version
    v2 = client.create_model_version("m", str(source)).version
    client.set_registered_model_alias("m", "champion", v1)
    client.set_registered_model_alias("m", "challenger", v2)
    assert registry_version("models:/m@champion") == ("m", "1")
    assert registry_version("models:/m@challenger") == ("m", "2")
    with pytest.raises(MlflowException):
        registry_version("models:/m@nobody")
