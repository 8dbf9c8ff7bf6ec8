"""The fast path from request records to answers, shared by the online service and batch scoring.

Two steps, each one vectorised call per request:

1. `encode_customers`: customers (features given inline, or looked up by id in a `FeatureSnapshot`)
   → one float64 2-D array per model, via the model's own FeatureEncoder (no DataFrame per request).
2. `score_columns` / `recommend_columns`: arrays → result columns by calling the runtime models'
   methods directly on the boosters. Batch scoring calls the same two functions on
   `encoder.transform(table)`, so online and offline answers are identical for the same features.

`score_rows` / `recommend_rows` glue the two together and return JSON-ready dicts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from features.errors import DataError
from serving.runtime.churn import ChurnRuntime
from serving.runtime.decision import decide_with_cap
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.uplift import UpliftRuntime

ID_COLUMN = "customer_id"
REASONS_TOP = 3


class UnknownCustomer(DataError):
    """A customer sent without features is not in the feature snapshot (or there is none): HTTP 404."""


class CustomerLike(Protocol):
    customer_id: str
    features: Mapping[str, object] | None


@dataclass(frozen=True)
class FeatureSnapshot:
    """A feature table held in memory: customer id → row, and the rows encoded once per encoder.

    Lookups are array indexing; built once at service start from `winback features build` output.
    """

    path: str
    rows: dict[str, int]
    encoded: dict[int, np.ndarray]  # id(encoder) → (n_customers, n_features) array

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, encoders: Sequence[FeatureEncoder], path: str = "") -> "FeatureSnapshot":
        if ID_COLUMN not in frame.columns:
            raise DataError(f"{path or 'feature snapshot'}: no {ID_COLUMN!r} column")
        ids = frame[ID_COLUMN].astype("string")
        if ids.isna().any():
            raise DataError(f"{path or 'feature snapshot'}: {ID_COLUMN} has missing values")
        duplicated = ids[ids.duplicated()]
        if len(duplicated):
            raise DataError(f"{path or 'feature snapshot'}: duplicate {ID_COLUMN} {duplicated.iloc[0]!r}")
        rows = {str(v): i for i, v in enumerate(ids)}
        encoded = {}
        for encoder in encoders:
            try:
                encoded[id(encoder)] = np.ascontiguousarray(encoder.transform(frame))
            except DataError as exc:
                raise DataError(f"{path or 'feature snapshot'}: {exc}") from None
        return cls(path=path, rows=rows, encoded=encoded)

    @classmethod
    def load(cls, path: str | Path, encoders: Sequence[FeatureEncoder]) -> "FeatureSnapshot":
        from features.io import read_table

        return cls.from_frame(read_table(path), encoders, path=str(path))

    def __len__(self) -> int:
        return len(self.rows)

    def row_indices(self, ids: Sequence[str], positions: Sequence[int], where: str = "customers") -> np.ndarray:
        """Snapshot rows of `ids`; DataError naming the first unknown id and its request position."""
        rows = self.rows
        out = np.empty(len(ids), dtype=np.intp)
        for k, (cid, pos) in enumerate(zip(ids, positions)):
            row = rows.get(cid)
            if row is None:
                raise UnknownCustomer(f"{where}[{pos}].customer_id: unknown customer {cid!r} "
                                f"(not in the feature snapshot); send its features instead")
            out[k] = row
        return out

    def encode(self, ids: Sequence[str], positions: Sequence[int], encoder: FeatureEncoder,
               where: str = "customers") -> np.ndarray:
        """The encoded rows of `ids` for `encoder`'s model (the interface `encode_customers` looks up in,
        shared with the online store's `serving.online.live.LiveFeatures`)."""
        return self.encoded[id(encoder)][self.row_indices(ids, positions, where)]


_WHERE = re.compile(r"^__rows__\[(\d+)\]\.")


def encode_customers(customers: Sequence[CustomerLike], encoder: FeatureEncoder,
                     snapshot: FeatureSnapshot | None = None, where: str = "customers") -> np.ndarray:
    """One (n, n_features) float64 array for `encoder`'s model: inline features encoded, the rest
    looked up in `snapshot` (a `FeatureSnapshot`, or the online store's `LiveFeatures`). Errors name the request field, e.g. `customers[3].features.recency_days`.
    """
    inline = [i for i, c in enumerate(customers) if c.features is not None]
    if len(inline) == len(customers):  # the common case: every customer sent its features
        return _encode_inline(encoder, [c.features for c in customers], inline, where)
    lookup = [i for i, c in enumerate(customers) if c.features is None]
    if snapshot is None:
        raise UnknownCustomer(f"{where}[{lookup[0]}].features: missing, and the service has no feature snapshot "
                        f"to look customer {customers[lookup[0]].customer_id!r} up (start it with WINBACK_FEATURES)")
    out = np.empty((len(customers), len(encoder.features_)), dtype=np.float64)
    out[lookup] = snapshot.encode([customers[i].customer_id for i in lookup], lookup, encoder, where)
    if inline:
        out[inline] = _encode_inline(encoder, [customers[i].features for i in inline], inline, where)
    return out


def _encode_inline(encoder: FeatureEncoder, records: list, positions: list[int], where: str) -> np.ndarray:
    try:
        return encoder.transform_records(records, where="__rows__")
    except DataError as exc:
        # the encoder counts within `records`; name the customer's position in the request instead
        message = _WHERE.sub(lambda m: f"{where}[{positions[int(m.group(1))]}].features.", str(exc))
        raise DataError(message) from None


@dataclass(frozen=True)
class ScoreColumns:
    churn_probability: np.ndarray
    risk_tier: np.ndarray
    lifecycle_stage: np.ndarray
    value_tier: np.ndarray
    values: dict[str, np.ndarray]  # ChurnRuntime.values: expected_spend, value_if_retained, value_at_risk, clv_12m
    reasons: list[list[tuple[str, float]]]


def score_columns(churn: ChurnRuntime, X: np.ndarray, reasons_top: int = REASONS_TOP) -> ScoreColumns:
    """Churn probability, risk tier, segments, customer value and TreeSHAP reasons for an encoded array."""
    p = churn.predict_proba(X)
    stage, tier = churn.segments(X)
    values = churn.values(X, p) if churn.has_segments else {}
    reasons = churn.reasons(X, top=reasons_top) if reasons_top > 0 else [[]] * len(X)  # one shared, read only
    return ScoreColumns(p, churn.risk_tier(p), stage, tier, values, reasons)


def _finite(values: np.ndarray) -> list:
    """Floats for JSON, NaN as None."""
    return [None if v != v else v for v in values.tolist()]


@dataclass(frozen=True)
class RecommendColumns:
    arms: list[str]
    incentive: np.ndarray
    expected_net_value: np.ndarray
    uplift: np.ndarray  # (n, k), columns in `arms` order
    churn_probability: np.ndarray
    featured_category: np.ndarray | None = None  # with a personalised arm (see serving.runtime.decision.personal)
    category_affinity: np.ndarray | None = None


def recommend_columns(churn: ChurnRuntime, uplift: UpliftRuntime, X_churn: np.ndarray, X_uplift: np.ndarray,
                      max_sends: int | None = None, budget: float | None = None) -> RecommendColumns:
    """Which incentive to send (packaged catalogue), its expected net value, per-arm uplift and churn
    probability; with `max_sends` / `budget`, only the sends that fit the caps (`decide_with_cap`) are kept."""
    pred = uplift.predict(X_uplift)
    if max_sends is not None or budget is not None:
        capped = decide_with_cap(pred.net_value, uplift.catalog.costs, max_sends=max_sends, budget=budget,
                                 decision=pred.decision)
        pred = dataclasses.replace(pred, decision=capped)
    return RecommendColumns(list(pred.arms), pred.incentive, pred.expected_net_value, pred.uplift,
                            churn.predict_proba(X_churn), pred.featured_category, pred.category_affinity)


def score_rows(churn: ChurnRuntime, customers: Sequence[CustomerLike],
               snapshot: FeatureSnapshot | None = None, metrics=None) -> list[dict]:
    """Request customers → score dicts (the `/score` contract), in request order; `metrics`
    (`serving.api.metrics.ServiceMetrics`) counts the inputs and answers."""
    X = encode_customers(customers, churn.encoder, snapshot)
    cols = score_columns(churn, X)
    if metrics is not None:
        metrics.inputs(churn.encoder, X, [c.features for c in customers])
        metrics.scores(cols.churn_probability)
    p = cols.churn_probability.tolist()
    values = {name: _finite(column) for name, column in cols.values.items()}
    return [{"customer_id": c.customer_id, "churn_probability": p[i], "risk_tier": cols.risk_tier[i],
             "lifecycle_stage": cols.lifecycle_stage[i], "value_tier": cols.value_tier[i],
             **{name: column[i] for name, column in values.items()},
             "reasons": [{"feature": f, "contribution": v} for f, v in cols.reasons[i]]}
            for i, c in enumerate(customers)]


def recommend_rows(churn: ChurnRuntime, uplift: UpliftRuntime, customers: Sequence[CustomerLike],
                   snapshot: FeatureSnapshot | None = None, max_sends: int | None = None,
                   budget: float | None = None, metrics=None) -> list[dict]:
    """Request customers → recommendation dicts (the `/recommend` contract), in request order; `metrics`
    counts the inputs and answers."""
    X_churn = encode_customers(customers, churn.encoder, snapshot)
    same = _same_encoding(churn.encoder, uplift.encoder)
    X_uplift = X_churn if same else encode_customers(customers, uplift.encoder, snapshot)
    cols = recommend_columns(churn, uplift, X_churn, X_uplift, max_sends=max_sends, budget=budget)
    if metrics is not None:
        records = [c.features for c in customers]
        metrics.inputs(churn.encoder, X_churn, records)
        if not same:
            metrics.inputs(uplift.encoder, X_uplift, records)
        metrics.scores(cols.churn_probability)
        metrics.recommendations(cols.incentive)
    arms, up = cols.arms, cols.uplift.tolist()
    value, p = cols.expected_net_value.tolist(), cols.churn_probability.tolist()
    rows = [{"customer_id": c.customer_id, "incentive": cols.incentive[i], "expected_net_value": value[i],
             "uplift": dict(zip(arms, up[i])), "churn_probability": p[i]}
            for i, c in enumerate(customers)]
    if cols.featured_category is not None:  # a personalised arm: what it features for each customer
        for row, featured, value in zip(rows, cols.featured_category.tolist(), _finite(cols.category_affinity)):
            row["featured_category"], row["category_affinity"] = str(featured), value
    return rows


def warm_up(churn: ChurnRuntime, uplift: UpliftRuntime) -> None:
    """Answer one customer with every feature missing: loads every booster and the calling thread's
    single-row handles, so a model that cannot predict fails at start, not at the first request."""
    from serving.api.schemas import Customer

    missing = {name: None for name in dict.fromkeys([*churn.encoder.features_, *uplift.encoder.features_])}
    customer = Customer(customer_id="warm-up", features=missing)
    score_rows(churn, [customer])
    recommend_rows(churn, uplift, [customer])


def _same_encoding(a: FeatureEncoder, b: FeatureEncoder) -> bool:
    return a is b or (a.features_ == b.features_ and a.categories_ == b.categories_)
