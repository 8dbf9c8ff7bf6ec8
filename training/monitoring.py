"""`winback monitor`: today's customers against the model's drift reference (`serving.monitoring.drift`),
realised outcomes against the figures it was validated with, and the MLflow run of it all.

Exit status for schedulers: 3 when a feature or the output is at `alert` or the model decayed, 0 otherwise
(2 for bad input, raised as DataError).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.contracts import unique_ids
from features.errors import DataError
from serving.monitoring.drift import calibration_by_decile, compare, status
from training.metrics import auc, logloss

ID_COLUMN = "customer_id"
DECAY_AUC_DROP = 0.03
EXIT_ALERT = 3


@dataclass(frozen=True)
class MonitorSettings:
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    label_col: str | None = None

    def check(self) -> None:
        if not 0 < self.psi_warn < self.psi_alert:
            raise DataError(f"--psi-warn {self.psi_warn} and --psi-alert {self.psi_alert}: need 0 < warn < alert")


def load_model(model_uri: str):
    """(kind, runtime) of a churn or an uplift model; DataError when it has no drift reference."""
    from serving.runtime.churn import load_churn_runtime
    from serving.runtime.uplift import load_uplift_runtime

    try:
        kind, runtime = "churn", load_churn_runtime(model_uri)
    except DataError as exc:
        if "is an uplift model" not in str(exc):
            raise
        kind, runtime = "uplift", load_uplift_runtime(model_uri)
    if runtime.reference is None:
        raise DataError(f"--model: {model_uri!r} has no drift reference (reference.json); it was trained before "
                        f"monitoring existed — train it again to monitor it")
    return kind, runtime


def model_outputs(kind: str, runtime, features: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's outputs for `features`, named as in its reference."""
    X = runtime.encoder.transform(features)
    if kind == "churn":
        return {"churn_probability": np.asarray(runtime.predict_proba(X), dtype=np.float64)}
    prediction = runtime.predict(X)
    return {"recommended_incentive": prediction.incentive, "expected_net_value": prediction.expected_net_value}


def realised_performance(reference: dict, probability: np.ndarray, ids: pd.Series, outcomes: pd.DataFrame,
                         label_col: str) -> dict:
    """Realised AUC, log loss and calibration by decile on the scored customers with an outcome, against the
    figures of the validation the model shipped with; `decay` when the AUC fell more than .03 below it."""
    for column in (ID_COLUMN, label_col):
        if column not in outcomes.columns:
            raise DataError(f"--outcomes: column {column!r} not found")
    labels = pd.to_numeric(outcomes[label_col], errors="coerce")
    if labels.isna().any() or not labels.isin([0, 1]).all():
        raise DataError(f"--outcomes: {label_col!r} must be 0 or 1 on every row")
    outcome_ids = unique_ids(outcomes[ID_COLUMN], "--outcomes")
    by_id = pd.Series(labels.to_numpy(dtype=np.float64), index=outcome_ids.to_numpy())
    matched = ids.isin(by_id.index).to_numpy()
    if matched.sum() < 20:
        raise DataError(f"--outcomes: only {int(matched.sum())} of the scored customers have an outcome (ids must "
                        f"match the features' {ID_COLUMN})")
    y = by_id.loc[ids[matched].to_numpy()].to_numpy()
    p = probability[matched]
    if y.min() == y.max():
        raise DataError(f"--outcomes: every {label_col!r} is {int(y[0])}; AUC needs both outcomes")
    trained = reference.get("performance", {})
    realised_auc = auc(y, p)
    decay = trained.get("auc") is not None and realised_auc < trained["auc"] - DECAY_AUC_DROP
    return {"rows": int(matched.sum()), "auc": realised_auc, "log_loss": logloss(y, p),
            "positive_rate": float(y.mean()), "training_auc": trained.get("auc"),
            "training_log_loss": trained.get("log_loss"), "auc_drop": None if trained.get("auc") is None
            else trained["auc"] - realised_auc, "calibration": calibration_by_decile(y, p),
            "training_calibration": trained.get("calibration", []), "decay": bool(decay),
            "status": "decay" if decay else "ok"}


def monitor(model_uri: str, features: pd.DataFrame, settings: MonitorSettings,
            outcomes: pd.DataFrame | None = None) -> tuple[dict, dict]:
    """The JSON document and what the report needs (reference and current values of every column)."""
    settings.check()
    kind, runtime = load_model(model_uri)
    reference = runtime.reference
    if features.index.name == ID_COLUMN:
        features = features.reset_index()
    if len(features) == 0:
        raise DataError("--features: the table is empty")
    missing = [name for name in reference["features"] if name not in features.columns]
    if missing:
        raise DataError(f"--features: column(s) {', '.join(map(repr, missing[:5]))} of the model not found "
                        f"(expected the output of `winback features build`)")
    if outcomes is not None and kind != "churn":
        raise DataError("--outcomes: realised performance is measured for churn models (an uplift model is "
                        "measured with `winback campaign evaluate`)")
    if outcomes is not None and not settings.label_col:
        raise DataError("--outcomes needs --label-col (the realised 0/1 label column)")
    if outcomes is not None and ID_COLUMN not in features.columns:
        raise DataError(f"--features: column {ID_COLUMN!r} is needed to join --outcomes")
    feature_figures = {}
    for name, summary in reference["features"].items():
        figures = compare(summary, features[name])
        figures["status"] = status(figures, settings.psi_warn, settings.psi_alert)
        feature_figures[name] = figures
    outputs = model_outputs(kind, runtime, features)
    output_figures = {}
    for name, summary in reference["output"].items():
        figures = compare(summary, outputs[name])
        figures["status"] = status(figures, settings.psi_warn, settings.psi_alert)
        output_figures[name] = figures
    worst_output = max(output_figures.values(), key=lambda f: f["psi"])
    meta = runtime.metadata
    doc = {
        "model": {"uri": model_uri, "kind": kind, "version": meta.get("model_version"),
                  "run_id": meta.get("run_id")},
        "rows": int(len(features)), "reference_rows": reference.get("rows"),
        "thresholds": {"psi_warn": settings.psi_warn, "psi_alert": settings.psi_alert},
        "features": dict(sorted(feature_figures.items(), key=lambda kv: -kv[1]["psi"])),
        "output": {"psi": worst_output["psi"], "status": _worst(f["status"] for f in output_figures.values()),
                   "details": output_figures},
    }
    if outcomes is not None:
        ids = features[ID_COLUMN].astype(str)
        doc["performance"] = realised_performance(reference, outputs["churn_probability"], ids, outcomes,
                                                  settings.label_col)
    statuses = [f["status"] for f in feature_figures.values()] + [doc["output"]["status"]]
    doc["status"] = "alert" if "alert" in statuses or doc.get("performance", {}).get("decay") else \
        _worst(statuses)
    doc["alerts"] = [name for name, f in feature_figures.items() if f["status"] == "alert"] + \
        [f"output:{name}" for name, f in output_figures.items() if f["status"] == "alert"] + \
        (["performance:decay"] if doc.get("performance", {}).get("decay") else [])
    return doc, {"reference": reference, "features": features, "outputs": outputs}


def _worst(statuses) -> str:
    statuses = set(statuses)
    return "alert" if "alert" in statuses else "warn" if "warn" in statuses else "ok"


def exit_code(doc: dict) -> int:
    return EXIT_ALERT if doc["status"] == "alert" else 0


def log_monitoring(doc: dict, html: Path | None, json_path: Path, tracking) -> str:
    """One MLflow run: metrics psi_<feature>, psi_output, realised AUC; tag status; the JSON and HTML."""
    import mlflow

    from training.tracking import metric_key

    tracking.activate()
    with mlflow.start_run(run_name=f"monitor-{doc['model']['kind']}") as run:
        mlflow.set_tags({"status": doc["status"], "command": "monitor", "model_uri": doc["model"]["uri"],
                         "model_run_id": str(doc["model"]["run_id"])})
        metrics = {f"psi_{name}": f["psi"] for name, f in doc["features"].items()}
        metrics["psi_output"] = doc["output"]["psi"]
        metrics["rows"] = doc["rows"]
        if "performance" in doc:
            metrics.update({"realised_auc": doc["performance"]["auc"],
                            "realised_log_loss": doc["performance"]["log_loss"]})
        mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})
        mlflow.log_artifact(str(json_path))
        if html is not None:
            mlflow.log_artifact(str(html))
        return run.info.run_id
