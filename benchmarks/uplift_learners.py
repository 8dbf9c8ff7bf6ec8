"""Every uplift learner on the same rows: share of the oracle on the simulator, policy value and Qini on Hillstrom.

Each learner is fitted with the regularised start `winback train uplift` tries first (no search), so the
table compares learners, not search luck.

Simulator: a campaign of `--train` customers (seed `--seed`) is split as `train uplift` splits it (70 % fit,
30 % validation); each learner is fitted on the 70 % (column "fit 70 %") and on every row ("fit all"), and
its decisions on a fresh population (`--score` customers, seed 99) are valued with the simulator's truth,
as a share of the oracle's true net value (best true arm per customer, or nothing). References: the best
single incentive to everyone, and to the 30 % truly most at risk.

Hillstrom (visit, README's command: 70/30 stratified, seed 42, examples/hillstrom.yaml): the doubly-robust net
policy value of each learner's decisions on the 30 % (± SE) and Qini AUC per arm; skipped when
../shared/data is absent.

    .venv/bin/python benchmarks/uplift_learners.py [--train 20000] [--score 10000] [--seed 7] [--only sim|hillstrom]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from features.simulate import HISTORY_END, simulate, write_simulation  # noqa: E402
from serving.runtime.decision.catalog import load_catalog  # noqa: E402
from serving.runtime.decision import CONTROL, decide  # noqa: E402
from serving.runtime.encoding import FeatureEncoder  # noqa: E402
from training.uplift.data import UpliftConfig, load_campaign, stratified_split  # noqa: E402
from training.uplift.evaluate import arm_metrics, decision_terms, policies_from_prediction, policy_table  # noqa: E402
from training.uplift.learners import fit_runtime  # noqa: E402
from training.uplift.tuning import allowed_learners, start_params  # noqa: E402
from uplift_simulator_truth import true_net_values, value_of  # noqa: E402

TOP_SHARE = 0.3
SEED = 42  # `winback train uplift`'s default, as README runs it on Hillstrom


def fitted(data, rows, learner, catalog, seed):
    encoder = FeatureEncoder(data.features).fit(data.frame.iloc[rows])
    X = encoder.transform(data.frame.iloc[rows])
    params = start_params(len(rows), len(catalog.arms))
    revenue = None if data.revenue is None else data.revenue[rows]
    return fit_runtime(X, data.arm[rows], data.y[rows], encoder, catalog, learner, params, seed, revenue)


def noise_free(sim, data, features, net, catalog, seed) -> float:
    """True net value of deciding with per-arm LightGBM regressions of the training customers' *true* net values
    on the same features: the ceiling a learner could reach from these features without outcome noise."""
    import lightgbm as lgb

    truth = sim.truth.set_index("customer_id").loc[data.frame["customer_id"]]
    target = true_net_values(truth, SimpleNamespace(catalog=catalog), False)
    encoder = FeatureEncoder(data.features).fit(data.frame)
    X, X_new = encoder.transform(data.frame), encoder.transform(features)
    predicted = np.column_stack([
        lgb.LGBMRegressor(n_estimators=500, learning_rate=0.03, verbose=-1, random_state=seed, n_jobs=1)
        .fit(X, target[:, j], categorical_feature=encoder.categorical_indices or "auto").predict(X_new)
        for j in range(target.shape[1])])
    return value_of(decide(predicted), net)


def simulator(args) -> None:
    sim = simulate(customers=args.train, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        write_simulation(sim, tmp)
        catalog = load_catalog(Path(tmp) / "incentives.yaml")
        config = UpliftConfig(Path(tmp) / "campaign.parquet", "incentive", catalog.control, "converted", catalog,
                              Path(tmp) / "incentives.yaml", None, transactions=Path(tmp) / "transactions.parquet",
                              profiles=Path(tmp) / "customers.parquet", as_of=HISTORY_END, seed=args.seed)
        data = load_campaign(config)
    fresh = simulate(customers=args.score, seed=99)
    from features.build import build_features
    from features.contracts import normalize_profiles, normalize_transactions

    tx = normalize_transactions(fresh.transactions, as_of=fresh.history_end)
    features = build_features(tx, fresh.history_end, normalize_profiles(fresh.customers)).reset_index()
    truth = fresh.truth.set_index("customer_id").loc[features["customer_id"]]
    train_rows, _ = stratified_split(data.arm, data.y, 0.3, args.seed)
    all_rows = np.arange(len(data.y))
    rows: dict[str, float] = {}
    net = None
    print(f"Simulator: train on {args.train:,} customers (seed {args.seed}), decide for a fresh {args.score:,} "
          f"(seed 99); true net value as a share of the oracle's")
    print("| learner | fit 70 % | fit all | fit seconds (all) |\n| --- | --- | --- | --- |")
    for learner in allowed_learners(data.arm, len(catalog.arms), False):
        shares = []
        for subset in (train_rows, all_rows):
            start = time.perf_counter()
            runtime = fitted(data, subset, learner, catalog, args.seed)
            seconds = time.perf_counter() - start
            if net is None:
                net = true_net_values(truth, runtime, False)
                oracle = value_of(decide(net), net)
            shares.append(value_of(runtime.predict_frame(features).decision, net) / oracle)
        rows[learner] = shares[1]
        print(f"| {learner} | {shares[0]:.1%} | {shares[1]:.1%} | {seconds:.1f} |")
    best = int(np.argmax(net.sum(axis=0)))
    risk = truth["churn_probability"].to_numpy()
    top = np.where(risk >= np.quantile(risk, 1 - TOP_SHARE), best, CONTROL)
    print(f"| reference: LightGBM regressing the true net values (no outcome noise; what the features allow) | | "
          f"{noise_free(sim, data, features, net, catalog, args.seed) / oracle:.1%} | |")
    print(f"| reference: {catalog.arms[best]} to everyone | {value_of(np.full(len(net), best), net) / oracle:.1%} "
          f"| | |")
    print(f"| reference: {catalog.arms[best]} to the top 30 % true churn risk | {value_of(top, net) / oracle:.1%} | | |")


def hillstrom(args) -> None:
    path = DATA / "hillstrom.csv"
    if not path.exists():
        print(f"Hillstrom: skipped ({path} not found)")
        return
    catalog_path = ROOT / "examples" / "hillstrom.yaml"
    catalog = load_catalog(catalog_path)
    config = UpliftConfig(path, "segment", catalog.control, "visit", catalog, catalog_path, None, seed=7)
    data = load_campaign(config)
    train_rows, test_rows = stratified_split(data.arm, data.y, 0.3, SEED)
    print(f"\nHillstrom (visit): fit on {len(train_rows):,} rows, figures on the other {len(test_rows):,} "
          f"(examples/hillstrom.yaml)")
    print("| learner | net policy value (DR) ± SE | " + " | ".join(f"Qini {a}" for a in catalog.arms) + " |\n"
          "| --- | --- | --- | --- |")
    for learner in allowed_learners(data.arm[train_rows], 2, False):
        runtime = fitted(data, train_rows, learner, catalog, SEED)
        pred = runtime.predict(runtime.encoder.transform(data.frame.iloc[test_rows]))
        y, arm = data.y[test_rows], data.arm[test_rows]
        table = policy_table(pred, y, None, arm, data.propensity[test_rows], catalog, policies_from_prediction(pred))
        qini = arm_metrics(y, arm, pred.uplift, catalog.arms)["qini_auc"]
        terms = decision_terms(pred, y, None, arm, data.propensity[test_rows], catalog)
        se = terms.std(ddof=1) / np.sqrt(len(terms))
        print(f"| {learner} | {terms.mean():.4f} ± {se:.4f} | " + " | ".join(f"{qini[a]:.4f}" for a in catalog.arms) + " |")
    for name in ("all:Mens E-Mail", "all:Womens E-Mail"):
        print(f"| reference: {name} | {table['net_policy_value_dr'][name]:.4f} | | |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--score", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", choices=["sim", "hillstrom"])
    args = parser.parse_args()
    if args.only != "hillstrom":
        simulator(args)
    if args.only != "sim":
        hillstrom(args)


if __name__ == "__main__":
    main()
