"""What `winback report` reads: `winback score --reasons N`, and the provenance scores and recommendations files
carry (model, run, cutoff, catalogue) in their Parquet metadata."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.io import read_provenance, read_table
from serving.batch.recommend import recommend
from serving.batch.score import TRANSACTION_COLUMNS, reason_columns, score_table, score_transactions
from serving.runtime.uplift import UpliftRuntime
from test_churn_runtime import make_runtime
from test_recommend import CATALOG, customers, model_dir  # noqa: F401 (fixtures)
from winback.cli import app

AS_OF = pd.Timestamp("2024-06-30")


def test_reasons_are_the_features_with_the_largest_positive_contributions():
    runtime, frame = make_runtime()
    X = runtime.encoder.transform(frame)
    got = reason_columns(runtime, X, 2)
    contrib = runtime.contributions(X)[:, :-1]
    for i in range(len(frame)):
        expected = [(name, value) for name, value in runtime.reasons(X[i:i + 1], top=2)[0]]
        for k, (name, value) in enumerate(expected):
            assert got[f"reason_{k + 1}"][i] == (name if value > 0 else None)
    assert (contrib > 0).any(axis=1).sum() == pd.notna(got["reason_1"]).sum()


def test_scores_with_reasons_and_provenance(make_transactions, tmp_path):
    runtime, _ = make_runtime()
    tx = make_transactions([("b", "2024-01-01", 10), ("a", "2024-03-01", 20), ("a", "2024-06-30 20:00", 5)],
                           channel=["app", "web", "app"])
    score_transactions(runtime, tx, AS_OF, tmp_path / "s.parquet", reasons=3)
    score_transactions(runtime, tx, AS_OF, tmp_path / "plain.parquet")
    out, plain = read_table(tmp_path / "s.parquet"), read_table(tmp_path / "plain.parquet")
    assert list(out.columns) == [*TRANSACTION_COLUMNS, "reason_1", "reason_2", "reason_3"]
    pd.testing.assert_frame_equal(out[TRANSACTION_COLUMNS], plain)  # reasons change no score
    assert set(out["reason_1"].dropna()) <= set(runtime.feature_names)
    assert read_provenance(tmp_path / "s.parquet") == {
        "command": "score", "model_uri": None, "model_name": None, "model_version": None, "run_id": "r1",
        "as_of": "2024-06-30", "horizon_days": 180}


def test_a_customer_table_scored_with_reasons(tmp_path):
    runtime, frame = make_runtime()
    score_table(runtime, frame.head(5).reset_index(), tmp_path / "t.csv", reasons=1)
    out = read_table(tmp_path / "t.csv")
    X = runtime.encoder.transform(frame.head(5))
    np.testing.assert_array_equal(out["reason_1"].fillna("").to_numpy(),
                                  np.where(pd.isna(reason_columns(runtime, X, 1)["reason_1"]), "",
                                           reason_columns(runtime, X, 1)["reason_1"]).astype(str))
    assert read_provenance(tmp_path / "t.csv") is None  # CSV has no metadata


def test_recommendations_with_net_values_and_their_catalogue_in_the_metadata(model_dir, customers, tmp_path):
    frame, path = customers
    runtime = UpliftRuntime.load(model_dir)
    recommend(runtime, path, tmp_path / "r.parquet", budget=20.0, with_net_values=True, chunk_rows=300)
    out = pd.read_parquet(tmp_path / "r.parquet")
    net = runtime.predict_frame(frame).net_value
    np.testing.assert_allclose(out[["net_value:email", "net_value:coupon"]].to_numpy(), net)
    sent = out["incentive"] != "none"
    arm = out.loc[sent, "incentive"].map({"email": 0, "coupon": 1}).to_numpy()
    np.testing.assert_allclose(out.loc[sent, "expected_net_value"], net[sent.to_numpy()][np.arange(sent.sum()), arm])
    written = read_provenance(tmp_path / "r.parquet")
    assert written["catalog"] == CATALOG.to_dict() and written["budget"] == 20.0 and written["command"] == "recommend"


def test_report_takes_send_costs_from_the_recommendations_file(model_dir, customers, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    frame, path = customers
    recommend(UpliftRuntime.load(model_dir), path, tmp_path / "r.parquet", budget=20.0)
    pd.DataFrame({"customer_id": frame["customer_id"], "churn_probability": 0.5, "lifecycle_stage": "active",
                  "value_tier": "mid", "value_at_risk": 10.0}).to_csv(tmp_path / "s.csv", index=False)
    result = CliRunner().invoke(app, ["report", "--scores", str(tmp_path / "s.csv"), "--recommendations",
                                      str(tmp_path / "r.parquet"), "--html-out", str(tmp_path / "r.html"),
                                      "--json-out", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    recs = pd.read_parquet(tmp_path / "r.parquet")
    expected = recs["incentive"].map({"none": 0.0, "email": 0.1, "coupon": 0.5}).sum()
    assert doc["cost_source"] == "the recommendations file" and doc["headline"]["send_cost"] == pytest.approx(expected)
    assert 0 < expected <= 20.0
    assert doc["provenance"]["recommendations"]["written_by"]["budget"] == 20.0
