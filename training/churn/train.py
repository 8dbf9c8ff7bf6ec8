"""Train the churn model: tune, calibrate, build the runtime, log everything to MLflow, register.

`train_churn(data, config, settings)` is the whole command behind `winback train churn`: one parent
MLflow run with the data description and validation table, one nested run per Optuna trial, the
runtime model logged as a self-contained pyfunc, and (optionally) a registry version aliased
`champion` or `challenger`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import DataError
from serving.monitoring.drift import build_reference, calibration_by_decile
from serving.runtime.churn import ChurnRuntime, load_churn_runtime, segment_config_dict
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.linear import blend
from training.churn import report as churn_report
from training.churn.calibration import STACK_COLUMNS, BtydFits, btyd_fits, fit_calibration  # noqa: F401 (re-exported)
from training.churn.data import ChurnData
from training.churn.levels import LEVEL_BOOTSTRAP, LevelLayers, cutoff_levels, extrapolation
from training.churn.linear import BLEND_WEIGHTS, fit_linear, predict_linear
from training.churn.tuning import (CV_FOLDS, CV_MAX_ROWS, MAX_ROUNDS, CVData, TuningData, cv_folds, mlflow_trial_logger,
                                   out_of_fold, run_cv, run_study, train_booster, trial_counts)
from training.labels import LABEL, SNAPSHOT
from training.metrics import auc, classification_summary, paired_auc
from training.monitoring import model_outputs
from training.promotion import (Comparison, NotComparable, kind_differences, load_champion, register_and_promote,
                                registry_note)
from training.tracking import (TrackingSettings, describe_run, explicit_signature, log_dataset, log_params,
                               loose_signature, pyfunc_example, reproducibility_tags)
from training.value.model import fit_value_model, held_out_figures

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds features/, serving/, training/
PYFUNC_FILE = PACKAGE_ROOT / "serving" / "pyfunc" / "churn.py"
CODE_PATHS = [str(PACKAGE_ROOT / "features"), str(PACKAGE_ROOT / "serving")]
RISK_QUANTILES = {"high": 0.80, "medium": 0.50}  # top 20 % high, next 30 % medium, rest low
REGISTRY_METRIC = "test_auc"
# What a churn label means, versioned: a champion with another rule (or horizon) is another kind of model.
LABEL_RULES = {"transactions": "no purchase in the horizon after the cutoff day; features up to the end of that day/v1",
               "table": "the table's target column/v1"}


@dataclass(frozen=True)
class ChurnTrainConfig:
    """Tuning and registry settings of one training command (data settings live in ChurnData)."""

    trials: int = 30
    timeout: float | None = None
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None
    register_as: str | None = None
    threads: int = 2
    max_rounds: int = MAX_ROUNDS
    refit: bool = True  # holdout scheme: refit on every labelled row but the test slice, rounds scaled up
    cv: str = "auto"  # "auto": K-fold CV when train + validation hold under CV_MAX_ROWS rows; "always"; "never"
    stack: bool = True  # logistic stacking calibration on logit(booster) + log1p(STACK_COLUMNS)
    btyd: bool = True  # the stack also reads BG/NBD's log-odds of no purchase (transactions with RFM columns)
    level_bootstrap: int = LEVEL_BOOTSTRAP  # resamples behind the cutoff totals' interval (0: none)


def choose_scorer(y_valid: np.ndarray, p_lightgbm: np.ndarray, p_linear: np.ndarray) -> tuple[dict, dict, np.ndarray]:
    """Which candidate ships: the blend of the calibrated LightGBM and the logistic regression, unless one of
    them alone beats it on validation AUC by more than the standard error of the paired difference (DeLong,
    same rows) — the promotion rule. The blend's weight is the one nearest an even mix whose AUC is within
    that standard error of the best weight's: where validation cannot tell the mixes apart, the even hedge
    is kept (a tree model's edge inside the training range tends to vanish where scoring leaves it, e.g.
    longer recency and tenure at a later date than any snapshot saw, while the regression keeps ordering).
    Returns the runtime's `scorer`, every candidate's figures, and the winner's validation probabilities."""
    mixes = {float(w): blend(p_lightgbm, p_linear, w) for w in BLEND_WEIGHTS}
    best_weight = max(mixes, key=lambda w: auc(y_valid, mixes[w]))
    weight = min((w for w in mixes if w == best_weight or _within_noise(y_valid, mixes[w], mixes[best_weight])),
                 key=lambda w: (abs(w - 0.5), -w))
    probabilities = {"blend": mixes[weight], "lightgbm": p_lightgbm, "linear": p_linear}
    candidates = {name: {"validation_auc": auc(y_valid, p), "weight": weight if name == "blend" else None}
                  for name, p in probabilities.items()}
    winner = "blend"
    for challenger in ("lightgbm", "linear"):
        paired = paired_auc(y_valid, probabilities[challenger], probabilities["blend"])
        candidates[challenger].update(difference_to_blend=paired["difference"], difference_se=paired["se_difference"])
        if paired["difference"] > paired["se_difference"] and (
                winner == "blend" or candidates[challenger]["validation_auc"] > candidates[winner]["validation_auc"]):
            winner = challenger
    scorer = {"kind": winner, **({"weight": weight} if winner == "blend" else {})}
    return scorer, candidates, probabilities[winner]


def _within_noise(y: np.ndarray, a: np.ndarray, best: np.ndarray) -> bool:
    paired = paired_auc(y, a, best)
    return -paired["difference"] <= paired["se_difference"]


def baseline_scores(valid: pd.DataFrame) -> dict[str, np.ndarray]:
    """Single-feature rankings: longer since last purchase, or fewer purchases → more churn."""
    out = {}
    if "recency_days" in valid:
        out["recency"] = valid["recency_days"].to_numpy(dtype=float)
    if "frequency" in valid:
        out["frequency"] = -valid["frequency"].to_numpy(dtype=float)
    return out


def _nan_safe_auc(y, score) -> float:
    """AUC of a baseline whose missing values rank as the riskiest (e.g. no purchase ever seen)."""
    score = np.nan_to_num(np.asarray(score, dtype=float), nan=np.nanmax(score) if np.isfinite(score).any() else 0)
    return auc(y, score)


def _value_tier_setup(data: ChurnData) -> tuple[tuple[float, float] | None, dict | None]:
    if data.kind != "transactions" or data.latest_features is None:
        return None, None
    from features.segment import SegmentConfig, value_tier_thresholds

    config = SegmentConfig()
    thresholds = value_tier_thresholds(data.latest_features, config)
    return tuple(float(t) for t in thresholds), segment_config_dict(config)


def _log_model(runtime: ChurnRuntime, example: pd.DataFrame, workdir: Path):
    """The models-from-code pyfunc with a `loose_signature`: it takes the table `winback features build`
    writes as it is (int64 and category columns; MLflow drops the columns that are not features)."""
    import mlflow

    runtime_dir = runtime.save(workdir / "runtime")
    output = runtime.score_records(example)
    requirements = [f"{pkg}=={importlib_metadata.version(pkg)}"
                    for pkg in ("mlflow", "lightgbm", "pandas", "numpy", "scikit-learn", "pyarrow")]
    with explicit_signature():
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_FILE), artifacts={"runtime": str(runtime_dir)},
            code_paths=CODE_PATHS, signature=loose_signature(example, output), input_example=example,
            pip_requirements=requirements)


def model_kind(metadata: dict) -> dict:
    """What must match for two churn models to be compared: the data source, horizon and label rule."""
    kind = metadata.get("kind")
    return {"source": kind, "horizon_days": metadata.get("horizon_days"), "target": metadata.get("target"),
            "label_rule": metadata.get("label_rule", LABEL_RULES.get(kind))}


def _compare_with_champion(candidate: ChurnRuntime, test: pd.DataFrame, y_test: np.ndarray):
    """Promotion comparison: AUC of both models on the final test rows (unseen by the candidate's tuning,
    early stopping and calibration), with DeLong's paired standard error."""
    p_candidate = candidate.predict_proba(candidate.encoder.transform(test))

    def compare(champion_uri: str) -> Comparison:
        champion = load_champion(load_churn_runtime, champion_uri)
        differences = kind_differences(model_kind(candidate.metadata), model_kind(champion.metadata))
        if differences:
            raise NotComparable("another kind of churn model (" + "; ".join(differences) + ")")
        try:
            X = champion.encoder.transform(test)
        except DataError as exc:
            raise NotComparable(f"the champion cannot read this data ({exc})") from None
        return Comparison.from_paired(REGISTRY_METRIC, len(y_test), paired_auc(y_test, p_candidate, champion.predict_proba(X)))

    return compare


@dataclass
class Fitted:
    """The final models of one validation scheme, and the validation rows' labels and scores behind the choice."""

    study: object
    rounds: int
    booster: object
    calibration: dict
    linear: dict
    scorer: dict
    candidates: dict
    y_valid: np.ndarray
    p_valid: np.ndarray  # the chosen scorer's validation probabilities
    raw_valid: np.ndarray  # the booster's, before calibration
    valid_frame: pd.DataFrame  # feature rows behind y_valid (for the baselines)
    scheme: str
    layers: LevelLayers | None = None  # how to refit the calibration and the regression (the cutoff's interval)


def _description(data: ChurnData, fitted: Fitted, validation: dict, test: dict, registered: dict | None) -> str:
    d = data.description
    source = (f"transactions up to {d['cutoff']}, {d['snapshots']} snapshot(s), label: no purchase in the "
              f"{d['horizon_days']} days after each snapshot" if data.kind == "transactions" else
              f"customer table, label column {d.get('target')!r}")
    text = (f"Churn model from {source}: {d['rows']:,} rows, {d['customers']:,} customers, churn rate "
            f"{d['churn_rate']:.1%}.\n\nValidation: {fitted.scheme}. Shipped scorer: {fitted.scorer['kind']} "
            f"(validation AUC {validation['auc']:.4f}; candidates "
            + ", ".join(f"{k} {v['validation_auc']:.4f}" for k, v in fitted.candidates.items())
            + f"). Test slice ({test['n']:,} rows, unseen until the model was final): AUC {test['auc']:.4f}.")
    return text + registry_note(registered)


def _fit_holdout(data: ChurnData, encoder: FeatureEncoder, config: ChurnTrainConfig, btyd: BtydFits | None) -> Fitted:
    """Tune on the validation rows (early stopping, pruning), calibrate and choose the scorer on them; with
    `config.refit` retrain booster and regression on train + validation rows with the rounds scaled up."""
    tuning = TuningData(encoder.transform(data.train), data.y_train, encoder.transform(data.valid),
                        data.y_valid, encoder.features_, encoder.categorical_indices)
    study = run_study(tuning, config.trials, config.timeout, config.seed, config.threads, config.storage,
                      config.study_name, callbacks=[mlflow_trial_logger()], max_rounds=config.max_rounds)
    best = study.best_trial
    rounds = int(best.user_attrs.get("best_iteration", 100))
    booster = train_booster(best.params, tuning, config.seed, config.threads, rounds=rounds, valid=False)
    raw_valid = booster.predict(tuning.X_valid)
    names, snapshots = list(encoder.features_), data.valid[SNAPSHOT].to_numpy()
    calibration, p_lightgbm = fit_calibration(raw_valid, tuning.X_valid, names, tuning.y_valid, config.stack, btyd,
                                              snapshots)
    linear = fit_linear(tuning.X_train, tuning.y_train, encoder)
    linear_X, linear_y, linear_rows = tuning.X_train, tuning.y_train, data.train
    scorer, candidates, p_valid = choose_scorer(tuning.y_valid, p_lightgbm, predict_linear(tuning.X_valid, linear))
    scheme = "holdout"
    if config.refit:
        refit = data.refit if data.refit is not None else pd.concat([data.train, data.valid])
        X_all = encoder.transform(refit)
        y_all = refit[LABEL].to_numpy(dtype=float)
        both = TuningData(X_all, y_all, tuning.X_valid, tuning.y_valid, tuning.feature_names, tuning.categorical)
        scaled = int(round(rounds * len(y_all) / len(tuning.y_train)))
        booster = train_booster(best.params, both, config.seed, config.threads, rounds=scaled, valid=False)
        linear = fit_linear(X_all, y_all, encoder)
        linear_X, linear_y, linear_rows = X_all, y_all, refit
        scheme = (f"holdout, refit on every labelled row but the test slice ({len(y_all):,} rows, newest snapshot "
                  f"included) with {scaled} rounds")
    layers = LevelLayers(
        lambda rows: fit_calibration(raw_valid[rows], tuning.X_valid[rows], names, tuning.y_valid[rows], config.stack,
                                     btyd, snapshots[rows])[0], data.valid.index.to_numpy(), tuning.y_valid,
        lambda rows: fit_linear(linear_X[rows], linear_y[rows], encoder, start=linear), linear_rows.index.to_numpy(),
        linear_y)
    return Fitted(study, rounds, booster, calibration, linear, scorer, candidates, tuning.y_valid, p_valid,
                  raw_valid, data.valid, scheme, layers)


def _fit_cross_validated(data: ChurnData, encoder: FeatureEncoder, config: ChurnTrainConfig,
                         btyd: BtydFits | None) -> Fitted:
    """Small training sets: tune by K-fold CV on training + validation rows (grouped by customer), calibrate and
    choose the scorer on out-of-fold predictions, then refit both models on all those rows (rounds scaled by
    K/(K−1), the larger set)."""
    rows = pd.concat([data.train, data.valid])
    X, y = encoder.transform(rows), np.concatenate([data.y_train, data.y_valid])
    folds = cv_folds(y, rows.index.to_numpy(), CV_FOLDS, config.seed)
    cv = CVData(X, y, folds, encoder.features_, encoder.categorical_indices)
    study = run_study(cv, config.trials, config.timeout, config.seed, config.threads, config.storage,
                      config.study_name, callbacks=[mlflow_trial_logger()], max_rounds=config.max_rounds)
    best = study.best_trial
    _, rounds, boosters = run_cv(best.params, cv, config.seed, config.threads, rounds=config.max_rounds)
    raw_oof = out_of_fold(boosters, cv, rounds)
    names, snapshots = list(encoder.features_), rows[SNAPSHOT].to_numpy() if SNAPSHOT in rows else None
    calibration, p_lightgbm = fit_calibration(raw_oof, X, names, y, config.stack, btyd, snapshots)
    p_linear = np.empty(len(y))
    for train_idx, valid_idx in folds:
        p_linear[valid_idx] = predict_linear(X[valid_idx], fit_linear(X[train_idx], y[train_idx], encoder))
    scorer, candidates, p_valid = choose_scorer(y, p_lightgbm, p_linear)
    everything = TuningData(X, y, X, y, encoder.features_, encoder.categorical_indices)
    scaled = int(round(rounds * CV_FOLDS / (CV_FOLDS - 1)))
    booster = train_booster(best.params, everything, config.seed, config.threads, rounds=scaled, valid=False)
    linear = fit_linear(X, y, encoder)
    groups = rows.index.to_numpy()
    layers = LevelLayers(
        lambda at: fit_calibration(raw_oof[at], X[at], names, y[at], config.stack, btyd,
                                   None if snapshots is None else snapshots[at])[0], groups, y,
        lambda at: fit_linear(X[at], y[at], encoder, start=linear), groups, y)
    return Fitted(study, rounds, booster, calibration, linear, scorer, candidates, y, p_valid, raw_oof, rows,
                  f"{CV_FOLDS}-fold cross-validation by customer on {len(y):,} rows (under {CV_MAX_ROWS:,}); "
                  f"out-of-fold calibration and choice; refit on all of them with {scaled} rounds", layers)


def train_churn(data: ChurnData, config: ChurnTrainConfig, settings: TrackingSettings) -> dict:
    """Run the whole training command; returns the `--json-out` document."""
    import mlflow

    settings.activate()
    started = time.monotonic()
    with mlflow.start_run(run_name=f"churn-{data.kind}") as parent:
        run_id = parent.info.run_id
        mlflow.set_tags({**reproducibility_tags(), "winback.model": "churn", "winback.kind": data.kind})
        params = {**{k: v for k, v in asdict(config).items() if k != "storage"}, **data.description}
        log_params({k: (",".join(v) if isinstance(v, list) else v) for k, v in params.items() if v is not None})
        mlflow.log_metrics({"data_rows": data.description["rows"], "data_customers": data.description["customers"],
                            "data_churn_rate": data.description["churn_rate"]})

        for context, frame in (("training", data.train), ("validation", data.valid), ("test", data.test)):
            log_dataset(frame, f"churn-{data.kind}-{context}", context, target=LABEL)
        encoder = FeatureEncoder(data.feature_columns).fit(pd.concat([data.train, data.valid]))
        use_cv = config.cv == "always" or (config.cv == "auto" and len(data.train) + len(data.valid) < CV_MAX_ROWS)
        btyd = btyd_fits(data) if config.stack and config.btyd else None
        fitted = (_fit_cross_validated if use_cv else _fit_holdout)(data, encoder, config, btyd)
        study, rounds, booster, calibration, linear = (fitted.study, fitted.rounds, fitted.booster, fitted.calibration,
                                                       fitted.linear)
        y_valid, p_valid, scorer, candidates = fitted.y_valid, fitted.p_valid, fitted.scorer, fitted.candidates
        best = study.best_trial
        mlflow.set_tag("winback.validation_scheme", fitted.scheme)
        validation = classification_summary(y_valid, p_valid)
        base = baseline_scores(fitted.valid_frame)
        baselines = {"recency_auc": _nan_safe_auc(y_valid, base["recency"]) if "recency" in base else None,
                     "frequency_auc": _nan_safe_auc(y_valid, base["frequency"]) if "frequency" in base else None}

        beyond = extrapolation(data)
        if beyond:
            mlflow.log_metrics({f"extrapolated_share.{k}": v["share_beyond"] for k, v in beyond.items()})
        tiers, segment_config = _value_tier_setup(data)
        value = fit_value_model(data, data.description.get("horizon_days"), config.trials, config.seed,
                                config.threads, btyd=(btyd.by_snapshot, btyd.scoring) if btyd else None)
        runtime = ChurnRuntime(
            encoder=encoder, booster_model=booster.model_to_string(), calibration=calibration,
            risk_thresholds={k: float(np.quantile(p_valid, q)) for k, q in RISK_QUANTILES.items()},
            horizon_days=data.description.get("horizon_days"), value_tier_thresholds=tiers,
            segment_config=segment_config, scorer=scorer, linear=linear, value=value.model if value else None,
            metadata={"run_id": run_id, "kind": data.kind, "cutoff": data.description.get("cutoff"),
                      "horizon_days": data.description.get("horizon_days"), "label_rule": LABEL_RULES[data.kind],
                      "snapshot_dates": data.description.get("snapshot_dates"),
                      "target": data.description.get("target"), "validation_auc": validation["auc"]})

        levels = cutoff_levels(runtime, data.latest_features, fitted.layers, config.level_bootstrap, config.seed)
        if levels:
            mlflow.log_metrics({f"cutoff_{k}": v for k, v in levels.items() if k not in ("customers", "bootstrap")})
            if "bootstrap" in levels:
                mlflow.log_metrics({f"cutoff_{name}_{end}": levels["bootstrap"][name][i]
                                    for name in ("expected_buyers", "expected_spend")
                                    for i, end in enumerate(("low", "high"))})
        # test rows are as of the newest labelled snapshot: BG/NBD's stack term with that snapshot's fit
        test_runtime = runtime if btyd is None or "btyd" not in calibration else runtime.with_calibration(
            {**calibration, "btyd": btyd.term_spec(btyd.by_snapshot[data.test[SNAPSHOT].max()])})
        p_test = test_runtime.predict_proba(encoder.transform(data.test))
        test = classification_summary(data.y_test, p_test)
        value_summary = None
        if value is not None:
            value_summary = {"test": held_out_figures(value, data.test, p_test), "validation": value.validation,
                             "trials": value.trials}
            mlflow.log_metrics({f"value_test_{k}": v for k, v in value_summary["test"].items()})
            mlflow.log_metrics({f"value_validation_{k}": v for k, v in value.validation.items()
                                if isinstance(v, (int, float))})
            mlflow.set_tag("winback.value_model", value.validation["shipped"])
        # drift reference: the customers the model scores first (every customer as of the cutoff; labelled
        # snapshots are a horizon older, so their tenure and recency differ by construction) — for a table,
        # the test slice — and the test figures that realised outcomes are held to
        latest = data.latest_features
        scored = latest if latest is not None and set(encoder.features_) <= set(latest.columns) else data.test
        runtime.reference = build_reference(scored[encoder.features_], list(encoder.categories_),
                                            model_outputs("churn", runtime, scored),
                                            {"auc": test["auc"], "log_loss": test["logloss"], "rows": test["n"],
                                             "positive_rate": test["churn_rate"],
                                             "calibration": calibration_by_decile(data.y_test, p_test)})
        mlflow.log_metrics({f"validation_{k}": v for k, v in validation.items()})
        mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
        mlflow.log_metric("validation_booster_auc", _nan_safe_auc(y_valid, fitted.raw_valid))  # before the stack
        mlflow.log_metrics({f"candidate_auc.{name}": c["validation_auc"] for name, c in candidates.items()})
        mlflow.set_tag("winback.scorer", scorer["kind"])
        mlflow.log_metrics({f"baseline_{k}": v for k, v in baselines.items() if v is not None})
        n_trials, n_pruned = trial_counts(study)
        mlflow.log_metrics({"n_trials": n_trials, "n_pruned": n_pruned, "best_iteration": rounds})
        mlflow.log_params({f"best_{k}": v for k, v in best.params.items()})

        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            reports = work / "reports"
            reports.mkdir()
            churn_report.roc_plot(y_valid, p_valid, base, reports / "roc.png")
            churn_report.calibration_plot(y_valid, p_valid, reports / "calibration.png")
            churn_report.calibration_table(y_valid, p_valid).to_csv(reports / "calibration.csv")
            churn_report.importance_artifacts(booster, encoder.features_, reports)
            churn_report.optuna_artifacts(study, reports)
            churn_report.feature_list(data.train, encoder, reports / "features.json")
            (reports / "data.json").write_text(json.dumps(data.description, indent=2))
            pd.DataFrame([{"candidate": name, **c} for name, c in candidates.items()]).to_csv(
                reports / "candidates.csv", index=False)
            mlflow.log_artifacts(str(reports), artifact_path="reports")
            logged = _log_model(runtime, pyfunc_example(data.valid, encoder), work)

        model_uri = f"runs:/{run_id}/model"
        registered = None
        if config.register_as:
            registered = register_and_promote(logged.model_uri, config.register_as,
                                              _compare_with_champion(test_runtime, data.test, data.y_test))
        seconds = time.monotonic() - started
        mlflow.log_metric("training_seconds", seconds)
        describe_run(_description(data, fitted, validation, test, registered))
        result = {"run_id": run_id, "model_uri": model_uri, "registered": registered,
                  "validation": validation, "test": test, "baselines": baselines, "scorer": scorer,
                  "candidates": candidates, "validation_scheme": fitted.scheme, "best_params": best.params,
                  "best_iteration": rounds, "n_trials": n_trials, "n_pruned": n_pruned,
                  "value": value_summary, "extrapolation": beyond, "cutoff_levels": levels, "data": data.description,
                  "training_seconds": round(seconds, 1)}
        mlflow.log_dict(result, "result.json")
    return result
