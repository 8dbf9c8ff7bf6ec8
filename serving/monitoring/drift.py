"""Drift of features and model outputs against the reference saved with the model (numpy only).

Reference (built at training time on the rows the model was validated on, saved as `reference.json` beside
the boosters):
- numeric feature: decile edges of the non-missing values, the share of rows in each of the bins they
  make, the missing share, and 101 percentiles (for the Kolmogorov–Smirnov statistic);
- categorical feature: the share of each level (levels under 1 % pooled into one "other" bin) and the
  missing share;
- model output: the same numeric summary of the churn probability or the expected net value, and for
  uplift the share of each recommended arm (a categorical summary).

Comparison: population stability index Σ (cur − ref) · ln(cur / ref) over the reference bins (missing
values are a bin of their own; shares floored at 1e-4 so an empty bin stays finite), KS for numeric
features (max distance between the current empirical CDF and the reference percentiles' CDF), the change
in missing share, and the share of rows with a category level the reference never saw.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

REFERENCE_FILE = "reference.json"
REFERENCE_VERSION = 1
DECILES = 10
RARE_LEVEL = 0.01
OTHER = "__other__"
FLOOR = 1e-4


def numeric_summary(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    missing = float(1.0 - len(present) / len(values)) if len(values) else 0.0
    if len(present) == 0:
        return {"kind": "numeric", "edges": [], "shares": [], "missing": missing, "percentiles": []}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, DECILES + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return {"kind": "numeric", "edges": edges.tolist(), "shares": (counts / len(values)).tolist(),
            "missing": missing, "percentiles": np.quantile(present, np.linspace(0, 1, 101)).tolist()}


def categorical_summary(values) -> dict:
    series = pd.Series(values, dtype="object")
    missing = series.isna()
    shares = series[~missing].astype(str).value_counts() / len(series) if len(series) else pd.Series(dtype=float)
    rare = shares < RARE_LEVEL
    levels = {str(k): float(v) for k, v in shares[~rare].items()}
    other = float(shares[rare].sum())
    return {"kind": "categorical", "levels": levels, "other": other, "rare_levels": sorted(map(str, shares[rare].index)),
            "missing": float(missing.mean()) if len(series) else 0.0}


def build_reference(frame: pd.DataFrame, categorical: list[str], output: Mapping[str, object],
                    performance: Mapping[str, object] | None = None) -> dict:
    """The reference of a model: one summary per feature column of `frame`, one per output, and the
    validation figures (`performance`) that realised outcomes are later compared with."""
    features = {}
    for name in frame.columns:
        if name in categorical:
            features[name] = categorical_summary(frame[name].astype(object).where(frame[name].notna(), None))
        else:
            features[name] = numeric_summary(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64))
    outputs = {}
    for name, values in output.items():
        values = np.asarray(values)
        outputs[name] = numeric_summary(values) if values.dtype.kind in "fiu" else categorical_summary(values)
    return {"version": REFERENCE_VERSION, "rows": int(len(frame)), "features": features, "output": outputs,
            "performance": dict(performance or {})}


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    ref = np.maximum(np.asarray(reference, dtype=np.float64), FLOOR)
    cur = np.maximum(np.asarray(current, dtype=np.float64), FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _numbers(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)


def bin_shares(summary: dict, values) -> tuple[np.ndarray, np.ndarray]:
    """The reference's and the current share of rows in each of the reference's bins, missing last
    (numeric: decile bins; categorical: each kept level, then "other" = pooled rare and unseen levels)."""
    if summary["kind"] == "numeric":
        v = _numbers(values)
        present = v[~np.isnan(v)]
        missing = float(1.0 - len(present) / len(v)) if len(v) else 0.0
        edges = np.asarray(summary["edges"], dtype=np.float64)
        counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
        return np.append(summary["shares"] or np.zeros(len(edges) + 1), summary["missing"]), \
            np.append(counts / len(v), missing)
    series = pd.Series(values, dtype="object")
    n = len(series)
    missing = series.isna()
    text = series[~missing].astype(str)
    levels = list(summary["levels"])
    current = [float((text == level).sum()) / n for level in levels]
    current += [float((~text.isin(levels)).sum()) / n, float(missing.mean())]
    reference = [summary["levels"][level] for level in levels] + [summary["other"], summary["missing"]]
    return np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)


def compare_numeric(summary: dict, values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    present = values[~np.isnan(values)]
    missing = float(1.0 - len(present) / n) if n else 0.0
    reference, current = bin_shares(summary, values)
    ks = None
    percentiles = np.asarray(summary["percentiles"], dtype=np.float64)
    if len(present) and len(percentiles):
        points = np.unique(np.concatenate([present, percentiles]))
        current_cdf = np.searchsorted(np.sort(present), points, side="right") / len(present)
        # the reference CDF from its percentiles: F(p_k) = k / 100, linear in between
        reference_cdf = np.interp(points, percentiles, np.linspace(0, 1, 101), left=0.0, right=1.0)
        ks = float(np.max(np.abs(current_cdf - reference_cdf)))
    return {"psi": psi(reference, current), "ks": ks, "missing_delta": missing - summary["missing"],
            "unseen_share": 0.0}


def compare_categorical(summary: dict, values) -> dict:
    series = pd.Series(values, dtype="object")
    n = len(series)
    missing = series.isna()
    text = series[~missing].astype(str)
    reference, current = bin_shares(summary, values)
    unseen = ~text.isin(set(summary["levels"]) | set(summary.get("rare_levels", [])))
    return {"psi": psi(reference, current), "ks": None, "missing_delta": float(missing.mean()) - summary["missing"],
            "unseen_share": float(unseen.sum()) / n if n else 0.0}


def compare(summary: dict, values) -> dict:
    if summary["kind"] == "numeric":
        return compare_numeric(summary, _numbers(values))
    return compare_categorical(summary, values)


def status(figures: dict, warn: float, alert: float) -> str:
    """ok / warn / alert from the PSI (and the share of unseen levels, judged on the same scale)."""
    worst = max(figures["psi"], figures.get("unseen_share") or 0.0)
    return "alert" if worst >= alert else "warn" if worst >= warn else "ok"


def calibration_by_decile(y: np.ndarray, probability: np.ndarray) -> list[dict]:
    """Mean predicted probability against the observed rate, by decile of the prediction."""
    y, probability = np.asarray(y, dtype=np.float64), np.asarray(probability, dtype=np.float64)
    if len(y) < DECILES:
        return []
    order = np.argsort(probability, kind="stable")
    return [{"decile": i + 1, "expected": float(probability[part].mean()), "observed": float(y[part].mean()),
             "n": int(len(part))} for i, part in enumerate(np.array_split(order, DECILES))]
