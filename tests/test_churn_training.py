"""Model tests of `winback train churn` end to end on simulator data, with a real (temporary) MLflow store.

One training run is shared by the module (MLflow and Optuna are not mocked); each test checks one
promise of the contract: the JSON, the run tree, the self-contained model, the registry aliases,
batch scores, and exit code 2 for bad arguments.
"""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from features.io import read_table
from features.simulate import simulate
from serving.runtime.churn import load_churn_runtime
from training.churn.train import ChurnTrainConfig, fit_calibration, train_churn
from training.churn.data import prepare_transactions
from training.tracking import TrackingSettings
from winback.cli import app

CUTOFF = "2025-12-31"
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("churn")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        sim = simulate(customers=1000, seed=7)
        sim.transactions.to_parquet(tmp / "tx.parquet")
        sim.customers.to_parquet(tmp / "profiles.parquet")
        result = runner.invoke(app, ["train", "churn", "--transactions", "tx.parquet", "--profiles", "profiles.parquet",
                                     "--cutoff", CUTOFF, "--horizon-days", "120", "--snapshots", "2", "--trials", "3",
                                     "--max-rounds", "80", "--seed", "1", "--register-as", "winback-churn",
                                     "--json-out", "out/churn.json", "--mkdir"])
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp / "out" / "churn.json").read_text())
        yield {"tmp": tmp, "sim": sim, "summary": summary, "output": result.output, "mp": mp}


pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("churn_training")]


def test_json_summary_holds_every_contract_field(trained):
    s = trained["summary"]
    assert {"run_id", "model_uri", "registered", "validation", "baselines", "best_params", "n_trials",
            "n_pruned"} <= set(s)
    assert set(s["validation"]) == {"auc", "pr_auc", "logloss", "brier", "lift_at_10", "n", "churn_rate"}
    assert s["registered"] == {"name": "winback-churn", "version": "1", "alias": "champion", "champion_version": None,
                               "reason": "first version of this model: no champion yet", "comparison": {}}
    assert s["test"]["n"] == s["data"]["test_rows"] > 0 and s["test"]["auc"] > 0.6
    assert s["n_trials"] == 3 and s["model_uri"] == f"runs:/{s['run_id']}/model"
    assert s["data"]["snapshot_dates"] == ["2025-09-02", "2025-08-03"]  # cutoff − 120, then − 30 more
    # under 20,000 training rows: 5-fold cross-validation over training + validation rows, out-of-fold figures
    assert s["validation"]["n"] == s["data"]["train_rows"] + s["data"]["valid_rows"]
    assert s["validation_scheme"].startswith("5-fold cross-validation by customer")
    assert set(s["candidates"]) == {"lightgbm", "linear", "blend"} and s["scorer"]["kind"] in s["candidates"]
    chosen = s["candidates"][s["scorer"]["kind"]]["validation_auc"]
    assert chosen == pytest.approx(s["validation"]["auc"])
    assert s["validation"]["auc"] > max(s["baselines"]["recency_auc"], s["baselines"]["frequency_auc"])
    assert "champion" in trained["output"]


def test_run_tree_has_a_parent_with_metrics_artifacts_and_one_nested_run_per_trial(trained):
    client = MlflowClient()
    run_id = trained["summary"]["run_id"]
    parent = client.get_run(run_id)
    for name in ("validation_auc", "validation_pr_auc", "validation_logloss", "validation_brier",
                 "validation_lift_at_10", "baseline_recency_auc", "baseline_frequency_auc"):
        assert name in parent.data.metrics
    assert parent.data.params["cutoff"] == CUTOFF and len(parent.data.params["data_hash"]) == 16
    from training.tracking import git_commit

    assert parent.data.tags["git_commit"] == git_commit() != "unknown"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 3
    assert all("validation_auc" in c.data.metrics and "num_leaves" in c.data.params for c in children)
    # what a data scientist sees in the MLflow UI: datasets, a description, an experiment opening on training runs
    inputs = {(d.dataset.name, d.tags[0].value) for d in parent.inputs.dataset_inputs}
    assert inputs == {("churn-transactions-training", "training"), ("churn-transactions-validation", "validation"),
                      ("churn-transactions-test", "test")}
    note = parent.data.tags["mlflow.note.content"]
    assert f"Shipped scorer: {trained['summary']['scorer']['kind']}" in note and "Test slice" in note
    assert "winback-churn version 1 @champion" in note
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    reports = {f.path for f in client.list_artifacts(run_id, "reports")}
    assert {"reports/roc.png", "reports/calibration.png", "reports/feature_importance.png",
            "reports/feature_importance.csv", "reports/optuna_history.png", "reports/features.json",
            "reports/candidates.csv"} <= reports


def test_logged_model_is_self_contained_and_pyfunc_equals_runtime(trained):
    uri = trained["summary"]["model_uri"]
    runtime = load_churn_runtime(uri)
    assert runtime.metadata["run_id"] == trained["summary"]["run_id"] and runtime.metadata["horizon_days"] == 120
    assert runtime.calibration["method"] == "logistic_stack"
    assert runtime.calibration["columns"] == ["recency_days", "frequency", "tenure_days"]
    # BG/NBD's log-odds of silence is the stack's fourth term, with the parameters fitted as of the cutoff
    assert len(runtime.calibration["weights"]) == 4 and runtime.calibration["btyd"]["horizon_days"] == 120
    assert runtime.calibration["btyd"]["bgnbd"] == runtime.value.bgnbd.to_dict()
    model = mlflow.pyfunc.load_model(uri)
    signature = model.metadata.signature
    # the features, all required (spark_udf needs no arguments), every input typed Any (features build's table as is)
    assert signature.inputs.input_names() == signature.inputs.required_input_names() == runtime.encoder.features_
    assert signature.outputs.input_names() == list(runtime.score_records(model.input_example).columns)
    example = model.input_example
    from_pyfunc = model.predict(example)
    direct = runtime.score_frame(example)
    np.testing.assert_allclose(from_pyfunc["churn_probability"], direct["churn_probability"])
    assert from_pyfunc["risk_tier"].tolist() == direct["risk_tier"].tolist()


def _data(sim, horizon_days=120, noise=False):
    data = prepare_transactions(sim.transactions, pd.Timestamp(CUTOFF), horizon_days, 2, 30, sim.customers, seed=1)
    rng = np.random.default_rng(0)
    for frame in (data.train, data.valid, data.test):
        frame["noise"] = rng.random(len(frame))
    if noise:  # same rows, an uninformative model
        data.feature_columns = ["noise"]
    return data


def _train(data, name):
    return train_churn(data, ChurnTrainConfig(trials=1, max_rounds=20, register_as=name),
                       TrackingSettings.from_env("winback-churn"))


def _champion(name):
    return str(MlflowClient().get_registered_model(name).aliases["champion"])


def test_the_holdout_scheme_validates_on_the_validation_rows_and_refit_retrains_on_more(trained):
    data = _data(trained["sim"])
    settings = TrackingSettings.from_env("winback-churn")
    holdout = train_churn(data, ChurnTrainConfig(trials=1, max_rounds=60, cv="never", refit=False), settings)
    assert holdout["validation_scheme"] == "holdout" and holdout["validation"]["n"] == len(data.valid)
    refit = train_churn(data, ChurnTrainConfig(trials=1, max_rounds=60, cv="never", refit=True), settings)
    assert refit["validation_scheme"].startswith("holdout, refit on every labelled row but the test slice")
    assert refit["validation"] == holdout["validation"]  # chosen on the same rows; only the final fit differs
    assert refit["test"]["auc"] != holdout["test"]["auc"]


def test_held_out_customers_are_split_into_validation_and_an_untouched_test_slice(trained):
    data = _data(trained["sim"])
    train, valid, test = (set(frame.index) for frame in (data.train, data.valid, data.test))
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert len(test) == data.description["test_rows"] and 0.13 < len(test) / len(set(data.valid.index) | test) < 0.45
    assert data.test["churned"].nunique() == 2


def test_a_worse_model_is_registered_as_challenger_and_champion_stays(trained):
    data = _data(trained["sim"], noise=True)
    result = _train(data, "winback-churn")
    assert result["test"]["auc"] < 0.6
    registered = result["registered"]
    assert (registered["version"], registered["alias"], registered["champion_version"]) == ("2", "challenger", "1")
    assert _champion("winback-churn") == "1"
    # both measured on the final test rows, which neither model's tuning, early stopping or calibration saw
    champion = load_churn_runtime("models:/winback-churn/1")
    from training.metrics import auc

    figures = registered["comparison"]
    assert figures["rows"] == len(data.test) == result["test"]["n"]
    assert figures["candidate"] == pytest.approx(result["test"]["auc"])
    assert figures["champion"] == pytest.approx(auc(data.y_test, champion.predict_proba(
        champion.encoder.transform(data.test))))
    assert figures["difference"] < -figures["difference_se"] < 0
    assert registered["reason"].startswith("does not beat champion version 1")
    run = MlflowClient().get_run(result["run_id"])
    assert run.data.metrics["promotion.champion"] == pytest.approx(figures["champion"])
    assert run.data.tags["winback.promotion"] == registered["reason"]


def test_a_better_model_replaces_the_champion(trained):
    first = _train(_data(trained["sim"], noise=True), "churn-ladder")
    assert first["registered"]["alias"] == "champion"
    better = _train(_data(trained["sim"]), "churn-ladder")["registered"]
    assert (better["version"], better["alias"], better["champion_version"]) == ("2", "champion", "1"), better["reason"]
    assert better["comparison"]["difference"] > better["comparison"]["difference_se"] > 0
    assert better["reason"].startswith("beats champion version 1") and _champion("churn-ladder") == "2"


def test_another_horizon_is_not_compared_and_leaves_the_champion_alone(trained):
    _train(_data(trained["sim"], noise=True), "churn-horizon")
    other = _train(_data(trained["sim"], horizon_days=90), "churn-horizon")["registered"]
    assert (other["version"], other["alias"], other["comparison"]) == ("2", "challenger", {})
    assert "horizon_days: champion 120, candidate 90" in other["reason"] and _champion("churn-horizon") == "1"


def test_a_champion_that_cannot_be_loaded_is_an_error_and_nothing_moves(trained):
    import shutil

    client = MlflowClient()
    _train(_data(trained["sim"], noise=True), "churn-broken")
    source = client.get_model_version("churn-broken", "1").source
    shutil.rmtree(mlflow.get_logged_model(source.split("/")[-1]).artifact_location.removeprefix("file://"))
    result = runner.invoke(app, ["train", "churn", "--transactions", "tx.parquet", "--profiles", "profiles.parquet",
                                 "--cutoff", CUTOFF, "--horizon-days", "120", "--snapshots", "2", "--trials", "1",
                                 "--max-rounds", "20", "--register-as", "churn-broken"])
    assert result.exit_code == 2, result.output
    assert "champion models:/churn-broken/1 cannot be loaded" in result.output and "Traceback" not in result.output
    assert [str(v.version) for v in client.search_model_versions("name = 'churn-broken'")] == ["1"]
    assert _champion("churn-broken") == "1"


def test_a_champion_moved_by_another_run_during_the_comparison_is_not_overwritten(trained):
    from training.promotion import Comparison, register_and_promote

    client = MlflowClient()
    uri = trained["summary"]["model_uri"]
    mlflow.register_model(uri, "churn-race")  # version 1, champion

    client.set_registered_model_alias("churn-race", "champion", "1")

    def compare(champion_uri):  # meanwhile another run registers version 2 and promotes it
        assert champion_uri == "models:/churn-race/1"
        client.set_registered_model_alias("churn-race", "champion", mlflow.register_model(uri, "churn-race").version)
        return Comparison("test_auc", 100, 0.9, 0.01, 0.7, 0.01, 0.2, 0.01)

    mlflow.set_experiment("race")
    with mlflow.start_run(), pytest.warns(UserWarning, match="moved from version 1 to 2"):
        registered = register_and_promote(uri, "churn-race", compare)
    assert (registered["version"], registered["alias"]) == ("3", "challenger")
    assert _champion("churn-race") == "2" and "moved from version 1 to 2" in registered["reason"]
    assert client.get_model_version("churn-race", "3").tags["winback.promotion"] == registered["reason"]


def test_runs_that_compared_with_the_same_champion_leave_the_decision_to_the_lowest_claiming_version(trained,
                                                                                                monkeypatch):
    import training.promotion as promotion

    client = MlflowClient()
    uri = trained["summary"]["model_uri"]
    # another run, also first of its name, registered version 1 with its claim and has not moved the alias yet
    mlflow.register_model(uri, "churn-lockstep", tags={promotion.CLAIM_TAG: "over no champion"})

    def compare(champion_uri):
        raise AssertionError("there is no champion to compare with")

    mlflow.set_experiment("lockstep")
    with mlflow.start_run(), pytest.warns(UserWarning, match="version 1, registered just before it"):
        registered = promotion.register_and_promote(uri, "churn-lockstep", compare)
    assert (registered["version"], registered["alias"]) == ("2", "challenger")
    assert registered["reason"].startswith("version 1, registered just before it by another run that compared with "
                                           "the same champion (no champion), takes the decision")
    aliases = {k: str(v) for k, v in client.get_registered_model("churn-lockstep").aliases.items()}
    assert aliases == {"challenger": "2"}  # version 1's run moves the champion alias, not this one
    assert client.get_model_version("churn-lockstep", "2").tags[promotion.CLAIM_TAG] == "over no champion"
    # claims older than the window (runs that died before moving the alias) do not block the next run
    monkeypatch.setattr(promotion, "CLAIM_WINDOW_S", -1)
    with mlflow.start_run():
        later = promotion.register_and_promote(uri, "churn-lockstep", compare)
    assert (later["version"], later["alias"]) == ("3", "champion") and _champion("churn-lockstep") == "3"


def test_score_from_the_champion_alias_writes_the_contract_columns(trained):
    tmp = trained["tmp"]
    result = runner.invoke(app, ["score", "--model", "models:/winback-churn@champion", "--transactions", "tx.parquet",
                                 "--profiles", "profiles.parquet", "--as-of", CUTOFF, "--output", "scores.parquet"])
    assert result.exit_code == 0, result.output
    scores = read_table(tmp / "scores.parquet")
    assert list(scores.columns) == ["customer_id", "churn_probability", "risk_tier", "lifecycle_stage",
                                    "value_tier", "expected_spend", "value_if_retained", "value_at_risk", "clv_12m"]
    assert len(scores) == trained["sim"].transactions["customer_id"].nunique()
    assert scores["churn_probability"].between(0, 1).all()
    assert set(scores["risk_tier"]) == {"high", "medium", "low"}
    assert (scores["value_at_risk"] >= 0).all() and "version 1" in result.output
    # the value columns hold together: at risk + expected = if retained (to rounding), 12 months ≥ the horizon
    values = scores[["expected_spend", "value_if_retained", "value_at_risk", "clv_12m"]]
    assert values.notna().all().all() and (values > 0).all().all()
    np.testing.assert_allclose(scores["value_at_risk"] + scores["expected_spend"], scores["value_if_retained"],
                               atol=0.011)
    assert (scores["clv_12m"] >= scores["expected_spend"] - 0.01).all()


@pytest.mark.parametrize("args,message", [
    (["--horizon-days", "0", "--cutoff", CUTOFF], "--horizon-days must be positive"),
    (["--horizon-days", "90", "--cutoff", "2020-01-01"], "2020-01-01"),
    (["--horizon-days", "90", "--cutoff", "2024-02-01"], "before the first transaction"),
    (["--horizon-days", "90"], "--cutoff"),
    (["--cutoff", CUTOFF, "--trials", "0"], "--trials"),
    (["--cutoff", CUTOFF, "--level-bootstrap", "1"], "--level-bootstrap must be 0 (none) or at least 2, got 1"),
])
def test_bad_training_arguments_exit_2_with_one_line(trained, args, message):
    result = runner.invoke(app, ["train", "churn", "--transactions", "tx.parquet", "--json-out", "bad.json", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_customer_table_with_a_label_trains_and_scores_by_id(trained):
    rng = np.random.default_rng(5)
    n = 400
    tenure = rng.integers(1, 72, n)
    contract = rng.choice(["Month-to-month", "One year", "Two year"], n)
    churn_p = 0.6 * (contract == "Month-to-month") + 0.3 / (1 + tenure / 12)
    table = pd.DataFrame({"customerID": [f"T{i:04d}" for i in range(n)], "tenure": tenure, "Contract": contract,
                          "TotalCharges": [" " if i % 50 == 0 else f"{v:.2f}" for i, v in enumerate(tenure * 30.5)],
                          "Churn": np.where(rng.random(n) < churn_p, "Yes", "No")})
    table.to_csv(trained["tmp"] / "telco.csv", index=False)
    result = runner.invoke(app, ["train", "churn", "--table", "telco.csv", "--target", "Churn", "--id-col", "customerID",
                                 "--trials", "2", "--max-rounds", "50", "--json-out", "telco.json"])
    assert result.exit_code == 0, result.output
    summary = json.loads((trained["tmp"] / "telco.json").read_text())
    assert (summary["test"]["n"], summary["validation"]["n"]) == (60, 340)  # 15 % of 400 test, out-of-fold on the rest
    assert summary["baselines"] == {"recency_auc": None, "frequency_auc": None}
    assert summary["validation"]["auc"] > 0.6
    result = runner.invoke(app, ["score", "--model", summary["model_uri"], "--table", "telco.csv",
                                 "--id-col", "customerID", "--output", "telco_scores.csv"])
    assert result.exit_code == 0, result.output
    scores = read_table(trained["tmp"] / "telco_scores.csv")
    assert list(scores.columns) == ["customer_id", "churn_probability", "risk_tier"]
    assert scores["customer_id"].tolist() == table["customerID"].tolist()


def test_calibration_stacks_log_terms_only_when_every_stack_column_is_a_feature():
    rng = np.random.default_rng(0)
    recency = rng.integers(0, 300, 500).astype(float)
    y = (rng.random(500) < recency / 300).astype(float)
    raw = np.full(500, 0.5)  # a booster that knows nothing: the stack must learn recency on its own
    X = np.column_stack([recency, rng.integers(1, 5, 500), recency + 10])
    calibration, p = fit_calibration(raw, X, ["recency_days", "frequency", "tenure_days"], y, stack=True)
    assert calibration["method"] == "logistic_stack" and calibration["columns"] == ["recency_days", "frequency",
                                                                                     "tenure_days"]
    assert np.corrcoef(p, recency)[0, 1] > 0.5
    platt, _ = fit_calibration(raw, X[:, :2], ["recency_days", "frequency"], y, stack=True)
    assert platt["method"] == "platt"
    assert fit_calibration(raw, X, ["recency_days", "frequency", "tenure_days"], y, stack=False)[0]["method"] == "platt"


def test_the_share_of_customers_beyond_the_labelled_range_is_logged(trained):
    beyond = trained["summary"]["extrapolation"]
    assert set(beyond) == {"tenure_days", "recency_days"}
    labelled = prepare_transactions(trained["sim"].transactions, pd.Timestamp(CUTOFF), 120, 2, 30, None, seed=1)
    rows = pd.concat([labelled.train, labelled.valid])
    assert beyond["tenure_days"]["labelled_max"] == rows["tenure_days"].max()
    assert 0 < beyond["tenure_days"]["share_beyond"] < 0.5  # customers who joined early in the history
    run = MlflowClient().get_run(trained["summary"]["run_id"])
    assert run.data.metrics["extrapolated_share.tenure_days"] == beyond["tenure_days"]["share_beyond"]
    assert "beyond every labelled row" not in trained["output"]


def test_the_cutoffs_totals_are_the_models_scores_beside_bgnbds_on_the_same_customers(trained):
    levels = trained["summary"]["cutoff_levels"]
    runtime = load_churn_runtime(trained["summary"]["model_uri"])
    from features.contracts import normalize_profiles

    latest = prepare_transactions(trained["sim"].transactions, pd.Timestamp(CUTOFF), 120, 2, 30,
                                  normalize_profiles(trained["sim"].customers), seed=1).latest_features
    scores = runtime.score_frame(latest)
    assert levels["customers"] == len(latest)
    assert levels["expected_buyers"] == pytest.approx((1 - scores["churn_probability"]).sum())
    assert levels["expected_spend"] == pytest.approx(scores["expected_spend"].sum(), rel=1e-4)  # cents
    from serving.runtime.value.btyd import Rfm

    rfm = Rfm.from_features(*(latest[c].fillna(0).to_numpy(float) for c in ("frequency", "recency_days",
                                                                              "tenure_days", "monetary_total")))
    p_purchase = runtime.value.bgnbd.p_purchase(rfm.x, rfm.t_x, rfm.age, 120.0)  # the cutoff's fit, stored
    assert levels["expected_buyers_bgnbd"] == pytest.approx(p_purchase.sum(), rel=1e-6)
    assert 0.8 < levels["expected_spend"] / levels["expected_spend_btyd"] < 1.25
    run = MlflowClient().get_run(trained["summary"]["run_id"])
    assert run.data.metrics["cutoff_expected_buyers_bgnbd"] == pytest.approx(levels["expected_buyers_bgnbd"])
    printed = " ".join(trained["output"].split())
    assert f"as of the cutoff ({len(latest):,} customers): expected buyers {levels['expected_buyers']:,.0f}" in printed
    assert "disagrees by more than" not in printed  # the labels cover most customers here


def test_the_cutoffs_totals_come_with_their_spread_over_refits_of_the_level_layers(trained):
    levels = trained["summary"]["cutoff_levels"]
    resampled = levels["bootstrap"]
    assert resampled["replicates"] == 20 and resampled["interval"] == 0.9
    for name in ("expected_buyers", "expected_spend"):
        low, high = resampled[name]
        assert 0 < low < levels[name] < high  # the refits move the level
        assert low * high == pytest.approx(levels[name] ** 2)  # the total × exp(± z·sd of the log)
    run = MlflowClient().get_run(trained["summary"]["run_id"])
    assert run.data.metrics["cutoff_expected_buyers_low"] == resampled["expected_buyers"][0]
    assert run.data.metrics["cutoff_expected_spend_high"] == resampled["expected_spend"][1]
    printed = " ".join(trained["output"].split())
    low, high = resampled["expected_buyers"]
    assert f"refitted on 20 resamples of their rows, 90% interval: expected buyers {low:,.0f}–{high:,.0f}" in printed


def test_the_resampled_totals_are_the_runtimes_own_scores_under_each_refit(trained):
    from training.churn.levels import LevelLayers, grouped_resample, resampled_totals

    runtime = load_churn_runtime(trained["summary"]["model_uri"])
    from features.contracts import normalize_profiles

    latest = prepare_transactions(trained["sim"].transactions, pd.Timestamp(CUTOFF), 120, 2, 30,
                                  normalize_profiles(trained["sim"].customers), seed=1).latest_features
    X = runtime.encoder.transform(latest)
    retained = runtime.score_array(X)["value_if_retained"].to_numpy()
    p = runtime.predict_proba(X)
    groups, labels = np.repeat(np.arange(50), 2), np.tile([0.0, 1.0], 50)
    unchanged = LevelLayers(lambda rows: runtime.calibration, groups, labels, lambda rows: runtime.linear, groups,
                            labels)
    buyers, spend = resampled_totals(runtime, X, retained, unchanged, 3, seed=0)
    assert buyers == pytest.approx(np.full(3, (1 - p).sum())) and spend == pytest.approx(np.full(3, ((1 - p) * retained).sum()))
    # a refit that moves the level moves the totals: the regression's and the stack's intercepts up by one log-odd
    # each (whichever the scorer reads) means fewer expected buyers
    higher = LevelLayers(lambda rows: {**runtime.calibration, "b": runtime.calibration["b"] + 1.0}, groups, labels,
                         lambda rows: {**runtime.linear, "intercept": runtime.linear["intercept"] + 1.0}, groups,
                         labels)
    moved, _ = resampled_totals(runtime, X, retained, higher, 2, seed=0)
    assert (moved < (1 - p).sum() * 0.9).all()
    # more customers than a resample takes: m out of n, the departure from the runtime's total scaled by √(m/n)
    import training.churn.levels as levels

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(levels, "LEVEL_BOOTSTRAP_GROUPS", 25)  # of 50: m/n = 1/2
        scaled, _ = resampled_totals(runtime, X, retained, higher, 2, seed=0)
    own = (1 - p).sum()
    assert scaled == pytest.approx(own + (moved - own) * np.sqrt(0.5))
    # resampling is by customer: every drawn customer comes with both of its rows, as many customers as there are
    rows = grouped_resample(groups, np.random.default_rng(3))
    assert len(rows) == 100 and (groups[rows[0::2]] == groups[rows[1::2]]).all() and (rows[0::2] != rows[1::2]).all()
    assert len(np.unique(groups[rows])) < 50  # with replacement
    assert len(grouped_resample(groups, np.random.default_rng(3), share=0.3)) == 2 * 15


def test_training_says_when_an_extrapolated_level_and_bgnbd_disagree(capsys):
    from winback.cli_churn import _validation_table

    result = {"validation": {"n": 100, "churn_rate": 0.5, "auc": 0.8, "pr_auc": 0.8, "logloss": 0.5, "brier": 0.2,
                             "lift_at_10": 2.0}, "baselines": {}, "scorer": {"kind": "linear"}, "candidates": {},
              "validation_scheme": "holdout", "test": {"n": 50, "auc": 0.8, "pr_auc": 0.8, "brier": 0.2},
              "extrapolation": {"tenure_days": {"labelled_max": 183.0, "share_beyond": 1.0}},
              "cutoff_levels": {"customers": 1000, "expected_buyers": 250.0, "expected_buyers_bgnbd": 200.0,
                                "expected_spend": 1000.0, "expected_spend_btyd": 1000.0}}
    _validation_table(result)
    printed = " ".join(capsys.readouterr().out.split())
    assert "expected buyers 250 (BG/NBD on the same customers 200, +25%)" in printed
    assert "disagrees by more than 10%" in printed
    result["cutoff_levels"]["expected_buyers"] = 205.0
    _validation_table(result)
    assert "disagrees" not in capsys.readouterr().out
    result["cutoff_levels"]["expected_buyers"] = 250.0
    result["extrapolation"]["tenure_days"]["share_beyond"] = 0.1  # the labels cover the level: no note
    _validation_table(result)
    assert "disagrees" not in capsys.readouterr().out
    result["cutoff_levels"]["bootstrap"] = {"replicates": 20, "interval": 0.9, "expected_buyers": [230.0, 270.0],
                                            "expected_spend": [900.0, 1100.0]}
    _validation_table(result)
    printed = " ".join(capsys.readouterr().out.split())
    assert "20 resamples of their rows, 90% interval: expected buyers 230–270, expected spend 900–1,100" in printed


def test_the_stack_reads_bgnbd_with_each_rows_own_snapshot_fit_and_scoring_with_the_cutoffs(trained):
    from serving.runtime.churn import btyd_silent_logit
    from training.churn.train import btyd_fits
    from training.labels import SNAPSHOT

    data = _data(trained["sim"])
    fits = btyd_fits(data)
    assert fits is not None and set(fits.by_snapshot) == set(pd.concat([data.train, data.valid])[SNAPSHOT])
    names = ["frequency", "recency_days", "tenure_days"]
    rows = pd.concat([data.train, data.valid])
    X = rows[names].to_numpy(dtype=float)
    terms = fits.terms(X, names, rows[SNAPSHOT].to_numpy())
    for snapshot, (bgnbd, _) in fits.by_snapshot.items():
        at = (rows[SNAPSHOT] == snapshot).to_numpy()
        np.testing.assert_allclose(terms[at], btyd_silent_logit(X[at], names, bgnbd.to_dict(), 120))
    # customers silent for longer are more likely to stay silent, under any fit
    assert np.corrcoef(terms, rows["recency_days"])[0, 1] > 0.3
    assert fits.term_spec(fits.scoring)["bgnbd"] != fits.term_spec(fits.by_snapshot[max(fits.by_snapshot)])["bgnbd"]
    table = prepare_transactions(trained["sim"].transactions, pd.Timestamp(CUTOFF), 120, 2, 30, None, seed=1)
    table.kind = "table"
    assert btyd_fits(table) is None


def test_label_window_overlap_is_stated_and_a_step_of_one_horizon_removes_it(trained):
    from training.labels import SNAPSHOT

    sim = trained["sim"]
    default = prepare_transactions(sim.transactions, pd.Timestamp(CUTOFF), 120, 2, 30, sim.customers, seed=1)
    assert default.description["label_window_overlap_days"] == 90  # windows 30 days apart share 120 − 30 days
    assert "overlap by 90 of 120 days" in default.description["validation"]
    strict = prepare_transactions(sim.transactions, pd.Timestamp(CUTOFF), 120, 2, 120, sim.customers, seed=1)
    assert strict.description["label_window_overlap_days"] == 0
    assert "label windows do not overlap" in strict.description["validation"]
    newest, older = (pd.Timestamp(d) for d in strict.description["snapshot_dates"])
    assert older + pd.Timedelta(days=120) <= newest  # every training label is observed before validation starts
    assert (pd.to_datetime(strict.train[SNAPSHOT]) == older).all()
    assert (pd.to_datetime(strict.valid[SNAPSHOT]) == newest).all()
