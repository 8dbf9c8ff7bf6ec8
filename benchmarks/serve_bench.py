"""The online service as users see it: `winback serve` loaded with `hey`, beside the framework's ceiling
and `mlflow models serve` of the same churn model.

Everything is started the way README starts it and loaded by a standard load generator, `hey`
(`apt-get install -y hey`), at 8 connections on this machine:

- a hello-world BentoML service with the same request schema and worker count (`hello_service.py`):
  the framework's ceiling here;
- `winback serve --port P --features F` (README's command; `--no-access-log` with `--access-log off`);
- `mlflow models serve -m models:/winback-churn@champion --workers 2 --env-manager local`.

Cases: single-customer `/recommend` with every feature inline, the same looked up by id, `/score`
inline, MLflow `/invocations` with one row, and `/recommend` with 1,000 customers looked up by id
(customers per second). Each case: a 3 s warm-up, then `--repeats` runs of `--seconds`; the median
run is reported with its rps, p50, p99 and errors (non-200 answers and connection errors), and the
ratios to the ceiling and to MLflow. `--stability 60` adds one long `/recommend` run and reports the
throughput of its first and last 10 s and each worker's memory (RSS) before and after it.
Needs the packaged models and the registry of `make demo`:

    .venv/bin/python benchmarks/serve_bench.py --features demo/features.parquet --seconds 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, path: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server on port {port} not ready after {timeout:.0f}s; see {log}")


def start(argv: list[str], env: dict, log: Path, cwd: Path = REPO) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # what a user does; `winback serve` stops its whole server
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # mlflow's gunicorn/uvicorn children, if any are left
    except ProcessLookupError:
        pass


def hey(url: str, body: Path, seconds: float, connections: int, csv: bool = False) -> str:
    argv = ["hey", "-z", f"{seconds}s", "-c", str(connections), "-m", "POST", "-T", "application/json",
            "-D", str(body), *(["-o", "csv"] if csv else []), url]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def parse_hey(text: str) -> dict:
    """rps, p50 / p99 in ms and errors (answers other than 200, plus hey's error lines) of a hey summary."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = float(re.search(r"50% in ([\d.]+) secs", text).group(1)) * 1000
    p99 = float(re.search(r"99% in ([\d.]+) secs", text).group(1)) * 1000
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    errors = sum(n for code, n in statuses.items() if code != 200)
    if "Error distribution:" in text:  # connection errors, timeouts: "  [count]\tmessage"
        errors += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", text.split("Error distribution:")[1], flags=re.M))
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


def measure(url: str, body: Path, seconds: float, repeats: int, connections: int) -> dict:
    hey(url, body, 3, connections)  # warm-up
    runs = [parse_hey(hey(url, body, seconds, connections)) for _ in range(repeats)]
    median = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    return {**median, "runs_rps": [round(r["rps"]) for r in runs], "errors": sum(r["errors"] for r in runs)}


def worker_rss(server_pid: int) -> list[float]:
    """Resident memory (MB) of each BentoML worker under `server_pid`."""
    import psutil

    children = psutil.Process(server_pid).children(recursive=True)
    return [p.memory_info().rss / 2**20 for p in children if "_bentoml_impl.worker" in " ".join(p.cmdline())]


def stability(url: str, body: Path, seconds: float, connections: int, server_pid: int) -> dict:
    hey(url, body, 3, connections)
    rss_before = worker_rss(server_pid)
    frame = pd.read_csv(pd.io.common.StringIO(hey(url, body, seconds, connections, csv=True)))
    rss_after = worker_rss(server_pid)
    first = (frame["offset"] < 10).sum() / 10
    last = (frame["offset"] >= frame["offset"].max() - 10).sum() / 10
    return {"seconds": seconds, "first_10s_rps": first, "last_10s_rps": last, "rss_before_mb": rss_before,
            "rss_after_mb": rss_after, "errors": int((frame["status-code"] != 200).sum())}


def jsonable(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value if isinstance(value, (int, float, bool)) else str(value)


def write_bodies(features: Path, folder: Path, churn_columns: list[str], seed: int = 0) -> dict[str, Path]:
    table = pd.read_parquet(features)
    if "customer_id" not in table.columns:
        table = table.reset_index()
    row = table.sample(n=1, random_state=seed).iloc[0]
    inline = {c: jsonable(row[c]) for c in table.columns if c != "customer_id"}
    cid = str(row["customer_id"])
    ids = table["customer_id"].astype(str).sample(n=min(1000, len(table)), random_state=seed).tolist()
    bodies = {
        "inline": {"customers": [{"customer_id": cid, "features": inline}]},
        "by_id": {"customers": [{"customer_id": cid}]},
        "by_id_1000": {"customers": [{"customer_id": i} for i in ids]},
        "mlflow": {"dataframe_split": {"columns": churn_columns, "data": [[inline[c] for c in churn_columns]]}},
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(body))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True, help="feature table (winback features build)")
    parser.add_argument("--churn-model", default="models:/winback-churn@champion")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--access-log", choices=["on", "off"], default="on",
                        help="BentoML access log of both BentoML services (on: as README starts it)")
    parser.add_argument("--stability", type=float, default=0, help="seconds of one long /recommend run (0: none)")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey not found: apt-get install -y hey")

    from serving.runtime.churn import load_churn_runtime

    churn_columns = load_churn_runtime(args.churn_model).feature_names
    folder = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    bodies = write_bodies(args.features, folder, churn_columns)
    (folder / "hello_service.py").write_text((REPO / "benchmarks" / "hello_service.py").read_text())
    env = dict(os.environ, BENTOML_DO_NOT_TRACK="true", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("OMP_NUM_THREADS", None)  # measure what users get without exporting anything
    log_flag = [] if args.access_log == "on" else ["--no-access-log"]
    hello_env = dict(env) if args.access_log == "on" else \
        dict(env, BENTOML_CONFIG_OPTIONS="services.hello.logging.access.enabled=false")
    c = args.connections
    results: dict[str, dict] = {}
    stable = None

    def run(name, port, path, body):
        results[name] = measure(f"http://127.0.0.1:{port}{path}", bodies[body], args.seconds, args.repeats, c)
        print(f"  {name}: {results[name]['runs_rps']} rps", file=sys.stderr)

    port = free_port()
    log = args.log_dir / "serve_bench_hello.log"
    hello = start([str(BIN / "bentoml"), "serve", "hello_service:Hello", "--port", str(port)], hello_env, log, folder)
    try:
        wait_ready(port, "/readyz", hello, log)
        run("hello-world BentoML /recommend (ceiling)", port, "/recommend", "inline")
    finally:
        stop(hello)

    port = free_port()
    log = args.log_dir / "serve_bench_winback.log"
    server = start([str(BIN / "winback"), "serve", "--port", str(port), "--features", str(args.features.resolve()),
                    *log_flag], env, log)
    try:
        wait_ready(port, "/readyz", server, log)
        run("winback /recommend, features inline", port, "/recommend", "inline")
        run("winback /recommend, by id", port, "/recommend", "by_id")
        run("winback /score, features inline", port, "/score", "inline")
        run("winback /recommend, 1,000 by id", port, "/recommend", "by_id_1000")
        if args.stability:
            stable = stability(f"http://127.0.0.1:{port}/recommend", bodies["inline"], args.stability, c, server.pid)
    finally:
        stop(server)

    if not args.skip_mlflow:
        port = free_port()
        log = args.log_dir / "serve_bench_mlflow.log"
        mlflow = start([str(BIN / "mlflow"), "models", "serve", "--env-manager", "local", "-m", args.churn_model,
                        "-h", "127.0.0.1", "-p", str(port), "--workers", "2"], env, log)
        try:
            wait_ready(port, "/ping", mlflow, log)
            run("mlflow models serve /invocations", port, "/invocations", "mlflow")
        finally:
            stop(mlflow)

    print(f"# {' '.join(sys.argv)}")
    print(f"# {date.today()}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"hey -c {c}, {args.seconds:.0f} s runs after a 3 s warm-up, median of {args.repeats}; "
          f"access log {args.access_log}; 2 workers per server; OMP_NUM_THREADS unset")
    print("| case | rps (median) | runs | p50 ms | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['rps']:,.0f} | {' / '.join(f'{x:,}' for x in r['runs_rps'])} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['errors']} |")
    big = results["winback /recommend, 1,000 by id"]
    print(f"\n/recommend with 1,000 customers by id: {big['rps'] * 1000:,.0f} customers/s")
    ceiling = results["hello-world BentoML /recommend (ceiling)"]["rps"]
    inline = results["winback /recommend, features inline"]["rps"]
    print(f"/recommend inline / hello-world ceiling: {inline / ceiling:.2f}")
    print(f"/recommend by id / inline: {results['winback /recommend, by id']['rps'] / inline:.2f}")
    if "mlflow models serve /invocations" in results:
        print(f"/recommend inline / mlflow models serve: {inline / results['mlflow models serve /invocations']['rps']:.1f}x")
    if stable:
        print(f"stability, {stable['seconds']:.0f} s of /recommend: first 10 s {stable['first_10s_rps']:,.0f} rps, "
              f"last 10 s {stable['last_10s_rps']:,.0f} rps ({stable['last_10s_rps'] / stable['first_10s_rps']:.2f}), "
              f"errors {stable['errors']}; worker RSS MB "
              f"{[round(x) for x in stable['rss_before_mb']]} → {[round(x) for x in stable['rss_after_mb']]}")


if __name__ == "__main__":
    main()
