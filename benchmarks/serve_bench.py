"""Online latency and throughput: this BentoML service vs `mlflow models serve` of the same churn model.

Starts both on 127.0.0.1, sends the same single-customer requests over N keep-alive connections for a
fixed time, and prints requests/s, p50, p99 and errors for BentoML /recommend, BentoML /score and
MLflow /invocations, and the rps ratios. Needs the packaged models (`winback package`) in the BentoML
store and the churn model in the MLflow registry, e.g. after `make demo`:

    .venv/bin/python benchmarks/serve_bench.py --features demo/features.parquet --seconds 20

The load generator is a minimal HTTP/1.1 client (pre-encoded request, one thread per connection),
so its own cost per request stays small next to the servers'; it shares the machine with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


class Connection:
    """One keep-alive HTTP/1.1 connection sending a fixed, pre-encoded request."""

    def __init__(self, port: int, request: bytes):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = request
        self.buffer = b""

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def send(self) -> tuple[int, bytes]:
        self.sock.sendall(self.request)
        head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:])}
        if "content-length" in headers:
            return status, self._read_exactly(int(headers["content-length"]))
        body = b""  # chunked transfer encoding
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._read_until(b"\r\n")
                return status, body
            body += self._read_exactly(size)
            self._read_exactly(2)


def encode_request(path: str, payload: dict, headers: dict[str, str]) -> bytes:
    body = json.dumps(payload).encode()
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def drive(port: int, requests: list[bytes], connections: int, seconds: float) -> dict:
    """Each connection cycles through `requests` for `seconds`; returns rps, p50/p99 ms, errors."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    stop = time.perf_counter() + seconds

    def worker(k: int) -> None:
        conn = Connection(port, b"")
        i = k
        while time.perf_counter() < stop:
            conn.request = requests[i % len(requests)]
            i += 1
            t0 = time.perf_counter()
            try:
                status, _ = conn.send()
            except (OSError, ValueError):
                errors[k] += 1
                conn = Connection(port, b"")
                continue
            latencies[k].append(time.perf_counter() - t0)
            if status != 200:
                errors[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1000
    return {"requests": int(lat.size), "rps": lat.size / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "errors": int(sum(errors))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode}; see its log")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server on port {port} not ready after {timeout:.0f}s")


def start(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def jsonable(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value if isinstance(value, (int, float, bool)) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True, help="feature table (winback features build)")
    parser.add_argument("--churn-model", default="models:/winback-churn@champion")
    parser.add_argument("--uplift-model", default="models:/winback-uplift@champion")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="server workers for both servers")
    parser.add_argument("--customers", type=int, default=200, help="distinct single-customer requests to cycle")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()

    from serving.churn_runtime import load_churn_runtime
    from serving.uplift_runtime import load_uplift_runtime

    churn, uplift = load_churn_runtime(args.churn_model), load_uplift_runtime(args.uplift_model)
    table = pd.read_parquet(args.features).sample(n=args.customers, random_state=0, replace=True)
    columns = churn.feature_names
    union = list(dict.fromkeys([*columns, *uplift.encoder.features_]))  # /recommend needs both models' features
    records = [{c: jsonable(v) for c, v in zip(union, row)} for row in table[union].itertuples(index=False)]
    ids = table["customer_id"].astype(str).tolist()
    token = os.environ.get("WINBACK_API_TOKEN")
    auth = {"Authorization": f"Bearer {token}"} if token else {}

    bento_port, mlflow_port = free_port(), free_port()
    # mlflow runs `uvicorn` through a shell: the virtualenv's bin must be on PATH
    env = dict(os.environ, OMP_NUM_THREADS="1", BENTOML_DO_NOT_TRACK="true",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    bento = start([sys.executable, "-m", "winback.cli", "serve", "--port", str(bento_port), "--host", "127.0.0.1",
                   "--workers", str(args.workers)], env, args.log_dir / "serve_bench_bentoml.log")
    mlflow = start([sys.executable, "-m", "mlflow", "models", "serve", "--env-manager", "local", "-m",
                    args.churn_model, "-h", "127.0.0.1", "-p", str(mlflow_port), "--workers", str(args.workers)],
                   env, args.log_dir / "serve_bench_mlflow.log")
    results = {}
    try:
        wait_ready(bento_port, "/readyz", bento)
        wait_ready(mlflow_port, "/ping", mlflow)
        cases = {
            "bentoml /recommend": (bento_port, [encode_request("/recommend", {"customers": [
                {"customer_id": i, "features": r}]}, auth) for i, r in zip(ids, records)]),
            "bentoml /score": (bento_port, [encode_request("/score", {"customers": [
                {"customer_id": i, "features": r}]}, auth) for i, r in zip(ids, records)]),
            "mlflow /invocations": (mlflow_port, [encode_request("/invocations", {"dataframe_split": {
                "columns": columns, "data": [[r[c] for c in columns]]}}, {}) for r in records]),
        }
        for name, (port, requests) in cases.items():
            drive(port, requests, args.connections, min(3.0, args.seconds))  # warm-up
            results[name] = drive(port, requests, args.connections, args.seconds)
    finally:
        stop(bento)
        stop(mlflow)

    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{args.connections} connections, {args.seconds:.0f} s per case, {args.workers} workers per server")
    print(f"{'case':<22}{'requests':>10}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<22}{r['requests']:>10}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8}")
    base = results["mlflow /invocations"]["rps"]
    for name in ("bentoml /recommend", "bentoml /score"):
        print(f"rps ratio {name} / mlflow /invocations: {results[name]['rps'] / base:.1f}x")


if __name__ == "__main__":
    main()
