"""Fit the value model behind `value_if_retained` (see serving.runtime.value) on the churn snapshots.

Target: each snapshot row's `future_spend` among customers who bought in the label window. BG/NBD and
Gamma-Gamma are fitted per snapshot on that snapshot's customers only (point in time), and once more on the
features as of the cutoff for scoring. LightGBM (gamma objective, the BTYD conditional expectation as
offset) is tuned briefly with Optuna on the churn split: trained on the training rows, early-stopped and
compared on the validation rows by gamma deviance, then refitted on training + validation rows with the
rounds scaled up. When no tuned tree model beats the BTYD baseline alone on validation, the baseline ships.
The test rows, seen by nothing before, give the figures logged to MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from features.errors import DataError
from serving.runtime.value import ValueModel, design, rfm_from_columns, value_columns
from training.labels import FUTURE_SPEND, SNAPSHOT
from training.value.btyd import fit_bgnbd, fit_gamma_gamma

VALUE_TRIALS = 10  # at most this many Optuna trials ("tuned briefly"); never more than the churn model's
MAX_ROUNDS = 1000
EARLY_STOPPING = 50
MIN_BUYERS = 50  # fewer buyers in training or validation: the baseline alone


@dataclass
class ValueFit:
    model: ValueModel  # BTYD fitted as of the cutoff: for scoring
    test_model: ValueModel  # the same trees with the test rows' snapshot fit: for the test figures
    validation: dict  # gamma deviance of the baseline and of the trees on the validation buyers
    trials: int


def value_scores(predicted: np.ndarray, realised: np.ndarray) -> dict[str, float]:
    """Spearman correlation per customer, total predicted / realised, share of realised spend captured by
    the top 10 % of predictions (ties broken by position)."""
    predicted, realised = np.asarray(predicted, dtype=float), np.asarray(realised, dtype=float)
    top = np.argsort(-predicted, kind="stable")[: int(np.ceil(0.1 * len(predicted)))]
    total = realised.sum()
    return {"spearman": float(stats.spearmanr(predicted, realised).statistic),
            "total_ratio": float(predicted.sum() / total) if total > 0 else float("nan"),
            "top10_capture": float(realised[top].sum() / total) if total > 0 else float("nan")}


def gamma_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean gamma deviance 2·(y/μ − log(y/μ) − 1) for y, μ > 0."""
    ratio = np.asarray(y, dtype=float) / np.asarray(mu, dtype=float)
    return float(np.mean(2.0 * (ratio - np.log(ratio) - 1.0)))


def fit_btyd(features: pd.DataFrame):
    """(BgNbd, GammaGamma) fitted on one point-in-time feature table."""
    rfm = rfm_from_columns(lambda name: features[name].to_numpy(dtype=float))
    buyers = rfm.age > 0
    rfm = type(rfm)(rfm.x[buyers], rfm.t_x[buyers], rfm.age[buyers], rfm.m[buyers])
    return fit_bgnbd(rfm), fit_gamma_gamma(rfm)


def point_in_time_fits(data) -> tuple[dict, tuple] | None:
    """BTYD fitted point in time on a churn training set (`training.churn.data.ChurnData`): ({snapshot: fit on that
    snapshot's customers}, the fit as of the cutoff), each as `fit_btyd` makes it; None when BTYD cannot be fitted
    (too few repeat buyers)."""
    rows = pd.concat([data.train, data.valid, data.test])
    try:
        return ({snapshot: fit_btyd(part) for snapshot, part in rows.groupby(SNAPSHOT, sort=True)},
                fit_btyd(data.latest_features))
    except DataError:
        return None


def _designs(rows: pd.DataFrame, names: list[str], fits: dict, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The trees' matrix and the baseline for stacked rows, each row with its own snapshot's BTYD fit."""
    matrix, baseline = np.empty((len(rows), len(names))), np.empty(len(rows))
    snapshots = rows[SNAPSHOT].to_numpy()
    for snapshot, (bgnbd, gamma_gamma) in fits.items():
        at = np.flatnonzero(snapshots == snapshot)
        part = rows.iloc[at]
        matrix[at], baseline[at] = design(lambda name: part[name].to_numpy(dtype=float), names, bgnbd, gamma_gamma,
                                          horizon)
    return matrix, baseline


def _buyers(rows: pd.DataFrame, names: list[str], fits: dict, horizon: int):
    bought = rows[FUTURE_SPEND].to_numpy(dtype=float) > 0
    matrix, baseline = _designs(rows[bought], names, fits, horizon)
    return matrix, baseline, rows[FUTURE_SPEND].to_numpy(dtype=float)[bought]


def _train(params: dict, X, y, base, rounds: int, threads: int, seed: int, valid=None):
    import lightgbm as lgb

    full = {"objective": "gamma", "metric": "gamma_deviance", "verbosity": -1, "num_threads": threads,
            "seed": seed, "deterministic": True, "force_col_wise": True, **params}
    train = lgb.Dataset(X, y, init_score=np.log(base), free_raw_data=False)
    if valid is None:
        return lgb.train(full, train, num_boost_round=rounds)
    X_valid, y_valid, base_valid = valid
    checked = lgb.Dataset(X_valid, y_valid, init_score=np.log(base_valid), reference=train)
    return lgb.train(full, train, num_boost_round=rounds, valid_sets=[checked],
                     callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False)])


def fit_value_model(data, horizon_days: int, trials: int, seed: int, threads: int,
                    btyd: tuple[dict, tuple] | None = None) -> ValueFit | None:
    """The value model of a churn training set (`training.churn.data.ChurnData`); None when the data has no
    purchase features or BTYD cannot be fitted (too few repeat buyers). `btyd`: the fits `point_in_time_fits`
    already made, if any."""
    import optuna

    names = value_columns(list(data.feature_columns))
    if data.kind != "transactions" or data.latest_features is None or names is None:
        return None
    fitted = btyd if btyd is not None else point_in_time_fits(data)
    if fitted is None:
        return None
    fits, scoring_fit = fitted
    X_train, base_train, y_train = _buyers(data.train, names, fits, horizon_days)
    X_valid, base_valid, y_valid = _buyers(data.valid, names, fits, horizon_days)
    baseline_deviance = gamma_deviance(y_valid, base_valid) if len(y_valid) else float("nan")
    validation = {"baseline_gamma_deviance": baseline_deviance, "buyers_train": int(len(y_train)),
                  "buyers_valid": int(len(y_valid))}
    booster_model, n_trials = None, 0
    if len(y_train) >= MIN_BUYERS and len(y_valid) >= MIN_BUYERS:
        def objective(trial) -> float:
            params = {"num_leaves": trial.suggest_int("num_leaves", 4, 48, log=True),
                      "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 200, log=True),
                      "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
                      "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
                      "feature_fraction": trial.suggest_float("feature_fraction", 0.6, 1.0)}
            booster = _train(params, X_train, y_train, base_train, MAX_ROUNDS, threads, seed,
                             valid=(X_valid, y_valid, base_valid))
            trial.set_user_attr("rounds", int(booster.best_iteration or MAX_ROUNDS))
            return gamma_deviance(y_valid, base_valid * booster.predict(X_valid, num_iteration=booster.best_iteration))

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
        n_trials = max(1, min(VALUE_TRIALS, trials))
        study.optimize(objective, n_trials=n_trials)
        best = study.best_trial
        validation.update(trees_gamma_deviance=float(best.value), trees_rounds=best.user_attrs["rounds"],
                          trees_params=best.params)
        if best.value < baseline_deviance:
            refit = data.refit if data.refit is not None else pd.concat([data.train, data.valid])
            X_all, base_all, y_all = _buyers(refit, names, fits, horizon_days)
            rounds = max(1, int(round(best.user_attrs["rounds"] * len(y_all) / len(y_train))))
            booster_model = _train(best.params, X_all, y_all, base_all, rounds, threads, seed).model_to_string()
            validation["refit_rounds"] = rounds
    validation["shipped"] = "btyd × trees" if booster_model else "btyd"
    def packaged(fit) -> ValueModel:
        return ValueModel(fit[0].to_dict(), fit[1].to_dict(), horizon_days, names, booster_model,
                          metadata={"validation": validation})

    newest = data.test[SNAPSHOT].max()
    return ValueFit(packaged(scoring_fit), packaged(fits[newest]), validation, n_trials)


def held_out_figures(fit: ValueFit, test: pd.DataFrame, churn_probability: np.ndarray) -> dict[str, float]:
    """`value_scores` of expected_spend = (1 − p) × value_if_retained against the test rows' realised spend."""
    retained = fit.test_model.if_retained(lambda name: test[name].to_numpy(dtype=float))
    return value_scores((1.0 - churn_probability) * retained, test[FUTURE_SPEND].to_numpy(dtype=float))
