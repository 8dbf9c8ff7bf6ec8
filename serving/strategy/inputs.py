"""The report's inputs, checked at the edge: scores and recommendations of the same customers, a catalogue (or
none: costs unknown), a campaign evaluation; and their provenance (sha256, rows, what wrote them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from features.contracts import unique_ids
from features.errors import DataError
from features.io import read_provenance, read_table, table_format
from serving.batch.plan import arms_of
from serving.runtime.decision.catalog import Catalog

ID = "customer_id"
SCORE_COLUMNS = (ID, "churn_probability", "lifecycle_stage", "value_tier", "value_at_risk")
SCORE_NUMBERS = ("churn_probability", "value_at_risk")
RECOMMENDATION_COLUMNS = (ID, "incentive", "expected_net_value")
OPTIONAL_VALUES = ("expected_spend", "value_if_retained", "clv_12m")
UNKNOWN_SEGMENT = "unknown"


def read_input(path: Path, required: tuple[str, ...], numbers: tuple[str, ...]) -> pd.DataFrame:
    """A scores or recommendations table; DataError naming the file and the first missing or non-numeric column."""
    frame = read_table(path, dtype={ID: "str"}) if table_format(path) == "csv" else read_table(path)
    for column in required:
        if column not in frame.columns:
            raise DataError(f"{path}: column {column!r} is missing (the report needs {', '.join(required)})")
    for column in numbers:
        if column in frame.columns and not pd.api.types.is_numeric_dtype(frame[column]):
            raise DataError(f"{path}: column {column!r} must be numeric")
    return frame


def read_scores(path: Path) -> pd.DataFrame:
    frame = read_input(path, SCORE_COLUMNS, (*SCORE_NUMBERS, *OPTIONAL_VALUES))
    for key in ("lifecycle_stage", "value_tier"):
        frame[key] = frame[key].astype("string").fillna(UNKNOWN_SEGMENT).astype(str)
    return frame


def read_recommendations(path: Path) -> pd.DataFrame:
    frame = read_input(path, RECOMMENDATION_COLUMNS, ("expected_net_value",))
    bad = [c for c in frame.columns if c.startswith(("uplift:", "net_value:"))
           and not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataError(f"{path}: column {bad[0]!r} must be numeric")
    frame["incentive"] = frame["incentive"].astype(str)
    return frame


def join(scores: pd.DataFrame, recommendations: pd.DataFrame, scores_name: str = "--scores",
         recommendations_name: str = "--recommendations") -> pd.DataFrame:
    """One row per customer with both files' columns; DataError when they do not hold the same customers."""
    left = scores.assign(**{ID: unique_ids(scores[ID], scores_name)})
    right = recommendations.assign(**{ID: unique_ids(recommendations[ID], recommendations_name)})
    only_scores = pd.Index(left[ID]).difference(pd.Index(right[ID]))
    only_recs = pd.Index(right[ID]).difference(pd.Index(left[ID]))
    if len(only_scores) or len(only_recs):
        example = (f"e.g. {only_scores[0]!r} only in the scores" if len(only_scores)
                   else f"e.g. {only_recs[0]!r} only in the recommendations")
        raise DataError(f"{scores_name} ({len(left):,} customers) and {recommendations_name} ({len(right):,}) are not "
                        f"the same customers: {len(only_scores):,} only in the scores, {len(only_recs):,} only in the "
                        f"recommendations ({example})")
    shared = [c for c in right.columns if c != ID and c in left.columns]
    if shared:
        raise DataError(f"{recommendations_name}: column {shared[0]!r} is also in {scores_name}")
    return left.merge(right, on=ID, how="inner", validate="one_to_one")


def arms_and_control(recommendations: pd.DataFrame, catalog: Catalog | None) -> tuple[list[str], str]:
    """The incentives and the control arm (the catalogue's, else read from the file); DataError when a
    recommended incentive is neither."""
    arms, control = arms_of(recommendations, catalog)
    unknown = sorted(set(recommendations["incentive"].unique()) - {control, *arms})
    if unknown:
        raise DataError(f"--recommendations: incentive(s) {', '.join(map(repr, unknown))} not in the catalogue "
                        f"(arms {', '.join(arms)}, control {control})")
    return arms, control


def send_costs(catalog: Catalog | None, arms: list[str], control: str) -> dict[str, float] | None:
    """Cost of one send per incentive (control 0), or None when no catalogue says it."""
    if catalog is None:
        return None
    catalog.check_arms([control, *arms], source="the recommendations")
    return {control: 0.0, **{inc.name: inc.cost for inc in catalog.incentives}}


def read_campaign(path: Path) -> dict:
    """The measured return of the last campaign from `winback campaign evaluate --json-out`."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"--campaign-eval: {path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"--campaign-eval: {path}: not valid JSON ({exc})") from None
    policy = doc.get("policy") if isinstance(doc, dict) else None
    keys = ("incremental_value", "ci_low", "ci_high", "n_model", "n_holdout")
    if not isinstance(policy, dict) or any(k not in policy for k in keys):
        raise DataError(f"--campaign-eval: {path}: expected the JSON of `winback campaign evaluate` "
                        f"(a 'policy' with {', '.join(keys)})")
    value = policy["incremental_value"]
    numbers = [policy[k] for k in keys if policy[k] is not None]
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x) for x in numbers):
        raise DataError(f"--campaign-eval: {path}: 'policy' figures must be numbers")
    n_model = int(policy["n_model"])
    return {"campaign_id": str(doc.get("campaign_id", "")), "value_basis": doc.get("value_basis"),
            "incremental_value_per_customer": value, "ci_low": policy["ci_low"], "ci_high": policy["ci_high"],
            "n_model": n_model, "n_holdout": int(policy["n_holdout"]),
            "total_incremental_value": None if value is None else value * n_model,
            "total_ci_low": None if value is None else policy["ci_low"] * n_model,
            "total_ci_high": None if value is None else policy["ci_high"] * n_model,
            "interval_includes_zero": None if value is None else bool(policy["ci_low"] <= 0.0 <= policy["ci_high"])}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_provenance(path: Path | None, rows: int | None = None) -> dict | None:
    """Path, sha256, size, rows and what wrote it (Parquet metadata of `winback score` / `recommend`)."""
    if path is None:
        return None
    path = Path(path)
    written_by = read_provenance(path) if path.suffix.lower() in (".parquet", ".pq") else None
    return {"path": str(path), "sha256": sha256(path), "bytes": path.stat().st_size, "rows": rows,
            "written_by": written_by}
