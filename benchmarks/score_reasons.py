"""What `winback score --reasons N` costs: batch scoring of N customers with and without the TreeSHAP reasons.

Resamples a feature table (`winback features build` output) to N customers with new ids, then times, in the
same process, `serving.batch.score.score_feature_table` (what `winback score --features` runs) to Parquet with
`reasons=0` and with `reasons=3`, best of R runs each, and prints seconds and the ratio. The model comes from
the MLflow registry (default: the churn champion), e.g. after `make demo`:

    .venv/bin/python benchmarks/score_reasons.py --features demo/features.parquet --customers 100000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from batch_bench import best_of  # a sibling script: run this one as `python benchmarks/…`


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--model", default="models:/winback-churn@champion")
    parser.add_argument("--reasons", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")

    from serving.batch.score import score_feature_table
    from serving.runtime.churn import load_churn_runtime

    runtime = load_churn_runtime(args.model)
    source = pd.read_parquet(args.features)
    rows = np.random.default_rng(0).integers(0, len(source), args.customers)
    table = source.iloc[rows].reset_index(drop=True)
    table["customer_id"] = [f"B{i:08d}" for i in range(args.customers)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.parquet"
        plain = best_of(args.repeats, lambda: score_feature_table(runtime, table, out))
        with_reasons = best_of(args.repeats, lambda: score_feature_table(runtime, table, out, reasons=args.reasons))
    print(f"{' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"model {args.model} ({len(runtime.feature_names)} features); best of {args.repeats}")
    print(f"score {args.customers:,} customers: {plain:.2f} s; with --reasons {args.reasons}: {with_reasons:.2f} s "
          f"(x{with_reasons / plain:.1f}, +{(with_reasons - plain) / args.customers * 1e6:.1f} µs per customer)")


if __name__ == "__main__":
    main()
