"""Churn and customer value out of time, seed by seed: what changes with the split, and what labels can tell.

    .venv/bin/python benchmarks/churn_seeds.py [--source cdnow|sim] [--seeds 0 1 2 3 4] [--trials 10]
        [--ablate] [--edge] [--anchor] [--ceiling] [--backtest] [--cv auto|always|never]

For each seed: `train_churn` as `winback train churn` runs it (3 snapshots 30 days apart, `--trials` trials, a
fresh MLflow store), then the model scores every customer as of the cutoff, against what they did in the
horizon after it. Columns: AUC of the shipped scorer and of its two parts (calibrated LightGBM, regression),
mean churn probability against the realised churn rate, expected buyers (Σ 1 − p) against realised buyers
(also of each part alone, and of BG/NBD fitted on the same customers, which training prints beside the
model's), `value_if_retained` summed over the customers who did buy against what they
spent (the value side's share of the total's error), and expected_spend's total against realised spend (and
BG/NBD × Gamma-Gamma's, as training prints it), and the interval training gives for both totals (the middle 90 %
over refits of the calibration and the regression on resamples of their rows), over the realised.

Variants that were measured and not shipped: `--edge`, each customer scored at the labelled edge (tenure and
recency clipped to the largest labelled values) plus BG/NBD's change of log-odds from there to the customer's
real age and silence; `--anchor`, the shipped scores with their levels moved, for the customers beyond every
labelled row, to BG/NBD's (expected buyers, by one logit shift of every score) and to BG/NBD × Gamma-Gamma's
conditional spend (one factor on every `value_if_retained`), rankings kept. `--ablate` repeats every seed
without the stack's BG/NBD term; `--ceiling` adds what the features can carry at best: LightGBM and a logistic
regression on log1p features, trained by 5-fold cross-validation on the cutoff's own features *and the very
labels being predicted* (no time shift at all; not a model anybody can ship); `--backtest` checks BG/NBD's own
level out of time: fitted on each labelled snapshot's customers as training fits it (point in time), its expected
buyers and BG/NBD × Gamma-Gamma's expected spend in the horizon after that snapshot against what those customers
did (the labels).

Sources: `cdnow` (../shared/data/cdnow_master.txt; cutoff 1997-12-31, horizon 181 days) and `sim` (the
simulator, 20,000 customers, seed 1, cutoff its history's end, horizon 180 days, its natural future).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def load(source: str):
    """(transactions up to the cutoff, the cutoff, the horizon, the transactions of the horizon after it)."""
    if source == "cdnow":
        from features.loaders import read_cdnow

        path = DATA / "cdnow_master.txt"
        if not path.is_file():
            raise SystemExit(f"{path} not found")
        tx, cutoff, horizon = read_cdnow(path), pd.Timestamp("1997-12-31"), 181
    else:
        from features.contracts import normalize_transactions
        from features.simulate import HISTORY_END, simulate

        horizon = 180
        sim = simulate(20_000, seed=1, future_days=horizon)
        tx = normalize_transactions(pd.concat([sim.transactions, sim.future_transactions]))
        cutoff = pd.Timestamp(HISTORY_END).normalize()
    day = tx["timestamp"].dt.normalize()
    window = (day > cutoff) & (day <= cutoff + pd.Timedelta(days=horizon))
    return tx[day <= cutoff], cutoff, horizon, tx[window]


def outcomes(features: pd.DataFrame, later: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(churned: no purchase in the horizon, the label's rule; realised spend), per customer of `features`."""
    churned = ~features.index.isin(later["customer_id"].unique())
    return churned, later.groupby("customer_id")["amount"].sum().reindex(features.index).fillna(0.0).to_numpy()


def edge_delta(runtime, X: np.ndarray, extrapolation: dict) -> np.ndarray:
    """Churn probability at the labelled edge + BG/NBD's log-odds change beyond it (`--edge`, not shipped)."""
    from serving.runtime.churn import btyd_silent_logit, logit

    names, btyd = runtime.feature_names, runtime.calibration["btyd"]
    it, ir = names.index("tenure_days"), names.index("recency_days")
    edge = X.copy()
    edge[:, it] = np.minimum(X[:, it], extrapolation["tenure_days"]["labelled_max"])
    last = np.minimum(X[:, it] - X[:, ir], edge[:, it])  # days from first to last purchase, within the edge age
    edge[:, ir] = np.minimum(edge[:, it] - last, extrapolation["recency_days"]["labelled_max"])
    shift = (btyd_silent_logit(X, names, btyd["bgnbd"], btyd["horizon_days"])
             - btyd_silent_logit(edge, names, btyd["bgnbd"], btyd["horizon_days"]))
    return 1.0 / (1.0 + np.exp(-(logit(runtime.predict_proba(edge)) + shift)))


def anchored(runtime, X: np.ndarray, p: np.ndarray, extrapolation: dict) -> tuple[np.ndarray, np.ndarray]:
    """`--anchor` (not shipped): the churn and value levels of the customers beyond every labelled row from
    BG/NBD and BG/NBD × Gamma-Gamma as of the cutoff, by one logit shift and one value factor (rankings kept)."""
    from scipy.optimize import brentq

    from serving.runtime.churn import logit
    from serving.runtime.value import design, rfm_from_columns

    names, value = runtime.feature_names, runtime.value
    beyond = np.zeros(len(X), dtype=bool)
    for column, spec in extrapolation.items():
        beyond |= X[:, names.index(column)] > spec["labelled_max"]
    column = lambda name: X[:, names.index(name)]
    rfm = rfm_from_columns(column)
    silent = 1.0 - value.bgnbd.p_purchase(rfm.x, rfm.t_x, rfm.age, float(value.horizon_days))
    target = (1 - p[~beyond]).sum() + (1 - silent[beyond]).sum()
    z = logit(p)
    shift = brentq(lambda c: (1 - 1 / (1 + np.exp(-(z + c)))).sum() - target, -10, 10)
    q = 1 / (1 + np.exp(-(z + shift)))
    retained = value.if_retained(column, rfm)
    baseline = design(column, value.columns, value.bgnbd, value.gamma_gamma, value.horizon_days, rfm)[1]
    w = 1 - q
    factor = ((w * retained)[~beyond].sum() + (w * baseline)[beyond].sum()) / (w * retained).sum()
    return q, retained * factor


def one_seed(history, cutoff, horizon, features, later, seed: int, trials: int, btyd: bool,
             edge: bool = False, anchor: bool = False, cv: str = "auto") -> dict:
    from sklearn.metrics import roc_auc_score

    from serving.runtime.churn import load_churn_runtime
    from training.churn.data import prepare_transactions
    from training.churn.train import ChurnTrainConfig, train_churn
    from training.tracking import TrackingSettings
    from training.value.model import value_scores

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        data = prepare_transactions(history, cutoff, horizon, 3, 30, None, seed)
        summary = train_churn(data, ChurnTrainConfig(trials=trials, seed=seed, btyd=btyd, cv=cv),
                              TrackingSettings.from_env("churn-seeds"))
        runtime = load_churn_runtime(summary["model_uri"])
        X = runtime.encoder.transform(features)
        scores = runtime.score_frame(features)
    churned, spend = outcomes(features, later)
    bought = ~churned
    p = scores["churn_probability"].to_numpy()
    p_lightgbm, p_linear = runtime.predict_lightgbm(X), runtime.predict_linear(X)
    value = value_scores(scores["expected_spend"].to_numpy(), spend)
    extra = {}
    if edge and btyd:
        q = edge_delta(runtime, X, summary["extrapolation"])
        retained = scores["value_if_retained"].to_numpy()
        extra = {"AUC edge+BG/NBD": roc_auc_score(churned, q),
                 "spend total edge+BG/NBD": value_scores((1 - q) * retained, spend)["total_ratio"]}
    if anchor and summary["extrapolation"]:
        q, retained = anchored(runtime, X, p, summary["extrapolation"])
        anchored_value = value_scores((1 - q) * retained, spend)
        extra.update({"buyers anchored": (1 - q).sum() / bought.sum(),
                      "spend total anchored": anchored_value["total_ratio"],
                      "Spearman anchored": anchored_value["spearman"], "top10 anchored": anchored_value["top10_capture"]})
    return {"seed": seed, "btyd term": "yes" if btyd else "no", "scorer": summary["scorer"]["kind"],
            "AUC shipped": roc_auc_score(churned, p),
            "AUC LightGBM": roc_auc_score(churned, p_lightgbm), "AUC regression": roc_auc_score(churned, p_linear),
            "mean p": p.mean(), "realised churn": churned.mean(),
            "buyers predicted / realised": (1 - p).sum() / bought.sum(),
            "buyers LightGBM": (1 - p_lightgbm).sum() / bought.sum(),
            "buyers regression": (1 - p_linear).sum() / bought.sum(),
            "buyers BG/NBD": summary["cutoff_levels"]["expected_buyers_bgnbd"] / bought.sum(),
            "value if retained on buyers": scores["value_if_retained"].to_numpy()[bought].sum() / spend[bought].sum(),
            "spend total predicted / realised": value["total_ratio"],
            "spend total BG/NBD × Gamma-Gamma": summary["cutoff_levels"]["expected_spend_btyd"] / spend.sum(),
            "Spearman": value["spearman"], **resampled(summary["cutoff_levels"], bought.sum(), spend.sum()), **extra}


def resampled(levels: dict, buyers: float, spend: float) -> dict:
    """The interval training gives for the cutoff's totals (`cutoff_levels`' bootstrap), over the realised."""
    if not levels.get("bootstrap"):
        return {}
    low_b, high_b = levels["bootstrap"]["expected_buyers"]
    low_s, high_s = levels["bootstrap"]["expected_spend"]
    return {"buyers interval": f"{low_b / buyers:.3f}–{high_b / buyers:.3f}",
            "spend interval": f"{low_s / spend:.3f}–{high_s / spend:.3f}"}


def ceiling(features: pd.DataFrame, later: pd.DataFrame, seed: int = 0) -> dict:
    import lightgbm as lgb
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    y = outcomes(features, later)[0].astype(int)
    X = features.select_dtypes("number").to_numpy(dtype=float)
    Z = np.log1p(np.clip(np.nan_to_num(X), 0.0, None))
    trees, linear = np.empty(len(y)), np.empty(len(y))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y):
        booster = lgb.train({"objective": "binary", "learning_rate": 0.03, "num_leaves": 15, "min_child_samples": 100,
                             "verbosity": -1, "num_threads": 2, "seed": seed}, lgb.Dataset(X[train], y[train]), 400)
        trees[test] = booster.predict(X[test])
        scale = StandardScaler().fit(Z[train])
        linear[test] = LogisticRegression(max_iter=2000).fit(scale.transform(Z[train]), y[train]).predict_proba(
            scale.transform(Z[test]))[:, 1]
    return {"LightGBM": roc_auc_score(y, trees), "regression": roc_auc_score(y, linear)}


def sequence_features(history: pd.DataFrame, horizon: int, features: pd.DataFrame) -> pd.DataFrame:
    """`features` plus columns the product does not build, for the ceiling only: the last, first and longest gap
    between purchase days, the last purchase day's spend, silence over the longest gap, repeat days within 30
    days of the first, and BG/NBD's P(alive) and P(purchase in the horizon) fitted as of the cutoff."""
    from serving.runtime.value.btyd import Rfm
    from training.value.btyd import fit_bgnbd

    days = (history.assign(day=history["timestamp"].dt.normalize()).groupby(["customer_id", "day"], as_index=False)
            ["amount"].sum().sort_values(["customer_id", "day"]))
    purchase_days = days.groupby("customer_id")["day"]
    days["gap"] = purchase_days.diff().dt.days
    days["since_first"] = (days["day"] - purchase_days.transform("min")).dt.days
    by = days.groupby("customer_id")
    last = by.tail(1).set_index("customer_id")
    extra = pd.DataFrame({"last_gap": last["gap"], "last_day_spend": last["amount"], "max_gap": by["gap"].max(),
                          "first_gap": days[by.cumcount() == 1].set_index("customer_id")["gap"],
                          "early_repeats": (days["since_first"].between(1, 30)).groupby(days["customer_id"]).sum()})
    extra = extra.reindex(features.index)
    extra["silence_over_max_gap"] = features["recency_days"] / extra["max_gap"]
    rfm = Rfm.from_features(features["frequency"], features["recency_days"], features["tenure_days"],
                            features["monetary_total"])
    bgnbd = fit_bgnbd(rfm)
    extra["p_alive"] = bgnbd.p_alive(rfm.x, rfm.t_x, rfm.age)
    extra["p_purchase"] = bgnbd.p_purchase(rfm.x, rfm.t_x, rfm.age, float(horizon))
    return pd.concat([features, extra], axis=1)


def btyd_backtest(history, cutoff, horizon: int) -> pd.DataFrame:
    """`--backtest`: per labelled snapshot (as `train_churn` builds them, seed 0), BG/NBD's expected buyers and
    BG/NBD × Gamma-Gamma's expected spend over the horizon after it, fitted on that snapshot's customers, against
    the labels (buyers: rows not churned; spend: `future_spend`)."""
    from serving.runtime.value import rfm_from_columns
    from serving.runtime.value.btyd import expected_spend
    from training.churn.data import prepare_transactions
    from training.labels import FUTURE_SPEND, LABEL, SNAPSHOT
    from training.value.model import point_in_time_fits

    data = prepare_transactions(history, cutoff, horizon, 3, 30, None, 0)
    fits, _ = point_in_time_fits(data)
    rows = []
    for snapshot, part in pd.concat([data.train, data.valid, data.test]).groupby(SNAPSHOT, sort=True):
        bgnbd, gamma_gamma = fits[snapshot]
        rfm = rfm_from_columns(lambda name: part[name].to_numpy(dtype=float))
        rows.append({"snapshot": str(pd.Timestamp(snapshot).date()), "customers": len(part),
                     "max tenure": float(part["tenure_days"].max()),
                     "BG/NBD buyers / realised": bgnbd.p_purchase(rfm.x, rfm.t_x, rfm.age, float(horizon)).sum()
                     / (1 - part[LABEL]).sum(),
                     "BG/NBD × Gamma-Gamma spend / realised": expected_spend(bgnbd, gamma_gamma, rfm, float(horizon)).sum()
                     / part[FUTURE_SPEND].sum()})
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table (floats to 4 decimals) without pandas' optional tabulate dependency."""
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("cdnow", "sim"), default="cdnow")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--ablate", action="store_true", help="also train every seed without the BG/NBD stack term")
    parser.add_argument("--edge", action="store_true", help="also the labelled edge + BG/NBD variant (not shipped)")
    parser.add_argument("--anchor", action="store_true", help="also the levels anchored to BG/NBD beyond the labels")
    parser.add_argument("--ceiling", action="store_true", help="also the in-period cross-validated ceiling")
    parser.add_argument("--backtest", action="store_true", help="also BG/NBD's own level at each labelled snapshot")
    parser.add_argument("--cv", choices=("auto", "always", "never"), default="auto",
                        help="training's validation scheme, as `winback train churn --cv`")
    args = parser.parse_args(argv)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    from features.build import build_features

    history, cutoff, horizon, later = load(args.source)
    features = build_features(history, cutoff)
    started = time.perf_counter()
    rows = [one_seed(history, cutoff, horizon, features, later, seed, args.trials, btyd, args.edge, args.anchor,
                    args.cv)
            for btyd in ((True, False) if args.ablate else (True,)) for seed in args.seeds]
    table = pd.DataFrame(rows)
    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; {args.source}: "
          f"{len(features):,} customers as of {cutoff.date()}, horizon {horizon} days; "
          f"{time.perf_counter() - started:.0f} s")
    print(markdown(table))
    figures = [c for c in table.select_dtypes("number").columns
               if c.startswith(("AUC", "spend", "buyers", "value", "Spearman", "top10"))]
    print("\nmedians over seeds\n" + markdown(table.groupby("btyd term")[figures].median().reset_index()))
    if args.ceiling:
        print("\nin-period ceiling (5-fold CV on the cutoff's features and the labels being predicted): "
              + ", ".join(f"{k} {v:.4f}" for k, v in ceiling(features, later).items()))
        richer = sequence_features(history, horizon, features)
        print("the same with sequence and BG/NBD columns (see sequence_features): "
              + ", ".join(f"{k} {v:.4f}" for k, v in ceiling(richer, later).items()))
    if args.backtest:
        print("\nBG/NBD's own level out of time, fitted on each labelled snapshot's customers\n"
              + markdown(btyd_backtest(history, cutoff, horizon)))


if __name__ == "__main__":
    main()
