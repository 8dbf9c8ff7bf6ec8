"""Model quality against the simulator's truth (small, seeded). Fails if the learner is replaced by a constant.

The simulator's true churn probability knows each customer's latent drop-out state, which no purchase
history shows: on realised labels it reaches AUC .970 (4,000 customers, seed 21), while LightGBM fitted
by 5-fold CV on features of the *same* period and the realised labels themselves reaches .907 and recency
alone .902 (measured 2026-11-30). So the bar is "at least the observable reference", not "within .03 of
the truth": the shipped model, trained on past snapshots only, must beat recency and stay within .07 of
the truth, and its probabilities must follow the true ones."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.simulate import CHURN_DAYS, HISTORY_END, simulate
from training.metrics import auc
from winback.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("model_truth")]


def test_churn_model_is_within_003_auc_of_the_true_probability_on_realised_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    sim = simulate(customers=4000, seed=21, future_days=CHURN_DAYS)
    sim.transactions.to_parquet("tx.parquet")
    sim.customers.to_parquet("profiles.parquet")
    cutoff = str(HISTORY_END.date())
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "churn", "--transactions", "tx.parquet", "--profiles", "profiles.parquet",
                                  "--cutoff", cutoff, "--horizon-days", str(CHURN_DAYS), "--snapshots", "2",
                                  "--trials", "4", "--seed", "3", "--json-out", "churn.json"])
    assert trained.exit_code == 0, trained.output
    model = json.loads((tmp_path / "churn.json").read_text())["model_uri"]
    scored = runner.invoke(app, ["score", "--model", model, "--transactions", "tx.parquet", "--profiles",
                                 "profiles.parquet", "--as-of", cutoff, "--output", "scores.parquet"])
    assert scored.exit_code == 0, scored.output
    scores = pd.read_parquet(tmp_path / "scores.parquet").set_index("customer_id")
    truth = sim.truth.set_index("customer_id").loc[scores.index]
    churned = (~scores.index.isin(sim.future_transactions["customer_id"].unique())).astype(float)
    model_auc = auc(churned, scores["churn_probability"].to_numpy())
    ceiling = auc(churned, truth["churn_probability"].to_numpy())
    from features.build import build_features

    features = build_features(sim.transactions, HISTORY_END, profiles=sim.customers).loc[scores.index]
    recency_auc = auc(churned, features["recency_days"].to_numpy())
    assert recency_auc < model_auc <= ceiling and model_auc >= ceiling - 0.07, (model_auc, recency_auc, ceiling)
    # not a tie with the simple reference: the shipped scorer beats the model's own regression, refitted on the
    # same rows, on the same later labels
    from serving.runtime.churn import load_churn_runtime

    runtime = load_churn_runtime(model)
    regression_auc = auc(churned, runtime.predict_linear(runtime.encoder.transform(features)))
    print(f"shipped {model_auc:.4f} ({runtime.scorer['kind']}), regression {regression_auc:.4f}")
    assert model_auc > regression_auc + 0.003, (model_auc, regression_auc)
    assert np.corrcoef(scores["churn_probability"], truth["churn_probability"])[0, 1] > 0.8


def test_uplift_decisions_reach_60_percent_of_the_oracles_true_net_value(tmp_path, monkeypatch):
    """`winback train uplift` as users run it (20,000 customers, the learners' regularised starts), its decisions
    for a fresh population valued with the simulator's true per-arm probabilities: ≥ 60 % of the oracle's net
    value (best true arm per customer, or nothing) and ≥ 1.5× the best single incentive sent to the 30 % truly
    most at risk. Measured 2026-11-30: 69.5 % and 2.2× (seed 7; benchmarks/uplift_simulator_truth.py); 60.1 % since
    2026-12-07, when the decision sends only incentives whose sends were shown to pay (benchmarks/decision_noise.py)."""
    from features.build import build_features
    from features.contracts import normalize_profiles, normalize_transactions
    from features.simulate import write_simulation
    from serving.runtime.decision import CONTROL, decide
    from serving.runtime.uplift import load_uplift_runtime

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    write_simulation(simulate(customers=20000, seed=7), tmp_path)
    trained = CliRunner().invoke(app, ["train", "uplift", "--campaign", "campaign.parquet", "--treatment-col",
                                       "incentive", "--control", "no_contact", "--outcome", "converted",
                                       "--transactions", "transactions.parquet", "--profiles", "customers.parquet",
                                       "--as-of", str(HISTORY_END.date()), "--catalog", "incentives.yaml",
                                       "--trials", "5", "--seed", "7", "--json-out", "uplift.json"])
    assert trained.exit_code == 0, trained.output
    runtime = load_uplift_runtime(json.loads((tmp_path / "uplift.json").read_text())["model_uri"])

    fresh = simulate(customers=8000, seed=99)
    tx = normalize_transactions(fresh.transactions, as_of=fresh.history_end)
    features = build_features(tx, fresh.history_end, normalize_profiles(fresh.customers)).reset_index()
    truth = fresh.truth.set_index("customer_id").loc[features["customer_id"]]
    cat = runtime.catalog
    p_arm = truth[[f"p_convert:{a}" for a in cat.arms]].to_numpy()
    net = cat.outcome_value * (p_arm - truth[[f"p_convert:{cat.control}"]].to_numpy()) - cat.costs - \
        cat.redemption_costs * p_arm

    def value(decision):
        return float(np.where(decision == CONTROL, 0.0, net[np.arange(len(net)), np.maximum(decision, 0)]).sum())

    oracle = value(decide(net))
    model = value(runtime.predict_frame(features).decision)
    best = int(np.argmax(net.sum(axis=0)))
    risk = truth["churn_probability"].to_numpy()
    top30 = value(np.where(risk >= np.quantile(risk, 0.7), best, CONTROL))
    assert model >= 0.6 * oracle and model >= 1.5 * top30, (model / oracle, top30 / oracle)
    # the shipped decisions are worth at least every baseline the training table prints, on the truth
    from serving.runtime.decision import apply_rule, rule_names

    prediction = runtime.predict_frame(features)
    baselines = {rule: value(apply_rule(rule, prediction.decision, prediction.uplift, list(cat.arms)))
                 for rule in rule_names(list(cat.arms))[1:]}
    assert all(model >= v for v in baselines.values()), (model, baselines)
