"""Batch recommend vs. the raw booster calls it cannot avoid, on the same encoded array.

    .venv/bin/python benchmarks/bench_uplift_recommend.py [--rows 1000000] [--learner two_models]

Fits a runtime on Hillstrom (../shared/data), tiles customers to --rows, and prints the time of
(a) every distinct booster's predict on the array (solo models: on the [X,1] and [X,0] rows),
(b) `UpliftRuntime.predict` + building the output frame, and (c) `recommend` file → file, with the
ratio (b)/(a). Figures depend on the machine; compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from serving.batch.recommend import recommend, recommendation_frame
from serving.runtime.decision.catalog import Catalog, Incentive
from serving.runtime.encoding import FeatureEncoder
from training.uplift.learners import fit_runtime

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hillstrom.csv"
FEATURES = ["recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie", "channel"]


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--learner", default="two_models")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    df = pd.read_csv(DATA)
    catalog = Catalog("No E-Mail", (Incentive("Mens E-Mail", 0.1), Incentive("Womens E-Mail", 0.1)), 30.0)
    encoder = FeatureEncoder(FEATURES).fit(df)
    arm = df["segment"].map({"No E-Mail": -1, "Mens E-Mail": 0, "Womens E-Mail": 1}).to_numpy()
    runtime = fit_runtime(encoder.transform(df), arm, df["conversion"].to_numpy(), encoder, catalog, args.learner,
                          {}, seed=0)
    customers = df.sample(args.rows, replace=True, random_state=0).reset_index(drop=True)
    customers.insert(0, "customer_id", np.arange(args.rows).astype(str))
    X = encoder.transform(customers)

    if args.learner == "solo_model":
        Xs = [np.column_stack([X, np.full(len(X), v)]) for v in (1.0, 0.0)]
        raw = lambda: [b.predict(x) for b in runtime.boosters.values() for x in Xs]  # noqa: E731
    else:
        raw = lambda: [b.predict(X) for b in runtime.boosters.values()]  # noqa: E731
    ids = customers["customer_id"].to_numpy()
    scored = lambda: recommendation_frame(runtime.predict(X), ids)  # noqa: E731
    t_raw, t_runtime = best_of(raw, args.repeat), best_of(scored, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "customers.parquet"
        customers.to_parquet(path)
        t_file = best_of(lambda: recommend(runtime, path, Path(tmp) / "out.parquet"), 1)
        t_encode = best_of(lambda: encoder.transform(customers), 1)
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"{args.rows:,} customers, learner {args.learner}, {len(runtime.boosters)} distinct boosters")
    print(f"raw booster.predict calls       {t_raw:8.3f} s")
    print(f"runtime.predict + output frame  {t_runtime:8.3f} s   ratio {t_runtime / t_raw:.3f}")
    print(f"encode table → array            {t_encode:8.3f} s")
    print(f"recommend parquet → parquet     {t_file:8.3f} s   ratio {t_file / t_raw:.3f}")


if __name__ == "__main__":
    main()
