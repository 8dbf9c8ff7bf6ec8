"""`winback train uplift`: tune, fit, evaluate and package the incentive model, tracked in MLflow.

Run tree: one parent run per command, one nested run per Optuna trial. The final runtime is fitted
on the training split with the best trial's learner and parameters, evaluated on the held-out split
(arm × outcome stratified), logged as one MLflow pyfunc (models from code) and optionally registered.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from features.errors import DataError
from features.io import write_text_atomic
from serving.batch.recommend import recommendation_frame
from serving.monitoring.drift import build_reference
from serving.runtime.decision import MODEL_RULE
from serving.runtime.decision.catalog import dump_catalog
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.uplift import UpliftRuntime, load_uplift_runtime
from training.monitoring import model_outputs
from training.promotion import (Comparison, NotComparable, kind_differences, load_champion, register_and_promote,
                                registry_note)
from training.tracking import (TrackingSettings, describe_run, explicit_signature, frame_hash, log_dataset, log_params,
                               loose_signature, metric_key, pyfunc_example, reproducibility_tags)
from training.uplift.decision import choose_rule, rule_decisions, validate_arms
from training.uplift.data import CampaignData, UpliftConfig, load_campaign, stratified_split
from training.uplift.evaluate import arm_metrics, policies_from_prediction, policy_table
from training.uplift.learners import fit_runtime
from training.uplift.report import plot_deciles, plot_policy_values, plot_qini
from training.uplift.tuning import FOLDS, TuningData, allowed_learners, tune, uplift_folds

PYFUNC_FILE = Path(__file__).resolve().parents[2] / "serving" / "pyfunc" / "uplift.py"
CODE_PATHS = [str(Path(__file__).resolve().parents[2] / name) for name in ("features", "serving")]
CHURN_TOP_SHARE = 0.3


def _churn_policy(churn_model: str, frame, best_arm: int) -> np.ndarray | None:
    """Send `best_arm` to the top 30 % by the churn model's probability, others nothing (None if unusable)."""
    try:
        from serving.runtime.churn import load_churn_runtime
    except ImportError:
        return None
    try:
        churn = load_churn_runtime(churn_model)
        risk = np.asarray(churn.predict_proba(churn.encoder.transform(frame)), dtype=np.float64)
    except DataError:
        return None
    top = risk >= np.quantile(risk, 1.0 - CHURN_TOP_SHARE)
    return np.where(top, best_arm + 1, 0)


def model_kind(runtime: UpliftRuntime) -> dict:
    """What must match for two uplift models to be compared: the arms, the control and the outcome."""
    return {"arms": list(runtime.arms), "control": runtime.control, "outcome": runtime.metadata.get("outcome"),
            "revenue_col": runtime.metadata.get("revenue_col")}


def _compare_with_champion(candidate: UpliftRuntime, decision: np.ndarray, data: CampaignData, rows: np.ndarray,
                           config: UpliftConfig):
    """Promotion comparison: the net policy value of the candidate's `decision` on the held-out `rows` (unseen
    by tuning and fitting) against the champion's decisions on the same rows, relative to "control for
    everyone" as in the validation table, with the paired standard error of the difference (two noisy IPW
    estimates compared with `>=` would promote on noise half the time). With the refit the candidate's decisions
    are those of the same learner fitted without these rows (the recipe is compared, as for churn); a champion
    refitted on the same campaign has seen them, which favours the champion, never the candidate."""
    from training.policy import deterministic_policy, difference, ipw_estimate
    from training.uplift.evaluate import net_rewards

    def compare(champion_uri: str) -> Comparison:
        champion = load_champion(load_uplift_runtime, champion_uri)
        differences = kind_differences(model_kind(candidate), model_kind(champion))
        if differences:
            raise NotComparable("another kind of uplift model (" + "; ".join(differences) + ")")
        try:
            champion_decision = champion.predict(champion.encoder.transform(data.frame.iloc[rows]),
                                                 config.catalog).decision
        except DataError as exc:
            raise NotComparable(f"the champion cannot read this data ({exc})") from None
        k = len(config.catalog.arms)
        arm = data.arm[rows]
        net = net_rewards(data.y[rows], None if data.revenue is None else data.revenue[rows], arm, config.catalog)
        action = np.where(arm == -1, 0, arm + 1)
        control = np.zeros(len(rows), dtype=np.int64)
        cand_est, champ_est, control_est = (
            ipw_estimate(net, action, data.propensity[rows], deterministic_policy(choice, k + 1))
            for choice in (decision + 1, champion_decision + 1, control))
        (cand_value, cand_se), (champ_value, champ_se) = (difference(e, control_est) for e in (cand_est, champ_est))
        diff, diff_se = difference(cand_est, champ_est)
        return Comparison("net_policy_value", len(rows), cand_value, cand_se, champ_value, champ_se, diff, diff_se)
    return compare


def evaluate_runtime(runtime: UpliftRuntime, data: CampaignData, rows: np.ndarray,
                     config: UpliftConfig) -> tuple[dict, object]:
    """The `validation` section of the JSON for held-out `rows`, and the prediction behind it."""
    frame = data.frame.iloc[rows]
    prediction = runtime.predict(runtime.encoder.transform(frame))
    y, arm = data.y[rows], data.arm[rows]
    revenue = None if data.revenue is None else data.revenue[rows]
    policies = policies_from_prediction(prediction)
    metrics = arm_metrics(y, arm, prediction.uplift, runtime.arms)
    table = policy_table(prediction, y, revenue, arm, data.propensity[rows], config.catalog, policies)
    if config.churn_model:
        best = max(range(len(runtime.arms)), key=lambda j: table["net_policy_value"][f"all:{runtime.arms[j]}"])
        churn = _churn_policy(config.churn_model, frame, best)
        if churn is not None:
            policies[f"churn_top30:{runtime.arms[best]}"] = churn
            table = policy_table(prediction, y, revenue, arm, data.propensity[rows], config.catalog, policies)
    return {"n": int(len(rows)), **metrics, **table}, prediction


def _candidates(study) -> pd.DataFrame:
    """Every trial's learner, parameters and validation figures, best first (the run's candidates table)."""
    rows = [{"trial": t.number, "learner": t.params["learner"], "net_policy_value_dr": t.value,
             "net_policy_value_dr_se": t.user_attrs.get("net_value_se"),
             "mean_qini_auc": float(np.mean(list(t.user_attrs.get("qini", {}).values()) or [np.nan])),
             "params": json.dumps({k: v for k, v in t.params.items() if k != "learner"})}
            for t in study.trials if t.value is not None]
    return pd.DataFrame(rows).sort_values("net_policy_value_dr", ascending=False, kind="stable")


def _description(config: UpliftConfig, data: CampaignData, learner: str, validation: dict,
                 registered: dict | None) -> str:
    net = validation["net_policy_value"]
    best_arm = max(config.catalog.arms, key=lambda a: net[f"all:{a}"])
    sources = ", ".join(p.name for p in (config.campaign, *config.more_campaigns))
    text = (f"Uplift model from {sources}: {len(data.frame):,} rows, arms "
            f"{', '.join(config.catalog.arms)} against {config.control!r}, outcome {config.outcome!r}"
            f"{f' (revenue {config.revenue_col!r})' if config.revenue_col else ''}; {len(data.features)} features."
            f"\n\nLearner {learner}, tuned by Optuna. On the {validation['n']:,} validation customers the model's "
            f"decisions are worth {net['model']:.4f} net per customer over sending nothing (best single arm for "
            f"everyone: {best_arm} {net[f'all:{best_arm}']:.4f})"
            f"{shipped_note(validation)}"
            f"{'; the shipped model is the same learner refitted on every row' if config.refit else ''}.")
    return text + registry_note(registered)


def _rows(data: CampaignData, rows: np.ndarray) -> tuple:
    return data.y[rows], None if data.revenue is None else data.revenue[rows], data.arm[rows], data.propensity[rows]


def _validate_arms(runtime: UpliftRuntime, data: CampaignData, rows: np.ndarray,
                   config: UpliftConfig) -> tuple[list[str], dict]:
    """`training.uplift.decision.validate_arms` on the held-out `rows`, from the model's unchecked net values."""
    runtime.metadata.pop("decision", None)
    runtime.set_decision()
    net = runtime.predict(runtime.encoder.transform(data.frame.iloc[rows])).net_value
    return validate_arms(net, *_rows(data, rows), config.catalog, config.decision_confidence)


def _choose_rule(data: CampaignData, rows: np.ndarray, prediction, validated: list[str],
                 config: UpliftConfig) -> tuple[str, dict]:
    """The rule to ship among the model's decisions and the baselines, on the held-out `rows`."""
    decisions = rule_decisions(prediction.net_value, prediction.uplift, config.catalog.arms, validated)
    return choose_rule(decisions, *_rows(data, rows), config.catalog, config.decision_confidence)


def shipped_note(validation: dict) -> str:
    """'' when the model's decisions are shipped, else which baseline beat them (the run, the JSON, the CLI)."""
    rule = validation["decision"]["rule"]
    if rule == MODEL_RULE:
        return ""
    net = validation["net_policy_value"]
    shown = validation["decision"]["rules"][rule]
    return (f"; the model's decisions lose to the baseline {rule} ({net[rule]:+.4f} against {net['model']:+.4f} "
            f"net per customer on the validation rows, {shown['minus_model']:+.4f} ± {shown['minus_model_se']:.4f}), "
            f"so the shipped model decides by {rule}")


def train_uplift(config: UpliftConfig, tracking: TrackingSettings, on_trial=None) -> dict:
    """Run the whole command; returns the JSON document written to `config.json_out`."""
    import mlflow

    data = load_campaign(config)
    train_rows, test_rows = stratified_split(data.arm, data.y, config.test_size, config.seed)
    encoder = FeatureEncoder(data.features).fit(data.frame.iloc[train_rows])
    X = data.boosters_input(encoder.transform(data.frame))
    learners = allowed_learners(data.arm[train_rows], len(config.catalog.arms), data.revenue is not None)
    revenue = data.revenue
    tuning = TuningData(X[train_rows], data.arm[train_rows], data.y[train_rows], data.propensity[train_rows],
                        None if revenue is None else revenue[train_rows],
                        uplift_folds(data.arm[train_rows], data.y[train_rows], FOLDS, config.seed))

    tracking.activate()
    with mlflow.start_run(run_name="uplift") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({**reproducibility_tags(), "command": "train uplift", "outcome": config.outcome})
        log_params({
            "campaign": ",".join(str(p) for p in (config.campaign, *config.more_campaigns)), "treatment_col": config.treatment_col, "control": config.control,
            "outcome": config.outcome, "revenue_col": config.revenue_col, "features": ",".join(data.features),
            "as_of": None if config.as_of is None else str(config.as_of.date()), "seed": config.seed,
            "trials": config.trials, "timeout": config.timeout, "learners": ",".join(learners),
            "data_hash": frame_hash(data.frame), "rows": len(data.frame), "rows_train": len(train_rows),
            "rows_validation": len(test_rows), "arms": ",".join(config.catalog.arms),
        })
        columns = [c for c in [config.treatment_col, config.outcome, config.revenue_col, *data.features]
                   if c is not None and c in data.frame.columns]
        for context, rows in (("training", train_rows), ("validation", test_rows)):
            log_dataset(data.frame.iloc[rows][list(dict.fromkeys(columns))], f"campaign-{context}", context,
                        target=config.outcome)

        def log_trial(number: int, learner: str, params: dict, trial) -> None:
            with mlflow.start_run(run_name=f"trial-{number}", nested=True):
                mlflow.set_tags({"trial_state": "complete", **({"study_name": config.study_name}
                                                                if config.study_name else {})})
                mlflow.log_params({"learner": learner, **params})
                mlflow.log_metrics({"net_policy_value_dr": trial.net_value, "net_policy_value_dr_se": trial.net_value_se,
                                    "mean_qini_auc": float(np.mean(list(trial.qini.values())))})
                for arm, value in trial.qini.items():
                    mlflow.log_metric(metric_key("qini_auc", arm), value)
            if on_trial is not None:
                on_trial(number, "complete")

        study, best, compared = tune(tuning, encoder, config.catalog, learners, config.seed, config.trials, config.timeout,
                           log_trial, config.storage, config.study_name)
        learner = best.params["learner"]
        params = {k: v for k, v in best.params.items() if k != "learner"}
        mlflow.log_params({"best_learner": learner, **{f"best_{k}": v for k, v in params.items()}})
        mlflow.log_metrics({"tuning_net_policy_value_dr": best.value,
                            "tuning_net_policy_value_dr_se": best.user_attrs["net_value_se"],
                            "tuning_mean_qini_auc": float(np.mean(list(best.user_attrs["qini"].values())))})
        mlflow.set_tag("winback.learner", learner)
        candidates = _candidates(study)
        mlflow.log_text(candidates.to_csv(index=False), "candidates.csv")

        metadata = {"run_id": run.info.run_id, "arms": config.catalog.arms, "learner": learner,
                    "params": params, "outcome": config.outcome, "revenue_col": config.revenue_col,
                    "treatment_col": config.treatment_col, "id_col": config.id_col,
                    **({"personalisation": data.personalisation} if data.personalisation else {})}
        evaluated = fit_runtime(X[train_rows], data.arm[train_rows], data.y[train_rows], encoder, config.catalog,
                                learner, params, config.seed,
                                None if data.revenue is None else data.revenue[train_rows], metadata,
                                propensity=data.propensity[train_rows])
        # which arms the decision may send: those whose sends pay on the validation rows (unseen by tuning)
        validated, evidence = _validate_arms(evaluated, data, test_rows, config)
        evaluated.set_decision(validated)
        validation, prediction = evaluate_runtime(evaluated, data, test_rows, config)
        rule, rules = _choose_rule(data, test_rows, prediction, validated, config)
        if rule != MODEL_RULE:  # a baseline is clearly worth more than the model's decisions: it is what ships
            evaluated.set_decision(rule=rule)
            prediction = evaluated.predict(evaluated.encoder.transform(data.frame.iloc[test_rows]))
        validation["decision"] = {"rule": rule, "validated_arms": validated, "confidence": config.decision_confidence,
                                  "net_policy_value": validation["net_policy_value"][rule],
                                  "send_share": validation["send_share"][rule], "arms": evidence, "rules": rules}
        _log_validation(validation, prediction, data, test_rows, evaluated, Path(tmp))
        mlflow.set_tag("winback.decision_rule", rule)
        mlflow.log_metric("shipped_net_policy_value", validation["net_policy_value"][rule])
        runtime = _refit(data, learner, params, config, metadata) if config.refit else evaluated
        runtime.set_decision(validated, rule)
        runtime.reference = uplift_reference(runtime, data.frame.iloc[test_rows], validation)
        mlflow.log_param("fitted_on", "all rows" if config.refit else "training split")

        info = _log_model(runtime, pyfunc_example(data.frame.iloc[train_rows], encoder), Path(tmp))
        registered = None
        if config.register_as:
            registered = register_and_promote(info.model_uri, config.register_as,
                                              _compare_with_champion(runtime, prediction.decision, data, test_rows,
                                                                     config))
        result = {"run_id": run.info.run_id, "model_uri": info.model_uri, "registered": registered,
                  "arms": config.catalog.arms, "learner": learner, "best_params": params,
                  "fitted_on_rows": len(data.y) if config.refit else len(train_rows), "validation": validation,
                  "study": {"name": study.study_name, "chosen_trial": best.number,
                            "complete_trials": len(study.get_trials(deepcopy=False,
                                                                    states=(optuna.trial.TrialState.COMPLETE,))),
                            "compared_trials": compared}}
        describe_run(_description(config, data, learner, validation, registered))
        mlflow.log_dict(result, "uplift_result.json")
    if config.json_out is not None:
        write_text_atomic(config.json_out, json.dumps(result, indent=2))
    return result


def uplift_reference(runtime: UpliftRuntime, frame: pd.DataFrame, validation: dict) -> dict:
    """Drift reference on the validation rows: their features, the share of each recommended arm and the
    distribution of expected_net_value under the shipped model."""
    return build_reference(frame[runtime.encoder.features_], list(runtime.encoder.categories_),
                           model_outputs("uplift", runtime, frame),
                           {"net_policy_value": validation["decision"]["net_policy_value"], "rows": validation["n"]})


def _refit(data: CampaignData, learner: str, params: dict, config: UpliftConfig, metadata: dict) -> UpliftRuntime:
    """The chosen learner and parameters fitted again on every campaign row (encoder included), as churn refits
    on every labelled row: the validation rows are 30 % more data for a signal as small as uplift.
    Measured on the simulator (train 20,000, seed 7; regularised SoloModel; a fresh 10,000 valued with the
    truth; benchmarks/uplift_learners.py): 65.3 % of the oracle's net value fitted on 70 %, 69.8 % on all."""
    encoder = FeatureEncoder(data.features).fit(data.frame)
    return fit_runtime(data.boosters_input(encoder.transform(data.frame)), data.arm, data.y, encoder, config.catalog, learner, params,
                       config.seed, data.revenue, {**metadata, "fitted_on": "all rows"}, propensity=data.propensity)


def _log_model(runtime: UpliftRuntime, example: pd.DataFrame, workdir: Path):
    """Log the runtime as the models-from-code pyfunc, with a signature MLflow checks inputs against
    (`loose_signature`): the feature columns, all required, so that `mlflow.pyfunc.spark_udf` needs no arguments."""
    import mlflow

    runtime_dir = runtime.save(workdir / "runtime")
    output = recommendation_frame(runtime.predict_frame(example), None, with_net_values=True)
    with explicit_signature():
        return mlflow.pyfunc.log_model(name="model", python_model=str(PYFUNC_FILE),
                                       artifacts={"runtime": str(runtime_dir)}, code_paths=CODE_PATHS,
                                       signature=loose_signature(example, output), input_example=example)


def _log_validation(validation: dict, prediction, data: CampaignData, rows: np.ndarray,
                    runtime: UpliftRuntime, tmp: Path) -> None:
    import mlflow

    for section in ("qini_auc", "uplift_auc", "uplift_at_30"):
        for arm, value in validation[section].items():
            mlflow.log_metric(metric_key(section, arm), value)
    for section in ("policy_value", "net_policy_value", "policy_value_dr", "net_policy_value_dr",
                    "revenue_policy_value"):
        for policy, value in validation.get(section, {}).items():
            mlflow.log_metric(metric_key(section, policy), value)
    mlflow.log_metric("mean_qini_auc", float(np.mean(list(validation["qini_auc"].values()))))
    plots = tmp / "plots"
    plots.mkdir()
    y, arm = data.y[rows], data.arm[rows]
    plot_qini(y, arm, prediction.uplift, runtime.arms, validation["qini_auc"], plots / "qini_curves.png")
    plot_deciles(y, arm, prediction.uplift, runtime.arms, plots / "uplift_by_decile.png")
    plot_policy_values(validation["policy_value"], validation["net_policy_value"], plots / "policy_values.png")
    mlflow.log_artifacts(str(plots), "plots")
    mlflow.log_artifact(str(dump_catalog(runtime.catalog, tmp / "catalog.yaml")))
    mlflow.log_dict(validation, "validation.json")
