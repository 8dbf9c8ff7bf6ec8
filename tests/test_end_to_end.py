"""The whole product as a user runs it, with no hand-built models: simulate → features → train churn and
uplift (Optuna, MLflow, registry) → package → `winback serve` → HTTP, compared with the batch commands.

Every step is the `winback` command in a subprocess, in a temporary folder holding the MLflow store and
BENTOML_HOME; the server is stopped with SIGTERM.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from conftest_service import free_port, service_env, wait_ready

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.xdist_group("end_to_end")]
AS_OF = "2025-12-31"


def run(root: Path, env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "winback.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"winback {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def as_json(row: pd.Series) -> dict:
    """One feature row as a client would send it: numbers as JSON numbers, missing as null, the rest as text."""
    out = {}
    for name, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            out[name] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
        elif hasattr(value, "item") and isinstance(value.item(), (int, float)):
            out[name] = float(value.item())
        else:
            out[name] = str(value)
    return out


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    env = service_env(root / "bentoml", MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}")
    data = ["--transactions", "data/transactions.parquet", "--profiles", "data/customers.parquet"]
    run(root, env, "simulate", "--customers", "1500", "--seed", "3", "--output-dir", "data")
    run(root, env, "train", "churn", *data, "--cutoff", AS_OF, "--horizon-days", "120", "--snapshots", "2",
        "--trials", "2", "--max-rounds", "100", "--seed", "3", "--register-as", "winback-churn", "--json-out",
        "churn.json")
    run(root, env, "train", "uplift", "--campaign", "data/campaign.parquet", "--treatment-col", "incentive",
        "--control", "no_contact", "--outcome", "converted", *data, "--as-of", AS_OF, "--catalog",
        "data/incentives.yaml", "--trials", "2", "--seed", "3", "--decision-confidence", "0.5", "--register-as", "winback-uplift",
        "--json-out", "uplift.json")
    packaged = run(root, env, "package")
    run(root, env, "features", "build", *data, "--as-of", AS_OF, "--model", "models:/winback-churn@champion",
        "--output", "features.parquet")
    run(root, env, "score", "--model", "models:/winback-churn@champion", *data, "--as-of", AS_OF,
        "--output", "scores.parquet")
    run(root, env, "recommend", "--model", "models:/winback-uplift@champion", "--input", "features.parquet",
        "--output", "recommendations.parquet")
    return {"root": root, "env": env, "packaged": packaged,
            "churn": json.loads((root / "churn.json").read_text()),
            "uplift": json.loads((root / "uplift.json").read_text())}


@pytest.fixture(scope="module")
def server(product):
    port = free_port()
    log = open(product["root"] / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "winback.cli", "serve", "--port", str(port), "--workers", "1",
                             "--features", "features.parquet"], cwd=product["root"], env=product["env"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_trained_models_are_registered_and_packaged_as_champions(product):
    for name, summary in (("winback-churn", product["churn"]), ("winback-uplift", product["uplift"])):
        assert summary["registered"]["name"] == name and summary["registered"]["alias"] == "champion"
        assert f"run {summary['run_id']}" in product["packaged"]


def test_the_server_answers_with_the_trained_models_and_equals_the_batch_commands(product, server):
    client, _ = server
    root = product["root"]
    features = pd.read_parquet(root / "features.parquet")
    info = client.get("/model-info").json()
    assert [(m["name"], m["registry_version"], m["mlflow_run_id"]) for m in info["models"]] == [
        ("winback-churn", "1", product["churn"]["run_id"]), ("winback-uplift", "1", product["uplift"]["run_id"])]
    assert info["arms"] == product["uplift"]["arms"] and info["snapshot_customers"] == len(features)

    scores = pd.read_parquet(root / "scores.parquet").set_index("customer_id")
    recs = pd.read_parquet(root / "recommendations.parquet").set_index("customer_id")
    sample = features.iloc[::37]
    ids = sample["customer_id"].astype(str).tolist()
    by_id = {"customers": [{"customer_id": c} for c in ids]}
    inline = {"customers": [{"customer_id": str(row["customer_id"]), "features": as_json(row.drop("customer_id"))}
                            for _, row in sample.iterrows()]}
    for request in (by_id, inline):
        scored = client.post("/score", json=request)
        recommended = client.post("/recommend", json=request)
        assert scored.status_code == 200, scored.text
        assert recommended.status_code == 200, recommended.text
        online_scores, online_recs = scored.json()["scores"], recommended.json()["recommendations"]
        assert [s["customer_id"] for s in online_scores] == ids == [r["customer_id"] for r in online_recs]
        for s, r in zip(online_scores, online_recs):  # every field the online answer shares with the batch file
            batch_score, batch_rec = scores.loc[s["customer_id"]], recs.loc[r["customer_id"]]
            shared = [c for c in batch_score.index if c in s]
            assert shared == ["churn_probability", "risk_tier", "lifecycle_stage", "value_tier", "expected_spend",
                              "value_if_retained", "value_at_risk", "clv_12m"]
            assert s["churn_probability"] == pytest.approx(batch_score["churn_probability"], rel=1e-12)
            assert [s[c] for c in shared[1:]] == batch_score[shared[1:]].tolist()
            assert r["incentive"] == batch_rec["incentive"]
            assert r["expected_net_value"] == pytest.approx(batch_rec["expected_net_value"], rel=1e-12, abs=1e-12)
            assert r["uplift"] == pytest.approx({arm: batch_rec[f"uplift:{arm}"] for arm in product["uplift"]["arms"]},
                                                rel=1e-12, abs=1e-12)
            assert r["churn_probability"] == s["churn_probability"]
    assert scores["risk_tier"].nunique() == 3 and (recs["incentive"] != "no_contact").any()


def test_sigterm_stops_the_server_cleanly(server):
    _, proc = server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_pyfunc_predict_takes_the_features_build_table_as_it_is(product):
    """`mlflow.pyfunc.load_model(...).predict` on the output of `winback features build` (int64 and category
    columns, customer_id) needs no casts, and equals the batch commands row by row."""
    import mlflow

    root = product["root"]
    features = pd.read_parquet(root / "features.parquet")
    assert any(str(t) == "category" for t in features.dtypes) and any(str(t) == "int64" for t in features.dtypes)
    mlflow.set_tracking_uri(product["env"]["MLFLOW_TRACKING_URI"])
    churn = mlflow.pyfunc.load_model("models:/winback-churn@champion").predict(features)
    assert len(churn) == len(features) and "customer_id" not in churn.columns  # rows in the input's order
    churn.insert(0, "customer_id", features["customer_id"].astype(str).to_numpy())
    batch = pd.read_parquet(root / "scores.parquet")
    merged = churn.merge(batch, on="customer_id", suffixes=("", "_batch"))
    assert len(merged) == len(features)
    assert (merged["churn_probability"] - merged["churn_probability_batch"]).abs().max() < 1e-12
    uplift = mlflow.pyfunc.load_model("models:/winback-uplift@champion").predict(features)
    recs = pd.read_parquet(root / "recommendations.parquet")
    assert list(recs["customer_id"]) == list(features["customer_id"].astype(str))
    assert list(uplift["incentive"]) == list(recs["incentive"])
