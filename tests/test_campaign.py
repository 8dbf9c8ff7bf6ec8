"""The campaign loop: plan (holdout, exploration, caps, contact policy), simulated responses, evaluation."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.simulate import simulate, write_simulation
from features.simulate.campaign import respond
from serving.batch.plan import DEFAULT_SALT, PlanDesign, holdout_draws, plan_campaign
from serving.runtime.decision.catalog import Catalog, Incentive
from training.campaign import evaluate_campaign, join
from winback.cli import app

ARMS = ["reminder_email", "discount_10", "free_shipping"]
CONTROL = "no_contact"
CATALOG = Catalog(CONTROL, tuple(Incentive(a, c, r) for a, c, r in
                                 [("reminder_email", 0.05, 0.0), ("discount_10", 0.1, 6.0), ("free_shipping", 0.1, 3.0)]),
                  outcome_value=40.0)
DATE = pd.Timestamp("2026-03-01")


def recommendations(n: int, seed: int = 0, prefix: str = "C") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    choice = rng.integers(-1, len(ARMS), n)
    frame = pd.DataFrame({"customer_id": [f"{prefix}{i:06d}" for i in range(n)],
                          "incentive": np.array([CONTROL, *ARMS], dtype=object)[choice + 1],
                          "expected_net_value": np.where(choice >= 0, rng.gamma(2.0, 1.0, n), 0.0)})
    for arm in ARMS:
        frame[f"uplift:{arm}"] = rng.normal(0.02, 0.01, n)
    return frame


def test_the_holdout_is_the_same_customers_for_the_same_salt_whatever_is_recommended():
    first = plan_campaign(recommendations(5000, seed=1), PlanDesign("a", DATE, seed=1), CATALOG)
    second = plan_campaign(recommendations(5000, seed=2), PlanDesign("b", DATE + pd.Timedelta(days=30), seed=2),
                           CATALOG)
    other_salt = plan_campaign(recommendations(5000, seed=1), PlanDesign("c", DATE, salt="another"), CATALOG)
    held = set(first.loc[first["group"] == "holdout", "customer_id"])
    assert held == set(second.loc[second["group"] == "holdout", "customer_id"])
    other = set(other_salt.loc[other_salt["group"] == "holdout", "customer_id"])
    assert len(held & other) < 0.25 * len(held)  # independent draws: ~10 % overlap
    assert (first.loc[first["group"] == "holdout", "incentive"] == CONTROL).all()


def test_shares_are_within_sampling_error_and_propensities_are_exact():
    n, c, e = 40000, 0.10, 0.05
    recs = recommendations(n, seed=3)
    plan = plan_campaign(recs, PlanDesign("x", DATE, control_share=c, explore_share=e, seed=4), CATALOG)
    for group, share in (("holdout", c), ("explore", e), ("model", 1 - c - e)):
        observed = float((plan["group"] == group).mean())
        assert abs(observed - share) < 4 * np.sqrt(share * (1 - share) / n), (group, observed)
    explore = plan[plan["group"] == "explore"]
    counts = explore["incentive"].value_counts()
    assert set(counts.index) == {CONTROL, *ARMS}
    assert counts.max() - counts.min() < 4 * np.sqrt(len(explore) / 4)  # uniform over the 4 arms
    columns = [f"propensity:{a}" for a in [CONTROL, *ARMS]]
    assert np.allclose(plan[columns].sum(axis=1), 1.0)
    sent = plan.apply(lambda r: r[f"propensity:{r['incentive']}"], axis=1)
    assert np.allclose(plan["propensity"], sent)
    # a customer recommended discount_10 receives it with probability (1 − c − e) + e / 4
    model_row = plan[(plan["group"] == "model") & (plan["recommended_incentive"] == "discount_10")].iloc[0]
    assert model_row["propensity"] == pytest.approx(1 - c - e + e / 4)
    assert (plan.loc[plan["group"] == "model", "incentive"] == plan.loc[plan["group"] == "model",
                                                                          "recommended_incentive"]).all()


def test_the_holdout_hash_is_uniform_and_depends_on_the_salt():
    ids = np.array([f"id{i}" for i in range(20000)])
    draws = holdout_draws(ids, DEFAULT_SALT)
    assert np.histogram(draws, bins=10, range=(0, 1))[0].min() > 1800
    assert not np.allclose(draws, holdout_draws(ids, "other"))


def test_max_sends_caps_the_model_group_by_expected_net_value():
    recs = recommendations(3000, seed=5)
    plan = plan_campaign(recs, PlanDesign("x", DATE, max_sends=200, seed=0), CATALOG)
    model = plan[plan["group"] == "model"]
    sent = model[model["incentive"] != CONTROL]
    assert len(sent) == 200
    eligible = model[model["recommended_incentive"] != CONTROL]
    assert sent["expected_net_value"].min() >= eligible["expected_net_value"].nlargest(200).min()


def test_contact_policy_suppresses_exactly_the_customers_contacted_within_d_days():
    recs = recommendations(2000, seed=6)
    ids = recs["customer_id"]
    history = pd.DataFrame({
        "customer_id": list(ids[:100]) + list(ids[100:200]) + list(ids[200:300]) + list(ids[300:400]),
        "campaign_date": [DATE - pd.Timedelta(days=10)] * 100 + [DATE - pd.Timedelta(days=40)] * 100
        + [DATE - pd.Timedelta(days=5)] * 100 + [DATE + pd.Timedelta(days=3)] * 100,
        "incentive": ["discount_10"] * 200 + [CONTROL] * 100 + ["free_shipping"] * 100,
    })  # contacted 10 days ago; 40 days ago; sent nothing 5 days ago; a later plan
    plan = plan_campaign(recs, PlanDesign("x", DATE, min_days_between_contacts=30), CATALOG, history)
    suppressed = set(plan.loc[plan["group"] == "suppressed", "customer_id"])
    held = set(plan.loc[plan["group"] == "holdout", "customer_id"])
    assert suppressed == set(ids[:100]) - held
    rows = plan[plan["group"] == "suppressed"]
    assert (rows["incentive"] == CONTROL).all() and (rows["propensity"] == 1.0).all()


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_bad_plans_and_outcomes_exit_2_naming_the_problem_and_write_nothing(tmp_path):
    recs = recommendations(500)
    recs.to_parquet(tmp_path / "recs.parquet")
    out = tmp_path / "plan.parquet"
    result = _cli("campaign", "plan", "--recommendations", tmp_path / "recs.parquet", "--campaign-id", "x",
                  "--campaign-date", "2026-03-01", "--control-share", "0.7", "--explore-share", "0.4",
                  "--output", out)
    assert result.exit_code == 2 and "over 1" in result.output and not out.exists()
    pd.concat([recs, recs.head(3)]).to_parquet(tmp_path / "dup.parquet")
    result = _cli("campaign", "plan", "--recommendations", tmp_path / "dup.parquet", "--campaign-id", "x",
                  "--campaign-date", "2026-03-01", "--output", out)
    assert result.exit_code == 2 and "appears 2 times" in result.output and not out.exists()

    plan = plan_campaign(recs, PlanDesign("x", DATE), CATALOG)
    outcomes = pd.DataFrame({"customer_id": plan["customer_id"], "converted": 0, "revenue": 0.0})
    plan.drop(columns="propensity").to_parquet(tmp_path / "noprop.parquet")
    outcomes.to_parquet(tmp_path / "outcomes.parquet")
    json_out = tmp_path / "eval.json"
    result = _cli("campaign", "evaluate", "--plan", tmp_path / "noprop.parquet", "--outcomes",
                  tmp_path / "outcomes.parquet", "--json-out", json_out)
    assert result.exit_code == 2 and "'propensity'" in result.output and not json_out.exists()
    plan.to_parquet(tmp_path / "plan_ok.parquet")
    stray = pd.concat([outcomes, pd.DataFrame({"customer_id": ["nobody"], "converted": [1], "revenue": [3.0]})])
    stray.to_parquet(tmp_path / "stray.parquet")
    result = _cli("campaign", "evaluate", "--plan", tmp_path / "plan_ok.parquet", "--outcomes",
                  tmp_path / "stray.parquet", "--json-out", json_out)
    assert result.exit_code == 2 and "not in the plan" in result.output and "'nobody'" in result.output
    pd.concat([outcomes, outcomes.head(1)]).to_parquet(tmp_path / "dup_out.parquet")
    result = _cli("campaign", "evaluate", "--plan", tmp_path / "plan_ok.parquet", "--outcomes",
                  tmp_path / "dup_out.parquet", "--json-out", json_out, "--training-out", tmp_path / "train.parquet")
    assert result.exit_code == 2 and "more than once" in result.output
    assert not json_out.exists() and not (tmp_path / "train.parquet").exists()


def test_simulated_responses_follow_the_true_probabilities():
    sim = simulate(customers=6000, seed=8)
    plan = pd.DataFrame({"customer_id": sim.truth["customer_id"], "incentive": "discount_10"})
    answered = respond(plan, sim.truth, seed=1)
    p = sim.truth["p_convert:discount_10"].to_numpy()
    assert abs(answered["converted"].mean() - p.mean()) < 4 * np.sqrt(np.sum(p * (1 - p))) / len(p)
    expected = sim.truth["expected_revenue:discount_10"].mean()
    assert abs(answered["revenue"].mean() - expected) < 0.1 * expected
    assert (answered["revenue"][answered["converted"] == 0] == 0).all()
    assert respond(plan, sim.truth, seed=1).equals(answered)


def _true_policy_value(truth: pd.DataFrame, plan: pd.DataFrame) -> float:
    """True mean net value (revenue basis) of the recommended incentives over sending nothing."""
    t = truth.set_index("customer_id").loc[plan["customer_id"]]
    costs = {i.name: (i.cost, i.redemption_cost) for i in CATALOG.incentives}
    value = np.zeros(len(plan))
    for arm in ARMS:
        on = (plan["recommended_incentive"] == arm).to_numpy()
        cost, redemption = costs[arm]
        value[on] = (t[f"expected_revenue:{arm}"] - t[f"expected_revenue:{CONTROL}"] - cost
                     - redemption * t[f"p_convert:{arm}"]).to_numpy()[on]
    return float(value.mean())


@pytest.mark.slow
def test_the_95_percent_interval_of_the_models_value_covers_the_truth_in_9_of_10_seeds():
    covered = []
    for seed in range(10):
        sim = simulate(customers=3000, seed=100 + seed)
        truth = sim.truth
        true_net = {arm: (truth[f"expected_revenue:{arm}"] - truth[f"expected_revenue:{CONTROL}"]).to_numpy()
                    for arm in ARMS}
        rng = np.random.default_rng(seed)
        noisy = np.column_stack([true_net[a] + rng.normal(0, 3.0, len(truth)) for a in ARMS])
        choice = np.where(noisy.max(axis=1) > 0, noisy.argmax(axis=1), -1)
        recs = pd.DataFrame({"customer_id": truth["customer_id"],
                             "incentive": np.array([CONTROL, *ARMS], dtype=object)[choice + 1],
                             "expected_net_value": np.where(choice >= 0, noisy.max(axis=1), 0.0)})
        plan = plan_campaign(recs, PlanDesign("x", DATE, control_share=0.3, explore_share=0.05, seed=seed), CATALOG)
        outcomes = respond(plan, truth, seed=seed)
        result = evaluate_campaign(join(plan, outcomes, CATALOG), CATALOG)
        target = _true_policy_value(truth, plan)
        covered.append(result["policy"]["ci_low"] <= target <= result["policy"]["ci_high"])
    assert sum(covered) >= 9, covered


@pytest.mark.slow
def test_the_loop_runs_end_to_end_and_logs_one_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    sim = simulate(customers=3000, seed=9)
    write_simulation(sim, tmp_path / "sim")
    recs = pd.DataFrame({"customer_id": sim.truth["customer_id"], "incentive": "free_shipping",
                         "expected_net_value": np.random.default_rng(0).gamma(2.0, 1.0, 3000)})
    recs.to_csv(tmp_path / "recs.csv", index=False)
    assert _cli("campaign", "plan", "--recommendations", "recs.csv", "--campaign-id", "spring",
                "--campaign-date", "2026-03-01", "--catalog", "sim/incentives.yaml", "--output", "plan.parquet",
                "--max-sends", "1500").exit_code == 0
    assert _cli("simulate", "respond", "--plan", "plan.parquet", "--truth-dir", "sim", "--seed", "2",
                "--output", "outcomes.csv").exit_code == 0
    result = _cli("campaign", "evaluate", "--plan", "plan.parquet", "--outcomes", "outcomes.csv", "--catalog",
                  "sim/incentives.yaml", "--training-out", "campaign2.parquet", "--json-out", "eval.json")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "eval.json").read_text())
    assert {"campaign_id", "groups", "arms", "policy", "best_single_arm", "calibration"} <= set(doc)
    assert doc["campaign_id"] == "spring" and sum(doc["groups"].values()) == 3000
    for arm in doc["arms"].values():
        assert {"n", "rate", "uplift", "ci_low", "ci_high"} <= set(arm)
    assert {"incremental_value", "ci_low", "ci_high"} <= set(doc["policy"])
    run = mlflow.get_run(doc["run_id"])
    assert mlflow.get_experiment(run.info.experiment_id).name == "winback-campaigns"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(doc["run_id"], "plots")}
    assert artifacts == {"plots/uplift_per_arm.png", "plots/net_value_by_decile.png"}
    training = pd.read_parquet(tmp_path / "campaign2.parquet")
    assert {"customer_id", "campaign_id", "incentive", "converted", "revenue", "propensity"} <= set(training.columns)
    # the next model trains on both campaigns, stacked, with the logged propensities
    trained = _cli("train", "uplift", "--campaign", "sim/campaign.parquet", "--campaign", "campaign2.parquet",
                   "--treatment-col", "incentive", "--control", CONTROL, "--outcome", "converted",
                   "--transactions", "sim/transactions.parquet", "--as-of", "2025-12-31",
                   "--catalog", "sim/incentives.yaml", "--trials", "1", "--json-out", "u.json")
    assert trained.exit_code == 0, trained.output
    assert json.loads((tmp_path / "u.json").read_text())["fitted_on_rows"] == 3000 + len(training)


def test_learner_weights_are_one_for_a_randomised_campaign_and_trimmed_inverse_propensities_for_a_logged_one():
    from training.uplift.learners import MAX_WEIGHT, arm_weights

    arm = np.repeat([-1, 0, 1], 100)
    assert arm_weights(arm, np.repeat([0.5, 0.25, 0.25], 100)) is None
    logged = np.where(np.arange(300) % 10 == 0, 0.0125, 0.86)
    weight = arm_weights(arm, logged)
    for a in (-1, 0, 1):
        assert weight[arm == a].mean() == pytest.approx(1.0)
    assert weight[logged == 0.0125].min() > weight[logged == 0.86].max()
    # trimmed: the exploration rows weigh far less than their untrimmed 0.86 / 0.0125 = 69 times the others
    ratio = weight.max() / weight.min()
    assert ratio < 0.86 / 0.0125 / 2
    untrimmed = (1 / 0.0125) / np.mean(1 / logged[arm == -1])
    assert weight.max() < untrimmed and MAX_WEIGHT < untrimmed


def test_a_later_stacked_campaign_gets_features_as_of_the_same_lead_time_before_its_own_start():
    from training.uplift.data import campaign_cutoffs

    frame = pd.DataFrame({"campaign_id": ["c1", "c1", "c2"],
                          "campaign_date": pd.to_datetime(["2026-01-01", "2026-01-03", "2026-03-01"])})
    cutoffs = campaign_cutoffs(frame, pd.Timestamp("2025-12-31"), pd.Timestamp("2026-01-01"))
    assert list(cutoffs.dt.strftime("%Y-%m-%d")) == ["2025-12-31", "2025-12-31", "2026-02-28"]
    single = campaign_cutoffs(frame.drop(columns="campaign_id"), pd.Timestamp("2025-12-31"), pd.Timestamp("2026-01-01"))
    assert (single == pd.Timestamp("2025-12-31")).all()


def test_logged_propensities_change_the_fitted_learners():
    from serving.runtime.encoding import FeatureEncoder
    from training.uplift.learners import fit_runtime

    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n)})
    arm = rng.integers(-1, 3, n)
    y = (rng.random(n) < 0.3 + 0.1 * (arm >= 0) * (frame["x"] > 0)).astype(int)
    encoder = FeatureEncoder(["x", "z"]).fit(frame)
    X = encoder.transform(frame)
    params = {"n_estimators": 30, "num_leaves": 7}
    plain = fit_runtime(X, arm, y, encoder, CATALOG, "solo_model", params, 0)
    same = fit_runtime(X, arm, y, encoder, CATALOG, "solo_model", params, 0, propensity=np.full(n, 0.25))
    logged = fit_runtime(X, arm, y, encoder, CATALOG, "solo_model", params, 0,
                         propensity=np.where(frame["x"] > 1, 0.05, 0.9))
    assert np.array_equal(plain.predict(X).uplift, same.predict(X).uplift)
    assert not np.allclose(plain.predict(X).uplift, logged.predict(X).uplift)


def test_one_stacked_file_takes_arm_shares_for_a_campaign_without_logged_propensities(tmp_path):
    from training.uplift.data import UpliftConfig, load_campaign

    rng = np.random.default_rng(1)
    n = 800
    first = pd.DataFrame({"customer_id": np.arange(n), "campaign_id": "c1", "x": rng.normal(size=n),
                          "incentive": rng.choice([CONTROL, *ARMS], n, p=[0.4, 0.2, 0.2, 0.2]),
                          "converted": rng.integers(0, 2, n)})
    second = first.assign(campaign_id="c2", propensity=0.3)
    pd.concat([first, second]).to_parquet(tmp_path / "stacked.parquet")
    config = UpliftConfig(tmp_path / "stacked.parquet", "incentive", CONTROL, "converted", CATALOG,
                          tmp_path / "c.yaml", None, features=("x",))
    data = load_campaign(config)
    shares = first["incentive"].map(first["incentive"].value_counts(normalize=True)).to_numpy()
    assert np.allclose(data.propensity[:n], shares) and np.allclose(data.propensity[n:], 0.3)
    second.loc[0, "propensity"] = np.nan  # a logged campaign with a gap is an error
    pd.concat([first, second]).to_parquet(tmp_path / "gap.parquet")
    from features.errors import DataError

    with pytest.raises(DataError, match="propensit"):
        load_campaign(UpliftConfig(tmp_path / "gap.parquet", "incentive", CONTROL, "converted", CATALOG,
                                   tmp_path / "c.yaml", None, features=("x",)))
