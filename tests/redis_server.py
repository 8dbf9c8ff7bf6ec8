"""A throwaway Redis server for tests: `redis-server` on a free port in a temporary folder, no persistence.

`missing()` says why one cannot be started here (no `redis-server` on PATH, or the `redis` package is not
installed: `pip install -e '.[scale]'`); `throwaway_redis()` starts one, waits until it answers PING, yields
it and stops it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest_service import free_port


def missing() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install -y redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is not installed (pip install -e '.[scale]')"
    return None


@dataclass(frozen=True)
class Server:
    port: int
    root: Path
    process: subprocess.Popen

    def url(self, db: int = 0, prefix: str | None = None) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}" + (f"?prefix={prefix}" if prefix else "")

    def client(self, db: int = 0):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=10)


@contextlib.contextmanager
def throwaway_redis(timeout: float = 20.0) -> Iterator[Server]:
    import redis

    root = Path(tempfile.mkdtemp(prefix="winback-redis-"))
    port = free_port()
    log = open(root / "server.log", "w")
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(root)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{(root / 'server.log').read_text()}") from None
                time.sleep(0.05)
        client.close()
        yield Server(port, root, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
