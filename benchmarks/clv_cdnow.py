"""Customer value on CDNOW: predicted against realised spend, the question of issue 16.

    .venv/bin/python benchmarks/clv_cdnow.py [--data ../shared/data/cdnow_master.txt]

As of 1997-12-31 (features from purchases on or before it), predict each customer's spend in
1998-01-01 … 1998-06-30 (181 days; one purchase = one day's spend) and compare with what they spent:
Spearman correlation per customer, total predicted / realised, and the share of realised spend captured by
the top 10 % of predictions. Rows: the spend-rate heuristic the churn runtime used for value at risk
(unconditional: trailing 365-day spend / tenure clipped to [90, 365] × horizon) and BG/NBD × Gamma-Gamma
fitted by maximum likelihood on the same feature table (`training.value.btyd`).
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
from scipy import stats

from features.build import build_features
from features.loaders import read_cdnow
from serving.runtime.btyd import Rfm, expected_spend
from training.value.btyd import fit_bgnbd, fit_gamma_gamma

AS_OF, HORIZON_DAYS = pd.Timestamp("1997-12-31"), 181


def scores(predicted: np.ndarray, realised: np.ndarray) -> tuple[float, float, float]:
    """Spearman, total predicted / realised, top-10 % capture of realised spend."""
    top = np.argsort(-predicted, kind="stable")[: int(np.ceil(0.1 * len(predicted)))]
    return (float(stats.spearmanr(predicted, realised).statistic), float(predicted.sum() / realised.sum()),
            float(realised[top].sum() / realised.sum()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[1] / ".." / "shared" / "data" /
                        "cdnow_master.txt")
    args = parser.parse_args(argv)
    tx = read_cdnow(args.data)
    features = build_features(tx, AS_OF)
    day = tx["timestamp"].dt.normalize()
    window = (day > AS_OF) & (day <= AS_OF + pd.Timedelta(days=HORIZON_DAYS))
    realised = tx[window].groupby("customer_id")["amount"].sum().reindex(features.index).fillna(0.0).to_numpy()

    spend = features["spend_365d"].fillna(0.0).to_numpy()
    window_days = np.clip(features["tenure_days"].to_numpy(dtype=float), 90, 365)
    rows = {"spend-rate heuristic (unconditional)": spend / window_days * HORIZON_DAYS}
    start = time.perf_counter()
    rfm = Rfm.from_features(features["frequency"], features["recency_days"], features["tenure_days"],
                            features["monetary_total"])
    bgnbd, gamma_gamma = fit_bgnbd(rfm), fit_gamma_gamma(rfm)
    fit_seconds = time.perf_counter() - start
    rows["BG/NBD × Gamma-Gamma (MLE)"] = expected_spend(bgnbd, gamma_gamma, rfm, HORIZON_DAYS)

    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{len(features):,} customers as of {AS_OF.date()}, realised spend {realised.sum():,.0f} in the next "
          f"{HORIZON_DAYS} days; BTYD fitted in {fit_seconds:.1f} s: {bgnbd}, {gamma_gamma}")
    print("| model | Spearman | total predicted / realised | top-10 % capture |\n| --- | --- | --- | --- |")
    for name, predicted in rows.items():
        rho, ratio, capture = scores(predicted, realised)
        print(f"| {name} | {rho:.3f} | {ratio:.2f} | {capture:.3f} |")


if __name__ == "__main__":
    main()
