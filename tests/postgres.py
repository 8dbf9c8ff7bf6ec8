"""A throwaway PostgreSQL cluster for tests: `initdb` + `pg_ctl` on a free port in a temporary folder.

`initdb` refuses to run as root, so as root the cluster belongs to the `postgres` user (the one PostgreSQL's
packages create) and every server command runs through `runuser -u postgres --`. The tools are taken from
PATH or, where Debian/Ubuntu put them, from /usr/lib/postgresql/<version>/bin (newest first).
Authentication is `trust` on 127.0.0.1 and the socket, so URLs carry no password.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest_service import free_port

OWNER = "postgres"


def bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl (None when PostgreSQL is not installed)."""
    candidates = []
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")],
                      reverse=True)
    candidates += [Path(p) for p in versions]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def missing() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if bin_dir() is None:
        return "PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[scale]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OWNER)
        except KeyError:
            return f"running as root and there is no {OWNER!r} user to run initdb as"
    return None


@dataclass(frozen=True)
class Cluster:
    port: int
    root: Path

    def url(self, database: str) -> str:
        """SQLAlchemy URL (MLflow, Optuna) of a database of this cluster."""
        return f"postgresql+psycopg://{OWNER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        """libpq connection string (psycopg.connect) of a database of this cluster."""
        return f"host=127.0.0.1 port={self.port} user={OWNER} dbname={database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, database: str, sql: str, params=()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.dsn(database)) as conn:
            return conn.execute(sql, params).fetchall()


def _as_owner(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", OWNER, "--", *args] if shutil.which("runuser") else \
        ["su", OWNER, "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]


def _run(args: list[str]) -> None:
    done = subprocess.run(_as_owner(args), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def throwaway_cluster(databases: tuple[str, ...] = ("mlflow", "optuna")) -> Iterator[Cluster]:
    """Start a cluster in a new temporary folder, create `databases`, yield it; stop it and delete the folder."""
    tools = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="winback-pg-"))  # in /tmp itself: the owner must be able to reach it
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        user = pwd.getpwnam(OWNER)
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    port = free_port()
    started = False
    try:
        _run([str(tools / "initdb"), "-D", str(data), "-U", OWNER, "--auth=trust", "-E", "UTF8", "--no-sync",
              "--no-instructions"])
        _run([str(tools / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
              f"-p {port} -h 127.0.0.1 -k {sockets} -c fsync=off -c full_page_writes=off", "start"])
        started = True
        cluster = Cluster(port, root)
        for name in databases:
            cluster.create_database(name)
        yield cluster
    finally:
        if started:
            _run([str(tools / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)
