"""Batch churn scoring behind `winback score`: chunks of customers → runtime → one atomic output file.

Chunks split customers (never one customer's history), so every chunk's features are exactly the
features of a single pass; value tiers use thresholds stored at training time, not the chunk's.
Each chunk goes through `ChurnRuntime.score_array`, the code the online service calls too.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd

from features.contracts import ids_as_strings, parse_numbers
from features.errors import DataError
from features.io import AtomicTableWriter
from serving.runtime.churn import ChurnRuntime

CHUNK_CUSTOMERS = 50_000
TRANSACTION_COLUMNS = ["customer_id", "churn_probability", "risk_tier", "lifecycle_stage", "value_tier",
                       "value_at_risk"]
TABLE_COLUMNS = ["customer_id", "churn_probability", "risk_tier"]


def _write_chunk(writer: AtomicTableWriter, scored: pd.DataFrame, columns: list[str]) -> None:
    out = scored.reset_index()
    out["customer_id"] = out["customer_id"].astype(str)
    writer.write(out[columns])


def score_transactions(runtime: ChurnRuntime, transactions: pd.DataFrame, as_of: pd.Timestamp,
                       output: str | os.PathLike, profiles: pd.DataFrame | None = None,
                       chunk_customers: int = CHUNK_CUSTOMERS,
                       on_chunk: Callable[[int], None] | None = None) -> int:
    """Score every customer with a transaction on or before `as_of`; returns the number of rows written."""
    from features import build_features
    from features import affinity
    from features.build import FEATURE_DESCRIPTIONS

    if not runtime.has_segments:
        raise DataError("--model: this model was trained on a customer table; score it with --table")
    if profiles is None:
        from_profiles = [f for f in runtime.feature_names if f not in FEATURE_DESCRIPTIONS
                         and not f.startswith(affinity.PREFIX)]
        if from_profiles:
            shown = ", ".join(from_profiles[:5]) + (", …" if len(from_profiles) > 5 else "")
            raise DataError(f"--profiles: the model was trained with customer profiles ({shown}); pass the "
                            f"profiles table with --profiles")
    seen = transactions[transactions["timestamp"] < pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1)]
    if seen.empty:
        raise DataError(f"--as-of {pd.Timestamp(as_of).date()}: no transactions on or before it")
    codes, _ = pd.factorize(seen["customer_id"], sort=True)
    rows = 0
    with AtomicTableWriter(output) as writer:
        for _, part in seen.groupby(codes // chunk_customers, sort=True):
            feats = build_features(part, as_of, profiles=profiles)
            _write_chunk(writer, runtime.score_frame(feats), TRANSACTION_COLUMNS)
            rows += len(feats)
            if on_chunk:
                on_chunk(len(feats))
    return rows


def conform_table(table: pd.DataFrame, runtime: ChurnRuntime) -> pd.DataFrame:
    """Give a raw customer table the types the model was trained with: numeric features as numbers
    (blank text → missing), categorical ones as stripped text; names the column that does not fit."""
    out = {}
    for name in runtime.feature_names:
        if name not in table.columns:
            raise DataError(f"--table: column {name!r} is missing (the model uses {len(runtime.feature_names)} columns)")
        col = table[name]
        if name in runtime.encoder.categories_ or pd.api.types.is_numeric_dtype(col):
            out[name] = col if pd.api.types.is_numeric_dtype(col) else col.astype("string").str.strip().replace("", pd.NA)
            continue
        numbers, bad = parse_numbers(col)
        if bad.any():
            raise DataError(f"--table: column {name!r} must be numeric; e.g. {col[bad].iloc[0]!r}")
        out[name] = numbers
    return pd.DataFrame(out, index=table.index)


def score_table(runtime: ChurnRuntime, table: pd.DataFrame, output: str | os.PathLike,
                id_col: str | None = None, chunk_rows: int = CHUNK_CUSTOMERS,
                on_chunk: Callable[[int], None] | None = None, columns: list[str] = TABLE_COLUMNS) -> int:
    """Score a customer table (one row per customer, label column ignored); returns rows written."""
    if id_col is not None and id_col not in table.columns:
        raise DataError(f"--id-col: column {id_col!r} not in the table")
    if id_col is None and "customer_id" in table.columns:
        id_col = "customer_id"
    ids = ids_as_strings(table[id_col], repr(id_col)).to_numpy() if id_col else np.arange(len(table)).astype(str)
    rows = 0
    with AtomicTableWriter(output) as writer:
        for start in range(0, len(table), chunk_rows):
            part = table.iloc[start:start + chunk_rows]
            writer.write(_scored(runtime, part, ids[start:start + chunk_rows], columns))
            rows += len(part)
            if on_chunk:
                on_chunk(len(part))
    return rows


def _scored(runtime: ChurnRuntime, table: pd.DataFrame, ids: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """Scores of customer-table rows (`ids` as text), `columns` of them."""
    part = conform_table(table, runtime)
    part.index = pd.Index(ids, name="customer_id")
    out = runtime.score_frame(part).reset_index()
    out["customer_id"] = out["customer_id"].astype(str)
    return out[columns]


def score_features(runtime: ChurnRuntime, frame: pd.DataFrame) -> pd.DataFrame:
    """Scores of a feature table as `winback features build` writes it (customer_id + features): the columns
    `winback score` writes for the model. The pandas path and the Spark engine both call this."""
    _check_features(frame)
    return _scored(runtime, frame, ids_as_strings(frame["customer_id"], "'customer_id'").to_numpy(),
                   feature_columns(runtime))


def feature_columns(runtime: ChurnRuntime) -> list[str]:
    """The columns `winback score` writes for a feature table: with segments for a transaction model."""
    return TRANSACTION_COLUMNS if runtime.has_segments else TABLE_COLUMNS


def _check_features(frame: pd.DataFrame) -> None:
    if "customer_id" not in frame.columns:
        raise DataError("--features: column 'customer_id' not found (expected the output of `winback features build`)")


def score_feature_table(runtime: ChurnRuntime, table: pd.DataFrame, output: str | os.PathLike,
                        chunk_rows: int = CHUNK_CUSTOMERS, on_chunk: Callable[[int], None] | None = None) -> int:
    """`winback score --features F`: score a feature table chunk by chunk, written atomically."""
    _check_features(table)
    return score_table(runtime, table, output, "customer_id", chunk_rows, on_chunk, feature_columns(runtime))
