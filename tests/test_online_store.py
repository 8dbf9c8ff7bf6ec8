"""The online store (SQLite backend): features rebuilt from per-customer records equal `winback features build`
on the same rows, batches applied whole and once, late events, and triggers written once per crossing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import build_features
from features.errors import DataError
from features.history import (Columns, History, Labels, append, by_customer, decode, encode, event_records, frames,
                              purchase_records)
from features.io import read_table
from features.simulate import simulate, write_simulation
from serving.online.engine import Clock, OnlineEngine, TriggerRule, parse_batch
from serving.online.loading import batches, load_frames
from serving.online.store import SQLiteStore
from winback.cli import app

from feature_parity import assert_same_features

runner = CliRunner()


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    sim = simulate(customers=600, seed=5, events=True)
    paths = write_simulation(sim, root)
    return {"root": root, "tx": paths["transactions.parquet"], "ev": paths["events.parquet"], "sim": sim}


def cli(*args: str) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_history_record_round_trips_through_its_bytes_and_grows_by_appending_rows():
    labels = Labels(["web"])
    purchases = pd.DataFrame({"customer_id": ["1", "2", "1"],
                              "timestamp": pd.to_datetime(["2024-01-02", "2024-01-05", "2024-03-04"]),
                              "amount": [10.5, 3.0, -2.0], "quantity": [1.0, 2.0, np.nan],
                              "category": ["books", "toys", None], "channel": ["web", "store", "web"]})
    events = pd.DataFrame({"customer_id": ["1"], "timestamp": pd.to_datetime(["2024-02-01"]),
                           "event_type": ["visit"], "channel": [None]})
    p = by_customer(purchases["customer_id"], purchase_records(purchases, labels))
    e = by_customer(events["customer_id"], event_records(events, labels))
    assert labels.names == ["web", "books", "toys", "store", "visit"]  # known names keep their code
    one = append(append(History(), p["1"][:28]), p["1"][28:], e["1"])  # rows arriving in two batches
    assert one == append(History(), p["1"], e["1"]) and decode(encode(one)) == one
    rows = one.purchase_rows()
    assert rows["amount"].tolist() == [10.5, -2.0] and rows["category"].tolist() == [1, -1]
    assert np.isnan(rows["quantity"][1]) and one.event_rows()["type"].tolist() == [4]
    assert one.last_day() == int(np.datetime64("2024-03-04", "D").astype(int))
    tx, ev = frames({"1": one, "2": append(History(), p["2"])}, Columns(True, True, True, True, True), labels)
    assert tx["customer_id"].tolist() == ["1", "1", "2"] and tx["amount"].tolist() == [10.5, -2.0, 3.0]
    assert tx["category"].tolist()[:2] == ["books", None] or pd.isna(tx["category"].iloc[1])
    assert ev["event_type"].tolist() == ["visit"] and pd.isna(ev["channel"].iloc[0])
    with pytest.raises(ValueError):
        decode(b"nope" + encode(one)[4:])
    with pytest.raises(ValueError):
        decode(encode(one)[:-1])


@pytest.mark.slow
@pytest.mark.parametrize("as_of", ["2025-07-15", "2025-12-31"])
def test_store_features_equal_features_build_on_the_simulator_for_every_column_and_customer(sim_files, tmp_path,
                                                                                           as_of):
    url = f"sqlite:///{tmp_path / 'online.db'}"
    out = cli("online", "load", "--transactions", sim_files["tx"], "--events", sim_files["ev"], "--online-store", url,
              "--as-of", "2025-12-31", "--batch", "3000")
    assert "applied" in out
    cli("online", "features", "--online-store", url, "--as-of", as_of, "--output", tmp_path / "online.parquet")
    cli("features", "build", "--transactions", sim_files["tx"], "--events", sim_files["ev"], "--as-of", as_of,
        "--output", tmp_path / "batch.parquet")
    online = read_table(tmp_path / "online.parquet", dtype={"customer_id": "str"})
    batch = read_table(tmp_path / "batch.parquet", dtype={"customer_id": "str"})
    assert len(batch) > 300 and batch.shape[1] > 60
    assert_same_features(online, batch)


@pytest.mark.slow
def test_store_features_equal_features_build_on_cdnow(shared_data, tmp_path):
    from features import read_cdnow

    tx = read_cdnow(shared_data / "cdnow_master.txt")
    tx.to_parquet(tmp_path / "cdnow.parquet")
    url = f"sqlite:///{tmp_path / 'online.db'}"
    cli("online", "load", "--transactions", tmp_path / "cdnow.parquet", "--online-store", url, "--as-of", "1998-06-30",
        "--batch", "20000")
    for as_of in ("1997-09-30", "1998-06-30"):
        cli("online", "features", "--online-store", url, "--as-of", as_of, "--output", tmp_path / "online.parquet")
        cli("features", "build", "--transactions", tmp_path / "cdnow.parquet", "--as-of", as_of,
            "--output", tmp_path / "batch.parquet")
        online = read_table(tmp_path / "online.parquet", dtype={"customer_id": "str"})
        batch = read_table(tmp_path / "batch.parquet", dtype={"customer_id": "str"})
        assert len(batch) > 20_000
        assert_same_features(online, batch)


def with_ids(sim):
    tx = sim.transactions.assign(event_id=[f"t{i}" for i in range(len(sim.transactions))])
    ev = sim.events.assign(event_id=[f"e{i}" for i in range(len(sim.events))])
    return tx, ev


@pytest.mark.slow
def test_events_in_any_order_and_replayed_batches_give_the_same_store(sim_files, tmp_path):
    """Late events (newest first) land exactly; a replayed batch (at-least-once delivery) changes nothing."""
    tx, ev = with_ids(sim_files["sim"])
    clock = Clock(dt.date(2025, 12, 31))
    ordered = OnlineEngine(SQLiteStore(tmp_path / "a.db"), clock=clock)
    first = load_frames(ordered, tx, ev, 2000)
    assert first.applied == len(tx) + len(ev) and first.duplicates == 0
    again = load_frames(ordered, tx, ev, 3500)  # other batch boundaries, same event ids
    assert again.applied == 0 and again.duplicates == len(tx) + len(ev) and again.customers == 0
    late = OnlineEngine(SQLiteStore(tmp_path / "b.db"), clock=clock)
    for batch in reversed(list(batches(tx, ev, 1500))):
        late.ingest(batch)
    ids = sorted(set(tx["customer_id"]) | set(ev["customer_id"]))
    a = pd.DataFrame.from_dict(ordered.lookup(ids), orient="index")
    b = pd.DataFrame.from_dict(late.lookup(ids), orient="index")
    assert_same_features(a, b)
    assert ordered.store.counts() == late.store.counts()
    full = build_features(sim_files["sim"].transactions, "2025-12-31", events=sim_files["sim"].events)
    assert_same_features(a[full.columns], full)


def test_a_batch_whose_computation_fails_leaves_nothing_written(sim_files, tmp_path):
    tx, ev = with_ids(sim_files["sim"])
    engine = OnlineEngine(SQLiteStore(tmp_path / "o.db"), clock=Clock(dt.date(2025, 12, 31)))
    engine.ingest(next(batches(tx.iloc[:200], ev.iloc[:200], 400)))
    before = engine.store.counts()
    stored = engine.store.customers(tx["customer_id"].iloc[:50])

    def broken(after, before, meta):
        raise RuntimeError("scoring failed")

    with pytest.raises(RuntimeError):
        engine.store.apply(next(batches(tx.iloc[200:400], ev.iloc[200:400], 400)), broken)
    assert engine.store.counts() == before
    now = engine.store.customers(tx["customer_id"].iloc[:50])
    assert {k: v.version for k, v in now.items()} == {k: v.version for k, v in stored.items()}
    done = engine.ingest(next(batches(tx.iloc[200:400], ev.iloc[200:400], 400)))  # the retry applies it
    assert done.applied == 400 and done.duplicates == 0


def test_future_dated_rows_are_kept_but_not_counted_before_their_day(tmp_path):
    engine = OnlineEngine(SQLiteStore(tmp_path / "o.db"), clock=Clock(dt.date(2024, 6, 30)))
    engine.ingest(parse_batch([
        {"event_id": "a", "customer_id": "1", "timestamp": "2024-06-01", "amount": 10.0},
        {"event_id": "b", "customer_id": "1", "timestamp": "2024-07-05", "amount": 99.0},
        {"event_id": "c", "customer_id": "2", "timestamp": "2024-08-01", "amount": 5.0}], []))
    rows = engine.lookup(["1", "2"])
    assert set(rows) == {"1"}  # customer 2 has nothing on or before the store's day yet
    assert rows["1"]["monetary_total"] == 10.0 and rows["1"]["recency_days"] == 29.0
    later = OnlineEngine(engine.store, clock=Clock(dt.date(2024, 8, 31)))
    rows = later.lookup(["1", "2"])
    assert rows["1"]["monetary_total"] == 109.0 and rows["2"]["recency_days"] == 30.0


@pytest.mark.parametrize("transactions, events, message", [
    ([{"event_id": "a", "customer_id": "1", "timestamp": "2024-01-01", "amount": 1.0},
      {"event_id": "b", "customer_id": "1", "timestamp": "2024-01-02", "amount": "x"}], [], "transactions[1].amount"),
    ([{"customer_id": "1", "timestamp": "2024-01-01", "amount": 1.0}], [], "transactions[0].event_id: missing"),
    ([{"event_id": "a", "customer_id": "1", "timestamp": "2024-01-01", "amount": 1.0, "colour": "red"}], [],
     "transactions[0].colour: unknown field"),
    ([], [{"event_id": "a", "customer_id": "1", "timestamp": "someday", "event_type": "visit"}], "events[0].timestamp"),
    ([], [{"event_id": "a", "customer_id": "1", "timestamp": "2024-01-01"}], "events[0].event_type: missing"),
])
def test_bad_rows_are_refused_naming_the_record_and_field(transactions, events, message):
    with pytest.raises(DataError) as raised:
        parse_batch(transactions, events)
    assert str(raised.value).startswith(message), str(raised.value)


def test_repeats_of_an_event_id_within_a_batch_count_once():
    batch = parse_batch([{"event_id": "a", "customer_id": "1", "timestamp": "2024-01-01", "amount": 1.0},
                         {"event_id": "a", "customer_id": "1", "timestamp": "2024-01-01", "amount": 1.0}],
                        [{"event_id": "a", "customer_id": "1", "timestamp": "2024-01-01", "event_type": "visit"}])
    assert len(batch) == 1 and len(batch.events) == 0


@pytest.fixture(scope="module")
def runtimes(sim_files):
    from conftest_service import CHURN_FEATURES, churn_runtime, uplift_runtime

    sim = sim_files["sim"]
    table = build_features(sim.transactions, "2025-06-30").reset_index()[["customer_id", *CHURN_FEATURES]]
    return churn_runtime(table), uplift_runtime(table)


@pytest.mark.slow
def test_a_crossing_writes_one_trigger_with_old_new_and_the_incentive_and_survives_a_restart(sim_files, runtimes,
                                                                                            tmp_path):
    churn, uplift = runtimes
    sim = sim_files["sim"]
    tx, _ = with_ids(sim)
    tx = tx[tx["timestamp"] <= "2025-06-30"]
    rule = TriggerRule(churn_threshold=0.5, stages=("at_risk", "dormant", "churned"))
    path = tmp_path / "o.db"
    engine = OnlineEngine(SQLiteStore(path), churn, uplift, rule=rule, clock=Clock(dt.date(2025, 6, 30)))
    loaded = load_frames(engine, tx, None, 5000)
    assert loaded.triggers == 0  # a customer's first score is not a crossing
    stages = {cid: c.lifecycle_stage for part in engine.store.scan() for cid, c in part.items()}
    assert None not in stages.values()

    # four months of silence: recency grows, stages and probabilities cross without any event
    later = OnlineEngine(SQLiteStore(path), churn, uplift, rule=rule, clock=Clock(dt.date(2025, 10, 31)))
    swept = later.sweep()
    assert swept.customers == len(stages) and swept.triggers > 0
    assert later.sweep().triggers == 0  # nothing is stale any more: no second trigger for the same crossing
    triggers = later.store.triggers()
    assert len(triggers) == swept.triggers
    assert len({(t["customer_id"], t["kind"]) for t in triggers}) == len(triggers)
    for t in triggers:
        assert t["old"] != t["new"] and t["incentive"] in [*uplift.arms, uplift.control]
    moved = [t for t in triggers if t["kind"] == "lifecycle_stage"]
    assert moved and all(stages[t["customer_id"]] == t["old"] for t in moved)

    # a dormant customer buys: the exit from "dormant" is one trigger, however often the event is delivered
    dormant = next(cid for part in later.store.scan() for cid, c in part.items() if c.lifecycle_stage == "dormant")
    purchase = [{"event_id": "comeback-1", "customer_id": dormant, "timestamp": "2025-10-31", "amount": 80.0}]
    first = later.ingest(parse_batch(purchase, []))
    assert first.applied == 1 and first.triggers >= 1
    again = OnlineEngine(SQLiteStore(path), churn, uplift, rule=rule, clock=Clock(dt.date(2025, 10, 31)))
    replay = again.ingest(parse_batch(purchase, []))  # a restart and a redelivery
    assert replay.applied == 0 and replay.duplicates == 1 and replay.triggers == 0
    mine = [t for t in again.store.triggers(limit=10_000) if t["customer_id"] == dormant]
    comeback = [t for t in mine if t["kind"] == "lifecycle_stage" and t["old"] == "dormant"]
    assert len(comeback) == 1 and comeback[0]["new"] != "dormant"
    assert again.store.triggers(after=triggers[-1]["id"], limit=10)[0]["customer_id"] == dormant


def test_a_history_loaded_without_models_is_scored_by_one_sweep_of_the_same_day(sim_files, runtimes, tmp_path):
    churn, uplift = runtimes
    tx, _ = with_ids(sim_files["sim"])
    tx = tx[tx["timestamp"] <= "2025-06-30"]
    day = Clock(dt.date(2025, 6, 30))
    load_frames(OnlineEngine(SQLiteStore(tmp_path / "o.db"), clock=day), tx, None, 5000)  # `winback online load`
    scored = OnlineEngine(SQLiteStore(tmp_path / "o.db"), churn, uplift, clock=day)
    swept = scored.sweep()
    customers = {cid: c for part in scored.store.scan() for cid, c in part.items()}
    assert swept.customers == len(customers) == tx["customer_id"].nunique()
    assert swept.triggers == 0  # a first score is not a crossing
    assert all(c.churn_probability is not None and c.lifecycle_stage is not None for c in customers.values())
    assert scored.sweep().customers == 0  # scored now, and up to date


def test_trigger_rule_refuses_a_threshold_outside_zero_one_and_unknown_stages():
    with pytest.raises(DataError, match="between 0 and 1"):
        TriggerRule(churn_threshold=1.5)
    with pytest.raises(DataError, match="unknown stage 'sleepy'"):
        TriggerRule(stages=("sleepy",))


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["online", "status", "--online-store", f"sqlite:///{tmp_path}/nowhere/o.db"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["online", "status", "--online-store", "postgres://x"])
    assert result.exit_code == 2 and "expected sqlite:///" in result.output


def test_stored_feature_rows_decode_to_the_values_they_were_computed_with():
    from serving.online import codec

    frame = pd.DataFrame({"recency_days": [1.0, np.nan, 3.5], "frequency": [2, 0, 7],
                          "top_category": pd.Categorical(["toys", None, "odd\x1fname"]),
                          "top_channel": ["web", "store", None]}, index=["a", "b", "c"])
    sid, schema, blobs = codec.pack(frame)
    decode = codec.Decoder(refresh=lambda unknown: {sid: schema} if unknown == int(sid) else {})
    assert [decode(b) for b in blobs] == [
        {"recency_days": 1.0, "frequency": 2.0, "top_category": "toys", "top_channel": "web"},
        {"recency_days": None, "frequency": 0.0, "top_category": None, "top_channel": "store"},
        {"recency_days": 3.5, "frequency": 7.0, "top_category": "odd\x1fname", "top_channel": None}]
    with pytest.raises(ValueError, match="unknown schema"):
        codec.Decoder()(blobs[0])
