"""Do the shipped decisions chase noise? `winback train uplift` on a simulated campaign whose incentives have
no effect at all, then `winback recommend` on the same customers: the share sent is money for nothing.
Beside it, the same on the simulator's real campaign, valued with its true per-arm probabilities.

    .venv/bin/python benchmarks/decision_noise.py [--customers 10000] [--seeds 1,2,3] [--control-share 0.4]
        [--arms 1] [--trials 3] [--decision-confidence 0.95]

Zero effect: the simulated customers keep their features; each is assigned control with probability
`--control-share`, else one of the first `--arms` incentives, and converts with their true probability under
control whatever they got. Real effect: the simulator's campaign as `make demo` trains on, decisions for a
fresh population (seed 99) valued with the truth, next to every baseline the training table prints.
Runs `winback` as users do (a temporary MLflow store per run).
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
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.build import build_features  # noqa: E402
from features.contracts import normalize_profiles, normalize_transactions  # noqa: E402
from features.simulate import HISTORY_END, simulate, write_simulation  # noqa: E402
from serving.runtime.decision import CONTROL, apply_rule, decide, rule_names  # noqa: E402
from serving.runtime.uplift import load_uplift_runtime  # noqa: E402


def winback(workdir: Path, *args: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    done = subprocess.run([sys.executable, "-m", "winback.cli", *args], cwd=workdir, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"winback {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")


def train(workdir: Path, args, campaign: str = "campaign.parquet") -> dict:
    winback(workdir, "train", "uplift", "--campaign", campaign, "--treatment-col", "incentive", "--control",
            "no_contact", "--outcome", "converted", "--transactions", "transactions.parquet", "--profiles",
            "customers.parquet", "--as-of", str(HISTORY_END.date()), "--catalog", "incentives.yaml", "--trials",
            str(args.trials), "--seed", str(args.seed_train), "--decision-confidence", str(args.decision_confidence),
            "--json-out", "uplift.json")
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")  # this process loads the model from the run's store
    return json.loads((workdir / "uplift.json").read_text())


def zero_effect(seed: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sim = simulate(customers=args.customers, seed=seed)
        write_simulation(sim, workdir)
        rng = np.random.default_rng(seed + 1000)
        arms = [i["name"] for i in sim.catalog["incentives"]][: args.arms]  # the cheapest (an e-mail) first
        n = len(sim.campaign)
        treated = rng.random(n) >= args.control_share
        incentive = np.where(treated, np.asarray(arms, dtype=object)[rng.integers(0, len(arms), n)], "no_contact")
        p = sim.truth.set_index("customer_id").loc[sim.campaign["customer_id"], "p_convert:no_contact"].to_numpy()
        campaign = sim.campaign.assign(incentive=incentive, converted=(rng.random(n) < p).astype(int),
                                       revenue=0.0)
        campaign.to_parquet(workdir / "zero.parquet")
        catalog = yaml.safe_load((workdir / "incentives.yaml").read_text())
        catalog["incentives"] = [i for i in catalog["incentives"] if i["name"] in arms]
        (workdir / "incentives.yaml").write_text(yaml.safe_dump(catalog))
        result = train(workdir, args, "zero.parquet")
        tx = normalize_transactions(sim.transactions, as_of=HISTORY_END)
        features = build_features(tx, HISTORY_END, normalize_profiles(sim.customers)).reset_index()
        runtime = load_uplift_runtime(result["model_uri"])
        decision = runtime.predict_frame(features).decision
        rule = runtime.rule
        runtime.metadata["decision"] = {}
        runtime.set_decision()  # the same boosters without the arm check or rule: what was shipped before
        unchecked = runtime.predict_frame(features).decision
        return {"seed": seed, "sent": float(np.mean(decision != CONTROL)), "rule": rule,
                "sent_unchecked": float(np.mean(unchecked != CONTROL)),
                "arms": result["validation"]["decision"]["arms"]}


def real_effect(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        write_simulation(simulate(customers=args.customers, seed=args.seed_train), workdir)
        result = train(workdir, args)
        runtime = load_uplift_runtime(result["model_uri"])
    fresh = simulate(customers=args.fresh, seed=99)
    tx = normalize_transactions(fresh.transactions, as_of=fresh.history_end)
    features = build_features(tx, fresh.history_end, normalize_profiles(fresh.customers)).reset_index()
    truth = fresh.truth.set_index("customer_id").loc[features["customer_id"]]
    cat = runtime.catalog
    p_arm = truth[[f"p_convert:{a}" for a in cat.arms]].to_numpy()
    net = cat.outcome_value * (p_arm - truth[[f"p_convert:{cat.control}"]].to_numpy()) - cat.costs - \
        cat.redemption_costs * p_arm
    prediction = runtime.predict_frame(features)

    def value(decision):
        return float(np.where(decision == CONTROL, 0.0, net[np.arange(len(net)), np.maximum(decision, 0)]).mean())

    values = {"oracle": value(decide(net)), "shipped": value(prediction.decision)}
    model_decision = decide(prediction.net_value)
    values["model without the check"] = value(model_decision)
    for rule in rule_names(list(cat.arms))[1:]:  # the baselines (they do not depend on the model's decisions)
        values[rule] = value(apply_rule(rule, model_decision, prediction.uplift, list(cat.arms)))
    return {"rule": runtime.rule, "true_net_per_customer": values,
            "validation_ipw": result["validation"]["net_policy_value"],
            "validation_dr": result["validation"]["net_policy_value_dr"],
            "sent": float(np.mean(prediction.decision != CONTROL))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--fresh", type=int, default=8000)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--seed-train", type=int, default=7)
    parser.add_argument("--control-share", type=float, default=0.4)
    parser.add_argument("--arms", type=int, default=1)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--decision-confidence", type=float, default=0.95)
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()
    print(f"zero effect: {args.customers:,} customers, {args.control_share:.0%} control, {args.arms} arm(s), "
          f"--trials {args.trials}, --decision-confidence {args.decision_confidence}")
    shares = []
    for seed in (int(s) for s in args.seeds.split(",") if s):
        out = zero_effect(seed, args)
        shares.append(out["sent"])
        print(f"  seed {seed}: sent {out['sent']:.1%} (rule {out['rule']}; without the check {out['sent_unchecked']:.1%}) "
              + "; ".join(f"{a}: {e['value'] if e['value'] is None else round(e['value'], 3)} ± "
                          f"{e['se'] if e['se'] is None else round(e['se'], 3)} on {e['sends']:,} sends"
                          for a, e in out["arms"].items()))
    print(f"  median sent {np.median(shares):.1%}")
    if not args.skip_real:
        out = real_effect(args)
        print(f"real effect: trained on {args.customers:,} (seed {args.seed_train}), decisions for a fresh "
              f"{args.fresh:,} (seed 99), true net value per customer; shipped rule {out['rule']}, "
              f"sent {out['sent']:.0%}")
        for name, v in out["true_net_per_customer"].items():
            key = "model" if name == "shipped" and out["rule"] == "model" else name
            ipw, dr = out["validation_ipw"].get(key), out["validation_dr"].get(key)
            print(f"  {name:<28}{v:+9.4f}" + (f"   (validation IPW {ipw:+.4f}, DR {dr:+.4f})" if ipw is not None
                                             else ""))


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
