"""Model: `winback train uplift` on the simulator — JSON contract, MLflow run tree, artifacts, pyfunc, registry."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.build import build_features
from features.contracts import normalize_profiles, normalize_transactions
from features.simulate import simulate, write_simulation
from serving.batch.recommend import recommendation_frame
from serving.runtime.uplift import load_uplift_runtime
from winback.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("uplift_train")]  # one trained fixture per run
AS_OF = "2025-12-31"
TRIALS = 3


def _train(directory, json_name, trials=TRIALS, extra=(), register_as="sim-uplift"):
    args = ["train", "uplift", "--campaign", str(directory / "campaign.parquet"), "--treatment-col", "incentive",
            "--control", "no_contact", "--outcome", "converted", "--revenue-col", "revenue",
            "--transactions", str(directory / "transactions.parquet"),
            "--profiles", str(directory / "customers.parquet"), "--as-of", AS_OF,
            "--catalog", str(directory / "incentives.yaml"), "--trials", str(trials), "--seed", "5",
            "--register-as", register_as, "--json-out", str(directory / json_name),
            # 900 validation rows show no arm's sends to pay at 95 %: the point estimates decide here, so that
            # the tests below have sends to cap and compare
            "--decision-confidence", "0.5", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((directory / json_name).read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("uplift")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory}/mlflow.db")
        sim = simulate(customers=3000, seed=11)
        write_simulation(sim, directory)
        result = _train(directory, "uplift.json")
        yield directory, sim, result


def test_json_holds_the_contract_fields(trained):
    _, sim, result = trained
    arms = [item["name"] for item in sim.catalog["incentives"]]
    assert set(result) == {"run_id", "model_uri", "registered", "arms", "learner", "best_params", "fitted_on_rows",
                           "validation", "study"}
    assert result["study"]["complete_trials"] == result["study"]["compared_trials"] == TRIALS
    assert result["fitted_on_rows"] == 3000  # refit on every row after validation (the default)
    assert result["arms"] == arms
    # a revenue outcome rules out class transformation
    assert result["learner"] in {"two_models", "solo_model", "x_learner", "dr_learner"}
    v = result["validation"]
    assert v["n"] == 900  # 30 % of 3,000
    for section in ("qini_auc", "uplift_auc", "uplift_at_30"):
        assert set(v[section]) == set(arms)
    policies = {"model", "argmax_uplift", "control", "random", *(f"all:{a}" for a in arms)}
    assert set(v["policy_value"]) == policies and set(v["net_policy_value"]) == policies
    assert v["net_policy_value"]["control"] == 0.0
    assert result["registered"]["alias"] == "champion" and result["registered"]["version"] == "1"


def test_validation_figures_are_recomputed_from_the_logged_model_on_the_held_out_rows(trained):
    """The JSON's numbers, recomputed here with sklift and a hand-written IPW on the same 30 % of rows, from the
    logged model fitted without them (`--no-refit`: the validation figures are of that fit)."""
    from sklift.metrics import qini_auc_score, uplift_at_k

    from serving.runtime.decision.catalog import load_catalog
    from training.uplift.data import UpliftConfig, load_campaign, stratified_split

    directory, sim, refitted = trained
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory}/mlflow.db")
        result = _train(directory, "no_refit.json", extra=["--no-refit"], register_as="sim-uplift-no-refit")
    assert result["fitted_on_rows"] == 2100 and result["validation"] == refitted["validation"]
    config = UpliftConfig(campaign=directory / "campaign.parquet", treatment_col="incentive", control="no_contact",
                          outcome="converted", revenue_col="revenue", catalog=load_catalog(directory / "incentives.yaml"),
                          catalog_path=directory / "incentives.yaml", json_out=None,
                          transactions=directory / "transactions.parquet", profiles=directory / "customers.parquet",
                          as_of=pd.Timestamp(AS_OF), seed=5)
    data = load_campaign(config)
    _, rows = stratified_split(data.arm, data.y, 0.3, 5)
    mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
    runtime = load_uplift_runtime(result["model_uri"])
    prediction = runtime.predict(runtime.encoder.transform(data.frame.iloc[rows]))
    y, arm, v = data.y[rows], data.arm[rows], result["validation"]
    for j, name in enumerate(runtime.arms):
        on = (arm == j) | (arm == -1)
        treated = (arm[on] == j).astype(int)
        assert v["qini_auc"][name] == pytest.approx(qini_auc_score(y[on], prediction.uplift[on, j], treated))
        assert v["uplift_at_30"][name] == pytest.approx(uplift_at_k(y[on], prediction.uplift[on, j], treated,
                                                                    strategy="overall", k=0.3))
    # net value of the model's decisions: self-normalised IPW of (revenue − cost − redemption) on matching rows
    costs = {a["name"]: (a["cost"], a["redemption_cost"]) for a in sim.catalog["incentives"]}
    cost = np.array([0.0 if a == -1 else costs[runtime.arms[a]][0] for a in arm])
    redemption = np.array([0.0 if a == -1 else costs[runtime.arms[a]][1] for a in arm])
    net = data.revenue[rows] - cost - redemption * y

    def value(choice):
        w = (arm == choice) / data.propensity[rows]
        return np.sum(w * net) / np.sum(w)

    from serving.runtime.decision import decide

    allowed = np.isin(runtime.arms, runtime.validated_arms)
    # the model's own decisions (−1 = control) over the arms it may send, whatever rule is shipped
    decided = decide(np.where(allowed, prediction.net_value, -np.inf))
    ipw = np.sum(((arm == decided) / data.propensity[rows]) * net) / np.sum((arm == decided) / data.propensity[rows])
    assert v["net_policy_value"]["model"] == pytest.approx(ipw - value(-1))
    shipped = prediction.decision
    ipw = np.sum(((arm == shipped) / data.propensity[rows]) * net) / np.sum((arm == shipped) / data.propensity[rows])
    assert v["decision"]["net_policy_value"] == pytest.approx(ipw - value(-1))
    assert v["decision"]["rule"] == runtime.rule
    assert set(runtime.validated_arms) <= set(runtime.arms) and runtime.validated_arms == v["decision"]["validated_arms"]
    rules = v["decision"]["rules"]
    for name, shown in rules.items():  # the rule table's values are the policy table's
        assert shown["net_policy_value"] == pytest.approx(v["net_policy_value"][name])
    # a baseline ships only when it beats the model's decisions beyond their paired confidence bound
    assert rules[runtime.rule]["beats_model"] or (runtime.rule == "model" and
                                                  not any(r["beats_model"] for r in rules.values()))
    assert v["net_policy_value"][f"all:{runtime.arms[0]}"] == pytest.approx(value(0) - value(-1))


def test_all_arm_policy_value_is_that_arms_observed_conversion_rate(trained):
    _, sim, result = trained
    v = result["validation"]
    rates = sim.campaign.groupby("incentive")["converted"].mean()
    for arm, rate in rates.items():
        key = "control" if arm == "no_contact" else f"all:{arm}"
        assert abs(v["policy_value"][key] - rate) < 0.05  # validation rows are a 30 % stratified sample


def test_parent_run_has_one_nested_run_per_trial_and_the_plots(trained):
    directory, _, result = trained
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory}/mlflow.db")
        mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
        client = mlflow.MlflowClient()
        run = client.get_run(result["run_id"])
        children = client.search_runs([run.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{result['run_id']}'")
        artifacts = {f.path for f in client.list_artifacts(result["run_id"])}
        plots = {f.path for f in client.list_artifacts(result["run_id"], "plots")}
    assert len(children) == TRIALS
    assert {c.data.tags["trial_state"] for c in children} <= {"complete", "pruned"}
    assert {"catalog.yaml", "validation.json", "uplift_result.json", "plots"} <= artifacts
    assert plots == {"plots/qini_curves.png", "plots/uplift_by_decile.png", "plots/policy_values.png"}
    assert run.data.params["data_hash"] and run.data.tags["command"] == "train uplift"
    assert run.data.metrics["net_policy_value.control"] == 0.0
    contexts = sorted(d.tags[0].value for d in run.inputs.dataset_inputs)
    assert contexts == ["training", "validation"]
    note = run.data.tags["mlflow.note.content"]
    assert f"Learner {result['learner']}" in note and "sim-uplift version 1 @champion" in note
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def _customers(directory):
    tx = normalize_transactions(pd.read_parquet(directory / "transactions.parquet"), as_of=AS_OF)
    profiles = normalize_profiles(pd.read_parquet(directory / "customers.parquet"))
    return build_features(tx, pd.Timestamp(AS_OF), profiles).reset_index()


def test_packaged_pyfunc_predicts_what_the_in_memory_runtime_predicts(trained):
    directory, _, result = trained
    customers = _customers(directory).head(300)
    mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
    packaged = mlflow.pyfunc.load_model(result["model_uri"]).predict(customers)
    runtime = load_uplift_runtime(result["model_uri"])
    expected = recommendation_frame(runtime.predict_frame(customers), None, with_net_values=True)
    pd.testing.assert_frame_equal(packaged.reset_index(drop=True), expected)
    assert runtime.metadata["run_id"] == result["run_id"]


def test_packaged_pyfunc_checks_inputs_against_its_signature(trained):
    directory, _, result = trained
    mlflow.set_tracking_uri(f"sqlite:///{directory}/mlflow.db")
    model = mlflow.pyfunc.load_model(result["model_uri"])
    runtime = load_uplift_runtime(result["model_uri"])
    inputs = model.metadata.signature.inputs
    # the features, all required: spark_udf can be called with no arguments
    assert inputs.input_names() == inputs.required_input_names() == runtime.encoder.features_
    example = model.input_example
    assert len(example) == 5
    with_ids = model.predict(example.assign(customer_id=[f"c{i}" for i in range(5)]))  # extra columns are dropped
    pd.testing.assert_frame_equal(with_ids.reset_index(drop=True),
                                  recommendation_frame(runtime.predict_frame(example), None, with_net_values=True))
    with pytest.raises(mlflow.exceptions.MlflowException, match=runtime.encoder.features_[0]):
        model.predict(example.drop(columns=runtime.encoder.features_[0]))


def test_recommend_from_the_registered_champion_writes_one_row_per_customer(trained):
    directory, sim, result = trained
    customers = _customers(directory)
    customers.to_parquet(directory / "customers_features.parquet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory}/mlflow.db")
        out = CliRunner().invoke(app, ["recommend", "--model", "models:/sim-uplift@champion",
                                       "--input", str(directory / "customers_features.parquet"),
                                       "--max-sends", "100", "--output", str(directory / "recs.csv")])
        uncapped = CliRunner().invoke(app, ["recommend", "--model", "models:/sim-uplift@champion",
                                            "--input", str(directory / "customers_features.parquet"),
                                            "--output", str(directory / "all.csv")])
    assert out.exit_code == 0, out.output
    assert uncapped.exit_code == 0, uncapped.output
    recs = pd.read_csv(directory / "recs.csv")
    arms = [item["name"] for item in sim.catalog["incentives"]]
    assert list(recs.columns) == ["customer_id", "incentive", "expected_net_value", *(f"uplift:{a}" for a in arms)]
    assert len(recs) == len(customers)
    free = pd.read_csv(directory / "all.csv")
    wanted = free[free["incentive"] != "no_contact"]
    assert len(wanted) > 100  # the cap binds
    sends = recs[recs["incentive"] != "no_contact"]
    assert len(sends) == 100
    # the 100 kept are the model's sends with the highest expected net value
    best = wanted.sort_values("expected_net_value", ascending=False, kind="stable").head(100)
    assert set(sends["customer_id"]) == set(best["customer_id"])


def test_retraining_the_same_model_does_not_displace_the_champion(trained):
    directory, _, first = trained
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory}/mlflow.db")
        second = _train(directory, "again.json")
    # the candidate's decisions are those of the fit without the validation rows; the champion (refitted on every
    # row) has seen them, which can only favour it: the same recipe never displaces it
    registered = second["registered"]
    assert registered["alias"] == "challenger" and registered["champion_version"] == "1"
    assert registered["comparison"]["difference"] <= registered["comparison"]["difference_se"]
    assert registered["reason"].startswith("does not beat champion version 1")
    assert registered["comparison"]["candidate"] == pytest.approx(second["validation"]["decision"]["net_policy_value"])
    assert np.isclose(first["validation"]["net_policy_value"]["model"],
                      second["validation"]["net_policy_value"]["model"])


def test_outcome_columns_of_a_campaign_log_are_not_taken_as_features():
    from training.uplift.data import outcome_like_columns

    rng = np.random.default_rng(0)
    n = 2000
    visit = rng.random(n) < 0.2
    conversion = visit & (rng.random(n) < 0.3)  # converting needs a visit
    frame = pd.DataFrame({
        "recency": rng.integers(1, 13, n),
        "womens": rng.integers(0, 2, n),
        "conversion": conversion.astype(int),
        "spend": np.where(conversion, rng.gamma(2.0, 50.0, n), 0.0),
        "channel": rng.choice(["web", "phone"], n),
    })
    assert outcome_like_columns(frame, visit) == ["conversion", "spend"]
    as_outcome = frame.drop(columns="conversion").assign(visit=visit.astype(int))
    assert outcome_like_columns(as_outcome, conversion) == ["spend", "visit"]


def test_campaign_ids_that_do_not_match_the_transactions_are_an_error_naming_them(tmp_path):
    from features.errors import DataError
    from features.simulate import simulate, write_simulation
    from serving.runtime.decision.catalog import load_catalog
    from training.uplift.data import UpliftConfig, load_campaign

    write_simulation(simulate(customers=300, seed=1), tmp_path)
    campaign = pd.read_parquet(tmp_path / "campaign.parquet")
    base = dict(treatment_col="incentive", control="no_contact", outcome="converted",
                catalog=load_catalog(tmp_path / "incentives.yaml"), catalog_path=tmp_path / "incentives.yaml",
                json_out=None, transactions=tmp_path / "transactions.parquet", as_of=pd.Timestamp("2025-12-31"))
    data = load_campaign(UpliftConfig(campaign=tmp_path / "campaign.parquet", **base))
    assert data.frame["recency_days"].notna().mean() >= 0.95
    campaign["customer_id"] = "X-" + campaign["customer_id"].astype(str)  # another system's id format
    campaign.to_parquet(tmp_path / "other.parquet")
    with pytest.raises(DataError, match=r"--id-col 'customer_id': only 0\.0% of campaign customers .*unmatched e\.g\. "
                                        r"'X-"):
        load_campaign(UpliftConfig(campaign=tmp_path / "other.parquet", **base))


def test_as_of_on_or_after_the_campaign_date_is_an_error(tmp_path):
    from features.errors import DataError, DataWarning
    from features.simulate import simulate, write_simulation
    from serving.runtime.decision.catalog import load_catalog
    from training.uplift.data import UpliftConfig, load_campaign

    write_simulation(simulate(customers=300, seed=1), tmp_path)
    campaign = pd.read_parquet(tmp_path / "campaign.parquet")
    assert (campaign["campaign_date"] == pd.Timestamp("2026-01-01")).all()
    base = dict(treatment_col="incentive", control="no_contact", outcome="converted",
                catalog=load_catalog(tmp_path / "incentives.yaml"), catalog_path=tmp_path / "incentives.yaml",
                json_out=None, transactions=tmp_path / "transactions.parquet")
    config = dict(campaign=tmp_path / "campaign.parquet", **base)
    data = load_campaign(UpliftConfig(as_of=pd.Timestamp("2025-12-31"), **config))  # the day before: fine
    assert "campaign_date" not in data.features
    for as_of in ("2026-01-01", "2026-02-15"):  # the campaign day itself, or later: features see its effect
        with pytest.raises(DataError, match=rf"--as-of {as_of} is on or after the campaign date 2026-01-01.*"
                                            r"use --as-of 2025-12-31 or earlier"):
            load_campaign(UpliftConfig(as_of=pd.Timestamp(as_of), **config))
    # without the column: --campaign-date gives the date, and without either a warning says it went unchecked
    campaign.drop(columns="campaign_date").assign(
        first_contact=campaign["campaign_date"].astype(str)).to_csv(tmp_path / "no_date.csv", index=False)
    config = dict(campaign=tmp_path / "no_date.csv", **base)
    with pytest.raises(DataError, match="campaign date 2025-12-01"):
        load_campaign(UpliftConfig(as_of=pd.Timestamp("2025-12-31"), campaign_date=pd.Timestamp("2025-12-01"),
                                   **config))
    with pytest.warns(DataWarning, match="no campaign date"):
        load_campaign(UpliftConfig(as_of=pd.Timestamp("2026-02-15"), **config))
    # a text column of dates in a CSV is read as dates, and one that is not a date is named
    campaign.assign(campaign_date="2026-01-01").to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(DataError, match="on or after the campaign date 2026-01-01"):
        load_campaign(UpliftConfig(campaign=tmp_path / "text.csv", as_of=pd.Timestamp("2026-01-05"), **base))
    campaign.assign(campaign_date="soon").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="column 'campaign_date': 300 row"):
        load_campaign(UpliftConfig(campaign=tmp_path / "bad.csv", as_of=pd.Timestamp("2025-12-31"), **base))


def test_train_uplift_cli_refuses_as_of_after_the_campaign_in_one_line(tmp_path, monkeypatch):
    from features.simulate import simulate, write_simulation

    monkeypatch.chdir(tmp_path)
    write_simulation(simulate(customers=300, seed=1), tmp_path)
    result = CliRunner().invoke(app, ["train", "uplift", "--campaign", "campaign.parquet", "--treatment-col",
                                      "incentive", "--control", "no_contact", "--outcome", "converted",
                                      "--catalog", "incentives.yaml", "--transactions", "transactions.parquet",
                                      "--as-of", "2026-01-31", "--trials", "1"])
    assert result.exit_code == 2 and "--as-of 2026-01-31 is on or after the campaign date 2026-01-01" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "mlflow.db").exists()


def test_a_searched_trial_replaces_the_regularised_start_only_beyond_the_paired_standard_error():
    import optuna

    from training.uplift.tuning import choose

    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 5.0, 4000)
    study = optuna.create_study(direction="maximize")
    values = {0: base, 1: base - 0.3,  # two regularised starts
              2: base + np.random.default_rng(3).normal(0, 1.0, 4000),  # the same up to noise: +.0125 ± .0158
              3: base + 0.5 + rng.normal(0, 1.0, 4000)}  # clearly better
    for number, terms in values.items():
        study.add_trial(optuna.trial.create_trial(value=float(terms.mean()), params={}, distributions={}))
    assert choose(study, {n: values[n] for n in (0, 1, 2)}, starts=2).number == 0  # noise does not replace it
    assert choose(study, values, starts=2).number == 3


def test_workers_sharing_a_study_choose_among_every_workers_trials(trained, monkeypatch):
    """Two `train uplift --storage … --study-name …` runs (one after the other here; at once on PostgreSQL in
    test_postgres.py): the second sees the first's trials, with their per-row terms, and weighs all of them."""
    import optuna

    from training.uplift.tuning import unpack_terms

    directory, _, _ = trained
    monkeypatch.chdir(directory)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{directory}/mlflow.db")
    shared = ["--storage", f"sqlite:///{directory}/optuna.db", "--study-name", "uplift-team"]
    first = _train(directory, "worker1.json", trials=2, extra=shared, register_as="sim-uplift-team")
    second = _train(directory, "worker2.json", trials=2, extra=shared, register_as="sim-uplift-team")
    assert first["study"]["compared_trials"] == 2 and first["study"]["name"] == "uplift-team"
    assert second["study"]["complete_trials"] == second["study"]["compared_trials"] == 4
    study = optuna.load_study(study_name="uplift-team", storage=f"sqlite:///{directory}/optuna.db")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    lengths = {len(unpack_terms(t.user_attrs["terms"])) for t in study.trials}
    assert lengths == {2100}  # every trial's out-of-fold terms: one per training row (70 % of 3,000)
    assert second["study"]["chosen_trial"] in range(4)
    result = CliRunner().invoke(app, ["train", "uplift", "--campaign", "campaign.parquet", "--treatment-col",
                                      "incentive", "--control", "no_contact", "--outcome", "converted", "--catalog",
                                      "incentives.yaml", "--storage", "sqlite:///x.db"])
    assert result.exit_code == 2 and "--study-name" in result.output
