"""Customer value on CDNOW: predicted against realised spend, the question of issue 16.

    .venv/bin/python benchmarks/clv_cdnow.py [--data ../shared/data/cdnow_master.txt]

As of 1997-12-31 (features from purchases on or before it), predict each customer's spend in
1998-01-01 … 1998-06-30 (181 days; one purchase = one day's spend) and compare with what they spent:
Spearman correlation per customer, total predicted / realised, and the share of realised spend captured by
the top 10 % of predictions. Rows: the spend-rate heuristic the churn runtime used for value at risk
before issue 16 (unconditional: trailing 365-day spend / tenure clipped to [90, 365] × horizon), BG/NBD ×
Gamma-Gamma fitted by maximum likelihood on the same feature table (`training.value.btyd`), and winback's
`expected_spend` as users get it: `winback train churn` on purchases up to 1997-12-31 (3 snapshots, horizon
181 days, `--trials` trials, seeds 0 … `--repeats` − 1, each in a fresh MLflow store), then `winback score` as
of 1997-12-31. The winback row is the median of the repeats; each repeat is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.build import build_features
from features.loaders import read_cdnow
from serving.runtime.value.btyd import Rfm, expected_spend
from training.value.btyd import fit_bgnbd, fit_gamma_gamma
from training.value.model import value_scores

AS_OF, HORIZON_DAYS = pd.Timestamp("1997-12-31"), 181


def winback_expected_spend(data: Path, trials: int, seed: int) -> pd.Series:
    """`winback train churn` + `winback score` in a fresh MLflow store; expected_spend per customer."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}

        def winback(*args: str) -> None:
            done = subprocess.run([sys.executable, "-m", "winback.cli", *args], cwd=tmp, env=env,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"winback {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

        winback("train", "churn", "--transactions", str(data.resolve()), "--cutoff", str(AS_OF.date()),
                "--horizon-days", str(HORIZON_DAYS), "--snapshots", "3", "--trials", str(trials), "--seed", str(seed),
                "--json-out", "churn.json")
        uri = json.loads(Path(tmp, "churn.json").read_text())["model_uri"]
        winback("score", "--model", uri, "--transactions", str(data.resolve()), "--as-of", str(AS_OF.date()),
                "--output", "scores.parquet")
        return pd.read_parquet(Path(tmp, "scores.parquet")).set_index("customer_id")["expected_spend"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).parents[1] / ".." / "shared" / "data" /
                        "cdnow_master.txt")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
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
    repeats = []
    for seed in range(args.repeats):
        predicted = winback_expected_spend(args.data, args.trials, seed).reindex(features.index).to_numpy()
        repeats.append(value_scores(predicted, realised))
        print(f"# winback seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in repeats[-1].items()))

    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{len(features):,} customers as of {AS_OF.date()}, realised spend {realised.sum():,.0f} in the next "
          f"{HORIZON_DAYS} days; BTYD fitted in {fit_seconds:.1f} s: {bgnbd}, {gamma_gamma}")
    print("| model | Spearman | total predicted / realised | top-10 % capture |\n| --- | --- | --- | --- |")
    figures = {name: value_scores(predicted, realised) for name, predicted in rows.items()}
    if repeats:
        figures[f"winback expected_spend (churn × value model; median of {len(repeats)})"] = {
            k: float(np.median([r[k] for r in repeats])) for k in repeats[0]}
    for name, f in figures.items():
        print(f"| {name} | {f['spearman']:.3f} | {f['total_ratio']:.3f} | {f['top10_capture']:.3f} |")


if __name__ == "__main__":
    main()
