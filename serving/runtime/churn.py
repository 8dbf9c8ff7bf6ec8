"""The churn runtime model: everything serving needs to turn customer features into decisions.

One object, saved as `booster.txt` + `runtime.json` (no pickle), used by batch scoring, the MLflow
pyfunc wrapper and the online service alike, so online and batch answers are identical. It holds the
feature encoder, the LightGBM booster, the probability calibration, risk-tier thresholds, the value
tier thresholds and segment configuration learned at training time, and the label horizon.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import DataError
from serving.runtime.boosters import BoosterCaller
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.reference import load_reference, save_reference
from serving.runtime import linear as linear_model
from serving.runtime.value import VALUE_BOOSTER_FILE, ValueModel, rfm_from_columns
from serving.runtime.value.btyd import BgNbd, Rfm

FORMAT_VERSION = 1
BOOSTER_FILE = "booster.txt"
RUNTIME_FILE = "runtime.json"
SEGMENT_COLUMNS = ("recency_days", "tenure_days", "overdue_ratio")
SPEND_COLUMN = "spend_365d"
VALUE_COLUMNS = ("expected_spend", "value_if_retained", "value_at_risk", "clv_12m")


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 − p)) with p clipped to [1e-6, 1 − 1e-6]: the one logit of training and serving."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


# BG/NBD's tails (a heavy buyer silent for long has an alive probability near 0) are sharper than any label
# confirms: the term is bounded to ±7 log-odds (P between 0.1 % and 99.9 %).
BTYD_LOGIT_BOUND = 7.0


def btyd_silent_logit(X: np.ndarray, feature_names: list[str], bgnbd: dict, horizon_days: float) -> np.ndarray:
    """logit P(no purchase in the next `horizon_days`) under BG/NBD with parameters `bgnbd`, from the encoded
    `frequency`, `recency_days` and `tenure_days` columns (missing as 0: a customer without purchases).

    A structural term for the stack: it follows a customer's age and silence beyond anything the training
    snapshots saw the way the purchase process does, where trees stay flat and log-linear terms guess. Bounded
    to ±`BTYD_LOGIT_BOUND`."""
    X = np.asarray(X, dtype=float)
    frequency, recency, tenure = (np.nan_to_num(X[:, feature_names.index(name)], nan=0.0)
                                  for name in ("frequency", "recency_days", "tenure_days"))
    rfm = Rfm.from_features(frequency, np.clip(recency, 0.0, None), np.clip(tenure, 0.0, None), np.zeros(len(X)))
    p_purchase = BgNbd(**bgnbd).p_purchase(rfm.x, rfm.t_x, rfm.age, float(horizon_days))
    return np.clip(-logit(p_purchase), -BTYD_LOGIT_BOUND, BTYD_LOGIT_BOUND)


def stack_terms(X: np.ndarray, feature_names: list[str], columns: list[str], btyd: dict | None = None) -> np.ndarray:
    """log1p of the named encoded columns (negatives clipped to 0, missing as 0), shape (n, len(columns)); with
    `btyd` ({"bgnbd": parameters, "horizon_days": h}) one more column, `btyd_silent_logit`."""
    idx = [feature_names.index(name) for name in columns]
    terms = np.log1p(np.clip(np.nan_to_num(np.asarray(X, dtype=float)[:, idx], nan=0.0), 0.0, None))
    if btyd is None:
        return terms
    return np.column_stack([terms, btyd_silent_logit(X, feature_names, btyd["bgnbd"], btyd["horizon_days"])])


def apply_calibration(raw: np.ndarray, calibration: dict, terms: np.ndarray | None = None) -> np.ndarray:
    """Map the booster's raw probability to a calibrated one.

    `platt`: sigmoid(a·logit(raw) + b), strictly increasing so ranking (AUC) is unchanged;
    `logistic_stack`: sigmoid(a·logit(raw) + b + terms·weights), `terms` = `stack_terms` of the
    calibration's `columns` — log-linear terms keep ranking customers outside the range the trees
    saw in training (e.g. longer silence or tenure at scoring time than in any training snapshot);
    `isotonic`: piecewise-linear interpolation through the fitted (x, y) points; `none`: raw.
    """
    method = calibration.get("method", "none")
    if method == "platt":
        return 1.0 / (1.0 + np.exp(-(calibration["a"] * logit(raw) + calibration["b"])))
    if method == "logistic_stack":
        z = calibration["a"] * logit(raw) + calibration["b"] + terms @ np.asarray(calibration["weights"], dtype=float)
        return 1.0 / (1.0 + np.exp(-z))
    if method == "isotonic":
        return np.interp(raw, calibration["x"], calibration["y"])
    if method == "none":
        return raw
    raise DataError(f"unknown calibration method {method!r}")


class ChurnRuntime:
    """Encoder + booster + calibration + thresholds; sklearn-style, `__init__` only stores arguments.

    `risk_thresholds` = {"high": p, "medium": p}: a customer is `high` risk at churn_probability ≥ high,
    `medium` at ≥ medium, else `low`. `value_tier_thresholds` = (mid_min, high_min) on `spend_365d`,
    `segment_config` the `features.segment.SegmentConfig` fields; both None for models trained on a
    customer table without transaction features.

    `scorer` says which model gives the churn probability: {"kind": "lightgbm"} (the calibrated booster,
    the default), {"kind": "linear"} (the logistic regression `linear`, see serving.runtime.linear) or
    {"kind": "blend", "weight": w} (sigmoid(w·logit(p_lightgbm) + (1 − w)·logit(p_linear))).
    """

    def __init__(self, encoder: FeatureEncoder, booster_model: str, calibration: dict,
                 risk_thresholds: dict, horizon_days: int | None = None,
                 value_tier_thresholds: tuple[float, float] | None = None,
                 segment_config: dict | None = None, metadata: dict | None = None,
                 scorer: dict | None = None, linear: dict | None = None, value: ValueModel | None = None):
        self.encoder = encoder
        self.booster_model = booster_model
        self.calibration = calibration
        self.risk_thresholds = risk_thresholds
        self.horizon_days = horizon_days
        self.value_tier_thresholds = value_tier_thresholds
        self.segment_config = segment_config
        self.metadata = metadata or {}
        self.reference: dict | None = None  # drift reference (serving.monitoring.drift), set at training
        self.scorer = scorer or {"kind": "lightgbm"}
        self.linear = linear
        self.value = value
        if self.scorer["kind"] not in linear_model.SCORERS:
            raise DataError(f"unknown churn scorer {self.scorer['kind']!r}")
        if self.scorer["kind"] != "lightgbm" and linear is None:
            raise DataError(f"churn scorer {self.scorer['kind']!r} needs the linear model")

    def with_calibration(self, calibration: dict) -> "ChurnRuntime":
        """The same model with another calibration (e.g. the stack's BG/NBD term fitted as of another date)."""
        other = copy.copy(self)
        other.calibration = calibration
        return other

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        (target / BOOSTER_FILE).write_text(self.booster_model)
        doc = {
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder.to_dict(),
            "calibration": self.calibration,
            "risk_thresholds": self.risk_thresholds,
            "horizon_days": self.horizon_days,
            "value_tier_thresholds": list(self.value_tier_thresholds) if self.value_tier_thresholds else None,
            "segment_config": self.segment_config,
            "metadata": self.metadata,
            "scorer": self.scorer,
            "linear": self.linear,
            "value": self.value.to_dict() if self.value is not None else None,
        }
        if self.value is not None and self.value.booster_model is not None:
            (target / VALUE_BOOSTER_FILE).write_text(self.value.booster_model)
        (target / RUNTIME_FILE).write_text(json.dumps(doc, indent=2, default=str))
        save_reference(target, self.reference)
        return target

    @classmethod
    def load(cls, directory: str | Path) -> "ChurnRuntime":
        source = Path(directory)
        if not (source / RUNTIME_FILE).is_file() or not (source / BOOSTER_FILE).is_file():
            raise DataError(f"{source}: not a churn runtime directory ({RUNTIME_FILE} + {BOOSTER_FILE})")
        doc = json.loads((source / RUNTIME_FILE).read_text())
        if doc.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{source}: runtime format {doc.get('format_version')} is not {FORMAT_VERSION}")
        tiers = doc.get("value_tier_thresholds")
        value = None
        if doc.get("value"):
            booster_file = source / VALUE_BOOSTER_FILE
            value = ValueModel.from_dict(doc["value"], booster_file.read_text() if booster_file.is_file() else None)
        runtime = cls(encoder=FeatureEncoder.from_dict(doc["encoder"]),
                      booster_model=(source / BOOSTER_FILE).read_text(),
                      calibration=doc["calibration"], risk_thresholds=doc["risk_thresholds"],
                      horizon_days=doc.get("horizon_days"),
                      value_tier_thresholds=tuple(tiers) if tiers else None,
                      segment_config=doc.get("segment_config"), metadata=doc.get("metadata") or {},
                      scorer=doc.get("scorer"), linear=doc.get("linear"), value=value)
        runtime.reference = load_reference(source)
        return runtime

    # -- prediction ------------------------------------------------------------------------------
    @property
    def booster(self):
        if getattr(self, "_booster", None) is None:
            import lightgbm as lgb

            self._booster = lgb.Booster(model_str=self.booster_model)
        return self._booster

    @property
    def _caller(self) -> BoosterCaller:
        if getattr(self, "_booster_caller", None) is None:
            self._booster_caller = BoosterCaller(self.booster)
        return self._booster_caller

    def compile_trees(self, on: bool = True) -> "ChurnRuntime":
        """Large batches through the booster compiled by lleaves (the `fast` extra; compiled now or loaded
        from the cache, see serving.runtime.compiled); small calls and contributions are unchanged."""
        self._caller.use_compiled(on and self.scorer["kind"] != "linear")  # the linear scorer has no trees
        return self

    @property
    def feature_names(self) -> list[str]:
        return list(self.encoder.features_)

    @property
    def has_segments(self) -> bool:
        names = set(self.feature_names)
        return self.segment_config is not None and all(c in names for c in SEGMENT_COLUMNS)

    def _check(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise DataError(f"expected a 2-D array with {len(self.feature_names)} feature columns, got shape {X.shape}")
        return X

    def predict_raw(self, X) -> np.ndarray:
        return self._caller.predict(self._check(X))

    def predict_lightgbm(self, X, raw: np.ndarray | None = None) -> np.ndarray:
        """The calibrated booster's churn probability, shape (n,); `raw`: the booster's own of X, if at hand."""
        X = self._check(X)
        terms = None
        if self.calibration.get("method") == "logistic_stack":
            terms = stack_terms(X, self.feature_names, self.calibration["columns"], self.calibration.get("btyd"))
        return apply_calibration(self.predict_raw(X) if raw is None else raw, self.calibration, terms)

    def predict_linear(self, X) -> np.ndarray:
        """The logistic regression's churn probability, shape (n,)."""
        return 1.0 / (1.0 + np.exp(-linear_model.decision_function(self._check(X), self.linear)))

    def predict_proba(self, X, raw: np.ndarray | None = None) -> np.ndarray:
        """Churn probability from the model's scorer, shape (n,), for an encoded array from `self.encoder`; `raw`:
        the booster's raw probabilities of X when already computed (e.g. the same rows under refitted layers)."""
        kind = self.scorer["kind"]
        if kind == "lightgbm":
            return self.predict_lightgbm(X, raw)
        if kind == "linear":
            return self.predict_linear(X)
        return linear_model.blend(self.predict_lightgbm(X, raw), self.predict_linear(X), self.scorer["weight"])

    def risk_tier(self, probability) -> np.ndarray:
        p = np.asarray(probability, dtype=float)
        return np.where(p >= self.risk_thresholds["high"], "high",
                        np.where(p >= self.risk_thresholds["medium"], "medium", "low")).astype(object)

    def contributions(self, X) -> np.ndarray:
        """Per-feature contributions to the churn log-odds, shape (n, n_features + 1 bias): TreeSHAP of the
        booster; for the linear scorer coefficient × standardised value; for a blend the two weighted as
        in the blend (the booster's through the calibration slope)."""
        X = self._check(X)
        kind = self.scorer["kind"]
        if kind == "lightgbm":
            return self._caller.contributions(X)
        n_features = len(self.feature_names)
        linear = np.column_stack([linear_model.contributions(X, self.linear, n_features),
                                  np.full(len(X), self.linear["intercept"])])
        if kind == "linear":
            return linear
        weight = self.scorer["weight"]
        return weight * self.calibration.get("a", 1.0) * self._caller.contributions(X) + (1 - weight) * linear

    def reasons(self, X, top: int = 3) -> list[list[tuple[str, float]]]:
        """The `top` features pushing each customer's churn risk up most (largest contributions first)."""
        contrib = self.contributions(X)[:, :-1]
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :top]
        names = self.feature_names
        return [[(names[j], float(row[j])) for j in idx] for row, idx in zip(contrib, order)]

    def _column(self, X: np.ndarray, name: str) -> np.ndarray:
        return X[:, self.feature_names.index(name)]

    def segments(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(lifecycle_stage, value_tier) from the encoded feature columns and training-time thresholds."""
        X = self._check(X)
        if not self.has_segments:
            empty = np.full(len(X), None, dtype=object)
            return empty, empty.copy()
        from features.segment import SegmentConfig, assign_stage, assign_value_tier

        config = SegmentConfig(**self.segment_config)
        stage = assign_stage(self._column(X, "recency_days"), self._column(X, "tenure_days"),
                             self._column(X, "overdue_ratio"), config)
        if self.value_tier_thresholds is not None and SPEND_COLUMN in self.feature_names:
            tier = assign_value_tier(self._column(X, SPEND_COLUMN), tuple(self.value_tier_thresholds))
        else:
            tier = np.full(len(X), None, dtype=object)
        return np.asarray(stage, dtype=object), np.asarray(tier, dtype=object)

    def values(self, X, probability: np.ndarray) -> dict[str, np.ndarray]:
        """expected_spend, value_if_retained, value_at_risk and clv_12m (see serving.runtime.value), rounded
        to cents; NaN for a model without a value model (trained on a customer table, or before it existed)."""
        X = self._check(X)
        if self.value is None:
            return {name: np.full(len(X), np.nan) for name in VALUE_COLUMNS}

        def column(name: str) -> np.ndarray:
            return self._column(X, name)

        rfm = rfm_from_columns(column)
        retained = self.value.if_retained(column, rfm)
        expected = (1.0 - probability) * retained
        return {"expected_spend": np.round(expected, 2), "value_if_retained": np.round(retained, 2),
                "value_at_risk": np.round(probability * retained, 2),
                "clv_12m": np.round(expected * self.value.year_ratio(rfm), 2)}

    def score_array(self, X) -> pd.DataFrame:
        """churn_probability, risk_tier and, for transaction models, lifecycle_stage, value_tier and the value
        columns (`values`), one row per row of X."""
        X = self._check(X)
        p = self.predict_proba(X)
        out = {"churn_probability": p, "risk_tier": self.risk_tier(p)}
        if self.has_segments:
            stage, tier = self.segments(X)
            out["lifecycle_stage"] = stage
            out["value_tier"] = tier
            out.update(self.values(X, p))
        return pd.DataFrame(out)

    def score_frame(self, features: pd.DataFrame) -> pd.DataFrame:
        """Batch scoring of a feature table (indexed by customer_id); same index, columns of `score_array`."""
        scored = self.score_array(self.encoder.transform(features))
        scored.index = features.index
        return scored

    def score_records(self, features: pd.DataFrame) -> pd.DataFrame:
        """What the MLflow pyfunc answers: `score_frame` on a plain table, one row per input row in its order,
        with a fresh index."""
        return self.score_frame(features).reset_index(drop=True)


def load_churn_runtime(model_uri: str) -> ChurnRuntime:
    """The runtime inside an MLflow churn model (`runs:/…`, `models:/name@alias`); DataError if absent."""
    from serving.runtime.registry import download_model

    runtime_dir = download_model(model_uri) / "artifacts" / "runtime"
    if runtime_dir.is_dir() and not (runtime_dir / BOOSTER_FILE).is_file() and (runtime_dir / RUNTIME_FILE).is_file():
        raise DataError(f"--model: {model_uri!r} is an uplift model; this needs a churn model "
                        f"(e.g. models:/winback-churn@champion, from `winback train churn`)")
    if not runtime_dir.is_dir():
        raise DataError(f"--model: {model_uri!r} is not a winback churn model (no artifacts/runtime)")
    runtime = ChurnRuntime.load(runtime_dir)
    runtime.metadata = {**runtime.metadata, "model_uri": model_uri, **_registry_info(model_uri)}
    return runtime


def _registry_info(model_uri: str) -> dict:
    """model_name / model_version for `models:/name@alias` or `models:/name/version` URIs."""
    from mlflow.exceptions import MlflowException

    from serving.runtime.registry import registry_version

    try:
        ref = registry_version(model_uri)
    except MlflowException:
        return {}
    if ref is None or ref[1] is None:
        return {}
    return {"model_name": ref[0], "model_version": ref[1]}


def segment_config_dict(config) -> dict:
    """SegmentConfig (a dataclass) → plain dict for runtime.json."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(vars(config))
