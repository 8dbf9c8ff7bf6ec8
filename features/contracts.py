"""Data contracts: bring raw transaction and profile tables into the shape the features trust.

Validation happens here, once, at the edge (CLI, file loaders). Every error is a `DataError`
whose message names the column and shows the first offending rows. Row numbers count data rows
from 1 (the first row after a CSV header is row 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.errors import DataError

ID, TIME, AMOUNT = "customer_id", "timestamp", "amount"
OPTIONAL_NUMERIC = ("quantity",)
OPTIONAL_LABELS = ("category", "channel")
MAX_SHOWN = 5


def _show_rows(values: pd.Series, bad: np.ndarray) -> str:
    """'row 3: 'x', row 7: nan' for the first offending rows, plus how many there are."""
    positions = np.flatnonzero(bad)
    first = positions[:MAX_SHOWN]
    shown = ", ".join(f"row {p + 1}: {v!r}" for p, v in zip(first, values.iloc[first].tolist()))
    more = f" (and {len(positions) - MAX_SHOWN} more)" if len(positions) > MAX_SHOWN else ""
    return f"{len(positions)} bad value(s): {shown}{more}"


def _require_columns(df: pd.DataFrame, wanted: dict[str, str], what: str) -> None:
    for source, contract in wanted.items():
        if source not in df.columns:
            existing = ", ".join(map(str, df.columns)) or "(none)"
            raise DataError(f"{what}: column {source!r} ({contract}) is missing; columns are: {existing}")


def _rename(df: pd.DataFrame, mapping: dict[str, str], what: str) -> pd.DataFrame:
    moved = {src: dst for src, dst in mapping.items() if src != dst}
    for src, dst in moved.items():
        if dst in df.columns and dst not in moved:
            raise DataError(f"{what}: column {src!r} maps to {dst!r}, but {dst!r} already exists")
    return df.rename(columns=moved)


def parse_numbers(column: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Text → float64 (stripped; blank → missing), and the mask of non-blank values that are not numbers.
    The one rule for numbers written as text in customer tables, at training and at scoring time."""
    text = column.astype("string").str.strip()
    text = text.mask(text == "")
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    return numbers, (numbers.isna() & text.notna()).to_numpy()


def unique_ids(ids: pd.Series, where: str) -> pd.Series:
    """Customer ids as text; DataError naming the first one that repeats (tables with one row per customer)."""
    ids = ids.astype(str)
    repeated = ids.duplicated()
    if repeated.any():
        first = ids[repeated].iloc[0]
        raise DataError(f"{where}: customer id {first!r} appears {int((ids == first).sum())} times, more than once "
                        f"({int(repeated.sum())} duplicate row(s))")
    return ids


def ids_as_strings(ids: pd.Series, column: str = repr(ID)) -> pd.Series:
    """Customer ids as strings: integers (also integral floats) without '.0', text stripped."""
    missing = ids.isna().to_numpy()
    if missing.any():
        raise DataError(f"column {column}: missing customer id; {_show_rows(ids, missing)}")
    if pd.api.types.is_bool_dtype(ids.dtype):
        raise DataError(f"column {column}: customer ids are booleans")
    if pd.api.types.is_float_dtype(ids.dtype):
        values = ids.to_numpy(dtype=float)
        if np.all(values == np.round(values)):
            ids = pd.Series(values.astype(np.int64), index=ids.index)
    out = ids.astype("str")
    if not pd.api.types.is_numeric_dtype(ids.dtype):
        out = out.str.strip()
    empty = (out == "").to_numpy()
    if empty.any():
        raise DataError(f"column {column}: empty customer id; {_show_rows(ids, empty)}")
    return out.rename(ID)


def _label(source: str, contract: str) -> str:
    """How a message names a column: the user's name, plus the contract name when mapped."""
    return repr(source) if source == contract else f"{source!r} ({contract})"


def _timestamps(raw: pd.Series, column: str = repr(TIME)) -> pd.Series:
    """Naive datetime64 in UTC from datetimes or ISO / YYYYMMDD text; unparseable → DataError."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        return raw
    if pd.api.types.is_integer_dtype(raw.dtype):
        text = raw.astype("str")  # YYYYMMDD stored as a number
    else:
        text = raw.astype("str").str.strip().where(raw.notna())
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    bad = parsed.isna().to_numpy()
    if bad.any():
        raise DataError(
            f"column {column}: missing or unparseable timestamp (use ISO 8601 or YYYYMMDD); "
            f"{_show_rows(raw, bad)}"
        )
    return parsed.dt.tz_localize(None)


def _numbers(raw: pd.Series, column: str, allow_missing: bool = False) -> pd.Series:
    """Float column; non-numeric or infinite (and, unless allowed, missing) values → DataError."""
    values = pd.to_numeric(raw, errors="coerce").astype("float64")
    bad = ~np.isfinite(values.to_numpy())
    if allow_missing:
        bad &= raw.notna().to_numpy()
    if bad.any():
        raise DataError(f"column {column}: missing or non-numeric value; {_show_rows(raw, bad)}")
    return values


def normalize_transactions(
    df: pd.DataFrame,
    id_col: str = ID,
    time_col: str = TIME,
    amount_col: str = AMOUNT,
    allow_refunds: bool = False,
    as_of=None,
) -> pd.DataFrame:
    """Validate a raw purchase table and return it in the transactions contract.

    Output columns: customer_id (str), timestamp (naive datetime64, UTC), amount (float64), then
    whichever of quantity (float64), category and channel (str) are present; other columns are
    dropped. Rows keep their order. Negative amounts are refunds, refused unless
    `allow_refunds`. With `as_of` (a date), at least one transaction must fall on or before it.
    """
    what = "transactions"
    shown = {ID: _label(id_col, ID), TIME: _label(time_col, TIME), AMOUNT: _label(amount_col, AMOUNT)}
    _require_columns(df, {id_col: ID, time_col: TIME, amount_col: AMOUNT}, what)
    df = _rename(df, {id_col: ID, time_col: TIME, amount_col: AMOUNT}, what)
    if len(df) == 0:
        raise DataError(f"{what}: the table is empty (no rows)")
    out = pd.DataFrame(
        {
            ID: ids_as_strings(df[ID], shown[ID]),
            TIME: _timestamps(df[TIME], shown[TIME]),
            AMOUNT: _numbers(df[AMOUNT], shown[AMOUNT]),
        }
    )
    if not allow_refunds:
        negative = (out[AMOUNT] < 0).to_numpy()
        if negative.any():
            raise DataError(
                f"column {shown[AMOUNT]}: negative amount (refund); pass allow_refunds / --allow-refunds "
                f"to accept refunds; {_show_rows(df[AMOUNT], negative)}"
            )
    for name in OPTIONAL_NUMERIC:
        if name in df.columns:
            out[name] = _numbers(df[name], repr(name), allow_missing=True)
    for name in OPTIONAL_LABELS:
        if name in df.columns:
            out[name] = df[name].astype("str").where(df[name].notna())
    if as_of is not None:
        cutoff = pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1)
        if not (out[TIME] < cutoff).any():
            raise DataError(
                f"column {shown[TIME]}: all {len(out):,} transactions are after as_of "
                f"{pd.Timestamp(as_of).date()} (earliest is {out[TIME].min()})"
            )
    return out.reset_index(drop=True)


def normalize_profiles(df: pd.DataFrame, id_col: str = ID) -> pd.DataFrame:
    """Customer attributes indexed by customer_id (str), one row per customer.

    Text columns become `category`, booleans become 0/1 integers, numbers are kept as they are.
    """
    what = "profiles"
    _require_columns(df, {id_col: ID}, what)
    df = _rename(df, {id_col: ID}, what)
    ids = ids_as_strings(df[ID], _label(id_col, ID))
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise DataError(f"column {_label(id_col, ID)}: duplicate customer id in profiles; {_show_rows(df[ID], duplicated)}")
    out = df.drop(columns=[ID])
    for name in out.columns:
        dtype = out[name].dtype
        if pd.api.types.is_bool_dtype(dtype):
            out[name] = out[name].astype("int64")
        elif pd.api.types.is_string_dtype(dtype) or dtype == object:
            out[name] = out[name].astype("category")
    out.index = pd.Index(ids.to_numpy(), dtype="str", name=ID)
    return out
