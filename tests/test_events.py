"""Engagement events: the contract, point-in-time features checked by hand, prospects, the simulator's decay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.build import build_features
from features.contracts import normalize_transactions
from features.errors import DataError
from features.events import (build_event_features, event_feature_names, event_types_in, normalize_events,
                             parse_event_types, top_event_types, type_name)
from features.segment import segment
from features.simulate import simulate, write_simulation
from features.simulate.events import simulate_events
from features.simulate.population import draw_population
from features.simulate.purchases import cumulative_intensity, seasonality
from winback.cli import app

AS_OF = "2025-03-31"
runner = CliRunner()


def events(rows) -> pd.DataFrame:
    return normalize_events(pd.DataFrame(rows, columns=["customer_id", "timestamp", "event_type"]))


TINY = [
    ("a", "2025-03-31 23:59", "Visit"),  # on as_of: age 0
    ("a", "2025-03-25", "visit"),  # age 6
    ("a", "2025-03-01", "visit"),  # age 30: outside 30d, inside 90d, in the 60 days before
    ("a", "2025-01-15", "visit"),  # age 75
    ("a", "2025-03-20", "email_send"),
    ("a", "2025-03-10", "email_send"),
    ("a", "2025-02-01", "email_send"),
    ("a", "2025-03-21", "email_open"),
    ("a", "2025-03-21", "email_click"),
    ("a", "2024-10-01", "email_send"),  # older than 90 days: not in the rates
    ("b", "2025-03-30", "Support Ticket"),
    ("b", "2025-03-02", "complaint"),
    ("b", "2024-11-01", "visit"),  # age 150: only days since
]


def test_event_features_match_hand_computed_values():
    f = build_event_features(events(TINY), AS_OF, types=("visit", "email_send"))
    a, b = f.loc["a"], f.loc["b"]
    assert (a["events_visit_7d"], a["events_visit_30d"], a["events_visit_90d"]) == (2, 2, 4)
    assert a["days_since_visit"] == 0 and b["days_since_visit"] == 150
    # last 30 days: 2 visits; the 60 days before: 2 visits → 1 per 30 days; (2 − 1) / (2 + 1)
    assert a["events_visit_trend"] == pytest.approx(1 / 3)
    assert b["events_visit_trend"] == 0 and b["events_visit_90d"] == 0
    assert a["email_open_rate_90d"] == pytest.approx(1 / 3) and a["email_click_rate_90d"] == pytest.approx(1 / 3)
    assert np.isnan(b["email_open_rate_90d"])  # no sends: unknown, not zero
    assert (b["support_tickets_90d"], b["complaints_90d"], a["complaints_90d"]) == (1, 1, 0)
    assert list(f.columns) == event_feature_names(("visit", "email_send"))


def test_an_event_after_the_cutoff_changes_no_feature():
    before = build_event_features(events(TINY), AS_OF, types=("visit", "email_send"))
    later = TINY + [("a", "2025-04-01 00:00", "visit"), ("b", "2025-04-02", "email_send"),
                    ("c", "2025-04-01", "visit")]
    after = build_event_features(events(later), AS_OF, types=("visit", "email_send"))
    pd.testing.assert_frame_equal(after, before)


def test_prospects_with_events_but_no_purchase_are_kept_as_prospect():
    tx = normalize_transactions(pd.DataFrame({"customer_id": ["a"], "timestamp": ["2025-03-01"], "amount": [10.0]}))
    feats = build_features(tx, AS_OF, events=events(TINY), event_types=("visit",))
    assert feats.index.tolist() == ["a", "b"]
    b = feats.loc["b"]
    assert np.isnan(b["recency_days"]) and b["purchase_count"] == 0 and b["spend_365d"] == 0
    assert b["days_since_visit"] == 150
    assert segment(feats)["lifecycle_stage"].astype(str).tolist() == ["new", "prospect"]  # a: first purchase 30 days ago
    assert feats.loc["a", "recency_days"] == 30 and "b" not in build_features(tx, AS_OF).index


def test_customers_without_events_get_zero_counts_and_unknown_days():
    f = build_event_features(events(TINY), AS_OF, customers=pd.Index(["a", "z"]), types=("visit",))
    z = f.loc["z"]
    assert z["events_visit_30d"] == 0 and z["events_visit_trend"] == 0 and z["complaints_90d"] == 0
    assert np.isnan(z["days_since_visit"]) and np.isnan(z["email_open_rate_90d"])


def test_type_names_are_column_safe_and_types_are_chosen_by_count():
    assert [type_name(t) for t in ("E-mail Open", " app session ", "Café visit!", "EMAIL_CLICK")] == \
        ["e_mail_open", "app_session", "cafe_visit", "email_click"]
    assert top_event_types(events(TINY), AS_OF, 2) == ("visit", "email_send")  # 5 visits, 4 sends
    assert parse_event_types("Visit, email open") == ("visit", "email_open")
    assert event_types_in(event_feature_names(("visit", "app_session")) + ["recency_days"]) == ("visit", "app_session")
    assert event_types_in(["recency_days"]) is None


def test_types_fixed_at_training_build_the_same_columns_when_absent_at_scoring():
    only_sends = events([("a", "2025-03-20", "email_send")])
    f = build_event_features(only_sends, AS_OF, types=("visit", "app_session"))
    assert list(f.columns) == event_feature_names(("visit", "app_session"))
    assert f.loc["a", "events_visit_90d"] == 0 and np.isnan(f.loc["a", "days_since_app_session"])


@pytest.mark.parametrize("frame,message", [
    (pd.DataFrame({"customer_id": ["a"], "timestamp": ["not a date"], "event_type": ["visit"]}), "'timestamp'"),
    (pd.DataFrame({"customer_id": ["a"], "timestamp": ["2025-01-01"], "event_type": [None]}), "'event_type'"),
    (pd.DataFrame({"customer_id": ["a"], "timestamp": ["2025-01-01"], "event_type": ["!!"]}), "'event_type'"),
    (pd.DataFrame({"customer_id": ["a"], "timestamp": ["2025-01-01"]}), "'event_type'"),
])
def test_bad_event_tables_name_the_column(frame, message):
    with pytest.raises(DataError, match=message):
        normalize_events(frame)


TX_CSV = "cust,when,value\n1,2025-03-01,10\n2,2025-02-01,20\n"


@pytest.mark.parametrize("events_text,message", [
    ("who,at,kind\n1,2025-03-02,visit\n2,yesterday,visit\n", "'at' (timestamp): missing or unparseable timestamp"),
    ("who,at\n1,2025-03-02\n", "'kind' (event_type) is missing"),
])
def test_bad_events_file_exits_2_naming_file_and_column(tmp_path, events_text, message):
    (tmp_path / "tx.csv").write_text(TX_CSV)
    (tmp_path / "ev.csv").write_text(events_text)
    result = runner.invoke(app, ["features", "build", "--transactions", str(tmp_path / "tx.csv"), "--as-of", AS_OF,
                                 "--output", str(tmp_path / "out.csv"), "--id-col", "cust", "--time-col", "when",
                                 "--amount-col", "value", "--events", str(tmp_path / "ev.csv"), "--event-id-col", "who",
                                 "--event-time-col", "at", "--event-type-col", "kind"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"--events {tmp_path / 'ev.csv'}" in result.output and message in " ".join(result.output.split())
    assert not (tmp_path / "out.csv").exists()


def test_features_build_with_mapped_event_columns_writes_prospects(tmp_path):
    (tmp_path / "tx.csv").write_text(TX_CSV)
    (tmp_path / "ev.csv").write_text("who,at,kind\n001,2025-03-30,Visit\n3,2025-03-29,visit\n3,2025-04-05,visit\n")
    result = runner.invoke(app, ["features", "build", "--transactions", str(tmp_path / "tx.csv"), "--as-of", AS_OF,
                                 "--output", str(tmp_path / "out.csv"), "--id-col", "cust", "--time-col", "when",
                                 "--amount-col", "value", "--events", str(tmp_path / "ev.csv"), "--event-id-col", "who",
                                 "--event-time-col", "at", "--event-type-col", "kind"])
    assert result.exit_code == 0, result.output
    out = pd.read_csv(tmp_path / "out.csv", dtype={"customer_id": str}).set_index("customer_id")
    assert out.index.tolist() == ["001", "1", "2", "3"]  # '001' is its own id: text ids are kept as written
    assert out.loc["3", "lifecycle_stage"] == "prospect" and out.loc["3", "events_visit_7d"] == 1
    assert out.loc["1", "events_visit_7d"] == 0 and out.loc["1", "lifecycle_stage"] == "new"


def test_events_with_spark_scoring_are_refused_with_exit_2_naming_features_build(tmp_path):
    result = runner.invoke(app, ["score", "--model", "m", "--features", str(tmp_path / "f.parquet"), "--output",
                                 str(tmp_path / "out"), "--events", str(tmp_path / "ev.csv"), "--engine", "spark"])
    assert result.exit_code == 2 and "--engine spark" in result.output and "features build" in result.output


# -- the simulator ---------------------------------------------------------------------------------
def test_simulated_engagement_decays_before_the_hidden_drop_out():
    rng = np.random.default_rng(0)
    days = 731
    pop = draw_population(rng, 20_000, cumulative_intensity(seasonality(pd.Timestamp("2024-01-01"), days + 200)), days)
    ev = simulate_events(np.random.default_rng(1), pop, days)
    visits = ev["type"] <= 1  # visits and app sessions
    cust, day = ev["customer"][visits], ev["day"][visits]
    watched = (pop.death < days) & (pop.death - pop.join > 200)
    before = pop.death[cust] - day
    last_30 = np.bincount(cust[(before > 0) & (before <= 30)], minlength=len(pop))[watched].mean() / 30
    earlier = np.bincount(cust[(before > 90) & (before <= 180)], minlength=len(pop))[watched].mean() / 90
    assert last_30 < 0.6 * earlier  # daily engagement in the last 30 days is well below 90–180 days before


def test_events_come_from_their_own_stream_and_leave_other_outputs_unchanged(tmp_path):
    plain, with_events = simulate(300, seed=4), simulate(300, seed=4, events=True)
    pd.testing.assert_frame_equal(plain.transactions, with_events.transactions)
    pd.testing.assert_frame_equal(plain.truth, with_events.truth)
    pd.testing.assert_frame_equal(with_events.events, simulate(300, seed=4, events=True).events)
    assert set(with_events.events["event_type"]) >= {"visit", "email_send", "email_open"}
    assert with_events.events["timestamp"].max() < pd.Timestamp("2026-01-01")
    assert "events.parquet" in write_simulation(with_events, tmp_path)
    assert "events.parquet" not in write_simulation(plain, tmp_path / "plain")
