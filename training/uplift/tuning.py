"""Optuna search over the uplift learner and its LightGBM parameters, one nested MLflow run per trial.

The objective is the mean Qini AUC over arms on a fixed, seeded inner validation split (the same
split for every trial, so trials are comparable). Arms are fitted one after another and the running
mean is reported after each, so the median pruner can stop a poor trial after its first arms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna

from serving.runtime.catalog import Catalog
from serving.runtime.encoding import FeatureEncoder
from training.uplift.evaluate import arm_rows, qini_auc
from training.uplift.learners import LEARNERS, assemble_runtime, class_transformation_applies, fit_arm


DEGENERATE_SCORE = -1.0


@dataclass(frozen=True)
class TuningData:
    X_fit: np.ndarray
    arm_fit: np.ndarray
    y_fit: np.ndarray
    X_valid: np.ndarray
    arm_valid: np.ndarray
    y_valid: np.ndarray


def allowed_learners(arm: np.ndarray, n_arms: int, revenue: bool) -> list[str]:
    """Learners that apply: class transformation only for a binary outcome and a ~50/50 arm/control split."""
    learners = ["two_models", "solo_model"]
    if not revenue:
        shares = [np.mean(arm[(arm == j) | (arm == -1)] == j) for j in range(n_arms)]
        if all(class_transformation_applies(s) for s in shares):
            learners.append("class_transformation")
    return [lr for lr in LEARNERS if lr in learners]


def suggest(trial: optuna.Trial, learners: list[str]) -> tuple[str, dict]:
    learner = trial.suggest_categorical("learner", learners)
    params = {
        "n_estimators": trial.suggest_int("n_estimators", 50, 400, step=50),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 1000, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
    }
    return learner, params


def evaluate(learner: str, params: dict, data: TuningData, encoder: FeatureEncoder, catalog: Catalog, seed: int,
             report: Callable[[dict[str, float], int], None] | None = None) -> dict[str, float]:
    """Fit each arm on the fit split and return its validation Qini AUC; `report(qini_so_far, step)`
    after each arm may raise optuna.TrialPruned."""
    qini: dict[str, float] = {}
    for j, incentive in enumerate(catalog.incentives):
        rows, treatment = arm_rows(data.arm_fit, j)
        fit = fit_arm(learner, data.X_fit[rows], treatment, data.y_fit[rows], params, seed,
                      encoder.categorical_indices)
        one_arm = Catalog(catalog.control, (incentive,), catalog.outcome_value)
        uplift = assemble_runtime(encoder, one_arm, {"outcome": [fit]}).predict_uplift(data.X_valid)[:, 0]
        vrows, vtreatment = arm_rows(data.arm_valid, j)
        # a learner that gives every customer the same uplift (an S-learner that never splits on the arm)
        # cannot target anyone: it scores as the worst ranking rather than as random
        qini[incentive.name] = qini_auc(data.y_valid[vrows], uplift[vrows], vtreatment) \
            if np.ptp(uplift[vrows]) > 1e-9 else DEGENERATE_SCORE
        if report is not None:
            report(dict(qini), j)
    return qini


def tune(data: TuningData, encoder: FeatureEncoder, catalog: Catalog, learners: list[str], seed: int,
         trials: int, timeout: float | None, log_trial: Callable[[int, str, dict, dict, str], None]) -> optuna.Study:
    """Run the study; `log_trial(number, learner, params, qini_by_arm, state)` records each trial."""

    def objective(trial: optuna.Trial) -> float:
        learner, params = suggest(trial, learners)

        def report(qini_so_far: dict[str, float], step: int) -> None:
            trial.report(float(np.mean(list(qini_so_far.values()))), step)
            if trial.should_prune():
                log_trial(trial.number, learner, params, qini_so_far, "pruned")
                raise optuna.TrialPruned()

        qini = evaluate(learner, params, data, encoder, catalog, seed, report)
        log_trial(trial.number, learner, params, qini, "complete")
        return float(np.mean(list(qini.values())))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    # the defaults of plain scikit-uplift + LightGBM are the first candidates, so tuning can only help
    for learner in learners:
        study.enqueue_trial({"learner": learner, "n_estimators": 100, "learning_rate": 0.1, "num_leaves": 31,
                             "min_child_samples": 20, "reg_lambda": 1e-3, "colsample_bytree": 1.0,
                             "subsample": 1.0})
    study.optimize(objective, n_trials=trials, timeout=timeout, gc_after_trial=False)
    return study
