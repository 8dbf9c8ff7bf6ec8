"""Artifacts of a churn run: ROC and calibration plots, feature importance, Optuna history, feature list.

Each function writes files into a directory and returns their paths; the caller logs the directory
to MLflow. Nothing here trains or decides anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def roc_plot(y, probability, baselines: dict[str, np.ndarray], path: Path) -> Path:
    """ROC of the model with the baselines' ROC curves on the same validation rows."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, score in {"model": probability, **baselines}.items():
        score = np.asarray(score, dtype=float)  # missing (a prospect's recency) ranks as the riskiest
        fpr, tpr, _ = roc_curve(y, np.nan_to_num(score, nan=np.nanmax(score) if np.isfinite(score).any() else 0.0))
        ax.plot(fpr, tpr, label=name, lw=2 if name == "model" else 1)
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def calibration_table(y, probability, bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed churn rate per probability decile."""
    frame = pd.DataFrame({"y": np.asarray(y, float), "p": np.asarray(probability, float)})
    frame["bin"] = pd.qcut(frame["p"].rank(method="first"), q=min(bins, len(frame)), labels=False)
    return frame.groupby("bin").agg(predicted=("p", "mean"), observed=("y", "mean"), n=("y", "size"))


def calibration_plot(y, probability, path: Path) -> Path:
    table = calibration_table(y, probability)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(table["predicted"], table["observed"], marker="o", label="model")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect")
    ax.set(xlabel="predicted churn probability", ylabel="observed churn rate", title="Calibration (validation deciles)")
    ax.legend(loc="upper left")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def importance_table(booster, feature_names) -> pd.DataFrame:
    return (pd.DataFrame({"feature": list(feature_names),
                          "gain": booster.feature_importance("gain"),
                          "splits": booster.feature_importance("split")})
            .sort_values("gain", ascending=False).reset_index(drop=True))


def importance_artifacts(booster, feature_names, directory: Path) -> list[Path]:
    table = importance_table(booster, feature_names)
    csv = directory / "feature_importance.csv"
    table.to_csv(csv, index=False)
    shown = table.head(25).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.3 * len(shown))))
    ax.barh(shown["feature"], shown["gain"])
    ax.set(xlabel="total gain", title="Feature importance")
    png = directory / "feature_importance.png"
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [csv, png]


def optuna_artifacts(study: optuna.Study, directory: Path) -> list[Path]:
    """Trial table (CSV) and optimisation history (validation AUC per trial and best so far)."""
    trials = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs", "duration"))
    csv = directory / "optuna_trials.csv"
    trials.to_csv(csv, index=False)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(6, 4))
    if done:
        numbers = [t.number for t in done]
        values = [t.value for t in done]
        ax.scatter(numbers, values, s=12, label="trial")
        ax.step(numbers, np.maximum.accumulate(values), where="post", color="C1", label="best so far")
    pruned = [t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    if pruned:
        ax.scatter(pruned, [min(v for v in [t.value for t in done] or [0.5])] * len(pruned),
                   marker="x", color="grey", label="pruned")
    ax.set(xlabel="trial", ylabel="validation AUC", title="Optuna optimisation history")
    ax.legend(loc="lower right")
    png = directory / "optuna_history.png"
    fig.savefig(png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [csv, png]


def feature_list(frame: pd.DataFrame, encoder, path: Path) -> Path:
    """Feature order with dtypes and category levels, as the model expects them."""
    doc = [{"name": name, "dtype": str(frame[name].dtype),
            "kind": "categorical" if name in encoder.categories_ else "numeric",
            "categories": encoder.categories_.get(name)} for name in encoder.features_]
    path.write_text(json.dumps(doc, indent=2))
    return path
