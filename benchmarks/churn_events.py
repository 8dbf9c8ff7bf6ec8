"""Does engagement warn before purchases stop? Churn AUC with and without event features, same customers.

Simulates the data platform with engagement events, builds the churn snapshots with the project's
training code (`training.churn.data.prepare_transactions`, events on), and fits the same LightGBM twice
on the very same rows and split: once with every feature, once without the engagement columns. Rows are
customers with a purchase by the snapshot (prospects have no purchase features to compare). Test AUC is
reported overall and among customers still "active by purchases" (recency_days < gap_mean_days), where
recency alone cannot warn.

    .venv/bin/python benchmarks/churn_events.py --customers 20000 --seeds 3
"""

from __future__ import annotations

import argparse
import platform
import time

import lightgbm as lgb
import numpy as np
from sklearn.metrics import roc_auc_score

from features.contracts import normalize_transactions
from features.events import is_event_feature, normalize_events
from features.simulate import HISTORY_END, simulate
from training.churn.data import prepare_transactions
from training.labels import LABEL

PARAMS = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 40,
          "feature_fraction": 0.8, "verbose": -1, "seed": 0, "num_threads": 2}


def fit_auc(data, columns: list[str], rows) -> tuple[float, float]:
    """Test AUC overall and among active-by-purchases customers, LightGBM early-stopped on validation."""
    train, valid, test = (frame[rows(frame)] for frame in (data.train, data.valid, data.test))
    booster = lgb.train(PARAMS, lgb.Dataset(train[columns], train[LABEL]), num_boost_round=2000,
                        valid_sets=[lgb.Dataset(valid[columns], valid[LABEL])],
                        callbacks=[lgb.early_stopping(50, verbose=False)])
    p = booster.predict(test[columns], num_iteration=booster.best_iteration)
    active = (test["recency_days"] < test["gap_mean_days"]).to_numpy()
    return roc_auc_score(test[LABEL], p), roc_auc_score(test[LABEL][active], p[active])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3, help="independent simulations (repetitions)")
    parser.add_argument("--horizon-days", type=int, default=180)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_version()}; {args.customers:,} customers, "
          f"horizon {args.horizon_days} days, {args.seeds} simulation seed(s)")
    results = []
    for seed in range(args.seeds):
        started = time.perf_counter()
        sim = simulate(customers=args.customers, seed=seed, events=True)
        tx = normalize_transactions(sim.transactions)
        events = normalize_events(sim.events)
        data = prepare_transactions(tx, HISTORY_END, args.horizon_days, events=events, seed=seed)
        with_events = [c for c in data.feature_columns if c not in ("top_category", "top_channel")]
        purchases_only = [c for c in with_events if not is_event_feature(c)]
        buyers = lambda frame: frame["recency_days"].notna().to_numpy()  # noqa: E731
        test = data.test[buyers(data.test)]
        active = int((test["recency_days"] < test["gap_mean_days"]).sum())
        base = fit_auc(data, purchases_only, buyers)
        full = fit_auc(data, with_events, buyers)
        results.append((base, full))
        print(f"seed {seed}: test {len(test):,} customers ({active:,} active by purchases); AUC purchases only "
              f"{base[0]:.4f}, with events {full[0]:.4f}; active-by-purchases AUC {base[1]:.4f} → {full[1]:.4f} "
              f"({time.perf_counter() - started:.0f} s; event types {', '.join(data.description['event_types'])})")
    table = np.array([[b[0], f[0], b[1], f[1]] for b, f in results])
    mean, sd = table.mean(axis=0), table.std(axis=0, ddof=1) if len(table) > 1 else np.zeros(4)
    print(f"mean ± sd over {len(table)} seed(s): overall AUC {mean[0]:.4f} ± {sd[0]:.4f} → {mean[1]:.4f} ± {sd[1]:.4f}; "
          f"active by purchases {mean[2]:.4f} ± {sd[2]:.4f} → {mean[3]:.4f} ± {sd[3]:.4f}")


if __name__ == "__main__":
    main()
