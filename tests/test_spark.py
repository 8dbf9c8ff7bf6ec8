"""The Spark engine equals the pandas path: features, scores and recommendations, every column, every customer.

A real local SparkSession (local[2]) runs the CLI commands with `--engine spark`; the same commands without it
are the reference. Skipped only when no Java runtime is installed (`.ci/run` installs one with apt-get)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.simulate import HISTORY_END, simulate, write_simulation
from winback.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark"),
              pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime for Spark")]
AS_OF = str(HISTORY_END.date())
MASTER = ["--spark-master", "local[2]"]


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _same(spark: pd.DataFrame, local: pd.DataFrame):
    spark = spark.sort_values("customer_id").reset_index(drop=True)
    local = local.sort_values("customer_id").reset_index(drop=True)
    assert list(spark.columns) == list(local.columns)
    assert list(spark["customer_id"]) == list(local["customer_id"].astype(str))
    for name in local.columns:
        a, b = spark[name], local[name]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            a, b = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
            assert np.array_equal(np.isnan(a), np.isnan(b)), name
            assert np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=0, atol=1e-9), name
        else:
            assert list(a.astype(object).where(a.notna(), None).map(lambda v: v if v is None else str(v))) == \
                list(b.astype(object).where(b.notna(), None).map(lambda v: v if v is None else str(v))), name


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        sim = simulate(customers=2000, seed=12)
        write_simulation(sim, root / "data")
        sim.transactions.to_csv(root / "data" / "transactions.csv", index=False)
        _run("train", "churn", "--transactions", "data/transactions.parquet", "--profiles", "data/customers.parquet",
             "--cutoff", AS_OF, "--horizon-days", "120", "--snapshots", "2", "--trials", "1", "--max-rounds", "100",
             "--register-as", "winback-churn", "--json-out", "churn.json")
        _run("train", "uplift", "--campaign", "data/campaign.parquet", "--treatment-col", "incentive", "--control",
             "no_contact", "--outcome", "converted", "--transactions", "data/transactions.parquet", "--as-of", AS_OF,
             "--catalog", "data/incentives.yaml", "--trials", "1", "--register-as", "winback-uplift",
             "--json-out", "uplift.json")
        yield root, json.loads((root / "churn.json").read_text())["model_uri"], \
            json.loads((root / "uplift.json").read_text())["model_uri"]


def test_features_scores_and_recommendations_equal_the_pandas_path(workspace, monkeypatch):
    root, churn, uplift = workspace
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    data = ["--transactions", "data/transactions.parquet", "--profiles", "data/customers.parquet", "--as-of", AS_OF]
    _run("features", "build", *data, "--model", churn, "--output", "features.parquet")
    _run("features", "build", *data, "--model", churn, "--engine", "spark", *MASTER, "--output", "features_spark")
    local = pd.read_parquet(root / "features.parquet")
    _same(pd.read_parquet(root / "features_spark"), local)
    # the file's own value-tier quantiles (every customer) and a CSV input
    _run("features", "build", "--transactions", "data/transactions.csv", "--as-of", AS_OF, "--output", "plain.parquet")
    _run("features", "build", "--transactions", "data/transactions.csv", "--as-of", AS_OF, "--engine", "spark",
         *MASTER, "--output", "plain_spark")
    _same(pd.read_parquet(root / "plain_spark"), pd.read_parquet(root / "plain.parquet"))

    _run("score", "--model", churn, "--features", "features.parquet", "--output", "scores.parquet")
    _run("score", "--model", churn, "--features", "features_spark", "--engine", "spark", *MASTER,
         "--output", "scores_spark")
    _same(pd.read_parquet(root / "scores_spark"), pd.read_parquet(root / "scores.parquet"))

    _run("recommend", "--model", uplift, "--input", "features.parquet", "--output", "recs.parquet")
    _run("recommend", "--model", uplift, "--input", "features_spark", "--engine", "spark", *MASTER,
         "--output", "recs_spark")
    _same(pd.read_parquet(root / "recs_spark"), pd.read_parquet(root / "recs.parquet"))
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_spark_refuses_caps_and_names_the_engine(workspace, monkeypatch):
    root, _, uplift = workspace
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    result = CliRunner().invoke(app, ["recommend", "--model", uplift, "--input", "features.parquet", "--engine",
                                      "spark", "--max-sends", "10", "--output", "x"])
    assert result.exit_code == 2 and "--engine spark" in result.output
    result = CliRunner().invoke(app, ["score", "--model", uplift, "--features", "features.parquet", "--engine",
                                      "flink", "--output", "x"])
    assert result.exit_code == 2 and "--engine" in result.output


def test_registered_models_run_as_mlflow_spark_udfs_with_no_arguments(workspace, monkeypatch):
    """README's call: `mlflow.pyfunc.spark_udf(spark, "models:/winback-churn@champion")` applied as `udf()` to the
    `features build` table read by Spark gives, per customer, the numbers `winback score` / `recommend` write."""
    import mlflow

    from features.spark import spark_session

    root, _, _ = workspace
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    _run("features", "build", "--transactions", "data/transactions.parquet", "--profiles", "data/customers.parquet",
         "--as-of", AS_OF, "--output", "udf_features.parquet")
    _run("score", "--model", "models:/winback-churn@champion", "--features", "udf_features.parquet",
         "--output", "udf_scores.parquet")
    _run("recommend", "--model", "models:/winback-uplift@champion", "--input", "udf_features.parquet",
         "--output", "udf_recs.parquet")
    spark = spark_session("local[2]")
    features = spark.read.parquet(str(root / "udf_features.parquet"))
    for model, reference in (("winback-churn", "udf_scores.parquet"), ("winback-uplift", "udf_recs.parquet")):
        udf = mlflow.pyfunc.spark_udf(spark, f"models:/{model}@champion", env_manager="local")
        out = features.withColumn("prediction", udf()).select("customer_id", "prediction.*").toPandas()
        expected = pd.read_parquet(root / reference)
        assert len(out) == len(expected) and set(expected.columns) - {"customer_id"} <= set(out.columns)
        _same(out[list(expected.columns)], expected)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def standalone_cluster(tmp_path):
    """A real Spark standalone cluster on this machine: one master and one worker (2 cores), each its own JVM,
    started with pyspark's `spark-class` as `start-master.sh` / `start-worker.sh` would; stopped afterwards."""
    import pyspark

    home = Path(pyspark.__file__).parent
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_WORKER_DIR": str(tmp_path / "work"),
           "SPARK_LOG_DIR": str(tmp_path)}
    port = _free_port()
    master = f"spark://127.0.0.1:{port}"
    procs = []
    try:
        for args in (["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                      "--webui-port", str(_free_port())],
                     ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2", "--memory",
                      "2g", "--webui-port", str(_free_port()), master]):
            log = open(tmp_path / f"{args[0].rsplit('.', 1)[-1]}.log", "w")
            procs.append(subprocess.Popen([str(home / "bin" / "spark-class"), *args], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 90
        while "Successfully registered with master" not in (tmp_path / "Worker.log").read_text():
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                (tmp_path / "Master.log").read_text()[-2000:] + (tmp_path / "Worker.log").read_text()[-2000:]
            time.sleep(0.5)
        yield master, tmp_path / "work"
    finally:
        from pyspark.sql import SparkSession

        if (session := SparkSession.getActiveSession()) is not None:
            session.stop()  # before the cluster goes, so that no later test is handed a session without one
        for proc in procs:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)


def test_score_and_recommend_on_a_standalone_cluster_equal_the_pandas_path(workspace, standalone_cluster,
                                                                          monkeypatch):
    """`--spark-master spark://…`: the tasks run in the worker's executor JVM and its Python workers (the
    interpreter named by PYSPARK_PYTHON, as on a cluster), with the runtime files shipped inside the tasks."""
    root, churn, uplift = workspace
    master, worker_dir = standalone_cluster
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    cluster = ["--engine", "spark", "--spark-master", master]
    _run("features", "build", "--transactions", "data/transactions.parquet", "--profiles", "data/customers.parquet",
         "--as-of", AS_OF, "--model", churn, "--output", "cluster_features.parquet")
    _run("score", "--model", churn, "--features", "cluster_features.parquet", "--output", "cluster_scores.parquet")
    _run("score", "--model", churn, "--features", "cluster_features.parquet", *cluster, "--output", "cluster_scores")
    _same(pd.read_parquet(root / "cluster_scores"), pd.read_parquet(root / "cluster_scores.parquet"))
    _run("recommend", "--model", uplift, "--input", "cluster_features.parquet", "--output", "cluster_recs.parquet")
    _run("recommend", "--model", uplift, "--input", "cluster_features.parquet", *cluster, "--output", "cluster_recs")
    _same(pd.read_parquet(root / "cluster_recs"), pd.read_parquet(root / "cluster_recs.parquet"))
    assert list(worker_dir.glob("app-*/*/stderr"))  # the commands ran as an application on the cluster's worker


@pytest.fixture(scope="module")
def engaged(tmp_path_factory):
    """A simulation with events, three prospects (events, no purchase; one only after as_of) and a type ('chat')
    that only two customers have, so most buckets lack it."""
    root = tmp_path_factory.mktemp("spark_events")
    sim = simulate(customers=600, seed=5, events=True)
    write_simulation(sim, root / "data")
    extra = pd.DataFrame({"customer_id": ["P001", "P002", "P002", "P003", sim.events["customer_id"].iloc[0],
                                          sim.events["customer_id"].iloc[-1]],
                          "timestamp": pd.to_datetime(["2025-12-01", "2025-11-03", "2025-12-30", "2026-02-01",
                                                       "2025-12-20", "2025-10-15"]),
                          "event_type": ["visit", "Chat", "visit", "visit", "chat", "chat"],
                          "channel": ["web", None, "app", "web", "app", "app"]})
    pd.concat([sim.events, extra], ignore_index=True).to_parquet(root / "data" / "events.parquet", index=False)
    return root


@pytest.mark.parametrize("options", [
    ["--profiles", "customers.parquet", "--event-top", "8"],
    ["--event-types", "visit,chat,email_open"],
], ids=["profiles-top-types", "given-types"])
def test_features_build_with_events_on_spark_equals_the_pandas_path_with_prospects(engaged, monkeypatch, options):
    # absolute paths: the JVM of a session started by an earlier test keeps that test's working directory
    options = [str(engaged / "data" / o) if o.endswith(".parquet") else o for o in options]
    data = ["--transactions", engaged / "data/transactions.parquet", "--as-of", AS_OF, "--events",
            engaged / "data/events.parquet", *options]
    _run("features", "build", *data, "--output", engaged / "events.parquet")
    _run("features", "build", *data, "--engine", "spark", *MASTER, "--output", engaged / "events_spark")
    local = pd.read_parquet(engaged / "events.parquet")
    spark = pd.read_parquet(engaged / "events_spark")
    _same(spark, local)
    ids = spark.set_index("customer_id")
    assert ids.loc[["P001", "P002"], "lifecycle_stage"].tolist() == ["prospect", "prospect"]
    assert "P003" not in ids.index  # its only event is after as_of
    assert ids.loc["P002", "events_chat_90d"] == 1 and ids["events_chat_90d"].sum() == 3


def test_a_bad_events_file_on_spark_exits_2_naming_the_file_and_column(engaged, monkeypatch):
    monkeypatch.chdir(engaged)
    events = pd.read_parquet(engaged / "data" / "events.parquet").head(5000)
    events.loc[4000, "event_type"] = "  "  # past the rows the driver looks at first: found by the Spark pass
    events.to_csv(engaged / "bad_events.csv", index=False)
    events.drop(columns="event_type").to_csv(engaged / "no_type.csv", index=False)
    for name, words in (("bad_events.csv", "empty event type"), ("no_type.csv", "event_type")):
        result = CliRunner().invoke(app, ["features", "build", "--transactions",
                                          str(engaged / "data/transactions.parquet"), "--as-of", AS_OF, "--events",
                                          str(engaged / name), "--engine", "spark", *MASTER,
                                          "--output", str(engaged / f"out_{name}")])
        assert result.exit_code == 2, result.output + repr(result.exception)
        assert f"--events {engaged / name}" in result.output and words in result.output
