"""Readers for the public data sets used as references: CDNOW purchases and the Hillstrom e-mail test."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from features.contracts import ids_as_strings, normalize_transactions
from features.errors import DataError

CDNOW_COLUMNS = ("customer_id", "date", "number_of_cds", "dollar_value")
HILLSTROM_COLUMNS = (
    "recency", "history_segment", "history", "mens", "womens", "zip_code",
    "newbie", "channel", "segment", "visit", "conversion", "spend",
)  # fmt: skip


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: file not found")
    return p


def _has_header(path: Path) -> bool:
    """True when the first non-blank line starts with a non-numeric token (a header line)."""
    with path.open() as handle:
        for line in handle:
            if line.strip():
                return not line.split()[0].isdigit()
    raise DataError(f"{path}: file is empty")


def read_cdnow(path: str | os.PathLike) -> pd.DataFrame:
    """CDNOW master file (whitespace-separated, with or without header) in the transactions contract.

    Columns: customer_id (str, leading zeros dropped: '00001' → '1'), timestamp (from the
    YYYYMMDD date), amount (dollar_value, zeros kept), quantity (number_of_cds).
    """
    p = _existing(path)
    try:
        raw = pd.read_csv(p, sep=r"\s+", header=None, names=list(CDNOW_COLUMNS),
                          skiprows=1 if _has_header(p) else 0, dtype={"date": "str"})
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the CDNOW format: {exc}") from exc
    raw = raw.rename(columns={"date": "timestamp", "dollar_value": "amount", "number_of_cds": "quantity"})
    try:
        return normalize_transactions(raw)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc


def read_hillstrom(path: str | os.PathLike) -> pd.DataFrame:
    """Hillstrom MineThatData campaign table, text columns as `category`.

    Adds `customer_id` (the 1-based data row number as a string) as the first column unless
    the file has one. The treatment arm is `segment`; outcomes are `visit`, `conversion`, `spend`.
    """
    p = _existing(path)
    try:
        raw = pd.read_csv(p)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read CSV: {exc}") from exc
    missing = [name for name in HILLSTROM_COLUMNS if name not in raw.columns]
    if missing:
        raise DataError(f"{path}: column(s) {', '.join(missing)} missing; columns are: {', '.join(raw.columns)}")
    if len(raw) == 0:
        raise DataError(f"{path}: the table is empty (no rows)")
    if "customer_id" in raw.columns:
        ids = ids_as_strings(raw.pop("customer_id"))
    else:
        ids = pd.Series(pd.RangeIndex(1, len(raw) + 1)).astype("str")
    for name in raw.columns:
        if pd.api.types.is_string_dtype(raw[name].dtype):
            raw[name] = raw[name].astype("category")
    raw.insert(0, "customer_id", ids.to_numpy())
    return raw
