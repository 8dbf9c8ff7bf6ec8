"""Monitoring: the drift reference saved with every model, `winback monitor`, and prediction metrics on /metrics."""

import base64
import json
import re
import subprocess
import sys
import time

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.build import build_features
from features.contracts import normalize_profiles, normalize_transactions
from features.simulate import CHURN_DAYS, HISTORY_END, simulate, write_simulation
from serving.monitoring.drift import build_reference, compare, psi, status
from winback.cli import app

pytestmark = pytest.mark.xdist_group("monitoring")  # the module's trained models once, not once per worker

AS_OF = str(HISTORY_END.date())


def _features(sim) -> pd.DataFrame:
    tx = normalize_transactions(sim.transactions, as_of=HISTORY_END)
    return build_features(tx, HISTORY_END, normalize_profiles(sim.customers)).reset_index()


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    ref = build_reference(pd.DataFrame({"x": rng.normal(size=20000), "c": rng.choice(["a", "b", "z"], 20000)}),
                          ["c"], {"p": rng.random(20000)})
    same = compare(ref["features"]["x"], rng.normal(size=20000))
    moved = compare(ref["features"]["x"], rng.normal(0.5, 1.0, size=20000))
    assert same["psi"] < 0.01 and moved["psi"] > 0.2 and moved["ks"] > 0.15 > same["ks"]
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    unseen = compare(ref["features"]["c"], ["a"] * 50 + ["new"] * 50)
    assert unseen["unseen_share"] == 0.5 and status(unseen, 0.1, 0.25) == "alert"
    with_missing = compare(ref["features"]["x"], np.where(rng.random(20000) < 0.3, np.nan, rng.normal(size=20000)))
    assert with_missing["missing_delta"] == pytest.approx(0.3, abs=0.02) and with_missing["psi"] > 0.25


@pytest.fixture(scope="module")
def churn_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("monitor")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        sim = simulate(customers=5000, seed=7)
        write_simulation(sim, root / "a")
        trained = CliRunner().invoke(app, ["train", "churn", "--transactions", "a/transactions.parquet", "--profiles",
                                           "a/customers.parquet", "--cutoff", AS_OF, "--horizon-days", str(CHURN_DAYS),
                                           "--snapshots", "2", "--trials", "2", "--max-rounds", "300", "--seed", "1",
                                           "--json-out", "churn.json"])
        assert trained.exit_code == 0, trained.output
        fresh = simulate(customers=5000, seed=8, future_days=CHURN_DAYS)
        _features(fresh).to_parquet(root / "fresh.parquet")
        churned = ~fresh.truth["customer_id"].isin(fresh.future_transactions["customer_id"].unique())
        pd.DataFrame({"customer_id": fresh.truth["customer_id"], "churned": churned.astype(int)}).to_csv(
            root / "outcomes.csv", index=False)
        _features(simulate(customers=5000, seed=9, shift=0.5)).to_parquet(root / "shifted.parquet")
        yield root, json.loads((root / "churn.json").read_text())["model_uri"]


def _monitor(root, *args):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        return CliRunner().invoke(app, ["monitor", *map(str, args)])


@pytest.mark.slow
def test_a_fresh_sample_of_the_same_population_is_ok_everywhere(churn_model):
    root, model = churn_model
    result = _monitor(root, "--model", model, "--features", "fresh.parquet", "--outcomes", "outcomes.csv",
                      "--label-col", "churned", "--json-out", "fresh.json", "--html-out", "fresh.html")
    assert result.exit_code == 0, result.output
    doc = json.loads((root / "fresh.json").read_text())
    assert doc["status"] == "ok" and doc["rows"] == 5000
    assert all(f["status"] == "ok" and f["psi"] < 0.1 for f in doc["features"].values()), doc["features"]
    assert doc["output"]["status"] == "ok"
    assert set(next(iter(doc["features"].values()))) == {"psi", "ks", "missing_delta", "unseen_share", "status"}
    perf = doc["performance"]
    assert not perf["decay"] and perf["auc"] > perf["training_auc"] - 0.03 and len(perf["calibration"]) == 10
    assert doc["model"]["run_id"] and doc["model"]["uri"] == model
    run = mlflow.get_run(doc["mlflow_run_id"])
    assert run.data.tags["status"] == "ok" and "psi_recency_days" in run.data.metrics
    assert mlflow.get_experiment(run.info.experiment_id).name == "winback-monitoring"


@pytest.mark.slow
def test_a_shifted_population_alerts_on_the_shifted_features_and_exits_3(churn_model):
    root, model = churn_model
    result = _monitor(root, "--model", model, "--features", "shifted.parquet", "--json-out", "shifted.json",
                      "--html-out", "shifted.html")
    assert result.exit_code == 3, result.output
    doc = json.loads((root / "shifted.json").read_text())
    assert doc["status"] == "alert"
    for name in ("purchase_count", "monetary_mean"):  # purchase rates and spend moved
        assert doc["features"][name]["status"] == "alert", doc["features"][name]
    psis = [f["psi"] for f in doc["features"].values()]
    assert psis == sorted(psis, reverse=True)
    page = (root / "shifted.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 4 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "http" not in page.replace("http-equiv", "")  # self-contained


@pytest.mark.slow
def test_shuffled_outcomes_are_decay_and_exit_3(churn_model):
    root, model = churn_model
    outcomes = pd.read_csv(root / "outcomes.csv")
    outcomes["churned"] = np.random.default_rng(0).permutation(outcomes["churned"].to_numpy())
    outcomes.to_csv(root / "shuffled.csv", index=False)
    result = _monitor(root, "--model", model, "--features", "fresh.parquet", "--outcomes", "shuffled.csv",
                      "--label-col", "churned", "--json-out", "shuffled.json")
    assert result.exit_code == 3, result.output
    doc = json.loads((root / "shuffled.json").read_text())
    assert doc["performance"]["decay"] and "performance:decay" in doc["alerts"]


@pytest.mark.slow
def test_a_model_without_a_reference_and_bad_input_exit_2(churn_model):
    root, model = churn_model
    result = _monitor(root, "--model", model, "--features", "fresh.parquet", "--outcomes", "outcomes.csv",
                      "--json-out", "x.json")
    assert result.exit_code == 2 and "--label-col" in result.output
    pd.read_parquet(root / "fresh.parquet").drop(columns="recency_days").to_parquet(root / "partial.parquet")
    result = _monitor(root, "--model", model, "--features", "partial.parquet", "--json-out", "x.json")
    assert result.exit_code == 2 and "'recency_days'" in result.output
    result = _monitor(root, "--model", model, "--features", "fresh.parquet", "--psi-warn", "0.3", "--json-out",
                      "x.json")
    assert result.exit_code == 2 and "--psi-warn" in result.output and not (root / "x.json").exists()
    # the same model without its reference.json (as models trained before monitoring)
    from serving.runtime.registry import download_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        local = download_model(model)
    copy = root / "old_model"
    import shutil

    shutil.copytree(local, copy)
    (copy / "artifacts" / "runtime" / "reference.json").unlink()
    result = _monitor(root, "--model", copy, "--features", "fresh.parquet", "--json-out", "x.json")
    assert result.exit_code == 2 and "no drift reference" in result.output and not (root / "x.json").exists()


@pytest.mark.slow
def test_an_uplift_model_carries_its_reference_and_is_monitored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    sim = simulate(customers=3000, seed=4)
    write_simulation(sim, tmp_path)
    trained = CliRunner().invoke(app, ["train", "uplift", "--campaign", "campaign.parquet", "--treatment-col",
                                       "incentive", "--control", "no_contact", "--outcome", "converted",
                                       "--transactions", "transactions.parquet", "--as-of", AS_OF, "--catalog",
                                       "incentives.yaml", "--trials", "1", "--json-out", "u.json"])
    assert trained.exit_code == 0, trained.output
    model = json.loads((tmp_path / "u.json").read_text())["model_uri"]
    tx = normalize_transactions(sim.transactions, as_of=HISTORY_END)
    build_features(tx, HISTORY_END).reset_index().to_parquet("features.parquet")
    result = CliRunner().invoke(app, ["monitor", "--model", model, "--features", "features.parquet",
                                      "--json-out", "m.json"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["model"]["kind"] == "uplift"
    assert set(doc["output"]["details"]) == {"recommended_incentive", "expected_net_value"}
    assert doc["output"]["psi"] < 0.1  # the same customers as the validation rows' population


@pytest.mark.server
@pytest.mark.slow
def test_metrics_after_ten_recommend_calls_add_up_to_ten_across_both_workers(tmp_path):
    from conftest_service import REPO, free_port, service_env, wait_ready, winback
    from test_service_server import body

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = service_env(tmp_path / "bentoml", MLFLOW_TRACKING_URI=tracking)
    code = (f"import json, pathlib, conftest_service as cs; "
            f"print(json.dumps(cs.register_models(pathlib.Path({str(tmp_path)!r}), {tracking!r})))")
    registered = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env=env | {"PYTHONPATH": str(REPO / "tests")})
    assert registered.returncode == 0, registered.stderr[-2000:]
    assert winback("package", env=env).returncode == 0
    from conftest_service import feature_table

    table = feature_table()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "winback.cli", "serve", "--port", str(port), "--workers", "2"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        for i in range(10):
            with httpx.Client(base_url=url, timeout=30) as client:  # a new connection each: both workers answer
                assert client.post("/recommend", json=body(table, [i])).status_code == 200
        time.sleep(1.5)  # the workers write their tallies to Prometheus every 0.5 s
        text = httpx.get(f"{url}/metrics", timeout=30).text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    recommended = sum(float(v) for v in re.findall(r'^winback_recommendations_total\{incentive="[^"]+"\} (\S+)$', text,
                                                  re.M))
    assert recommended == 10
    assert float(re.search(r"^winback_churn_probability_count (\S+)$", text, re.M).group(1)) == 10
    assert len(re.findall(r"^winback_model_info\{", text, re.M)) == 2
    assert re.search(r'^winback_missing_feature_total\{feature="overdue_ratio"\} ', text, re.M)
