"""The online store as users run it: events ingested per second, event → fresh `/score`, and `/score` by id with
the online store beside the same lookups in a static feature snapshot.

Needs `make demo` (its packaged models, transactions and profiles) and `hey` (`apt-get install -y hey`):

    .venv/bin/python benchmarks/online_bench.py --demo demo --repeats 3

1. **Ingestion** (`POST /events`): `winback serve --online-store sqlite:///… --as-of 2025-12-31 --profiles …`
   started as README says; the demo's transactions (with unique event ids) are posted in time order, in
   batches of `--batch` rows, by two client threads (two workers, two cores). Every batch is validated,
   appended to the customers' records, their features rebuilt, scored by the churn model and checked for
   trigger crossings before the answer. Reported: rows applied per second over the whole replay, median of
   `--repeats` replays into fresh stores, for each batch size.
2. **Freshness**: one purchase posted to `/events` for a random customer, then `/score` by id until the
   answer shows it (monetary total grew); the time from sending the event to that answer, `--probes` times;
   p50 / p99.
3. **`/score` by id**: `hey -c 8` on one customer by id against the server with the online store, and against
   `winback serve --features` with the same features as a snapshot (today's static lookup), both servers up
   and their runs alternated (`--repeats` pairs of `--seconds`); the median of the pairs' ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import BIN, REPO, free_port, measure, start, stop, wait_ready  # noqa: E402

AS_OF = "2025-12-31"


def transaction_records(path: Path) -> list[dict]:
    tx = pd.read_parquet(path).sort_values("timestamp", kind="stable").reset_index(drop=True)
    tx = tx.assign(timestamp=tx["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S"),
                   event_id=[f"t{i}" for i in range(len(tx))])
    return json.loads(tx.to_json(orient="records"))


def serve_online(store: str, demo: Path, log: Path, env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = start([str(BIN / "winback"), "serve", "--port", str(port), "--online-store", store, "--as-of", AS_OF,
                  "--profiles", str(demo / "data" / "customers.parquet"), "--no-access-log"], env, log)
    wait_ready(port, "/readyz", proc, log)
    return proc, port


def ingest(port: int, rows: list[dict], batch: int, clients: int = 2) -> dict:
    """Post `rows` in time-ordered batches from `clients` threads; rows applied per second."""
    import httpx

    parts = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    lock, position, applied, errors = threading.Lock(), [0], [0], []

    def work():
        with httpx.Client(timeout=120) as client:
            while True:
                with lock:
                    if position[0] >= len(parts):
                        return
                    part = parts[position[0]]
                    position[0] += 1
                answer = client.post(f"http://127.0.0.1:{port}/events", json={"transactions": part})
                with lock:
                    if answer.status_code != 200:
                        errors.append(answer.text[:200])
                    else:
                        applied[0] += answer.json()["applied"]

    threads = [threading.Thread(target=work) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    return {"rows": len(rows), "applied": applied[0], "seconds": seconds, "rows_per_s": applied[0] / seconds,
            "errors": len(errors), "first_error": errors[0] if errors else None}


def freshness(port: int, ids: list[str], probes: int, seed: int = 0) -> dict:
    import httpx

    rng = np.random.default_rng(seed)
    waits = []
    with httpx.Client(timeout=30) as client:
        for k in range(probes):
            cid = str(rng.choice(ids))
            score = {"customers": [{"customer_id": cid}]}
            before = client.post(f"http://127.0.0.1:{port}/score", json=score).json()["scores"][0]
            event = {"event_id": f"probe-{seed}-{k}", "customer_id": cid, "timestamp": AS_OF, "amount": 50.0}
            began = time.perf_counter()
            assert client.post(f"http://127.0.0.1:{port}/events", json={"transactions": [event]}).status_code == 200
            while True:
                now = client.post(f"http://127.0.0.1:{port}/score", json=score).json()["scores"][0]
                if now != before:
                    break
            waits.append((time.perf_counter() - began) * 1000)
    return {"probes": probes, "p50_ms": float(np.percentile(waits, 50)), "p99_ms": float(np.percentile(waits, 99)),
            "max_ms": float(max(waits))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=REPO / "demo", help="the folder `make demo` wrote")
    parser.add_argument("--batch", default="5000,20000", help="rows per POST /events (comma-separated: each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey not found: apt-get install -y hey")
    demo = args.demo.resolve()
    rows = transaction_records(demo / "data" / "transactions.parquet")
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("OMP_NUM_THREADS", None)
    folder = Path(tempfile.mkdtemp(prefix="online_bench_"))

    replays: dict[int, list[dict]] = {}
    for size in [int(x) for x in args.batch.split(",")]:
        replays[size] = []
        for k in range(args.repeats):
            store = f"sqlite:///{folder / f'replay{size}-{k}.db'}"
            proc, port = serve_online(store, demo, args.log_dir / "online_bench_serve.log", env)
            try:
                replays[size].append(ingest(port, rows, size))
                print(f"  batches of {size:,}, replay {k}: {replays[size][-1]['rows_per_s']:,.0f} rows/s",
                      file=sys.stderr)
            finally:
                stop(proc)
    store = f"sqlite:///{folder / f'replay{size}-0.db'}"  # a loaded store for the read measurements
    ids = sorted({r["customer_id"] for r in rows})
    body = folder / "by_id.json"
    body.write_text(json.dumps({"customers": [{"customer_id": ids[len(ids) // 2]}]}))
    proc, port = serve_online(store, demo, args.log_dir / "online_bench_serve.log", env)
    try:
        fresh = freshness(port, ids, args.probes)
    finally:
        stop(proc)
    features = folder / "features.parquet"
    subprocess.run([str(BIN / "winback"), "online", "features", "--online-store", store, "--as-of", AS_OF,
                    "--profiles", str(demo / "data" / "customers.parquet"), "--output", str(features)], check=True,
                   env=env, capture_output=True)
    # both servers up at once, runs alternated: the machine's speed drifts, a ratio of neighbours does not
    online, online_port = serve_online(store, demo, args.log_dir / "online_bench_serve.log", env)
    snapshot_port = free_port()
    log = args.log_dir / "online_bench_snapshot.log"
    snapshot = start([str(BIN / "winback"), "serve", "--port", str(snapshot_port), "--features", str(features),
                      "--no-access-log"], env, log)
    pairs = []
    try:
        wait_ready(snapshot_port, "/readyz", snapshot, log)
        for k in range(args.repeats):
            a = measure(f"http://127.0.0.1:{online_port}/score", body, args.seconds, 1, args.connections)
            b = measure(f"http://127.0.0.1:{snapshot_port}/score", body, args.seconds, 1, args.connections)
            pairs.append((a, b))
            print(f"  /score by id: online {a['rps']:,.0f} rps, snapshot {b['rps']:,.0f} rps", file=sys.stderr)
    finally:
        stop(online)
        stop(snapshot)
    ratios = [a["rps"] / b["rps"] for a, b in pairs]

    print(f"# {' '.join(sys.argv)}")
    print(f"# {date.today()}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"winback serve, 2 workers, access log off; SQLite online store")
    for size, runs in replays.items():
        median = sorted(runs, key=lambda r: r["rows_per_s"])[len(runs) // 2]
        print(f"ingest: {median['applied']:,} purchase rows of {demo / 'data' / 'transactions.parquet'} posted in "
              f"batches of {size:,} by 2 clients into an empty store: {median['rows_per_s']:,.0f} rows/s (median "
              f"of {len(runs)}: {', '.join(format(r['rows_per_s'], ',.0f') for r in runs)}; errors "
              f"{sum(r['errors'] for r in runs)})")
    print(f"event → fresh /score: p50 {fresh['p50_ms']:.1f} ms, p99 {fresh['p99_ms']:.1f} ms, max "
          f"{fresh['max_ms']:.1f} ms over {fresh['probes']} probes")
    print(f"/score by id, hey -c {args.connections}, {args.seconds:.0f} s runs alternated between the two servers, "
          f"{args.repeats} pairs: online store {statistics.median(a['rps'] for a, _ in pairs):,.0f} rps (runs "
          f"{[round(a['rps']) for a, _ in pairs]}, p99 {statistics.median(a['p99_ms'] for a, _ in pairs):.1f} ms, "
          f"errors {sum(a['errors'] for a, _ in pairs)}); snapshot {statistics.median(b['rps'] for _, b in pairs):,.0f} "
          f"rps (runs {[round(b['rps']) for _, b in pairs]}, errors {sum(b['errors'] for _, b in pairs)}); "
          f"ratio per pair {[round(r, 2) for r in ratios]}, median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
