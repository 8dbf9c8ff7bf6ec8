"""Model: `recommend` — output schema, whole-batch caps, catalogue override, input errors."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from serving.batch.recommend import recommend
from serving.runtime.decision.catalog import Catalog, Incentive, dump_catalog
from serving.runtime.decision import CONTROL
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.uplift import UpliftRuntime
from training.uplift.learners import fit_runtime
from winback.cli import app

CATALOG = Catalog("none", (Incentive("email", 0.1), Incentive("coupon", 0.5)), 10.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    rng = np.random.default_rng(1)
    n = 1500
    frame = pd.DataFrame({"x": rng.normal(size=n), "region": rng.choice(["a", "b"], size=n)})
    arm = rng.choice([CONTROL, 0, 1], size=n)
    y = (rng.random(n) < 0.2 + 0.3 * ((arm == 0) & (frame.x > 0)) + 0.3 * ((arm == 1) & (frame.region == "b")))
    encoder = FeatureEncoder().fit(frame)
    runtime = fit_runtime(encoder.transform(frame), arm, y.astype(int), encoder, CATALOG, "two_models",
                          {"n_estimators": 20, "num_leaves": 5}, seed=3)
    return runtime.save(tmp_path_factory.mktemp("model") / "runtime")


@pytest.fixture
def customers(tmp_path):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"customer_id": [f"c{i:04d}" for i in range(1000)], "x": rng.normal(size=1000),
                          "region": rng.choice(["a", "b"], size=1000), "unused": 1})
    path = tmp_path / "customers.csv"
    frame.to_csv(path, index=False)
    return frame, path


def test_output_has_one_row_per_input_row_in_order_with_arm_columns(model_dir, customers, tmp_path):
    frame, path = customers
    runtime = UpliftRuntime.load(model_dir)
    recommend(runtime, path, tmp_path / "out.parquet", chunk_rows=300)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.columns) == ["customer_id", "incentive", "expected_net_value", "uplift:email", "uplift:coupon"]
    assert out["customer_id"].tolist() == frame["customer_id"].tolist()
    pred = runtime.predict_frame(frame)
    np.testing.assert_allclose(out["uplift:coupon"], pred.uplift[:, 1])
    assert out["incentive"].tolist() == pred.incentive.tolist()


def test_budget_over_chunks_is_respected_exactly_and_keeps_the_best_ratios(model_dir, customers, tmp_path):
    frame, path = customers
    runtime = UpliftRuntime.load(model_dir)
    summary = recommend(runtime, path, tmp_path / "out.csv", budget=20.0, chunk_rows=128)
    out = pd.read_csv(tmp_path / "out.csv")
    cost = out["incentive"].map({"email": 0.1, "coupon": 0.5, "none": 0.0})
    assert cost.sum() <= 20.0 and summary.total_send_cost == pytest.approx(cost.sum())
    sent = out[out["incentive"] != "none"]
    ratio_sent = (sent["expected_net_value"] / sent["incentive"].map({"email": 0.1, "coupon": 0.5})).min()
    uncapped = runtime.predict_frame(frame)
    left = (out["incentive"] == "none").to_numpy() & (uncapped.decision != CONTROL)
    ratio_left = (uncapped.expected_net_value[left] / np.array([0.1, 0.5])[uncapped.decision[left]]).max()
    assert ratio_sent >= ratio_left


def test_max_sends_caps_the_whole_batch(model_dir, customers, tmp_path):
    _, path = customers
    recommend(UpliftRuntime.load(model_dir), path, tmp_path / "out.csv", max_sends=7, chunk_rows=100)
    assert (pd.read_csv(tmp_path / "out.csv")["incentive"] != "none").sum() == 7


def test_cli_catalogue_override_with_higher_costs_sends_less(model_dir, customers, tmp_path):
    _, path = customers
    dear = dump_catalog(Catalog("none", (Incentive("coupon", 3.0), Incentive("email", 3.0)), 10.0),
                        tmp_path / "dear.yaml")
    runner = CliRunner()
    base = runner.invoke(app, ["recommend", "--model", str(model_dir), "--input", str(path),
                               "--output", str(tmp_path / "a.csv")])
    over = runner.invoke(app, ["recommend", "--model", str(model_dir), "--input", str(path), "--catalog", str(dear),
                               "--output", str(tmp_path / "b.csv")])
    assert base.exit_code == 0 and over.exit_code == 0, base.output + over.output
    sends = [(pd.read_csv(tmp_path / f)["incentive"] != "none").sum() for f in ("a.csv", "b.csv")]
    assert sends[1] < sends[0]


def test_cli_catalogue_with_other_arms_is_one_line_and_exit_2(model_dir, customers, tmp_path):
    _, path = customers
    other = dump_catalog(Catalog("none", (Incentive("sms", 0.1),), 10.0), tmp_path / "other.yaml")
    result = CliRunner().invoke(app, ["recommend", "--model", str(model_dir), "--input", str(path),
                                      "--catalog", str(other), "--output", str(tmp_path / "o.csv")])
    assert result.exit_code == 2
    assert "'email'" in result.output or "'sms'" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_missing_feature_column_is_named(model_dir, tmp_path):
    pd.DataFrame({"customer_id": ["a"], "x": [1.0]}).to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(app, ["recommend", "--model", str(model_dir), "--input", str(tmp_path / "in.csv"),
                                      "--output", str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "region" in result.output


def test_recommend_with_a_model_uri_that_does_not_exist_names_it_once_and_exits_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from winback.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    pd.DataFrame({"customer_id": ["a"], "recency_days": [3.0]}).to_csv(tmp_path / "in.csv", index=False)
    result = CliRunner().invoke(app, ["recommend", "--model", "models:/no-such-model@champion", "--input", "in.csv",
                                      "--output", "out.csv"])
    assert result.exit_code == 2
    assert result.output.count("cannot load 'models:/no-such-model@champion'") == 1
    assert not (tmp_path / "out.csv").exists()
