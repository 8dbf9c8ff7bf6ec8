"""Stored feature rows as small binary blobs, and back.

A feature row is kept beside each customer's history so that `/score` by id reads one value instead of
rebuilding the features. JSON of 60 named values costs tens of microseconds each way and a kilobyte per
customer; this layout costs a few:

    b"WBF1" | schema id (u32) | numeric values (float64 × n) | text values

Text values are UTF-8 joined by 0x1F after a b"S", or, when a value itself holds 0x1F or 0x00, a JSON list
after a b"J"

The schema — which columns, in which order, numeric or text — is shared by every row computed together, so
it is stored once in the store's meta (`StoreMeta.schemas`, keyed by the id, a CRC of the names) rather than
in every blob. Missing numbers are NaN, missing text is 0x00; both come back as None, numbers as floats.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pandas as pd

MAGIC = b"WBF1"
_HEAD = struct.Struct("<4sI")
_SEP, _MISSING = "\x1f", "\x00"  # never part of a category, channel or segment name


def schema_of(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(numeric columns, text columns) of a feature frame, in frame order."""
    numeric, text = [], []
    for name in frame.columns:
        col = frame[name]
        is_number = pd.api.types.is_numeric_dtype(col) and not isinstance(col.dtype, pd.CategoricalDtype)
        (numeric if is_number else text).append(str(name))
    return numeric, text


def schema_id(numeric: list[str], text: list[str]) -> int:
    return zlib.crc32(json.dumps([numeric, text]).encode())


def pack(frame: pd.DataFrame) -> tuple[str, list[list[str]], list[bytes]]:
    """(schema id as text, schema, one blob per row in frame order)."""
    numeric, text = schema_of(frame)
    sid = schema_id(numeric, text)
    head = _HEAD.pack(MAGIC, sid)
    values = frame[numeric].to_numpy(dtype=np.float64, na_value=np.nan) if numeric else np.empty((len(frame), 0))
    values = np.ascontiguousarray(values, dtype="<f8")
    if text:
        strings = [[_MISSING if v is None or v != v else str(v) for v in frame[name].astype(object).tolist()]
                   for name in text]
        tails = [_tail(row) for row in zip(*strings)]
    else:
        tails = [b"S"] * len(frame)
    width = values.shape[1] * 8
    raw = values.tobytes()
    blobs = [head + raw[i * width:(i + 1) * width] + tails[i] for i in range(len(frame))]
    return str(sid), [numeric, text], blobs


def _tail(row: tuple[str, ...]) -> bytes:
    joined = _SEP.join(row)
    if joined.count(_SEP) == len(row) - 1 and joined.count(_MISSING) == sum(v == _MISSING for v in row):
        return b"S" + joined.encode()
    return b"J" + json.dumps([None if v == _MISSING else v for v in row]).encode()


class Decoder:
    """Blobs → feature dicts, with the schemas of a store (`StoreMeta.schemas`); `refresh` is called with the
    unknown schema id when a blob names one this decoder has not seen (a newer process wrote it) and must
    return the store's current schemas."""

    def __init__(self, schemas: dict[str, list[list[str]]] | None = None, refresh=None):
        self._schemas = {}
        self._refresh = refresh
        self.update(schemas or {})

    def update(self, schemas: dict[str, list[list[str]]]) -> None:
        for sid, (numeric, text) in schemas.items():
            self._schemas.setdefault(int(sid), (list(numeric), list(text)))

    def __call__(self, blob: bytes) -> dict:
        magic, sid = _HEAD.unpack_from(blob)
        if magic != MAGIC:
            raise ValueError("not a winback feature row")
        schema = self._schemas.get(sid)
        if schema is None and self._refresh is not None:
            self.update(self._refresh(sid))
            schema = self._schemas.get(sid)
        if schema is None:
            raise ValueError(f"winback feature row: unknown schema {sid}")
        numeric, text = schema
        end = _HEAD.size + 8 * len(numeric)
        numbers = np.frombuffer(blob, dtype="<f8", count=len(numeric), offset=_HEAD.size).tolist()
        row = dict(zip(numeric, [None if v != v else v for v in numbers]))
        if text:
            tail = blob[end + 1:].decode()
            if blob[end:end + 1] == b"J":
                row.update(zip(text, json.loads(tail)))
            else:
                row.update(zip(text, [None if v == _MISSING else v for v in tail.split(_SEP)]))
        return row
