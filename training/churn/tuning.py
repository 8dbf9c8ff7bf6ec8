"""Optuna search over LightGBM churn parameters, one nested MLflow run per trial.

Every trial trains on the same split (no per-trial re-splits, so trials are comparable), stops
early on the validation AUC and is pruned by `LightGBMPruningCallback` when it falls behind the
median trial. Small training sets (under CV_MAX_ROWS rows) are tuned by stratified K-fold
cross-validation instead, grouped by customer, the same folds for every trial: rounds come from the
mean CV curve and pruning watches it. The sampler is seeded TPE; the study lives in memory or in any Optuna RDB storage, so
several processes can tune one study (then the sampler is not seeded, or they would all sample the same parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import optuna
from sqlalchemy.exc import SQLAlchemyError

from features.errors import DataError, first_line
from training.studies import open_storage, shown_url

MAX_ROUNDS = 2000
EARLY_STOPPING_ROUNDS = 100
REPORT_INTERVAL = 10
# Direction of the effect on churn that the model may not reverse (monotone constraints).
MONOTONE = {"recency_days": 1, "frequency": -1, "purchase_count": -1}
CV_MAX_ROWS = 20_000
CV_FOLDS = 5


@dataclass
class TuningData:
    """Encoded training and validation arrays; the same for every trial."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    feature_names: Sequence[str]
    categorical: Sequence[int] = field(default_factory=list)


@dataclass
class CVData:
    """Encoded rows and the cross-validation folds (train, valid) row indices; the same for every trial."""

    X: np.ndarray
    y: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    feature_names: Sequence[str]
    categorical: Sequence[int] = field(default_factory=list)


def cv_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, seeded K folds that keep every row of one customer (`groups`) in one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    counts = np.bincount(np.asarray(y, dtype=int), minlength=2)
    if counts.min() < k:
        raise DataError(f"cross-validation needs at least {k} churned and {k} retained rows, got {counts.tolist()}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.asarray(tr), np.asarray(va)) for tr, va in splitter.split(np.zeros(len(y)), y, groups)]


def run_cv(params: dict, data: CVData, seed: int, threads: int, rounds: int = MAX_ROUNDS,
           callbacks: list | None = None) -> tuple[float, int, lgb.CVBooster]:
    """(mean validation AUC at the best round, that round, the fold boosters) of one parameter set."""
    full = lgb_params(params, data, seed, threads)
    dataset = lgb.Dataset(data.X, data.y, feature_name=list(data.feature_names),
                          categorical_feature=list(data.categorical) or "auto", free_raw_data=False)
    result = lgb.cv(full, dataset, num_boost_round=rounds, folds=data.folds, stratified=False,
                    callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False), *(callbacks or [])],
                    return_cvbooster=True)
    curve = np.asarray(result["valid auc-mean"])
    best = int(np.argmax(curve)) + 1
    return float(curve[best - 1]), best, result["cvbooster"]


def out_of_fold(boosters: lgb.CVBooster, data: CVData, rounds: int) -> np.ndarray:
    """Each row's prediction by the fold booster that did not train on it."""
    oof = np.empty(len(data.y))
    for booster, (_, valid) in zip(boosters.boosters, data.folds):
        oof[valid] = booster.predict(data.X[valid], num_iteration=rounds)
    return oof


def monotone_constraints(feature_names: Sequence[str]) -> list[int]:
    return [MONOTONE.get(name, 0) for name in feature_names]


def base_params(seed: int, threads: int) -> dict:
    return {"objective": "binary", "metric": "auc", "verbosity": -1, "seed": seed,
            "deterministic": True, "force_col_wise": True, "num_threads": threads,
            "bagging_freq": 1, "feature_pre_filter": False}


def suggest_params(trial: optuna.Trial) -> dict:
    """The LightGBM parameters that matter; rounds are found by early stopping."""
    return {
        "num_leaves": trial.suggest_int("num_leaves", 4, 128, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 500, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "lambda_l1": trial.suggest_float("lambda_l1", 1e-8, 10.0, log=True),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-8, 10.0, log=True),
        "monotone": trial.suggest_categorical("monotone", [True, False]),
    }


def lgb_params(params: dict, data: TuningData, seed: int, threads: int) -> dict:
    """Search parameters → LightGBM parameters (`monotone` becomes per-feature constraints)."""
    out = {**base_params(seed, threads), **{k: v for k, v in params.items() if k != "monotone"}}
    if params.get("monotone"):
        out["monotone_constraints"] = monotone_constraints(data.feature_names)
        out["monotone_constraints_method"] = "advanced"
    return out


def train_booster(params: dict, data: TuningData, seed: int, threads: int, rounds: int = MAX_ROUNDS,
                  valid: bool = True, callbacks: list | None = None) -> lgb.Booster:
    """Train on the training arrays; with `valid`, stop early on the validation AUC."""
    full = lgb_params(params, data, seed, threads)
    train_set = lgb.Dataset(data.X_train, data.y_train, feature_name=list(data.feature_names),
                            categorical_feature=list(data.categorical) or "auto", free_raw_data=False)
    if not valid:
        return lgb.train(full, train_set, num_boost_round=rounds)
    valid_set = lgb.Dataset(data.X_valid, data.y_valid, reference=train_set)
    cbs = [lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False), *(callbacks or [])]
    return lgb.train(full, train_set, num_boost_round=rounds, valid_sets=[valid_set],
                     valid_names=["valid"], callbacks=cbs)


def make_objective(data: TuningData | CVData, seed: int, threads: int,
                   max_rounds: int = MAX_ROUNDS) -> Callable[[optuna.Trial], float]:
    """Validation AUC of a trial: on the validation rows (TuningData) or the mean over CV folds (CVData)."""
    from optuna_integration import LightGBMPruningCallback

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial)
        pruning = LightGBMPruningCallback(trial, "auc", valid_name="valid", report_interval=REPORT_INTERVAL)
        if isinstance(data, CVData):
            score, rounds, _ = run_cv(params, data, seed, threads, rounds=max_rounds, callbacks=[pruning])
            trial.set_user_attr("best_iteration", rounds)
            return score
        booster = train_booster(params, data, seed, threads, rounds=max_rounds, callbacks=[pruning])
        trial.set_user_attr("best_iteration", int(booster.best_iteration or booster.current_iteration()))
        return float(booster.best_score["valid"]["auc"])

    return objective


def mlflow_trial_logger() -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """An Optuna callback that records each finished trial as a nested run under the parent."""
    import mlflow

    def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        pruned = trial.state == optuna.trial.TrialState.PRUNED
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True,
                              tags={"optuna.state": trial.state.name,
                                    "pruned": str(pruned).lower(), "study_name": study.study_name}):
            mlflow.log_params(trial.params)
            value = trial.value if trial.value is not None else (
                trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None)
            if value is not None:
                mlflow.log_metric("validation_auc", float(value))
            if "best_iteration" in trial.user_attrs:
                mlflow.log_metric("best_iteration", trial.user_attrs["best_iteration"])
            mlflow.log_metric("pruned", float(pruned))

    return log_trial


def run_study(data: TuningData | CVData, trials: int, timeout: float | None, seed: int, threads: int = 2,
              storage: str | None = None, study_name: str | None = None,
              callbacks: Sequence[Callable] = (), max_rounds: int = MAX_ROUNDS) -> optuna.Study:
    """Create or join the study and run `trials` more trials (or until `timeout` seconds)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # workers sharing a study (--storage) with one seed would sample the same parameters, trial for trial
    # (measured: every trial ran twice), so there the sampler is not seeded; the split and LightGBM still are
    sampler = optuna.samplers.TPESampler(seed=seed if storage is None else None)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=50)
    try:
        study = optuna.create_study(storage=open_storage(storage), study_name=study_name, direction="maximize",
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    except (ValueError, ImportError, SQLAlchemyError) as exc:
        raise DataError(f"--storage: cannot open Optuna storage {shown_url(storage)}: {first_line(exc)}") from None
    study.optimize(make_objective(data, seed, threads, max_rounds), n_trials=trials, timeout=timeout,
                   callbacks=list(callbacks), gc_after_trial=False)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise DataError("no Optuna trial completed; raise --trials or --timeout")
    return study


def trial_counts(study: optuna.Study) -> tuple[int, int]:
    """(finished trials, pruned trials) in the study — all processes sharing it included."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    finished = [s for s in states if s.is_finished()]
    return len(finished), sum(s == optuna.trial.TrialState.PRUNED for s in states)
