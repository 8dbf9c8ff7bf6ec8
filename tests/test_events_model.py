"""Model tests of engagement events end to end: `train churn --events`, `score --events`, a feature snapshot
built with events, and the online service answering with event features inline or by id. Real MLflow store."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.events import event_types_in
from features.io import read_table
from features.simulate import simulate
from serving.api import online
from serving.api.schemas import Customer
from serving.runtime.churn import load_churn_runtime
from winback.cli import app

CUTOFF = "2025-12-31"
MODEL = "models:/events-churn@champion"
runner = CliRunner()
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("events_model")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("events")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        sim = simulate(customers=1200, seed=3, events=True)
        sim.transactions.to_parquet(tmp / "tx.parquet")
        events = sim.events.rename(columns={"customer_id": "who", "timestamp": "at", "event_type": "kind"})
        events.to_csv(tmp / "events.csv", index=False)
        result = runner.invoke(app, ["train", "churn", "--transactions", "tx.parquet", "--events", "events.csv",
                                     "--event-id-col", "who", "--event-time-col", "at", "--event-type-col", "kind",
                                     "--event-types", "visit,app_session,email_open", "--cutoff", CUTOFF,
                                     "--horizon-days", "120", "--trials", "2", "--max-rounds", "60",
                                     "--register-as", "events-churn", "--level-bootstrap", "0"])
        assert result.exit_code == 0, result.output
        assert "resamples of their rows" not in result.output  # --level-bootstrap 0: no interval
        yield {"tmp": tmp, "sim": sim, "runtime": load_churn_runtime(MODEL)}


EVENT_ARGS = ["--events", "events.csv", "--event-id-col", "who", "--event-time-col", "at", "--event-type-col", "kind"]


@pytest.fixture(scope="module")
def feature_table(trained):
    """`winback features build --model … --events …` of the training data (each test that reads it asks for it,
    so no test depends on another having run first)."""
    tmp = trained["tmp"]
    args = [a if not a.endswith(".csv") else str(tmp / a) for a in EVENT_ARGS]
    built = runner.invoke(app, ["features", "build", "--transactions", str(tmp / "tx.parquet"), "--as-of", CUTOFF,
                                "--output", str(tmp / "feats.parquet"), "--model", MODEL, *args])
    assert built.exit_code == 0, built.output
    return tmp / "feats.parquet"


def test_the_model_stores_the_event_types_chosen_at_training(trained):
    assert event_types_in(trained["runtime"].feature_names) == ("visit", "app_session", "email_open")
    assert "email_open_rate_90d" in trained["runtime"].feature_names


def test_score_with_events_equals_scoring_the_feature_table_built_with_events(trained, feature_table):
    scored = runner.invoke(app, ["score", "--model", MODEL, "--transactions", "tx.parquet", "--as-of", CUTOFF,
                                 "--output", "scores.csv", *EVENT_ARGS])
    assert scored.exit_code == 0, scored.output
    assert runner.invoke(app, ["score", "--model", MODEL, "--features", str(feature_table),
                               "--output", "from_feats.csv"]).exit_code == 0
    a = pd.read_csv(trained["tmp"] / "scores.csv").set_index("customer_id")
    b = pd.read_csv(trained["tmp"] / "from_feats.csv").set_index("customer_id").loc[a.index]
    np.testing.assert_allclose(a["churn_probability"], b["churn_probability"], rtol=1e-12)
    assert len(a) == trained["sim"].transactions["customer_id"].nunique()


def test_scores_move_with_engagement(trained):
    """The same purchases with the events of the last 90 days removed score differently: events are used."""
    tmp = trained["tmp"]
    events = pd.read_csv(tmp / "events.csv")
    events[pd.to_datetime(events["at"]) < pd.Timestamp("2025-10-01")].to_csv(tmp / "quiet.csv", index=False)
    args = ["score", "--model", MODEL, "--transactions", "tx.parquet", "--as-of", CUTOFF, "--event-id-col", "who",
            "--event-time-col", "at", "--event-type-col", "kind"]
    assert runner.invoke(app, [*args, "--events", "events.csv", "--output", "s1.csv"]).exit_code == 0
    assert runner.invoke(app, [*args, "--events", "quiet.csv", "--output", "s2.csv"]).exit_code == 0
    p1 = pd.read_csv(tmp / "s1.csv")["churn_probability"]
    p2 = pd.read_csv(tmp / "s2.csv")["churn_probability"]
    assert p2.mean() > p1.mean()  # silence raises the churn risk


def test_score_without_events_for_a_model_trained_with_them_exits_2(trained):
    result = runner.invoke(app, ["score", "--model", MODEL, "--transactions", "tx.parquet", "--as-of", CUTOFF,
                                 "--output", "x.csv"])
    assert result.exit_code == 2 and "--events" in result.output


def test_online_service_takes_event_features_inline_or_from_a_snapshot_built_with_events(trained, feature_table):
    runtime = trained["runtime"]
    table = read_table(feature_table)
    snapshot = online.FeatureSnapshot.from_frame(table, [runtime.encoder], path="feats.parquet")
    rows = range(25)
    inline = []
    for i in rows:
        row = table.iloc[i]
        features = {name: (None if isinstance(row[name], float) and math.isnan(row[name]) else
                           row[name] if not isinstance(row[name], str) else str(row[name]))
                    for name in runtime.feature_names}
        inline.append(Customer(customer_id=str(row["customer_id"]), features=features))
    by_id = [Customer(customer_id=str(table["customer_id"].iloc[i])) for i in rows]
    sent = online.score_rows(runtime, inline)
    looked_up = online.score_rows(runtime, by_id, snapshot)
    assert [s["churn_probability"] for s in sent] == [s["churn_probability"] for s in looked_up]
    quiet = inline[0].features | {"events_visit_30d": 0, "events_visit_90d": 0, "events_visit_7d": 0,
                                  "days_since_visit": 400, "events_app_session_7d": 0, "events_app_session_30d": 0,
                                  "events_app_session_90d": 0, "days_since_app_session": 400}
    busy = inline[0].features | {"events_visit_30d": 12, "events_visit_90d": 30, "events_visit_7d": 3,
                                 "days_since_visit": 0}
    p_quiet, p_busy = (online.score_rows(runtime, [Customer(customer_id="x", features=f)])[0]["churn_probability"]
                       for f in (quiet, busy))
    assert p_quiet > p_busy  # inline event values reach the model: silence means more risk


def test_a_negative_event_count_sent_inline_is_refused_naming_the_field(trained):
    from features.errors import DataError

    runtime = trained["runtime"]
    features = {name: 0 for name in runtime.feature_names} | {"events_visit_30d": -1}
    with pytest.raises(DataError, match=r"customers\[0\]\.features\.events_visit_30d"):
        online.encode_customers([Customer(customer_id="x", features=features)], runtime.encoder)
