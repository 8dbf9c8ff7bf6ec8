"""The online store in Redis and `winback stream`: the same behaviours as the SQLite store (batches whole and once,
triggers once per crossing), stream replays whose features equal `winback features build`, consumers killed
mid-stream losing and double-counting nothing, and bad entries dead-lettered. Needs `redis-server` and the
`redis` package (skipped otherwise)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import redis_server
from features.io import read_table
from features.simulate import simulate, write_simulation
from serving.online.engine import Clock, OnlineEngine, parse_batch
from serving.online.loading import batches, load_frames
from serving.online.store import Materialised, SQLiteStore, open_store
from winback.cli import app

from feature_parity import assert_same_features

pytestmark = pytest.mark.skipif(redis_server.missing() is not None, reason=str(redis_server.missing()))

runner = CliRunner()
AS_OF = "2025-12-31"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    with redis_server.throwaway_redis() as started:
        yield started


_databases = itertools.count()


@pytest.fixture
def db(server):
    """A fresh Redis database number for this test (flushed), so tests never see each other's keys."""
    number = next(_databases) % 15 + 1
    server.client(number).flushdb()
    return number


def cli(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def sim_with_ids(customers: int, seed: int):
    sim = simulate(customers=customers, seed=seed, events=True)
    tx = sim.transactions.assign(event_id=[f"t{i}" for i in range(len(sim.transactions))])
    ev = sim.events.assign(event_id=[f"e{i}" for i in range(len(sim.events))])
    return sim, tx, ev


@pytest.fixture(scope="module")
def small():
    return sim_with_ids(300, 3)


def same_entries(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for cid in a:
        x, y = a[cid], b[cid]
        assert (x.history.blob, x.version, x.features, x.features_day, x.churn_probability, x.lifecycle_stage) == \
               (y.history.blob, y.version, y.features, y.features_day, y.churn_probability, y.lifecycle_stage), cid


# -- the store: the same behaviours as SQLite ------------------------------------------------------------------

def test_the_redis_store_holds_what_the_sqlite_store_holds_after_the_same_batches(server, db, small, tmp_path):
    _, tx, ev = small
    clock = Clock(dt.date(2025, 12, 31))
    redis = OnlineEngine(open_store(server.url(db, prefix="t1:")), clock=clock)
    sqlite = OnlineEngine(SQLiteStore(tmp_path / "o.db"), clock=clock)
    for engine in (redis, sqlite):
        done = load_frames(engine, tx, ev, 4000)
        assert done.applied == len(tx) + len(ev) and done.duplicates == 0
    assert redis.store.counts() == sqlite.store.counts()
    assert redis.store.meta().to_json() == sqlite.store.meta().to_json()
    ids = sorted(set(tx["customer_id"]))
    same_entries(redis.store.customers(ids[:50] + ["nobody"]), sqlite.store.customers(ids[:50] + ["nobody"]))
    light = redis.store.customers(ids[:5], history=False)
    assert all(c.history.purchases == 0 and c.features is not None for c in light.values())
    parts_r, parts_s = list(redis.store.scan(128)), list(sqlite.store.scan(128))
    assert [list(p) for p in parts_r] == [list(p) for p in parts_s]  # same batches, ids in the same order
    same_entries({k: v for p in parts_r for k, v in p.items()}, {k: v for p in parts_s for k, v in p.items()})
    assert redis.lookup(ids[:20]) == sqlite.lookup(ids[:20])
    # keys carry the prefix: another prefix in the same database is another, empty store
    assert open_store(server.url(db, prefix="other:")).counts() == {"customers": 0, "events": 0, "triggers": 0}
    assert all(k.startswith(b"t1:") for k in server.client(db).scan_iter(count=1000))


def test_replaying_batches_into_redis_changes_nothing_and_the_counts_stay_the_same(server, db, small):
    _, tx, ev = small
    engine = OnlineEngine(open_store(server.url(db)), clock=Clock(dt.date(2025, 12, 31)))
    load_frames(engine, tx, ev, 3000)
    counts = engine.store.counts()
    before = engine.store.customers(sorted(set(tx["customer_id"])))
    again = load_frames(engine, tx, ev, 2500)  # other batch boundaries, the same event ids
    assert again.applied == 0 and again.duplicates == len(tx) + len(ev) and again.customers == 0
    assert engine.store.counts() == counts == {"customers": len(set(tx["customer_id"]) | set(ev["customer_id"])),
                                               "events": len(tx) + len(ev), "triggers": 0}
    same_entries(engine.store.customers(sorted(set(tx["customer_id"]))), before)


def test_a_batch_whose_materialise_raises_leaves_nothing_written_in_redis(server, db, small):
    _, tx, ev = small
    engine = OnlineEngine(open_store(server.url(db)), clock=Clock(dt.date(2025, 12, 31)))
    engine.ingest(next(batches(tx.iloc[:200], ev.iloc[:200], 400)))
    before, meta = engine.store.counts(), engine.store.meta().to_json()
    stored = engine.store.customers(tx["customer_id"].iloc[:400])

    def broken(after, before, meta):
        raise RuntimeError("scoring failed")

    with pytest.raises(RuntimeError, match="scoring failed"):
        engine.store.apply(next(batches(tx.iloc[200:400], ev.iloc[200:400], 400)), broken)
    assert engine.store.counts() == before and engine.store.meta().to_json() == meta
    same_entries(engine.store.customers(tx["customer_id"].iloc[:400]), stored)
    done = engine.ingest(next(batches(tx.iloc[200:400], ev.iloc[200:400], 400)))  # the retry applies it
    assert done.applied == 400 and done.duplicates == 0


def crossing_everyone(after, before, meta):
    """A materialise that raises one trigger per customer and version (as the engine's keys are)."""
    computed = {cid: Materialised(None, 1, 0.9, "at_risk") for cid in after}
    triggers = [{"trigger_key": f"{cid}:churn_probability:{c.version}", "customer_id": cid, "kind": "churn_probability",
                 "old": 0.1, "new": 0.9, "as_of": AS_OF, "churn_probability": 0.9, "lifecycle_stage": "at_risk",
                 "incentive": None, "expected_net_value": 1.25} for cid, c in after.items()]
    return computed, triggers


def fixed_keys(after, before, meta):
    """A materialise whose triggers repeat the same keys however often it runs."""
    computed, triggers = crossing_everyone(after, before, meta)
    for t in triggers:
        t["trigger_key"] = f"{t['customer_id']}:fixed"
    return computed, triggers


def test_triggers_are_written_once_per_key_when_a_batch_is_applied_twice_or_by_two_stores_at_once(server, db):
    rows = [{"event_id": f"p{i}", "customer_id": f"c{i % 40}", "timestamp": "2025-06-01", "amount": 5.0}
            for i in range(200)]
    batch = parse_batch(rows, [])
    stores = [open_store(server.url(db)) for _ in range(4)]
    answers = []
    go = threading.Barrier(len(stores))

    def run(store):
        go.wait()
        answers.append(store.apply(batch, crossing_everyone))

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.applied for a in answers) == [0, 0, 0, 200]  # one store applied it, the others found it applied
    assert sum(a.triggers for a in answers) == 40 and sorted(a.duplicates for a in answers) == [0, 200, 200, 200]
    assert stores[0].apply(batch, crossing_everyone).triggers == 0  # applied twice: no second trigger
    assert stores[0].counts() == {"customers": 40, "events": 200, "triggers": 40}

    # recomputing without new rows (a sweep) in two stores at once: a key already written is never written again
    empty = parse_batch([], [])
    ids = [f"c{i}" for i in range(40)]
    written = []
    go = threading.Barrier(2)

    def sweep(store):
        go.wait()
        for _ in range(3):
            written.append(store.apply(empty, fixed_keys, touch=ids).triggers)

    threads = [threading.Thread(target=sweep, args=(s,)) for s in stores[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(written) == 40 and stores[0].counts()["triggers"] == 80
    out = stores[0].triggers(limit=1000)
    assert len(out) == 80 and len({(t["customer_id"], t["created_at"], t["id"]) for t in out}) == 80
    first = out[0]
    assert set(first) == {"id", "customer_id", "kind", "old", "new", "as_of", "churn_probability",
                          "lifecycle_stage", "incentive", "expected_net_value", "created_at"}
    assert first["old"] == "0.1" and first["churn_probability"] == 0.9 and first["incentive"] is None
    assert stores[0].triggers(after=out[9]["id"], limit=5) == out[10:15]
    assert stores[0].customers(["c1"])["c1"].version == 7  # one batch + six sweeps


def test_an_unreachable_redis_is_one_line_naming_the_url_and_exit_2(tmp_path):
    from conftest_service import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(app, ["online", "status", "--online-store", url])
    assert result.exit_code == 2 and url in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["stream", "--redis", url, "--no-models", "--online-store",
                                 f"sqlite:///{tmp_path / 'o.db'}", "--max-idle-s", "1"])
    assert result.exit_code == 2 and f"--redis {url}: cannot be reached" in result.output
    assert len(result.stderr.strip().splitlines()) == 1


# -- the stream ---------------------------------------------------------------------------------------------

def test_a_bad_entry_goes_to_the_dead_letter_stream_is_acknowledged_and_the_rest_is_applied(server, db):
    from serving.online.stream import consume

    client = server.client(db)
    good = [{"kind": "purchase", "event_id": f"p{i}", "customer_id": f"c{i % 7}", "timestamp": "2025-06-01T10:00:00",
             "amount": "12.5", "category": "toys"} for i in range(30)]
    good += [{"event_id": f"e{i}", "customer_id": f"c{i % 5}", "timestamp": "2025-06-02", "event_type": "visit"}
             for i in range(20)]  # no `kind`: an event because it has event_type
    bad = [{"event_id": "x1", "customer_id": "c1", "timestamp": "2025-06-01", "amount": "lots"},
           {"event_id": "x2", "customer_id": "c1", "timestamp": "2025-06-01"},
           {"event_id": "x3", "customer_id": "c2", "timestamp": "someday", "event_type": "visit"},
           {"kind": "refund", "event_id": "x4", "customer_id": "c2", "timestamp": "2025-06-01", "amount": "1"}]
    for entry in [*good[:20], *bad, *good[20:]]:
        client.xadd("in", entry)
    lines = []
    engine = OnlineEngine(open_store(server.url(db, prefix="s:")), clock=Clock(dt.date(2025, 12, 31)))
    done = consume(engine, server.url(db), "in", "g", "one", count=100, block_ms=100, max_idle_s=0.3, log=lines.append)
    assert done.entries == 54 and done.dead == 4 and done.applied == 50 and done.batches == 1
    assert engine.store.counts() == {"customers": 7, "events": 50, "triggers": 0}
    dead = client.xrange("in:dead")
    errors = {f[b"event_id"].decode(): f[b"error"].decode() for _, f in dead}
    assert errors["x1"].startswith("transactions.amount: missing or non-numeric")
    assert "neither `amount`" in errors["x2"] and errors["x3"].startswith("events.timestamp")
    assert "kind: 'refund'" in errors["x4"]
    assert len(lines) == 4 and all("dead-lettered entry" in line and "in:dead" in line for line in lines)
    assert client.xpending("in", "g")["pending"] == 0
    again = consume(engine, server.url(db), "in", "g", "one", count=100, block_ms=100, max_idle_s=0.2)
    assert again.entries == 0  # everything was acknowledged


@pytest.fixture(scope="module")
def parity_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    paths = write_simulation(simulate(customers=1000, seed=11, events=True), root)
    return paths["transactions.parquet"], paths["events.parquet"], root


def online_vs_build(url: str, tx: Path, ev: Path, folder: Path) -> None:
    cli("online", "features", "--online-store", url, "--as-of", AS_OF, "--output", folder / "online.parquet")
    if not (folder / "batch.parquet").exists():
        cli("features", "build", "--transactions", tx, "--events", ev, "--as-of", AS_OF,
            "--output", folder / "batch.parquet")
    online = read_table(folder / "online.parquet", dtype={"customer_id": "str"})
    batch = read_table(folder / "batch.parquet", dtype={"customer_id": "str"})
    assert len(batch) > 500 and batch.shape[1] > 60
    assert_same_features(online, batch)


@pytest.mark.slow
def test_a_stream_replay_into_redis_and_into_sqlite_gives_the_features_of_features_build(server, db, parity_files,
                                                                                       tmp_path):
    tx, ev, root = parity_files
    redis_url = server.url(db)
    out = cli("stream", "publish", "--redis", redis_url, "--stream", "feed", "--transactions", tx, "--events", ev)
    published = int(re.search(r"published ([\d,]+) entries", out)[1].replace(",", ""))
    assert published == len(read_table(tx)) + len(read_table(ev))
    for name, store in (("redis", server.url(db, prefix="online:")), ("sqlite", f"sqlite:///{tmp_path / 'o.db'}")):
        out = cli("stream", "--redis", redis_url, "--stream", "feed", "--group", name, "--online-store", store,
                  "--no-models", "--max-idle-s", "1", "--as-of", AS_OF, "--count", "5000")
        assert f"{published:,} entries" in out and f"{published:,} applied" in out, out
        print(f"{name}: {out.strip()}")
        assert open_store(store).counts()["events"] == published
        online_vs_build(store, tx, ev, tmp_path)
    assert server.client(db).xpending("feed", "redis")["pending"] == 0


# -- faults: consumers killed mid-stream ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def fault_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    paths = write_simulation(simulate(customers=1300, seed=7, events=True), root)
    return paths["transactions.parquet"], paths["events.parquet"], root


def start_consumer(redis_url: str, store: str, consumer: str, *extra) -> subprocess.Popen:
    args = [sys.executable, "-m", "winback.cli", "stream", "--redis", redis_url, "--stream", "feed", "--group", "g",
            "--consumer", consumer, "--online-store", store, "--no-models", "--as-of", AS_OF, "--count", "1000",
            "--block-ms", "200", *extra]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_until(condition, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"consumer exited early ({proc.returncode}):\n{proc.communicate()[1]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def finish(proc: subprocess.Popen, timeout: float = 120.0) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


def pending(client, consumer: str) -> int:
    for row in client.xinfo_consumers("feed", "g"):
        if row["name"].decode() == consumer:
            return int(row["pending"])
    return 0


def publish_faults(server, db, fault_files) -> int:
    tx, ev, _ = fault_files
    out = cli("stream", "publish", "--redis", server.url(db), "--stream", "feed", "--transactions", tx, "--events", ev)
    return int(re.search(r"published ([\d,]+) entries", out)[1].replace(",", ""))


@pytest.mark.slow
def test_a_consumer_killed_mid_stream_and_restarted_under_its_name_loses_and_double_counts_nothing(
        server, db, fault_files, tmp_path):
    tx, ev, _ = fault_files
    published = publish_faults(server, db, fault_files)
    assert published > 90_000
    client = server.client(db)
    store_url = server.url(db, prefix="online:")
    store = open_store(store_url)
    proc = start_consumer(server.url(db), store_url, "worker-1")
    wait_until(lambda: store.counts()["events"] >= 15_000 and pending(client, "worker-1") > 0, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = store.counts()["events"]
    # killed mid-stream; almost always with a batch read but not acknowledged (pending), which the restart
    # re-reads — unless the kill fell between an acknowledgement and the next read
    assert 15_000 <= at_kill < published

    # SIGTERM: the current batch is finished and acknowledged, exit 0
    proc = start_consumer(server.url(db), store_url, "worker-1")
    wait_until(lambda: store.counts()["events"] >= at_kill + 10_000, proc)
    proc.send_signal(signal.SIGTERM)
    finish(proc, 30)
    assert pending(client, "worker-1") == 0 and store.counts()["events"] < published

    out = finish(start_consumer(server.url(db), store_url, "worker-1", "--max-idle-s", "1.5"))
    assert "0 dead-lettered" in out
    assert store.counts()["events"] == published == len(read_table(tx)) + len(read_table(ev))
    assert client.xpending("feed", "g")["pending"] == 0
    online_vs_build(store_url, tx, ev, tmp_path)


@pytest.mark.slow
def test_entries_of_a_killed_consumer_are_claimed_by_another_one_and_counted_once(server, db, fault_files, tmp_path):
    tx, ev, _ = fault_files
    published = publish_faults(server, db, fault_files)
    client = server.client(db)
    store_url = f"sqlite:///{tmp_path / 'o.db'}"
    store = SQLiteStore(tmp_path / "o.db")
    proc = start_consumer(server.url(db), store_url, "dead-one")
    wait_until(lambda: store.counts()["events"] >= 15_000 and pending(client, "dead-one") > 0, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = pending(client, "dead-one")
    assert left > 0 and store.counts()["events"] < published

    out = finish(start_consumer(server.url(db), store_url, "heir", "--max-idle-s", "1.5", "--min-idle-ms", "100"))
    assert pending(client, "dead-one") == 0 and client.xpending("feed", "g")["pending"] == 0
    assert store.counts()["events"] == published
    entries = int(re.search(r"([\d,]+) entries", out)[1].replace(",", ""))
    assert entries >= published - 15_000  # the heir read the claimed entries and the rest
    online_vs_build(store_url, tx, ev, tmp_path)
