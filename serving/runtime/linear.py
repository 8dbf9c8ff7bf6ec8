"""A logistic regression over the encoded features, as the runtime applies it (numpy only).

Training fits it (`training.churn.linear`) and stores a plain dict; this module turns encoded rows
into its design matrix and scores them. The design, column by column of the encoder:
- a numeric feature never negative in training → log1p(x), else x; missing → the training median
  of that value, plus a 0/1 "was missing" column when training had missing values;
- a categorical feature → one 0/1 column per level (unseen or missing: all zero);
then every column standardised with the training mean and scale.
"""

from __future__ import annotations

import numpy as np

SCORERS = ("lightgbm", "linear", "blend")


def design(X: np.ndarray, model: dict) -> np.ndarray:
    """The standardised design matrix (n, len(model["coef"])) of encoded rows X."""
    X = np.asarray(X, dtype=np.float64)
    blocks = []
    for spec in model["columns"]:
        x = X[:, spec["index"]]
        if spec["kind"] == "category":
            levels = np.arange(spec["levels"], dtype=np.float64)
            blocks.append((x[:, None] == levels[None, :]).astype(np.float64))
            continue
        missing = np.isnan(x)
        value = np.log1p(np.clip(x, 0.0, None)) if spec["log"] else x
        blocks.append(np.where(missing, spec["fill"], value)[:, None])
        if spec["missing_flag"]:
            blocks.append(missing.astype(np.float64)[:, None])
    Z = np.hstack(blocks) if blocks else np.empty((len(X), 0))
    return (Z - np.asarray(model["mean"])) / np.asarray(model["scale"])


def column_owner(model: dict) -> list[int]:
    """For each design column, the encoder feature index it comes from."""
    owner = []
    for spec in model["columns"]:
        width = spec["levels"] if spec["kind"] == "category" else 1 + int(spec["missing_flag"])
        owner += [spec["index"]] * width
    return owner


def decision_function(X: np.ndarray, model: dict) -> np.ndarray:
    """Log-odds of churn for encoded rows."""
    return design(X, model) @ np.asarray(model["coef"]) + model["intercept"]


def contributions(X: np.ndarray, model: dict, n_features: int) -> np.ndarray:
    """Per encoder feature, coefficient × standardised value summed over its design columns (n, n_features)."""
    terms = design(X, model) * np.asarray(model["coef"])
    out = np.zeros((len(terms), n_features))
    np.add.at(out.T, np.asarray(column_owner(model)), terms.T)
    return out


def blend(p_lightgbm: np.ndarray, p_linear: np.ndarray, weight: float) -> np.ndarray:
    """sigmoid(w·logit(p_lightgbm) + (1 − w)·logit(p_linear)): the blend of the two probabilities."""
    from serving.runtime.churn import logit

    return 1.0 / (1.0 + np.exp(-(weight * logit(p_lightgbm) + (1 - weight) * logit(p_linear))))
