"""Time `build_features` against a bare pandas groupby (count, sum, max) on the same synthetic frame.

    .venv/bin/python benchmarks/features_bench.py [--rows 10000000] [--customers N] [--optional]

Prints the command, the machine and rows/s of both; the ratio build_features / groupby is the
figure to watch (target ≤ 3). Data are drawn directly with numpy, not with the simulator.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import pandas as pd

from features.build import build_features

AS_OF = pd.Timestamp("2024-12-31")


def synthetic_transactions(rows: int, customers: int, optional: bool, seed: int = 0) -> pd.DataFrame:
    """`rows` purchases by `customers` string ids over three years up to a little after AS_OF."""
    rng = np.random.default_rng(seed)
    ids = pd.Series(np.char.add("c", np.arange(customers).astype(str)), dtype="str")
    seconds = rng.integers(0, 3 * 365 * 86400 + 30 * 86400, rows)
    frame = pd.DataFrame({
        "customer_id": ids.take(rng.integers(0, customers, rows)).reset_index(drop=True),
        "timestamp": pd.Timestamp("2022-01-01") + pd.to_timedelta(seconds, unit="s"),
        "amount": np.round(rng.gamma(2.0, 25.0, rows), 2),
    })
    if optional:
        frame["quantity"] = rng.integers(1, 5, rows).astype(float)
        frame["category"] = pd.Series(rng.choice(["books", "music", "toys", "games", "garden"], rows), dtype="str")
        frame["channel"] = pd.Series(rng.choice(["web", "store", "app"], rows), dtype="str")
    return frame


def best_of(repeats: int, func) -> tuple[float, object]:
    """Smallest wall time over `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=None, help="default: rows / 10")
    parser.add_argument("--optional", action="store_true", help="add quantity, category and channel columns")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    customers = args.customers or max(args.rows // 10, 1)

    print("command:", " ".join([os.path.basename(sys.executable), *sys.argv]))
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, python {platform.python_version()}, "
          f"pandas {pd.__version__}, numpy {np.__version__}")
    start = time.perf_counter()
    tx = synthetic_transactions(args.rows, customers, args.optional)
    print(f"data: {len(tx):,} rows, {customers:,} customers, optional columns: {args.optional} "
          f"(generated in {time.perf_counter() - start:.1f} s)")

    def baseline():
        return tx.groupby("customer_id").agg(
            purchase_count=("amount", "count"), monetary_total=("amount", "sum"), last=("timestamp", "max"))

    base_s, base = best_of(args.repeats, baseline)
    build_s, features = best_of(args.repeats, lambda: build_features(tx, AS_OF))
    print(f"groupby(count, sum, max): {base_s:6.2f} s  {len(tx) / base_s:12,.0f} rows/s  ({len(base):,} groups)")
    print(f"build_features:           {build_s:6.2f} s  {len(tx) / build_s:12,.0f} rows/s  "
          f"({len(features):,} customers x {features.shape[1]} columns)")
    print(f"ratio build_features / groupby: {build_s / base_s:.2f} (target <= 3)")


if __name__ == "__main__":
    main()
