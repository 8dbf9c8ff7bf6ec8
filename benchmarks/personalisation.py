"""Personalised incentive content against the simulator's truth: does the coupon feature what customers buy,
and what is the personalisation worth?

    .venv/bin/python benchmarks/personalisation.py --model MODEL_URI [--customers 10000] [--seed 99]

MODEL_URI is an uplift model trained on `winback simulate --personalised` data (its catalogue has the
personalised `category_coupon`). A fresh population (another seed) is scored as of the last history day.

1. Featured category: the share of customers whose `featured_category` (top affinity) is their true
   preferred category, against featuring the most popular category (most purchase rows) for everyone.
2. True net value (truth.parquet: the coupon's effect depends on whether it features the preferred category) of
   - the model's decisions with personalisation (the coupon features each customer's top category);
   - the same catalogue without personalisation: the coupon features the most popular category for everyone,
     and the model decides with matched = 1 only where that is also the customer's top category;
   - the catalogue without the coupon (the other arms only);
   - the oracle (best true arm per customer, the coupon featuring the preferred category).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from features.build import build_features
from features.contracts import normalize_profiles, normalize_transactions
from features.simulate import simulate
from features.simulate.campaign import OTHER_SUFFIX
from serving.runtime.decision import CONTROL, decide
from serving.runtime.uplift import load_uplift_runtime
from uplift_simulator_truth import value_of  # a sibling script: run this one as `python benchmarks/…`


def true_net_values(truth: pd.DataFrame, runtime, other: np.ndarray) -> np.ndarray:
    """(n, k) true net value of each arm; a personalised arm's where `other` (it features another category
    than the preferred one) from its `:other` truth columns."""
    cat = runtime.catalog
    p_arm = truth[[f"p_convert:{a}" for a in cat.arms]].to_numpy().copy()
    for j, arm in enumerate(cat.arms):
        if arm in cat.personalised:
            p_arm[:, j] = np.where(other, truth[f"p_convert:{arm}{OTHER_SUFFIX}"], p_arm[:, j])
    gain = cat.outcome_value * (p_arm - truth[[f"p_convert:{cat.control}"]].to_numpy())
    return gain - cat.costs - cat.redemption_costs * p_arm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()
    runtime = load_uplift_runtime(args.model)
    personalised = [runtime.arms.index(a) for a in runtime.catalog.personalised]
    if not personalised:
        raise SystemExit(f"{args.model}: the model's catalogue has no personalised incentive")
    sim = simulate(customers=args.customers, seed=args.seed, personalised=True)
    tx = normalize_transactions(sim.transactions, as_of=sim.history_end)
    features = build_features(tx, sim.history_end, normalize_profiles(sim.customers)).reset_index()
    truth = sim.truth.set_index("customer_id").loc[features["customer_id"]]
    preferred = truth["preferred_category"].astype(str).to_numpy()
    popular = str(tx["category"].value_counts().idxmax())

    X = runtime.encoder.transform(features)
    prediction = runtime.predict(X)
    featured = prediction.featured_category.astype(str)
    n = len(X)
    print(f"{n:,} simulated customers (seed {args.seed}), model {args.model} ({runtime.learner}); most popular "
          f"category {popular!r}")
    print(f"featured category = true preferred category: {np.mean(featured == preferred):.1%} with personalisation, "
          f"{np.mean(popular == preferred):.1%} featuring {popular!r} for everyone")

    net_personal = true_net_values(truth, runtime, featured != preferred)
    net_generic = true_net_values(truth, runtime, np.full(n, popular) != preferred)
    generic_matched = (featured == popular).astype(np.float64)  # the model's view of featuring `popular`
    generic = runtime.predict(np.column_stack([X, generic_matched])) if runtime.metadata.get(
        "personalisation", {}).get("matched") else prediction
    without = prediction.net_value.copy()
    without[:, personalised] = -np.inf
    rows = {
        "oracle (coupon on the preferred category)": (decide(true_net_values(truth, runtime, np.zeros(n, bool))),
                                                      true_net_values(truth, runtime, np.zeros(n, bool))),
        "model, personalised coupon": (prediction.decision, net_personal),
        f"model, coupon on {popular!r} for everyone": (generic.decision, net_generic),
        "model, catalogue without the coupon": (decide(without), net_personal),
    }
    oracle = value_of(*rows["oracle (coupon on the preferred category)"])
    print(f"{'policy':<46}{'true net value':>16}{'per customer':>14}{'share of oracle':>17}{'coupon':>8}{'sent':>7}")
    for name, (decision, net) in rows.items():
        v = value_of(decision, net)
        coupon = np.isin(decision, personalised).mean()
        print(f"{name:<46}{v:16,.1f}{v / n:14.3f}{v / oracle:17.1%}{coupon:8.0%}{np.mean(decision != CONTROL):7.0%}")


if __name__ == "__main__":
    main()
