"""Tables in and out: CSV or Parquet chosen by the file extension, outputs written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from features.errors import DataError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
PROVENANCE_KEY = b"winback"


def table_format(path: str | os.PathLike) -> str:
    """'csv' or 'parquet' from the extension; anything else is a DataError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet")
    return FORMATS[suffix]


def read_table(path: str | os.PathLike, **csv_kwargs) -> pd.DataFrame:
    """Read a CSV or Parquet file; a missing or empty file is a DataError naming it."""
    kind = table_format(path)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: file not found")
    if p.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        if kind == "csv":
            return pd.read_csv(p, **csv_kwargs)
        return pd.read_parquet(p)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read {kind}: {exc}") from exc


def _publish(tmp: str | os.PathLike, target: Path) -> None:
    """Give the finished temporary file the mode a plain `open()` would (0666 less the umask; mkstemp makes
    0600), then rename it over the target."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, target)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file (a JSON summary) through a temporary file beside it and a rename."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        _publish(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_table(df: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> Path:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    kind = table_format(path)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        if kind == "csv":
            df.to_csv(tmp, index=index)
        else:
            df.to_parquet(tmp, index=index)
        _publish(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


class AtomicTableWriter:
    """Append chunks to one output table, published by rename only when `close()` succeeds.

    Used by batch scoring so that millions of rows never sit in memory at once. `metadata` (JSON-able) is
    stored in a Parquet file's schema under the key `winback` (what wrote it: model, run, cutoff; read it back
    with `read_provenance`); CSV has no place for it.
    """

    def __init__(self, path: str | os.PathLike, metadata: dict | None = None):
        self.path = Path(path)
        self.kind = table_format(path)
        self.metadata = metadata
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._writer = None
        self._wrote_header = False

    def write(self, chunk: pd.DataFrame) -> None:
        if self.kind == "csv":
            chunk.to_csv(self._tmp, mode="a", header=not self._wrote_header, index=False)
            self._wrote_header = True
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(chunk, preserve_index=False)
        if self._writer is None:
            schema = table.schema
            if self.metadata is not None:
                schema = schema.with_metadata({**(schema.metadata or {}), PROVENANCE_KEY: _json(self.metadata)})
            self._writer = pq.ParquetWriter(self._tmp, schema)
        self._writer.write_table(table.cast(self._writer.schema))

    def close(self) -> Path:
        if self._writer is not None:
            self._writer.close()
        _publish(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def _json(metadata: dict) -> bytes:
    import json

    return json.dumps(metadata, default=str, sort_keys=True).encode()


def read_provenance(path: str | os.PathLike) -> dict | None:
    """What `AtomicTableWriter(metadata=…)` stored in a Parquet file (model, run id, cutoff), else None."""
    if table_format(path) != "parquet":
        return None
    import json

    import pyarrow.parquet as pq

    stored = (pq.read_schema(path).metadata or {}).get(PROVENANCE_KEY)
    return None if stored is None else json.loads(stored)
