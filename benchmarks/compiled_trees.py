"""Batch `recommend` on 1M customers with and without compiled trees, against raw `booster.predict`.

    .venv/bin/python benchmarks/compiled_trees.py [--rows 1000000] [--learner solo_model] [--rounds 400]

Simulates a customer base (`features.simulate`, 5,000 customers), builds its features, fits an uplift
runtime on the simulated randomised campaign (a model of the size `make demo` registers: SoloModel, 400
rounds per arm, 3 arms), resamples the feature table to --rows customers in a Parquet file, then times

  (a) raw `booster.predict` of every booster the recommend path calls, summed, on the already-encoded
      array (solo models on the [X, 1] and [X, 0] rows), LightGBM's default threads (every core);
  (b) `serving.batch.recommend.recommend` Parquet → Parquet (what `winback recommend` runs);
  (c) the same with compiled trees (`winback recommend --compiled-trees`);
  and, for reference, the compiled boosters alone on the arrays of (a).

Interleaved repetitions (the machine may be shared); medians printed with the ratios to (a). The first
compile (empty cache, a temporary WINBACK_CACHE_DIR) and a load from the cache are timed once.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from features.build import build_features
from features.contracts import normalize_profiles, normalize_transactions
from features.simulate import simulate
from serving.batch.recommend import recommend
from serving.runtime import compiled
from serving.runtime.decision.catalog import Catalog
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.uplift import UpliftRuntime
from training.uplift.learners import fit_runtime


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fitted_runtime(base: int, seed: int, learner: str, rounds: int):
    """(uplift runtime fitted on the simulated campaign, the base's feature table with customer_id)."""
    sim = simulate(customers=base, seed=seed)
    tx = normalize_transactions(sim.transactions, as_of=sim.history_end)
    features = build_features(tx, sim.history_end, normalize_profiles(sim.customers))
    catalog = Catalog.from_dict(sim.catalog)
    campaign = sim.campaign.set_index("customer_id").reindex(features.index)
    seen = campaign["incentive"].notna().to_numpy()
    features, campaign = features[seen], campaign[seen]
    arm = campaign["incentive"].map({a: j for j, a in enumerate(catalog.arms)}).fillna(-1).astype(int).to_numpy()
    encoder = FeatureEncoder().fit(features)
    params = {"n_estimators": rounds, "learning_rate": 0.03, "num_leaves": 31, "min_child_samples": 40}
    runtime = fit_runtime(encoder.transform(features), arm, campaign["converted"].to_numpy().astype(int), encoder,
                          catalog, learner, params, seed=seed)
    return runtime, features.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--base", type=int, default=5000, help="simulated customers the model is fitted on")
    parser.add_argument("--learner", default="solo_model")
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    fitted, base = fitted_runtime(args.base, args.seed, args.learner, args.rounds)
    rng = np.random.default_rng(0)
    customers = base.iloc[rng.integers(0, len(base), args.rows)].reset_index(drop=True)
    customers["customer_id"] = [f"B{i:08d}" for i in range(args.rows)]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = fitted.save(tmp / "model")
        source = tmp / "customers.parquet"
        customers.to_parquet(source)
        os.environ[compiled.CACHE_ENV] = str(tmp / "cache")  # an empty cache: the first compile is timed

        plain = UpliftRuntime.load(model)
        fast = UpliftRuntime.load(model)
        t_compile = timed(fast.compile_trees)
        n_compiled = compiled.stats["compiles"]
        t_cached = timed(lambda: UpliftRuntime.load(model).compile_trees())
        assert compiled.stats["compiles"] == n_compiled  # the second load came from the cache

        X = plain.encoder.transform(customers)
        used = list(dict.fromkeys(name for recipe in plain.recipes.values() for key in ("treated", "controls", "models")
                                  for name in recipe.get(key, [])))
        stacked = np.vstack([np.column_stack([X, np.ones(len(X))]), np.column_stack([X, np.zeros(len(X))])])

        def inputs(name: str) -> np.ndarray:
            return X if plain.boosters[name].num_feature() == X.shape[1] else stacked

        def raw() -> None:
            for name in used:
                plain.boosters[name].predict(inputs(name))

        def raw_compiled() -> None:
            for name in used:
                fast._callers[name].predict(inputs(name))

        cases = {"(a) raw booster.predict, all boosters": raw,
                 "(b) recommend, LightGBM": lambda: recommend(plain, source, tmp / "plain.parquet"),
                 "(c) recommend, compiled trees": lambda: recommend(fast, source, tmp / "fast.parquet"),
                 "    compiled boosters alone": raw_compiled}
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, fn in cases.items():
                times[name].append(timed(fn))

    medians = {name: statistics.median(t) for name, t in times.items()}
    t_raw = medians["(a) raw booster.predict, all boosters"]
    n_trees = sum(plain.boosters[name].num_trees() for name in used)
    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} "
          f"{os.cpu_count()} cores ({compiled.batch_threads()} used), Python {platform.python_version()}, "
          f"lleaves/llvmlite {compiled.versions()}")
    print(f"# {args.rows:,} customers resampled from {len(base):,} simulated; {fitted.learner}, {len(used)} boosters, "
          f"{n_trees} trees in all; medians of {args.repeats} interleaved runs")
    print(f"# compile {len(used)} boosters: {t_compile:.1f} s the first time, {t_cached:.2f} s from the cache")
    print(f"{'case':<42}{'median s':>10}  {'runs':<26}{'customers/s':>13}{'ratio to (a)':>14}")
    for name, t in medians.items():
        runs = " / ".join(f"{x:.2f}" for x in times[name])
        print(f"{name:<42}{t:>10.2f}  {runs:<26}{args.rows / t:>13,.0f}{t / t_raw:>14.2f}")


if __name__ == "__main__":
    main()
