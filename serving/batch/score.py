"""Batch churn scoring behind `winback score`: chunks of customers → runtime → one atomic output file.

Chunks split customers (never one customer's history), and the category affinity's reference (the model's
categories, the stage priors) is computed once over all customers, so every chunk's features are exactly the
features of a single pass; value tiers use thresholds stored at training time, not the chunk's.
Each chunk goes through `ChurnRuntime.score_array`, the code the online service calls too. With `reasons`
the top TreeSHAP features raising each customer's churn risk are written as `reason_1..reason_N` (the
runtime's `contributions`, as the online service's reasons). A Parquet output carries its provenance (model,
run id, cutoff) in the schema metadata, see `provenance`.
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
                       "expected_spend", "value_if_retained", "value_at_risk", "clv_12m"]
TABLE_COLUMNS = ["customer_id", "churn_probability", "risk_tier"]
REASON_PREFIX = "reason_"


def provenance(runtime: ChurnRuntime, as_of: pd.Timestamp | None = None) -> dict:
    """What a scores file was made from: the model (URI, registry name and version, training run) and the cutoff."""
    meta = runtime.metadata
    return {"command": "score", "model_uri": meta.get("model_uri"), "model_name": meta.get("model_name"),
            "model_version": meta.get("model_version"), "run_id": meta.get("run_id"),
            "as_of": None if as_of is None else str(pd.Timestamp(as_of).date()), "horizon_days": runtime.horizon_days}


def reason_columns(runtime: ChurnRuntime, X: np.ndarray, top: int) -> dict[str, np.ndarray]:
    """reason_1..reason_top: names of the features with the largest positive contributions to each row's churn
    log-odds, largest first; missing where fewer than `top` features push the risk up."""
    contrib = runtime.contributions(X)[:, :-1]
    top = min(top, contrib.shape[1])
    order = np.argsort(-contrib, axis=1, kind="stable")[:, :top]
    names = np.asarray(runtime.feature_names, dtype=object)[order]
    labels = np.where(np.take_along_axis(contrib, order, axis=1) > 0, names, None)
    return {f"{REASON_PREFIX}{i + 1}": labels[:, i] for i in range(top)}


def _score(runtime: ChurnRuntime, features: pd.DataFrame, reasons: int) -> pd.DataFrame:
    """`score_frame` of a feature table (index customer_id) plus `reasons` reason columns, reset to a column."""
    X = runtime.encoder.transform(features)
    out = runtime.score_array(X)
    if reasons:
        out = out.assign(**reason_columns(runtime, X, reasons))
    out.index = features.index
    out = out.reset_index()
    out["customer_id"] = out["customer_id"].astype(str)
    return out


def _with_reasons(columns: list[str], runtime: ChurnRuntime, reasons: int) -> list[str]:
    return [*columns, *[f"{REASON_PREFIX}{i + 1}" for i in range(min(reasons, len(runtime.feature_names)))]]


def model_affinity_categories(runtime: ChurnRuntime) -> list[str] | None:
    """The categories of a model's affinity features, in its column order (None without any): features built for
    the model get exactly its columns, whatever categories sell most in the data scored."""
    from features import affinity

    if not any(name.startswith(affinity.PREFIX) for name in runtime.feature_names):
        return None
    return affinity.categories_of(runtime.feature_names, runtime.encoder.categories_.get(affinity.TOP_COLUMN, ()))


def score_transactions(runtime: ChurnRuntime, transactions: pd.DataFrame, as_of: pd.Timestamp,
                       output: str | os.PathLike, profiles: pd.DataFrame | None = None,
                       chunk_customers: int = CHUNK_CUSTOMERS,
                       on_chunk: Callable[[int], None] | None = None, reasons: int = 0,
                       events: pd.DataFrame | None = None) -> int:
    """Score every customer with a transaction (or, with `events`, an event) on or before `as_of`; returns the
    number of rows written. Event features are built for the event types the model was trained with."""
    from features import build_features
    from features import affinity
    from features.build import FEATURE_DESCRIPTIONS
    from features.events import event_types_in, is_event_feature

    if not runtime.has_segments:
        raise DataError("--model: this model was trained on a customer table; score it with --table")
    types = event_types_in(runtime.feature_names)
    if types is not None and events is None:
        raise DataError("--events: the model was trained with engagement events; pass the events table with --events")
    if types is None and events is not None:
        raise DataError("--events: the model was trained without engagement events; drop --events")
    if profiles is None:
        from_profiles = [f for f in runtime.feature_names if f not in FEATURE_DESCRIPTIONS
                         and not is_event_feature(f) and not f.startswith(affinity.PREFIX)]
        if from_profiles:
            shown = ", ".join(from_profiles[:5]) + (", …" if len(from_profiles) > 5 else "")
            raise DataError(f"--profiles: the model was trained with customer profiles ({shown}); pass the "
                            f"profiles table with --profiles")
    end = pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1)
    seen = transactions[transactions["timestamp"] < end]
    if seen.empty:
        raise DataError(f"--as-of {pd.Timestamp(as_of).date()}: no transactions on or before it")
    engaged = events[events["timestamp"] < end] if events is not None else seen.iloc[:0]
    customers = pd.Index(pd.unique(np.concatenate([seen["customer_id"].to_numpy(), engaged["customer_id"].to_numpy()])))
    chunk_of = np.asarray(customers.argsort()).argsort() // chunk_customers  # chunks of customers in id order
    chunks = int(chunk_of.max()) + 1
    tx_parts = _split_rows(seen, chunk_of[customers.get_indexer(seen["customer_id"])], chunks)
    ev_parts = _split_rows(engaged, chunk_of[customers.get_indexer(engaged["customer_id"])], chunks)
    categories = model_affinity_categories(runtime)
    # the affinity categories and priors of all customers, not of each chunk (None: the model has no affinity)
    reference = affinity.affinity_reference(seen, as_of, categories) if categories is not None and \
        "category" in seen.columns else None
    rows = 0
    columns = _with_reasons(TRANSACTION_COLUMNS, runtime, reasons)
    with AtomicTableWriter(output, metadata=provenance(runtime, as_of)) as writer:
        for part, ev_part in zip(tx_parts, ev_parts):
            ev_part = ev_part if events is not None else None
            feats = build_features(part, as_of, profiles=profiles, events=ev_part, event_types=types,
                                   affinity_categories=0 if categories is None else affinity.MAX_CATEGORIES,
                                   affinity_reference=reference)
            writer.write(_score(runtime, feats, reasons)[columns])
            rows += len(feats)
            if on_chunk:
                on_chunk(len(feats))
    return rows


def _split_rows(frame: pd.DataFrame, chunk: np.ndarray, chunks: int) -> list[pd.DataFrame]:
    """Rows of `frame` per chunk number (0 … chunks − 1), in their order: one stable sort, no scan per chunk."""
    order = np.argsort(chunk, kind="stable")
    bounds = np.searchsorted(chunk[order], np.arange(chunks + 1))
    return [frame.iloc[order[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]


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
                on_chunk: Callable[[int], None] | None = None, columns: list[str] = TABLE_COLUMNS,
                reasons: int = 0) -> int:
    """Score a customer table (one row per customer, label column ignored); returns rows written."""
    if id_col is not None and id_col not in table.columns:
        raise DataError(f"--id-col: column {id_col!r} not in the table")
    if id_col is None and "customer_id" in table.columns:
        id_col = "customer_id"
    ids = ids_as_strings(table[id_col], repr(id_col)).to_numpy() if id_col else np.arange(len(table)).astype(str)
    rows = 0
    columns = _with_reasons(columns, runtime, reasons)
    with AtomicTableWriter(output, metadata=provenance(runtime)) as writer:
        for start in range(0, len(table), chunk_rows):
            part = table.iloc[start:start + chunk_rows]
            writer.write(_scored(runtime, part, ids[start:start + chunk_rows], columns, reasons))
            rows += len(part)
            if on_chunk:
                on_chunk(len(part))
    return rows


def _scored(runtime: ChurnRuntime, table: pd.DataFrame, ids: np.ndarray, columns: list[str],
            reasons: int = 0) -> pd.DataFrame:
    """Scores of customer-table rows (`ids` as text), `columns` of them."""
    part = conform_table(table, runtime)
    part.index = pd.Index(ids, name="customer_id")
    return _score(runtime, part, reasons)[columns]


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
                        chunk_rows: int = CHUNK_CUSTOMERS, on_chunk: Callable[[int], None] | None = None,
                        reasons: int = 0) -> int:
    """`winback score --features F`: score a feature table chunk by chunk, written atomically."""
    _check_features(table)
    return score_table(runtime, table, output, "customer_id", chunk_rows, on_chunk, feature_columns(runtime), reasons)
