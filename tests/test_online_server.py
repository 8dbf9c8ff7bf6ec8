"""`winback serve --online-store` as a real server (two workers sharing one SQLite store): a file loaded with
`winback online load` answers `/score` by id as `winback features build` features do, and an event posted to
either worker shows in the next answer of both."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from conftest_service import CHURN_FEATURES, REPO, free_port, service_env, wait_ready, winback

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.xdist_group("online_server")]
AS_OF = "2025-06-30"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """Simulated purchases up to AS_OF, the fixture models trained on their features and packaged into a temp
    BentoML home, and the batch features of the same file."""
    root = tmp_path_factory.mktemp("online-deployment")
    env = service_env(root / "bentoml")
    code = (
        "import pathlib, conftest_service as cs\n"
        "from features import build_features\n"
        "from features.simulate import simulate\n"
        f"root = pathlib.Path({str(root)!r})\n"
        "sim = simulate(customers=400, seed=4)\n"
        f"tx = sim.transactions[sim.transactions['timestamp'] <= {AS_OF!r}].reset_index(drop=True)\n"
        "tx.to_parquet(root / 'tx.parquet')\n"
        f"table = build_features(tx, {AS_OF!r}).reset_index()[['customer_id', *cs.CHURN_FEATURES]]\n"
        "cs.write_models(root, table)\n")
    made = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                          env=env | {"PYTHONPATH": f"{REPO / 'tests'}:{REPO}"})
    assert made.returncode == 0, made.stderr[-2000:]
    packaged = winback("package", "--churn-model", str(root / "churn_model"), "--uplift-model",
                       str(root / "uplift_model"), env=env)
    assert packaged.returncode == 0, packaged.stderr[-2000:]
    built = winback("features", "build", "--transactions", str(root / "tx.parquet"), "--as-of", AS_OF,
                    "--output", str(root / "features.parquet"), env=env)
    assert built.returncode == 0, built.stderr[-2000:]
    return {"root": root, "env": env, "features": pd.read_parquet(root / "features.parquet")}


def start_server(deployment, store: str, *extra: str):
    port = free_port()
    log = open(deployment["root"] / f"server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "winback.cli", "serve", "--port", str(port), "--workers", "2",
                             "--online-store", store, "--as-of", AS_OF, *extra],
                            cwd=deployment["root"], env=deployment["env"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc)
    return proc, url, log


def inline(features: pd.DataFrame, cid: str) -> dict:
    row = features.set_index("customer_id").loc[cid, CHURN_FEATURES]
    values = {k: (None if pd.isna(v) else float(v) if not isinstance(v, str) else v) for k, v in row.items()}
    return {"customers": [{"customer_id": cid, "features": values}]}


def test_served_online_store_answers_like_batch_features_and_follows_every_event(deployment):
    root = deployment["root"]
    store = "sqlite:///online.db"  # relative: taken from the directory `winback serve` runs in
    loaded = winback("online", "load", "--transactions", str(root / "tx.parquet"), "--online-store",
                     f"sqlite:///{root / 'online.db'}", "--as-of", AS_OF, env=deployment["env"])
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    proc, url, log = start_server(deployment, store)
    try:
        features = deployment["features"]
        ids = features["customer_id"].tolist()[:40]
        with httpx.Client(base_url=url, timeout=30) as client:
            for cid in ids:
                by_id = client.post("/score", json={"customers": [{"customer_id": cid}]})
                assert by_id.status_code == 200, by_id.text
                given = client.post("/score", json=inline(features, cid)).json()["scores"][0]
                assert by_id.json()["scores"][0]["churn_probability"] == pytest.approx(given["churn_probability"],
                                                                                       abs=1e-12)
                assert by_id.json()["scores"][0]["lifecycle_stage"] == given["lifecycle_stage"]
            cid = features.sort_values("recency_days")["customer_id"].iloc[-1]  # the longest silent
            before = client.post("/score", json={"customers": [{"customer_id": cid}]}).json()["scores"][0]
            posted = client.post("/events", json={"transactions": [
                {"event_id": "srv-1", "customer_id": cid, "timestamp": AS_OF, "amount": 75.0}]})
            assert posted.status_code == 200 and posted.json()["applied"] == 1
            answers = [client.post("/score", json={"customers": [{"customer_id": cid}]}).json()["scores"][0]
                       for _ in range(8)]  # over both workers' connections
            assert all(a == answers[0] for a in answers) and answers[0] != before
            assert answers[0]["churn_probability"] < before["churn_probability"]
            info = client.get("/model-info").json()
            assert info["feature_snapshot"].endswith("online.db") and info["snapshot_customers"] == len(features)
            status = winback("online", "status", "--online-store", f"sqlite:///{root / 'online.db'}",
                             env=deployment["env"])
            assert f"{len(features):,} customers" in status.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.close()


def test_serve_refuses_online_flags_that_cannot_work_in_one_line(deployment):
    env = deployment["env"]
    missing = winback("serve", "--online-store", "sqlite:///nowhere/at/all.db", env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    alone = winback("serve", "--as-of", AS_OF, env=env)
    assert alone.returncode == 2 and "--as-of: only with --online-store" in alone.stderr
    both = winback("serve", "--online-store", "sqlite:///o.db", "--features", str(deployment["root"] / "tx.parquet"),
                   env=env)
    assert both.returncode == 2 and "keep one" in both.stderr


def test_with_redis_down_the_server_answers_from_its_last_state_and_says_degraded(deployment):
    import redis_server

    if redis_server.missing() is not None:
        pytest.skip(redis_server.missing())
    root, env = deployment["root"], deployment["env"]
    features = deployment["features"]
    with redis_server.throwaway_redis() as redis:
        url = redis.url(prefix="srv:")
        # the file replayed through a Redis Stream into the Redis store, as a live feed would deliver it
        published = winback("stream", "publish", "--redis", redis.url(), "--stream", "feed", "--transactions",
                            str(root / "tx.parquet"), env=env)
        assert published.returncode == 0, published.stderr[-2000:]
        consumed = winback("stream", "--redis", redis.url(), "--stream", "feed", "--online-store", url,
                           "--no-models", "--max-idle-s", "1", "--as-of", AS_OF, env=env)
        assert consumed.returncode == 0, consumed.stderr[-2000:]
        proc, base, log = start_server(deployment, url, "--workers", "1")
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                seen = features["customer_id"].tolist()[:5]
                before = {cid: client.post("/score", json={"customers": [{"customer_id": cid}]}).json()
                          for cid in seen}
                for cid in seen:  # the stream's state scores as the batch features of the same file do
                    given = client.post("/score", json=inline(features, cid)).json()
                    assert before[cid]["scores"][0]["churn_probability"] == pytest.approx(
                        given["scores"][0]["churn_probability"], abs=1e-12)
                redis.process.terminate()
                redis.process.wait(timeout=10)
                after = {cid: client.post("/score", json={"customers": [{"customer_id": cid}]}) for cid in seen}
                assert all(a.status_code == 200 and a.json() == before[cid] for cid, a in after.items())
                never = client.post("/score", json={"customers": [{"customer_id": features["customer_id"].iloc[-1]}]})
                assert never.status_code == 503 and "unreachable" in never.json()["error"]
                ready = client.get("/readyz")
                assert ready.status_code == 200 and ready.text.startswith("degraded: online store")
                posted = client.post("/events", json={"transactions": [
                    {"event_id": "x1", "customer_id": seen[0], "timestamp": AS_OF, "amount": 5.0}]})
                assert posted.status_code == 503 and "nothing applied" in posted.json()["error"]
                # Redis back (empty: this one keeps nothing on disk): the next probe finds it and says so
                again = subprocess.Popen(["redis-server", "--port", str(redis.port), "--bind", "127.0.0.1", "--save",
                                          "", "--appendonly", "no", "--dir", str(root)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    import time

                    deadline = time.monotonic() + 20
                    while client.get("/readyz").text.startswith("degraded") and time.monotonic() < deadline:
                        time.sleep(0.3)
                    assert not client.get("/readyz").text.startswith("degraded")
                finally:
                    again.terminate()
                    again.wait(timeout=10)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()
        text = (root / f"server-{base.rsplit(':', 1)[1]}.log").read_text()
        assert text.count("answering from the last state") == 1 and "reachable again" in text
