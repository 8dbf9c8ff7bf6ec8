"""Batch recommend throughput on 1M customers, against the raw LightGBM predict calls it is made of.

Resamples a feature table (`winback features build` output) to N customers, then times

- recommend: `encoder.transform(table)` per model + `serving.api.online.recommend_columns` (the code the
  service and `winback recommend` share: churn probability, per-arm uplift, net value, decision);
- raw: `booster.predict` of every booster that call uses, on the same already-encoded arrays;

and prints customers/s and the ratio recommend / raw (target ≤ 1.3). Models come from the MLflow
registry (default: the champions), e.g. after `make demo`:

    .venv/bin/python benchmarks/batch_bench.py --features demo/features.parquet --customers 1000000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def used_boosters(uplift) -> list:
    """The distinct uplift boosters `UpliftRuntime.predict` calls."""
    names = []
    for recipe in uplift.recipes.values():
        for key in ("treated", "controls", "control", "models"):
            value = recipe.get(key, [])
            names.extend([value] if isinstance(value, str) else value)
    return [uplift.boosters[n] for n in dict.fromkeys(names)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--churn-model", default="models:/winback-churn@champion")
    parser.add_argument("--uplift-model", default="models:/winback-uplift@champion")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from serving.api import online
    from serving.runtime.churn import load_churn_runtime
    from serving.runtime.uplift import load_uplift_runtime

    churn, uplift = load_churn_runtime(args.churn_model), load_uplift_runtime(args.uplift_model)
    source = pd.read_parquet(args.features)
    table = source.sample(n=args.customers, replace=True, random_state=0).reset_index(drop=True)
    X_churn, X_uplift = churn.encoder.transform(table), uplift.encoder.transform(table)
    boosters = used_boosters(uplift)

    stacked = None  # solo model input: the arm indicator as an extra column, treated and control halves
    if any(b.num_feature() != X_uplift.shape[1] for b in boosters):
        stacked = np.hstack([np.vstack([X_uplift, X_uplift]), np.repeat([[1.0], [0.0]], len(X_uplift), axis=0)])

    def raw() -> None:
        churn.booster.predict(X_churn)
        for booster in boosters:
            booster.predict(X_uplift if booster.num_feature() == X_uplift.shape[1] else stacked)

    def recommend() -> None:
        online.recommend_columns(churn, uplift, churn.encoder.transform(table), uplift.encoder.transform(table))

    def recommend_encoded() -> None:
        online.recommend_columns(churn, uplift, X_churn, X_uplift)

    t_raw, t_encoded, t_full = np.inf, np.inf, np.inf
    for _ in range(args.repeats):  # interleaved, best of: the machine may be shared
        t_raw = min(t_raw, best_of(1, raw))
        t_encoded = min(t_encoded, best_of(1, recommend_encoded))
        t_full = min(t_full, best_of(1, recommend))
    n = args.customers
    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{uplift.learner} uplift with {len(boosters)} boosters + 1 churn booster, best of {args.repeats}")
    print(f"{'case':<40}{'seconds':>10}{'customers/s':>14}{'ratio':>8}")
    for name, t in (("raw booster.predict", t_raw), ("recommend on encoded arrays", t_encoded),
                    ("recommend incl. encoding the table", t_full)):
        print(f"{name:<40}{t:>10.2f}{n / t:>14,.0f}{t / t_raw:>8.2f}")


if __name__ == "__main__":
    main()
