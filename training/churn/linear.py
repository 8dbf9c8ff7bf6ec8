"""The simple reference as a candidate: logistic regression on log-transformed, standardised features,
and its blend with the tuned LightGBM. The runtime applies both with `serving.runtime.linear`."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from serving.runtime.encoding import FeatureEncoder
from serving.runtime.linear import decision_function, design

BLEND_WEIGHTS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))  # LightGBM's share in the blend


def fit_linear(X: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, C: float = 1.0, start: dict | None = None) -> dict:
    """Fit the design (see serving.runtime.linear) and an L2 logistic regression on encoded training rows; `start`,
    a model fitted on similar rows (e.g. the full set, for a resample of it), is where the solver starts when its
    design has the same columns (the optimum is the same; it gets there in fewer iterations)."""
    X = np.asarray(X, dtype=np.float64)
    columns = []
    for index, name in enumerate(encoder.features_):
        x = X[:, index]
        if name in encoder.categories_:
            columns.append({"name": name, "index": index, "kind": "category", "levels": len(encoder.categories_[name])})
            continue
        seen = x[~np.isnan(x)]
        log = bool(len(seen) and seen.min() >= 0)
        value = np.log1p(seen) if log else seen
        columns.append({"name": name, "index": index, "kind": "number", "log": log,
                        "fill": float(np.median(value)) if len(value) else 0.0,
                        "missing_flag": bool(np.isnan(x).any())})
    model = {"columns": columns, "mean": 0.0, "scale": 1.0}
    Z = design(X, model)
    mean, scale = Z.mean(axis=0), Z.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    model.update(mean=mean.tolist(), scale=scale.tolist())
    fitted = LogisticRegression(C=C, max_iter=2000)
    if start is not None and len(start["coef"]) == Z.shape[1]:
        fitted.set_params(warm_start=True)
        fitted.coef_, fitted.intercept_ = np.asarray([start["coef"]], dtype=float), np.asarray([start["intercept"]])
    fitted.fit((Z - mean) / scale, y.astype(int))
    model.update(coef=fitted.coef_[0].tolist(), intercept=float(fitted.intercept_[0]))
    return model


def predict_linear(X: np.ndarray, model: dict) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-decision_function(X, model)))
