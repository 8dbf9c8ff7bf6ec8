"""Churn quality against simple references, measured as users run the product.

CDNOW (README's question): `winback train churn` on purchases up to 1997-12-31, `winback score` as of
1997-12-31, AUC against the real label "no purchase in the next 182 days" (1998 H1), beside recency
alone and a logistic regression on log RFM fitted on the same training snapshots.

Small tables: `winback train churn --table` on 80 % of a customer table, AUC on the other 20 % (stratified,
seeded), beside LightGBM with default parameters trained on the same 80 %. Tables: the simulator's
customers (label: no purchase in 120 days after the history) and a Hillstrom sample (label: visit).

    python benchmarks/churn_quality.py [--trials 15] [--seed 1] [--only cdnow|tables]

Skips the public data sets when ../shared/data is absent. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def winback(cwd: Path, *args: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-m", "winback.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"winback {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def auc(y, score) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def log_rfm_lr(train: pd.DataFrame, y: np.ndarray, test: pd.DataFrame) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cols = ["recency_days", "frequency", "monetary_total", "tenure_days"]
    cols = [c for c in cols if c in train.columns]
    prep = lambda f: np.log1p(f[cols].fillna(0).clip(lower=0).to_numpy(float))  # noqa: E731
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(prep(train), y)
    return model.predict_proba(prep(test))[:, 1]


def cdnow(args) -> list[tuple]:
    from features.build import build_features
    from features.loaders import read_cdnow
    from training.churn.data import prepare_transactions

    source = DATA / "cdnow_master.txt"
    if not source.is_file():
        return []
    cutoff, horizon = pd.Timestamp("1997-12-31"), 182
    tx = read_cdnow(source)
    history = tx[tx["timestamp"] <= cutoff]
    later = tx[(tx["timestamp"] > cutoff) & (tx["timestamp"] <= cutoff + pd.Timedelta(days=horizon))]
    features = build_features(history, cutoff)
    y = (~features.index.isin(later["customer_id"].astype(str).unique())).astype(int)
    rows = []
    for variant, extra in (("", ()), (", --no-refit", ("--no-refit",))):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            winback(tmp, "train", "churn", "--transactions", str(source), "--cutoff", "1997-12-31", "--horizon-days",
                    str(horizon), "--snapshots", "3", "--trials", str(args.trials), "--seed", str(args.seed),
                    "--json-out", "cdnow.json", *extra)
            summary = json.loads((tmp / "cdnow.json").read_text())
            winback(tmp, "score", "--model", summary["model_uri"], "--transactions", str(source), "--as-of",
                    "1997-12-31", "--output", "scores.parquet")
            scores = pd.read_parquet(tmp / "scores.parquet").set_index("customer_id")
        p = scores.loc[features.index, "churn_probability"].to_numpy()
        rows.append(("CDNOW, README question", f"shipped{variant} ({summary['scorer']['kind']})", auc(y, p)))
        for name, c in summary["candidates"].items():
            rows.append(("CDNOW, README question", f"candidate {name}{variant}: validation AUC", c["validation_auc"]))
    data = prepare_transactions(history, cutoff, horizon, 3, 30)
    train = pd.concat([data.train, data.valid, data.test])
    lr = log_rfm_lr(train, train["churned"].to_numpy(), features)
    rows.append(("CDNOW, README question", "logistic regression on log RFM (same snapshots)", auc(y, lr)))
    rows.append(("CDNOW, README question", "recency alone", auc(y, features["recency_days"].to_numpy())))
    return rows


def table_case(name: str, table: pd.DataFrame, target: str, args) -> list[tuple]:
    import lightgbm as lgb
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(table, test_size=0.2, stratify=table[target], random_state=args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train.to_csv(tmp / "train.csv", index=False)
        test.drop(columns=target).to_csv(tmp / "test.csv", index=False)
        winback(tmp, "train", "churn", "--table", "train.csv", "--target", target, "--id-col", "customer_id",
                "--trials", str(args.trials), "--seed", str(args.seed), "--json-out", "out.json")
        summary = json.loads((tmp / "out.json").read_text())
        winback(tmp, "score", "--model", summary["model_uri"], "--table", "test.csv", "--id-col", "customer_id",
                "--output", "scores.csv")
        scores = pd.read_csv(tmp / "scores.csv", dtype={"customer_id": str})
    y = test[target].to_numpy().astype(int)
    rows.append((name, f"shipped ({summary['scorer']['kind']})", auc(y, scores["churn_probability"])))
    features = [c for c in table.columns if c not in (target, "customer_id")]
    X_train, X_test = train[features].copy(), test[features].copy()
    for col in features:
        if X_train[col].dtype == object or str(X_train[col].dtype) in ("string", "str"):
            levels = X_train[col].astype("category").cat.categories
            X_train[col] = pd.Categorical(X_train[col], categories=levels)
            X_test[col] = pd.Categorical(X_test[col], categories=levels)
    default = lgb.LGBMClassifier(random_state=args.seed, verbose=-1).fit(X_train, train[target].astype(int))
    rows.append((name, "LightGBM defaults on the same 80 %", auc(y, default.predict_proba(X_test)[:, 1])))
    return rows


def tables(args) -> list[tuple]:
    from features.build import build_features
    from features.simulate import simulate

    from features.simulate import HISTORY_END

    sim = simulate(customers=4000, seed=args.seed, future_days=120)
    cutoff = pd.Timestamp(HISTORY_END).normalize()
    history, later = sim.transactions, sim.future_transactions
    feats = build_features(history, cutoff, profiles=sim.customers)
    feats = feats if "customer_id" in feats.columns else feats.reset_index()
    feats = feats.drop(columns=[c for c in ("lifecycle_stage", "value_tier", "value_tier_in_file") if c in feats])
    feats["churned"] = (~feats["customer_id"].isin(later["customer_id"].unique())).astype(int)
    rows = table_case("simulator customer table (4,000)", feats, "churned", args)
    if (DATA / "hillstrom.csv").is_file():
        hill = pd.read_csv(DATA / "hillstrom.csv").sample(4000, random_state=args.seed).reset_index(drop=True)
        hill = hill.drop(columns=["conversion", "spend", "segment"]).assign(customer_id=lambda f: f.index.astype(str))
        rows += table_case("Hillstrom sample (4,000), target visit", hill, "visit", args)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["cdnow", "tables"])
    args = parser.parse_args()
    print(f"trials {args.trials}, seed {args.seed}")
    print("| data | model | AUC |\n| --- | --- | --- |", flush=True)
    for case in (cdnow, tables):
        if args.only in (None, case.__name__):
            for data, model, value in case(args):
                print(f"| {data} | {model} | {value:.4f} |", flush=True)


if __name__ == "__main__":
    main()
