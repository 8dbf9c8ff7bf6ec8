"""End to end: MLflow registry → `winback package` → `winback serve` as a real subprocess → HTTP.

One server per session (token on, feature snapshot loaded, one worker), everything under a temp dir:
the MLflow database, BENTOML_HOME, the feature snapshot. Nothing touches ~/bentoml.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest_service import (CATALOG, REPO, feature_table, free_port, service_env, wait_ready, winback)

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.xdist_group("service_server")]
TOKEN = "test-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def deployment(tmp_path_factory):
    """Models registered in a temp MLflow registry and packaged into a temp BentoML home."""
    root = tmp_path_factory.mktemp("deployment")
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    env = service_env(root / "bentoml", MLFLOW_TRACKING_URI=tracking)
    code = (f"import json, pathlib, conftest_service as cs; "
            f"print(json.dumps(cs.register_models(pathlib.Path({str(root)!r}), {tracking!r})))")
    registered = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                                env=env | {"PYTHONPATH": str(REPO / "tests")})
    assert registered.returncode == 0, registered.stderr[-2000:]
    run_ids = json.loads(registered.stdout.strip().splitlines()[-1])
    packaged = winback("package", env=env)  # defaults: models:/winback-{churn,uplift}@champion
    assert packaged.returncode == 0, packaged.stderr[-2000:]
    table = feature_table()
    table.to_parquet(root / "features.parquet")
    return {"root": root, "env": env, "run_ids": run_ids, "package_output": packaged.stdout, "table": table}


@pytest.fixture(scope="session")
def server(deployment):
    port = free_port()
    env = deployment["env"] | {"WINBACK_API_TOKEN": TOKEN}
    log = open(deployment["root"] / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "winback.cli", "serve", "--port", str(port), "--workers", "1",
                             "--features", str(deployment["root"] / "features.parquet")],
                            cwd=deployment["root"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
            yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def body(table, rows, **extra):
    from test_service_online import record

    return {"customers": [{"customer_id": table["customer_id"].iloc[i], "features": record(table, i)} for i in rows],
            **extra}


def test_package_labels_models_with_registry_version_and_run_id(deployment):
    out = deployment["package_output"]
    assert f"run {deployment['run_ids']['winback-churn']}" in out
    assert f"run {deployment['run_ids']['winback-uplift']}" in out
    assert out.count("registry version 1") == 2


def test_model_info_reports_the_packaged_champions(server, deployment):
    info = server.get("/model-info").json()
    assert [(m["name"], m["registry_version"], m["mlflow_run_id"], m["model_uri"]) for m in info["models"]] == [
        ("winback-churn", "1", deployment["run_ids"]["winback-churn"], "models:/winback-churn@champion"),
        ("winback-uplift", "1", deployment["run_ids"]["winback-uplift"], "models:/winback-uplift@champion")]
    assert info["arms"] == CATALOG.arms
    assert info["snapshot_customers"] == len(deployment["table"])


def test_score_and_recommend_over_http_equal_batch_scoring(server, deployment, tmp_path):
    """Online = offline: the same features through the server and through `winback score` / `recommend` code."""
    import pandas as pd

    from serving.batch.recommend import recommend
    from serving.batch.score import score_table
    from serving.api.model_store import CHURN, UPLIFT, load_runtime

    table = deployment["table"]
    logged = deployment["root"] / "logged"
    churn, uplift = load_runtime(CHURN, logged / "winback-churn"), load_runtime(UPLIFT, logged / "winback-uplift")
    table.to_parquet(tmp_path / "features.parquet")
    score_table(churn, table, tmp_path / "scores.parquet")
    recommend(uplift, tmp_path / "features.parquet", tmp_path / "recs.parquet")
    batch = pd.read_parquet(tmp_path / "scores.parquet").set_index("customer_id")
    batch_recs = pd.read_parquet(tmp_path / "recs.parquet").set_index("customer_id")

    rows = list(range(0, 400, 9))
    by_value = body(table, rows)
    by_id = {"customers": [{"customer_id": c["customer_id"]} for c in by_value["customers"]]}
    for request in (by_value, by_id):
        scores = server.post("/score", json=request).json()["scores"]
        recs = server.post("/recommend", json=request).json()["recommendations"]
        assert [s["customer_id"] for s in scores] == [f"c{i}" for i in rows]
        for s, r in zip(scores, recs):
            assert s["churn_probability"] == batch.loc[s["customer_id"], "churn_probability"]
            assert s["risk_tier"] == batch.loc[s["customer_id"], "risk_tier"]
            assert r["churn_probability"] == s["churn_probability"]
            assert r["incentive"] == batch_recs.loc[r["customer_id"], "incentive"]
            assert r["expected_net_value"] == batch_recs.loc[r["customer_id"], "expected_net_value"]


def test_unknown_id_is_a_404_naming_it(server):
    response = server.post("/score", json={"customers": [{"customer_id": "c1"}, {"customer_id": "ghost-7"}]})
    assert response.status_code == 404
    assert response.json() == {"error": "customers[1].customer_id: unknown customer 'ghost-7' "
                                        "(not in the feature snapshot); send its features instead",
                               "field": "customers[1].customer_id"}


@pytest.mark.parametrize("route", ["/score", "/recommend"])
def test_every_bad_input_is_a_4xx_naming_the_field(server, deployment, route):
    from test_service_asgi import BAD

    for case, (breakit, status, text) in BAD.items():
        if case == "lookup without snapshot":
            continue  # this server has a snapshot
        request = body(deployment["table"], [0])
        breakit(request)
        response = server.post(route, json=request)
        assert (response.status_code, case) == (status, case)
        assert text in response.text, case


def test_token_is_required_except_for_health_checks_and_metrics(server):
    bare = httpx.Client(base_url=str(server.base_url), timeout=10)
    assert bare.post("/score", json={"customers": [{"customer_id": "c1"}]}).status_code == 401
    assert bare.get("/model-info").status_code == 401
    assert bare.get("/livez").status_code == 200
    assert bare.get("/readyz").status_code == 200
    assert bare.get("/metrics").status_code == 200


def test_metrics_latency_buckets_resolve_below_5_ms(server):
    server.post("/recommend", json={"customers": [{"customer_id": "c1"}]})
    metrics = server.get("/metrics").text
    buckets = [line for line in metrics.splitlines()
               if line.startswith("bentoml_service_request_duration_seconds_bucket") and 'endpoint="/recommend"' in line]
    bounds = {line.split('le="')[1].split('"')[0] for line in buckets}
    assert {"0.0005", "0.001", "0.002", "0.003", "0.004", "0.005"} <= bounds


def test_schemathesis_all_checks_pass_against_the_openapi_document(server):
    """The outside check, as a user runs it: every schemathesis check (status codes and bodies as documented,
    schema-valid requests accepted, invalid ones refused, auth enforced), seeded so CI is repeatable."""
    url = str(server.base_url)
    run = subprocess.run([str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/docs.json",
                          "--checks", "all", "--max-examples", "60", "--seed", "1", "-H", f"Authorization: Bearer {TOKEN}",
                          "--no-color"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:]
    assert "No issues found" in run.stdout
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert tested and int(tested.group(1)) >= 3  # /score, /recommend, /model-info (and BentoML's health routes)


def test_server_without_token_needs_no_header(deployment):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "winback.cli", "serve", "--port", str(port), "--workers", "1"],
                            cwd=deployment["root"], env=deployment["env"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        response = httpx.post(f"{url}/score", json=body(deployment["table"], [0]), timeout=30)
        assert response.status_code == 200
        assert response.json()["scores"][0]["customer_id"] == "c0"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_service_refuses_to_start_without_models_saying_how_to_create_them(tmp_path):
    env = service_env(tmp_path / "empty-bentoml")
    via_cli = winback("serve", "--port", str(free_port()), env=env)
    assert via_cli.returncode == 2
    assert "model 'winback-churn' is not in the BentoML model store" in via_cli.stderr
    assert "winback package" in via_cli.stderr
    direct = subprocess.run([sys.executable, "-m", "bentoml", "serve", "serving.service:Winback", "--port",
                             str(free_port())], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert direct.returncode != 0
    assert "model 'winback-churn' is not in the BentoML model store" in direct.stderr
    assert "`winback package`" in direct.stderr


def test_bentoml_build_pins_the_packaged_models(deployment):
    build = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], cwd=REPO,
                           env=deployment["env"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    import yaml

    bentos = list((deployment["root"] / "bentoml" / "bentos" / "winback").glob("*/bento.yaml"))
    assert len(bentos) == 1
    manifest = yaml.safe_load(bentos[0].read_text())
    models = sorted(m["tag"].split(":")[0] for m in manifest["models"])
    assert models == ["winback-churn", "winback-uplift"]
    assert all(":" in m["tag"] and not m["tag"].endswith(":latest") for m in manifest["models"])
    assert manifest["services"][0]["config"]["workers"] == 2
    # every project file the service imports is inside the Bento (bentofile.yaml `include`)
    code = ("import sys, json, pathlib, serving.service; root = pathlib.Path(sys.argv[1]); print(json.dumps(sorted("
            "str(pathlib.Path(m.__file__).relative_to(root)) for m in list(sys.modules.values()) if getattr(m, "
            "'__file__', None) and pathlib.Path(m.__file__).is_relative_to(root) and m.__name__.split('.')[0] in "
            "('serving', 'features'))))")
    imported = json.loads(subprocess.run([sys.executable, "-c", code, str(REPO)], cwd=REPO, env=deployment["env"],
                                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    assert "serving/runtime/churn.py" in imported and "serving/api/asgi.py" in imported
    src = bentos[0].parent / "src"
    assert [path for path in imported if not (src / path).is_file()] == []


# -- start and stop, as users run it ---------------------------------------------------------------
def start_serve(deployment, *args, cwd=None, env=None, log=None):
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "winback.cli", "serve", "--port", str(port), *args],
                            cwd=cwd or deployment["root"], env=env or deployment["env"], stdout=out,
                            stderr=subprocess.STDOUT)
    return proc, port


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on `port` (as servers do, with SO_REUSEADDR: the closed client
    connections may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


def test_sigterm_stops_the_whole_server_and_frees_the_port(deployment):
    import psutil

    proc, port = start_serve(deployment, "--workers", "2")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 3  # the BentoML arbiter and its two workers
        with httpx.Client(base_url=url, timeout=10) as keep_alive:  # a client holding a connection open
            assert keep_alive.get("/readyz").status_code == 200
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                                  for p in family):
            time.sleep(0.2)
        left = [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == []
        assert port_is_free(port)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unreadable_snapshot_stops_the_server_with_one_line_naming_file_and_fix(deployment, tmp_path):
    (tmp_path / "feats.parquet").write_text("not a parquet file")
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "winback.cli", "serve", "--port", str(free_port()), "--workers", "2",
                          "--features", "feats.parquet"], cwd=tmp_path, env=deployment["env"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert time.monotonic() - started < 30
    output = (run.stdout + run.stderr).strip().splitlines()
    assert "Traceback" not in run.stdout + run.stderr
    assert len(output) <= 6, output
    assert sum("feats.parquet" in line for line in output) == 1, output  # said once, not once per worker
    last = output[-1]
    assert last.startswith("error: WINBACK_FEATURES=") and str(tmp_path / "feats.parquet") in last
    assert "fix: give --features / WINBACK_FEATURES a table written by `winback features build`" in last


def test_corrupt_model_stops_the_server_with_one_line(deployment, tmp_path):
    home = tmp_path / "bentoml"
    shutil.copytree(deployment["root"] / "bentoml", home)
    for booster in (home / "models" / "winback-churn").rglob("booster.txt"):
        booster.write_text("tree\nthis is not a LightGBM model\n")
    env = deployment["env"] | {"BENTOML_HOME": str(home)}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "winback.cli", "serve", "--port", str(free_port())], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert time.monotonic() - started < 30
    assert "Traceback" not in run.stdout + run.stderr
    assert len((run.stdout + run.stderr).strip().splitlines()) <= 6
    assert "a packaged model cannot be loaded" in run.stderr and "`winback package`" in run.stderr


def test_relative_snapshot_path_and_one_log_line_per_bad_request(deployment, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(deployment["root"] / "features.parquet", elsewhere / "feats.parquet")
    log = tmp_path / "server.log"
    proc, port = start_serve(deployment, "--workers", "1", "--no-access-log", cwd=elsewhere,
                             env=deployment["env"] | {"WINBACK_FEATURES": "feats.parquet"}, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        assert httpx.post(f"{url}/score", json={"customers": [{"customer_id": "c3"}]}).status_code == 200
        before = log.read_text().splitlines()
        bad = {"customers": [{"customer_id": "c3", "features": {"recency_days": [1, 2]}}]}
        assert httpx.post(f"{url}/score", json=bad).status_code == 400
        time.sleep(1)
        new = log.read_text().splitlines()[len(before):]
        assert len(new) == 1, new
        assert "POST /score 400 customers[0].features.recency_days: expected a number" in new[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
