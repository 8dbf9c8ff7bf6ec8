"""True net value of the uplift model's decisions on a fresh simulated population, as a share of the oracle's.

    .venv/bin/python benchmarks/uplift_simulator_truth.py --model MODEL_URI [--customers 20000] [--seed 99]
        [--churn-model URI]

The simulator knows every customer's true conversion probability and expected revenue under each
arm (truth.parquet), so the true net value of any decision is known: revenue uplift (or
outcome_value × Δp) − cost − redemption_cost × p_arm. A population drawn with another seed than the
training data is scored. Printed next to the oracle (best true arm per customer, or nothing):
"best single incentive to everyone" and "that incentive to the top 30 % churn risks".
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from features.build import build_features
from features.contracts import normalize_profiles, normalize_transactions
from features.simulate import simulate
from serving.runtime.decision import CONTROL, decide
from serving.runtime.uplift import load_uplift_runtime

TOP_SHARE = 0.3


def true_net_values(truth: pd.DataFrame, runtime, revenue: bool) -> np.ndarray:
    cat = runtime.catalog
    p_arm = truth[[f"p_convert:{a}" for a in cat.arms]].to_numpy()
    if revenue:
        gain = truth[[f"expected_revenue:{a}" for a in cat.arms]].to_numpy() - \
            truth[[f"expected_revenue:{cat.control}"]].to_numpy()
    else:
        gain = cat.outcome_value * (p_arm - truth[[f"p_convert:{cat.control}"]].to_numpy())
    return gain - cat.costs - cat.redemption_costs * p_arm


def value_of(decision: np.ndarray, net: np.ndarray) -> float:
    picked = net[np.arange(len(net)), np.maximum(decision, 0)]
    return float(np.where(decision == CONTROL, 0.0, picked).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--churn-model", default=None)
    args = parser.parse_args()
    runtime = load_uplift_runtime(args.model)
    sim = simulate(customers=args.customers, seed=args.seed)
    tx = normalize_transactions(sim.transactions, as_of=sim.history_end)
    features = build_features(tx, sim.history_end, normalize_profiles(sim.customers))
    truth = sim.truth.set_index("customer_id").loc[features.index]
    net = true_net_values(truth, runtime, "revenue" in runtime.recipes)
    n = len(net)
    policies = {"oracle": decide(net), "model": runtime.predict_frame(features.reset_index()).decision}
    best = int(np.argmax(net.sum(axis=0)))
    name = runtime.arms[best]
    policies[f"all:{name}"] = np.full(n, best)
    risk = truth["churn_probability"].to_numpy()
    policies[f"top30_true_churn:{name}"] = np.where(risk >= np.quantile(risk, 1 - TOP_SHARE), best, CONTROL)
    if args.churn_model:
        from serving.runtime.churn import load_churn_runtime

        churn = load_churn_runtime(args.churn_model)
        p = churn.predict_proba(churn.encoder.transform(features.reset_index()))
        policies[f"top30_churn_model:{name}"] = np.where(p >= np.quantile(p, 1 - TOP_SHARE), best, CONTROL)
    oracle = value_of(policies["oracle"], net)
    print(f"{n:,} simulated customers (seed {args.seed}), model {args.model} ({runtime.learner})")
    print(f"{'policy':<36}{'true net value':>16}{'per customer':>14}{'share of oracle':>17}{'sent':>7}")
    for key, decision in policies.items():
        v = value_of(decision, net)
        print(f"{key:<36}{v:16,.1f}{v / n:14.3f}{v / oracle:17.1%}{np.mean(decision != CONTROL):7.0%}")


if __name__ == "__main__":
    main()
