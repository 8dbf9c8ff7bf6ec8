"""Batch scoring: output schema, chunk independence, customer tables, and bad model URIs (exit 2)."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import lightgbm as lgb

from features.affinity import affinity_reference
from features.build import build_features
from features.io import read_table
from serving.batch.score import (TABLE_COLUMNS, TRANSACTION_COLUMNS, model_affinity_categories, score_table,
                                 score_transactions)
from serving.runtime.churn import ChurnRuntime
from serving.runtime.encoding import FeatureEncoder
from test_churn_runtime import FEATURES, feature_frame, make_runtime
from winback.cli import app

AS_OF = pd.Timestamp("2024-06-30")


def test_scores_one_row_per_customer_active_by_as_of_with_the_contract_columns(make_transactions, tmp_path):
    runtime, _ = make_runtime()
    tx = make_transactions([("b", "2024-01-01", 10), ("a", "2024-03-01", 20), ("a", "2024-06-30 20:00", 5),
                            ("c", "2024-07-01", 99)], channel=["app", "web", "app", "store"])
    n = score_transactions(runtime, tx, AS_OF, tmp_path / "s.csv")
    out = read_table(tmp_path / "s.csv", dtype={"customer_id": "str"})
    assert n == 2 and list(out.columns) == TRANSACTION_COLUMNS
    assert out["customer_id"].tolist() == ["a", "b"]  # c first bought after as-of
    assert set(out["risk_tier"]) <= {"high", "medium", "low"}
    assert out.loc[0, "value_tier"] == "low"  # spend_365d 25 < stored mid threshold 100


def test_chunked_scoring_equals_single_pass(make_transactions, tmp_path):
    runtime, _ = make_runtime()
    rng = np.random.default_rng(3)
    rows = [(f"k{rng.integers(0, 40)}", f"2024-{rng.integers(1, 7):02d}-{rng.integers(1, 28):02d}",
             float(rng.integers(5, 80))) for _ in range(200)]
    tx = make_transactions(rows, channel=rng.choice(["app", "web"], 200))
    score_transactions(runtime, tx, AS_OF, tmp_path / "one.parquet")
    score_transactions(runtime, tx, AS_OF, tmp_path / "many.parquet", chunk_customers=7)
    pd.testing.assert_frame_equal(read_table(tmp_path / "one.parquet"), read_table(tmp_path / "many.parquet"))


def affinity_runtime() -> ChurnRuntime:
    """A churn model trained with the affinity of two categories, "Home & Garden" and "toys"."""
    frame, y = feature_frame()
    rng = np.random.default_rng(1)
    home = rng.random(len(frame))
    frame = frame.assign(affinity_home_garden=home, affinity_toys=1 - home, top_affinity_category=pd.Categorical.from_codes(
        (home < 0.5).astype(int), categories=["Home & Garden", "toys"]))
    encoder = FeatureEncoder([*FEATURES[:-1], "affinity_home_garden", "affinity_toys", "top_affinity_category"]).fit(frame)
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_leaves": 4, "seed": 0, "num_threads": 1},
                        lgb.Dataset(encoder.transform(frame), y, categorical_feature=encoder.categorical_indices),
                        num_boost_round=20)
    return ChurnRuntime(encoder, booster.model_to_string(), {"method": "platt", "a": 1.0, "b": 0.0},
                        {"high": 0.8, "medium": 0.5}, horizon_days=180, value_tier_thresholds=(100.0, 500.0),
                        segment_config={}, metadata={"run_id": "r1", "horizon_days": 180})


def test_scoring_builds_the_models_affinity_columns_whatever_sells_most_in_the_data(make_transactions, tmp_path):
    runtime = affinity_runtime()
    assert model_affinity_categories(runtime) == ["Home & Garden", "toys"]
    rng = np.random.default_rng(5)
    rows = [(f"k{rng.integers(0, 30)}", f"2024-{rng.integers(1, 7):02d}-{rng.integers(1, 28):02d}",
             float(rng.integers(5, 80))) for _ in range(150)]
    # books and beauty sell most; nobody bought Home & Garden (a top-N build would have no column for it)
    tx = make_transactions(rows, category=rng.choice(["books", "beauty", "toys"], 150, p=[.5, .4, .1]))
    score_transactions(runtime, tx, AS_OF, tmp_path / "one.parquet")
    score_transactions(runtime, tx, AS_OF, tmp_path / "many.parquet", chunk_customers=7)
    one = read_table(tmp_path / "one.parquet")
    pd.testing.assert_frame_equal(one, read_table(tmp_path / "many.parquet"))
    reference = affinity_reference(tx, AS_OF, ["Home & Garden", "toys"])
    features = build_features(tx, AS_OF, affinity_reference=reference)
    assert [c for c in features.columns if c.startswith("affinity_")] == ["affinity_home_garden", "affinity_toys"]
    expected = runtime.score_array(runtime.encoder.transform(features))["churn_probability"].to_numpy()
    np.testing.assert_allclose(one["churn_probability"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_table_scoring_ignores_the_label_and_reads_blank_numbers_as_missing(tmp_path):
    runtime, frame = make_runtime()
    table = frame.head(3).reset_index().astype({"spend_365d": str})
    table.loc[1, "spend_365d"] = " "
    table["churn"] = ["yes", "no", "yes"]
    n = score_table(runtime, table, tmp_path / "t.csv")
    out = read_table(tmp_path / "t.csv")
    assert n == 3 and list(out.columns) == TABLE_COLUMNS and out["customer_id"].tolist() == ["c0", "c1", "c2"]
    expected = runtime.score_frame(frame.head(3).assign(spend_365d=[frame["spend_365d"].iloc[0], np.nan,
                                                                    frame["spend_365d"].iloc[2]]))
    np.testing.assert_allclose(out["churn_probability"], expected["churn_probability"])


def test_score_with_a_model_uri_that_does_not_exist_exits_2(tmp_path, monkeypatch, make_transactions):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    make_transactions([("a", "2024-01-01", 10)]).to_csv(tmp_path / "tx.csv", index=False)
    result = CliRunner().invoke(app, ["score", "--model", "models:/no-such-model@champion", "--transactions",
                                      "tx.csv", "--as-of", "2024-06-30", "--output", "s.csv"])
    assert result.exit_code == 2
    assert "no-such-model" in result.output and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("args,message", [
    (["--transactions", "tx.csv"], "--as-of"),
    (["--transactions", "tx.csv", "--as-of", "2024-06-30", "--table", "tx.csv"], "give one of"),
    (["--transactions", "tx.csv", "--as-of", "30/06/2024"], "--as-of"),
])
def test_score_refuses_inconsistent_options_with_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    result = CliRunner().invoke(app, ["score", "--model", "runs:/abc/model", "--output", "s.csv", *args])
    assert result.exit_code == 2 and message in result.output
