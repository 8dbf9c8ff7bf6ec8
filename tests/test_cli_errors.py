"""Commands given the wrong model, a missing input or no tracking store say what to do, in one line (exit 2)."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest_service import feature_table, write_models
from winback.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    table = feature_table(60)
    table.to_parquet(root / "features.parquet")
    churn, uplift = write_models(root, feature_table())
    return root, churn, uplift


def one_line(result) -> str:
    return " ".join(result.stderr.split())


def test_recommend_with_a_churn_model_says_it_needs_an_uplift_model(models):
    root, churn, _ = models
    result = runner.invoke(app, ["recommend", "--model", str(churn), "--input", str(root / "features.parquet"),
                                 "--output", str(root / "recs.csv")])
    assert result.exit_code == 2
    assert "is a churn model; this needs an uplift model" in one_line(result)


def test_score_with_an_uplift_model_says_it_needs_a_churn_model(models, tmp_path):
    root, _, uplift = models
    pd.DataFrame({"customer_id": ["a"], "timestamp": ["2024-01-02"], "amount": [3.0]}).to_csv(tmp_path / "tx.csv",
                                                                                             index=False)
    result = runner.invoke(app, ["score", "--model", str(uplift), "--transactions", str(tmp_path / "tx.csv"),
                                 "--as-of", "2024-06-30", "--output", str(tmp_path / "s.csv")])
    assert result.exit_code == 2
    assert "is an uplift model; this needs a churn model" in one_line(result)


def test_package_without_a_tracking_store_names_the_uri_it_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = runner.invoke(app, ["package"])
    assert result.exit_code == 2
    assert "no MLflow tracking store at sqlite:///mlflow.db" in one_line(result)
    assert not (tmp_path / "mlflow.db").exists()  # nothing created on the way


def test_package_from_model_directories_needs_no_tracking_store(models, tmp_path):
    """Only models:/ and runs:/ URIs are looked up in MLflow; a downloaded model directory is packaged as is."""
    import subprocess
    import sys

    from conftest_service import REPO, service_env

    _, churn, uplift = models
    env = service_env(tmp_path / "bentoml", PYTHONPATH=str(REPO))
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "winback.cli", "package", "--churn-model", str(churn),
                           "--uplift-model", str(uplift)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "winback-churn:" in done.stdout and "winback-uplift:" in done.stdout
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("url, says", [
    ("postgresql+psycopg://alice:s3cret@127.0.0.1:9/optuna", "connection to server at \"127.0.0.1\", port 9 failed"),
    ("foo://optuna", "Can't load plugin: sqlalchemy.dialects:foo"),
    ("not a url", "Could not parse SQLAlchemy URL"),
])
def test_train_with_an_optuna_storage_that_cannot_be_opened_says_so_in_one_line(url, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    pd.DataFrame({"customer_id": ["a"], "timestamp": ["2024-01-02"], "amount": [3.0]}).to_csv("tx.csv", index=False)
    result = runner.invoke(app, ["train", "churn", "--transactions", "tx.csv", "--cutoff", "2024-06-30",
                                 "--trials", "1", "--storage", url, "--study-name", "churn"])
    assert result.exit_code == 2, result.output
    message = one_line(result)
    assert message.startswith("error: --storage: cannot open Optuna storage") and says in message
    assert "s3cret" not in result.output and "Traceback" not in result.output  # the password is never printed
    assert not (tmp_path / "mlflow.db").exists()  # it failed before any run was started
