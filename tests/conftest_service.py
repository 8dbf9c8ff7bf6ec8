"""Tiny churn and uplift models for the service tests, built with the runtimes' public constructors.

`write_models(root)` lays the runtimes out as MLflow model directories (`MLmodel` + `artifacts/runtime`),
so `winback package --churn-model DIR` imports them like registry downloads; `feature_table()` is a
`winback features build`-shaped table (customer_id + features) usable as WINBACK_FEATURES.
Everything is seeded and takes well under a second.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.segment import SegmentConfig
from serving.runtime.decision.catalog import Catalog
from serving.runtime.churn import ChurnRuntime
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.value.btyd import BgNbd, GammaGamma
from serving.runtime.uplift import UpliftRuntime
from serving.runtime.value import ValueModel, design, value_columns

REPO = Path(__file__).resolve().parents[1]
CHURN_FEATURES = ["recency_days", "tenure_days", "overdue_ratio", "frequency", "monetary_total", "spend_365d",
                  "top_category"]
UPLIFT_FEATURES = ["recency_days", "frequency", "spend_365d", "top_category"]  # a different encoding on purpose
CATEGORIES = ["books", "garden", "toys"]
CATALOG = Catalog.from_dict({"control": "none", "outcome_value": 40.0,
                             "incentives": [{"name": "discount_10", "cost": 4.0},
                                            {"name": "free_shipping", "cost": 1.0, "redemption_cost": 0.5}]})
CHURN_RUN_ID = "0123456789abcdef0123456789abcdef"
UPLIFT_RUN_ID = "fedcba9876543210fedcba9876543210"
PARAMS = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 10, "learning_rate": 0.2, "verbose": -1,
          "seed": 0, "num_threads": 1, "deterministic": True}


def feature_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(10, 1500, n).astype(float)
    frame = pd.DataFrame({
        "customer_id": [f"c{i}" for i in range(n)],
        "recency_days": np.minimum(rng.exponential(80, n).round(), tenure),
        "tenure_days": tenure,
        "overdue_ratio": np.where(rng.random(n) < 0.15, np.nan, rng.gamma(2.0, 0.8, n).round(3)),
        "frequency": rng.poisson(6, n).astype(float) + 1,
        "spend_365d": rng.gamma(2.0, 150.0, n).round(2),
        "top_category": pd.Categorical(rng.choice(CATEGORIES, n)),
    })
    frame["monetary_total"] = (frame["frequency"] * rng.gamma(3.0, 25.0, n)).round(2)
    return frame


def _train(X: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, rounds: int = 15) -> lgb.Booster:
    data = lgb.Dataset(X, y, categorical_feature=encoder.categorical_indices, free_raw_data=False)
    return lgb.train(PARAMS, data, num_boost_round=rounds)


def churn_runtime(frame: pd.DataFrame) -> ChurnRuntime:
    encoder = FeatureEncoder(CHURN_FEATURES).fit(frame)
    X = encoder.transform(frame)
    rng = np.random.default_rng(1)
    logit = 0.03 * (frame["recency_days"] - 60) - 0.2 * (frame["frequency"] - 6) + rng.normal(0, 0.5, len(frame))
    y = (logit > 0).astype(int).to_numpy()
    booster = _train(X, y, encoder)
    return ChurnRuntime(encoder, booster.model_to_string(), {"method": "platt", "a": 0.9, "b": -0.1},
                        {"high": 0.6, "medium": 0.3}, horizon_days=90, value_tier_thresholds=(150.0, 400.0),
                        segment_config=dataclasses.asdict(SegmentConfig()), metadata={"run_id": CHURN_RUN_ID},
                        value=value_model(frame))


def value_model(frame: pd.DataFrame) -> ValueModel:
    """A value model whose trees correct the BTYD baseline upwards for recent customers."""
    names = value_columns(list(frame.columns))
    bgnbd, gamma_gamma = BgNbd(r=0.8, alpha=40.0, a=0.7, b=2.0), GammaGamma(p=5.0, q=4.0, gamma=20.0)
    matrix, baseline = design(lambda c: frame[c].to_numpy(dtype=float), names, bgnbd, gamma_gamma, 90)
    target = baseline * np.where(frame["recency_days"].to_numpy() < 30, 1.5, 0.8)
    booster = lgb.train({"objective": "gamma", "verbosity": -1, "num_leaves": 4, "num_threads": 1, "seed": 0},
                        lgb.Dataset(matrix, target, init_score=np.log(baseline)), num_boost_round=10)
    return ValueModel(bgnbd.to_dict(), gamma_gamma.to_dict(), 90, names, booster.model_to_string())


def uplift_runtime(frame: pd.DataFrame) -> UpliftRuntime:
    """Built by training's own learner code, so the recipe format is whatever training writes."""
    from training.uplift.learners import fit_runtime

    encoder = FeatureEncoder(UPLIFT_FEATURES).fit(frame)
    X = encoder.transform(frame)
    rng = np.random.default_rng(2)
    arm = rng.integers(-1, 2, len(frame))  # -1 control, 0 discount_10, 1 free_shipping
    base = 1 / (1 + np.exp(0.02 * (frame["recency_days"].to_numpy() - 80)))
    lift = np.select([arm == 0, arm == 1], [0.25 * (frame["spend_365d"].to_numpy() > 300), 0.1], 0.0)
    y = (rng.random(len(frame)) < np.clip(base + lift, 0, 1)).astype(int)
    params = {"n_estimators": 15, "num_leaves": 7, "min_child_samples": 10, "n_jobs": 1}
    return fit_runtime(X, arm, y, encoder, CATALOG, "two_models", params, seed=0,
                       metadata={"run_id": UPLIFT_RUN_ID})


def write_mlflow_dir(runtime, root: Path, run_id: str) -> Path:
    """A directory shaped like a downloaded MLflow pyfunc model holding `runtime`."""
    runtime.save(root / "artifacts" / "runtime")
    (root / "MLmodel").write_text(f"run_id: {run_id}\nflavors: {{}}\n")
    return root


def write_models(root: Path, frame: pd.DataFrame | None = None) -> tuple[Path, Path]:
    frame = feature_table() if frame is None else frame
    churn = write_mlflow_dir(churn_runtime(frame), root / "churn_model", CHURN_RUN_ID)
    uplift = write_mlflow_dir(uplift_runtime(frame), root / "uplift_model", UPLIFT_RUN_ID)
    return churn, uplift


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"server at {url} not ready after {timeout:.0f}s")


def service_env(bentoml_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINBACK_", "BENTOML_"))}
    env.update(BENTOML_HOME=str(bentoml_home), BENTOML_DO_NOT_TRACK="true", **extra)
    return env


def winback(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "winback.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def register_models(root: Path, tracking_uri: str) -> dict[str, str]:
    """Log the fixture models as MLflow runs under `root`, register them as winback-churn / winback-uplift
    version 1 and alias them `champion`, like `winback train ... --register-as` does. Returns run ids."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("service-tests", artifact_location=(root / "mlartifacts").as_uri())
    frame = feature_table()
    run_ids = {}
    for name, build in (("winback-churn", churn_runtime), ("winback-uplift", uplift_runtime)):
        with mlflow.start_run(experiment_id=experiment) as run:
            local = write_mlflow_dir(build(frame), root / "logged" / name, run.info.run_id)
            mlflow.log_artifacts(str(local), "model")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version
        mlflow.MlflowClient().set_registered_model_alias(name, "champion", version)
        run_ids[name] = run.info.run_id
    return run_ids
