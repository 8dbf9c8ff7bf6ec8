"""Optuna search over the uplift learner and its LightGBM parameters, one nested MLflow run per trial.

The objective is what the product is judged by: the doubly-robust net value per customer of the model's
decisions over sending nothing, measured out of fold on every training row (K seeded folds stratified by
arm × outcome, the same for every trial, so trials are comparable; one validation split of a few thousand
rows is too noisy to rank trials), with its paired standard error. Qini AUC per arm is logged beside it
as a diagnostic of ranking.

Several processes can tune one study (`storage` + `study_name`, an Optuna RDB such as PostgreSQL). The choice
of the trial to ship compares trials row by row (`choose`), so each trial also stores its per-row terms in the
study (compressed float64, a user attribute): every process then chooses from every trial of the study.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna

from serving.runtime.decision.catalog import Catalog
from serving.runtime.encoding import FeatureEncoder
from training.uplift.evaluate import arm_rows, decision_terms, qini_auc
from training.studies import open_storage
from training.uplift.learners import LEARNERS, class_transformation_applies, fit_runtime


DEGENERATE_SCORE = -1.0


FOLDS = 3
REGULARISED = {"n_estimators": 400, "learning_rate": 0.02, "num_leaves": 7, "min_child_samples": 300,
               "reg_lambda": 10.0, "colsample_bytree": 0.7, "subsample": 0.7}


def start_params(fit_rows: float, n_arms: int) -> dict:
    """The regularised start every learner is tried with first, for fits on `fit_rows` campaign rows: slow
    boosting, because uplift is a small difference of noisy outcomes and LightGBM's defaults (100 rounds at
    0.1, 31 leaves, 20 rows per leaf) mostly fit noise; leaves hold at least ~5 % of one arm-vs-control fit
    (20 to 300 rows)."""
    arm_rows = fit_rows * 2 / (n_arms + 1)
    return {**REGULARISED, "min_child_samples": int(np.clip(arm_rows / 20, 20, REGULARISED["min_child_samples"]))}


@dataclass(frozen=True)
class TuningData:
    """The training rows and their folds ((fit, valid) row indices into them)."""

    X: np.ndarray
    arm: np.ndarray
    y: np.ndarray
    propensity: np.ndarray
    revenue: np.ndarray | None
    folds: list[tuple[np.ndarray, np.ndarray]]


def uplift_folds(arm: np.ndarray, y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    strata = (arm + 1) * 2 + y
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros(len(y)), strata)]


@dataclass(frozen=True)
class TrialResult:
    """One trial's validation figures: the objective (DR net value ± SE), Qini AUC per arm, and the per-row
    out-of-fold terms behind the value (for paired comparisons between trials)."""

    net_value: float
    net_value_se: float
    qini: dict[str, float]
    terms: np.ndarray | None = None


def allowed_learners(arm: np.ndarray, n_arms: int, revenue: bool) -> list[str]:
    """Learners that apply: class transformation only for a binary outcome and a ~50/50 arm/control split."""
    learners = ["two_models", "solo_model", "x_learner", "dr_learner"]
    if not revenue:
        shares = [np.mean(arm[(arm == j) | (arm == -1)] == j) for j in range(n_arms)]
        if all(class_transformation_applies(s) for s in shares):
            learners.append("class_transformation")
    return [lr for lr in LEARNERS if lr in learners]


def suggest(trial: optuna.Trial, learners: list[str]) -> tuple[str, dict]:
    learner = trial.suggest_categorical("learner", learners)
    params = {
        "n_estimators": trial.suggest_int("n_estimators", 50, 1000, step=50),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 1000, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
    }
    return learner, params


def evaluate(learner: str, params: dict, data: TuningData, encoder: FeatureEncoder, catalog: Catalog,
             seed: int) -> TrialResult:
    """Fit every arm on each fold's fit rows as the final model would be fitted, and measure its decisions and
    uplift ranking on the fold's other rows; the figures pool every row's out-of-fold terms."""
    n, k = len(data.y), len(catalog.arms)
    uplift, terms = np.empty((n, k)), np.empty(n)
    revenue = data.revenue
    for fit, valid in data.folds:
        runtime = fit_runtime(data.X[fit], data.arm[fit], data.y[fit], encoder, catalog, learner, params, seed,
                              None if revenue is None else revenue[fit], propensity=data.propensity[fit])
        prediction = runtime.predict(data.X[valid])
        uplift[valid] = prediction.uplift
        terms[valid] = decision_terms(prediction, data.y[valid], None if revenue is None else revenue[valid],
                                      data.arm[valid], data.propensity[valid], catalog)
    qini: dict[str, float] = {}
    for j, name in enumerate(catalog.arms):
        rows, treatment = arm_rows(data.arm, j)
        # a learner that gives every customer the same uplift cannot rank anyone: worst, not random
        qini[name] = qini_auc(data.y[rows], uplift[rows, j], treatment) if np.ptp(uplift[rows, j]) > 1e-9 \
            else DEGENERATE_SCORE
    return TrialResult(float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(n)), qini, terms)


def pack_terms(terms: np.ndarray) -> str:
    """Per-row terms as text for a study's user attribute (float64, zlib, base64)."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(terms, dtype="<f8").tobytes(), 6)).decode("ascii")


def unpack_terms(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f8")


def tune(data: TuningData, encoder: FeatureEncoder, catalog: Catalog, learners: list[str], seed: int,
         trials: int, timeout: float | None,
         log_trial: Callable[[int, str, dict, TrialResult], None], storage: str | None = None,
         study_name: str | None = None) -> tuple[optuna.Study, optuna.trial.FrozenTrial, int]:
    """Run the study (in memory, or joined in `storage`) and choose a trial (`choose`) among the trials whose
    per-row terms are known (also returned: how many, every complete trial of the study); `log_trial(number,
    learner, params, result)` records each trial this process runs. Each trial's figures are also kept as
    user attributes (`net_value_se`, `qini`, and `terms` when the study is shared)."""
    terms: dict[int, np.ndarray] = {}

    def objective(trial: optuna.Trial) -> float:
        learner, params = suggest(trial, learners)
        result = evaluate(learner, params, data, encoder, catalog, seed)
        terms[trial.number] = result.terms
        trial.set_user_attr("net_value_se", result.net_value_se)
        trial.set_user_attr("qini", result.qini)
        if storage is not None:
            trial.set_user_attr("terms", pack_terms(result.terms))
        log_trial(trial.number, learner, params, result)
        return result.net_value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # workers sharing a study with one seed would sample the same parameters trial for trial; the folds and
    # LightGBM still follow the seed, so every worker's trials are measured on the same rows
    sampler = optuna.samplers.TPESampler(seed=seed if storage is None else None)
    study = optuna.create_study(direction="maximize", sampler=sampler, storage=open_storage(storage),
                                study_name=study_name, load_if_exists=True)
    # the regularised starts, once per study (workers starting at the same moment may both queue them: they are
    # then run twice, which costs trials but changes no choice)
    start = start_params(len(data.y) * (FOLDS - 1) / FOLDS, len(catalog.arms))
    for learner in learners:
        study.enqueue_trial({"learner": learner, **start}, skip_if_exists=True)
    study.optimize(objective, n_trials=trials, timeout=timeout, gc_after_trial=False)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.number not in terms and "terms" in trial.user_attrs:  # another process's trial
            shared = unpack_terms(trial.user_attrs["terms"])
            if len(shared) == len(data.y):
                terms[trial.number] = shared
    return study, choose(study, terms, starts=len(learners)), len(terms)


def choose(study: optuna.Study, terms: dict[int, np.ndarray], starts: int) -> optuna.trial.FrozenTrial:
    """The trial to ship: the best of the regularised starts (the first `starts` trials), replaced by a searched
    trial only when it beats the incumbent by more than the standard error of their paired difference (same
    rows) — the promotion rule. Every trial's value is a noisy estimate; the plain maximum over many trials
    picks noise (measured on the simulator: 57–60 % of the oracle's value against 66 % for the start)."""
    done = [t for t in study.trials if t.value is not None and t.number in terms]
    incumbent = max((t for t in done if t.number < starts), key=lambda t: t.value, default=None) or \
        max(done, key=lambda t: t.value)
    for trial in sorted(done, key=lambda t: t.value, reverse=True):
        if trial.number == incumbent.number or trial.value <= incumbent.value:
            continue
        diff = terms[trial.number] - terms[incumbent.number]
        if diff.mean() > diff.std(ddof=1) / np.sqrt(len(diff)):
            incumbent = trial
            break  # the best remaining trial that clears the bar; lower ones cannot beat it by more
    return incumbent
