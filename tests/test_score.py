"""Batch scoring: output schema, chunk independence, customer tables, and bad model URIs (exit 2)."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.io import read_table
from serving.batch.score import TABLE_COLUMNS, TRANSACTION_COLUMNS, score_table, score_transactions
from test_churn_runtime import make_runtime
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
