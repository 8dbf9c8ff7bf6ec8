"""Binary classification metrics as pure functions: check the inputs once, then compute.

Used for the validation table of every churn run and for baselines, so that the model and the
baselines are always measured by the same code on the same rows.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from features.errors import DataError

EPS = 1e-15


def _check(y_true, score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(score, dtype=float).ravel()
    if len(y) != len(s):
        raise DataError(f"labels and scores differ in length ({len(y)} vs {len(s)})")
    if len(y) == 0:
        raise DataError("no rows to evaluate")
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError("labels must be 0 or 1")
    if np.isnan(s).any():
        raise DataError("scores contain NaN")
    return y, s


def _both_classes(y: np.ndarray) -> bool:
    return 0.0 < y.mean() < 1.0


def auc(y_true, score) -> float:
    """Area under the ROC curve; NaN when the labels hold only one class."""
    y, s = _check(y_true, score)
    return float(skm.roc_auc_score(y, s)) if _both_classes(y) else float("nan")


def pr_auc(y_true, score) -> float:
    """Average precision (area under the precision-recall curve) for the positive class."""
    y, s = _check(y_true, score)
    return float(skm.average_precision_score(y, s)) if _both_classes(y) else float("nan")


def logloss(y_true, probability) -> float:
    y, p = _check(y_true, probability)
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y_true, probability) -> float:
    y, p = _check(y_true, probability)
    return float(np.mean((p - y) ** 2))


def lift_at(y_true, score, fraction: float = 0.10) -> float:
    """Positive rate among the top `fraction` of rows by score, divided by the overall positive rate.

    Ties at the boundary are broken by row order after a stable sort, so the top group always holds
    exactly ceil(fraction * n) rows.
    """
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")
    y, s = _check(y_true, score)
    base = y.mean()
    if base == 0:
        return float("nan")
    k = int(np.ceil(fraction * len(y)))
    top = np.argsort(-s, kind="stable")[:k]
    return float(y[top].mean() / base)


def classification_summary(y_true, probability) -> dict[str, float]:
    """The validation table: auc, pr_auc, logloss, brier, lift_at_10, n, churn_rate."""
    y, p = _check(y_true, probability)
    return {
        "auc": auc(y, p),
        "pr_auc": pr_auc(y, p),
        "logloss": logloss(y, p),
        "brier": brier(y, p),
        "lift_at_10": lift_at(y, p, 0.10),
        "n": int(len(y)),
        "churn_rate": float(y.mean()),
    }


def _delong_components(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components: V10 per positive (share of negatives it outranks) and
    V01 per negative (share of positives that outrank it), ties counting one half."""
    from scipy.stats import rankdata

    pos, neg = s[y == 1], s[y == 0]
    m, n = len(pos), len(neg)
    rank_all = rankdata(np.concatenate([pos, neg]))
    v10 = (rank_all[:m] - rankdata(pos)) / n
    v01 = 1.0 - (rank_all[m:] - rankdata(neg)) / m
    return float(v10.mean()), v10, v01


def paired_auc(y_true, score_a, score_b) -> dict[str, float]:
    """AUCs of two scores on the same rows, their difference (a − b) and DeLong standard errors, the
    difference's paired: what the two scores share on these rows cancels (DeLong, DeLong & Clarke-Pearson 1988)."""
    y, a = _check(y_true, score_a)
    _, b = _check(y_true, score_b)
    if len(a) != len(b):
        raise DataError(f"the two scores differ in length ({len(a)} vs {len(b)})")
    if not _both_classes(y) or min(y.sum(), (1 - y).sum()) < 2:
        raise DataError("comparing AUCs needs at least two rows of each class")
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = _delong_components(y, a), _delong_components(y, b)
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    cov = s10 / len(v10_a) + s01 / len(v01_a)
    var_diff = max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)
    return {"value_a": auc_a, "value_b": auc_b, "se_a": float(np.sqrt(cov[0, 0])), "se_b": float(np.sqrt(cov[1, 1])),
            "difference": auc_a - auc_b, "se_difference": float(np.sqrt(var_diff))}
