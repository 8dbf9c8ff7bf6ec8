"""`winback campaign evaluate`: what a planned campaign really returned, with 95 % intervals, tracked in MLflow.

The plan's groups are random by design: the holdout by a salted hash of the customer id, exploration by a
seeded draw, the model group is the rest. So each comparison below is a difference of means between random
groups of the same population, and its interval is the usual normal one (Welch standard error):
- per arm: customers sent it, conversion rate and revenue per customer; its realised uplift is measured
  among the customers the model recommended it to — model group (sent it) against holdout (sent nothing);
- the model's decisions: net value per customer of the model group against the holdout (incremental
  conversions likewise), i.e. what applying the model to everyone returns over sending nothing;
- the best single arm to everyone, from the exploration group alone (uniform arms): each arm's net value
  against "send nothing" (exploration's control rows and the holdout); wider, as exploration is small;
- calibration: by decile of the plan's expected_net_value, the expected against the realised net value
  (model group against holdout in the same decile).
Suppressed customers (contact policy) are left out: nothing was randomised for them.

Net value of a customer: revenue when the outcomes have a `revenue` column (else `outcome_value` × converted),
minus the cost of the incentive sent and its redemption cost when converted (catalogue; without one, costs
are 0 and a conversion is worth 1).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.contracts import unique_ids
from features.errors import DataError
from features.io import write_table, write_text_atomic
from serving.batch.plan import GROUPS, PROPENSITY_PREFIX
from serving.batch.recommend import ID_COLUMN
from serving.runtime.decision.catalog import Catalog

Z95 = 1.959963984540054
DECILES = 10


@dataclass(frozen=True)
class Campaign:
    """A plan joined to its outcomes, checked."""

    frame: pd.DataFrame  # plan columns + converted (+ revenue), one row per customer
    control: str
    arms: list[str]
    value_basis: str      # "revenue" or "conversions"


def _check_ids(frame: pd.DataFrame, name: str) -> pd.Series:
    if ID_COLUMN not in frame.columns:
        raise DataError(f"{name}: column {ID_COLUMN!r} not found")
    return unique_ids(frame[ID_COLUMN], name)


def join(plan: pd.DataFrame, outcomes: pd.DataFrame, catalog: Catalog | None) -> Campaign:
    """Check the plan and the outcomes (one line naming the problem) and join them by customer id."""
    missing = [c for c in ("campaign_id", "group", "incentive", "recommended_incentive", "expected_net_value",
                           "propensity") if c not in plan.columns]
    if missing:
        raise DataError(f"--plan: column(s) {', '.join(map(repr, missing))} not found (expected the output of "
                        f"`winback campaign plan`)")
    if "converted" not in outcomes.columns:
        raise DataError("--outcomes: column 'converted' not found")
    plan_ids, outcome_ids = _check_ids(plan, "--plan"), _check_ids(outcomes, "--outcomes")
    stray = ~outcome_ids.isin(plan_ids)
    if stray.any():
        raise DataError(f"--outcomes: {int(stray.sum())} customer(s) are not in the plan, e.g. "
                        f"{outcome_ids[stray].iloc[0]!r}")
    absent = ~plan_ids.isin(outcome_ids)
    if absent.any():
        raise DataError(f"--outcomes: no outcome for {int(absent.sum())} planned customer(s), e.g. "
                        f"{plan_ids[absent].iloc[0]!r}")
    groups = set(plan["group"].astype(str)) - set(GROUPS)
    if groups:
        raise DataError(f"--plan: unknown group(s) {', '.join(sorted(groups))}; expected {', '.join(GROUPS)}")
    if "holdout" not in set(plan["group"].astype(str)):
        raise DataError("--plan: no holdout customers; nothing to measure the campaign against")
    propensity = pd.to_numeric(plan["propensity"], errors="coerce")
    if propensity.isna().any() or not ((propensity > 0) & (propensity <= 1)).all():
        raise DataError("--plan: propensity must be in (0, 1] on every row")
    converted = pd.to_numeric(outcomes["converted"], errors="coerce")
    if converted.isna().any() or not converted.isin([0, 1]).all():
        raise DataError("--outcomes: converted must be 0 or 1 on every row")
    out = outcomes.assign(**{ID_COLUMN: outcome_ids, "converted": converted.astype(np.int64)})
    keep = [ID_COLUMN, "converted"] + (["revenue"] if "revenue" in outcomes.columns else [])
    frame = plan.assign(**{ID_COLUMN: plan_ids}).merge(out[keep], on=ID_COLUMN, how="left", validate="one_to_one")
    if "revenue" in frame.columns:
        revenue = pd.to_numeric(frame["revenue"], errors="coerce")
        if revenue.isna().any():
            raise DataError("--outcomes: revenue must be a number on every row")
        frame["revenue"] = revenue.astype(np.float64)
    arms_in_plan = [c[len(PROPENSITY_PREFIX):] for c in plan.columns if c.startswith(PROPENSITY_PREFIX)]
    if catalog is not None:
        control, arms = catalog.control, list(catalog.arms)
        unknown = sorted(set(frame["incentive"].astype(str)) - {control, *arms})
        if unknown:
            raise DataError(f"--plan: incentive(s) {', '.join(map(repr, unknown))} are not in the catalogue")
    elif arms_in_plan:
        control, arms = arms_in_plan[0], arms_in_plan[1:]
    else:
        raise DataError("--catalog is needed: the plan has no propensity:<arm> columns naming the arms")
    basis = "revenue" if "revenue" in frame.columns else "conversions"
    return Campaign(frame, control, arms, basis)


def net_values(campaign: Campaign, catalog: Catalog | None) -> np.ndarray:
    """Realised net value per customer (see the module docstring)."""
    f = campaign.frame
    y = f["converted"].to_numpy(dtype=np.float64)
    if campaign.value_basis == "revenue":
        value = f["revenue"].to_numpy(dtype=np.float64)
    else:
        value = y * (catalog.outcome_value if catalog is not None and catalog.outcome_value is not None else 1.0)
    if catalog is None:
        return value
    from training.uplift.evaluate import net_rewards

    # `join` checked every incentive sent against the catalogue: arm index, −1 for control
    lookup = {name: j for j, name in enumerate(catalog.arms)} | {catalog.control: -1}
    arm = f["incentive"].astype(str).map(lookup).to_numpy(dtype=np.int64)
    return net_rewards(y, value, arm, catalog)  # the realised value stands in for revenue


def mean_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """mean(a) − mean(b) with its Welch standard error and 95 % interval (None where a side is too small)."""
    if len(a) < 2 or len(b) < 2:
        return {"estimate": None, "se": None, "ci_low": None, "ci_high": None, "n": int(len(a)), "n_reference": int(len(b))}
    diff = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)))
    return {"estimate": diff, "se": se, "ci_low": diff - Z95 * se, "ci_high": diff + Z95 * se,
            "n": int(len(a)), "n_reference": int(len(b))}


def evaluate_campaign(campaign: Campaign, catalog: Catalog | None) -> dict:
    """Every figure of the JSON document (see the module docstring)."""
    f = campaign.frame
    group = f["group"].astype(str).to_numpy()
    sent = f["incentive"].astype(str).to_numpy()
    recommended = f["recommended_incentive"].astype(str).to_numpy()
    y = f["converted"].to_numpy(dtype=np.float64)
    revenue = f["revenue"].to_numpy(dtype=np.float64) if "revenue" in f.columns else None
    net = net_values(campaign, catalog)
    holdout, model, explore = group == "holdout", group == "model", group == "explore"
    active = group != "suppressed"

    arms: dict[str, dict] = {}
    for arm in [campaign.control, *campaign.arms]:
        got = active & (sent == arm)
        entry = {"n": int(got.sum()), "rate": float(y[got].mean()) if got.any() else None,
                 "revenue_per_customer": float(revenue[got].mean()) if revenue is not None and got.any() else None}
        if arm == campaign.control:
            entry.update({"uplift": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n_compared": int(holdout.sum()),
                          "expected_uplift": 0.0})
        else:
            # among the customers the model recommended this arm to: sent it (model group) vs held out
            treated, held = model & (sent == arm), holdout & (recommended == arm)
            d = mean_difference(y[treated], y[held])
            entry.update({"uplift": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                          "n_compared": d["n"], "n_holdout": d["n_reference"],
                          "expected_uplift": float(f.loc[treated, "expected_uplift"].mean())
                          if "expected_uplift" in f.columns and treated.any() else None})
        arms[arm] = entry

    value = mean_difference(net[model], net[holdout])
    conversions = mean_difference(y[model], y[holdout])
    n_model = int(model.sum())
    policy = {"incremental_value": value["estimate"], "ci_low": value["ci_low"], "ci_high": value["ci_high"],
              "se": value["se"], "total_incremental_value": None if value["estimate"] is None
              else value["estimate"] * n_model,
              "incremental_conversions": None if conversions["estimate"] is None
              else conversions["estimate"] * n_model,
              "incremental_conversions_ci": None if conversions["estimate"] is None
              else [conversions["ci_low"] * n_model, conversions["ci_high"] * n_model],
              "n_model": n_model, "n_holdout": int(holdout.sum()),
              "expected_value": float(f.loc[model, "expected_net_value"].mean()) if n_model else None}
    policy["interval_includes_zero"] = None if value["estimate"] is None else \
        bool(value["ci_low"] <= 0.0 <= value["ci_high"])

    nothing = (explore & (sent == campaign.control)) | holdout
    singles = {arm: mean_difference(net[explore & (sent == arm)], net[nothing]) for arm in campaign.arms}
    scored = {a: d for a, d in singles.items() if d["estimate"] is not None}
    best_single = None
    if scored:
        best = max(scored, key=lambda a: scored[a]["estimate"])
        d = scored[best]
        best_single = {"arm": best, "incremental_value": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                       "n_explore": d["n"], "interval_includes_zero": bool(d["ci_low"] <= 0.0 <= d["ci_high"]),
                       "all_arms": {a: {"incremental_value": v["estimate"], "ci_low": v["ci_low"],
                                        "ci_high": v["ci_high"], "n": v["n"]} for a, v in singles.items()}}
        best_single["model_minus_best_single"] = None if value["estimate"] is None else \
            value["estimate"] - d["estimate"]

    calibration = _calibration(f["expected_net_value"].to_numpy(dtype=np.float64), net, model, holdout)
    groups = {g: int((group == g).sum()) for g in GROUPS}
    return {"campaign_id": str(f["campaign_id"].iloc[0]), "customers": int(len(f)), "value_basis": campaign.value_basis,
            "groups": groups, "arms": arms, "policy": policy, "best_single_arm": best_single,
            "calibration": calibration}


def _calibration(expected: np.ndarray, net: np.ndarray, model: np.ndarray, holdout: np.ndarray) -> list[dict]:
    """Expected vs realised net value per customer by decile of expected_net_value (model vs holdout)."""
    rows = model | holdout
    if rows.sum() < DECILES * 4:
        return []
    edges = np.unique(np.quantile(expected[rows], np.linspace(0, 1, DECILES + 1)))
    decile = np.clip(np.searchsorted(edges, expected, side="right") - 1, 0, len(edges) - 2)
    out = []
    for d in range(len(edges) - 1):
        m, h = model & (decile == d), holdout & (decile == d)
        diff = mean_difference(net[m], net[h])
        out.append({"decile": d + 1, "expected": float(expected[m].mean()) if m.any() else None,
                    "realised": diff["estimate"], "ci_low": diff["ci_low"], "ci_high": diff["ci_high"],
                    "n_model": int(m.sum()), "n_holdout": int(h.sum())})
    return out


def training_table(campaign: Campaign) -> pd.DataFrame:
    """The campaign as training data for `winback train uplift`: one row per randomised customer (suppressed
    ones left out) with the arm received, the outcomes and the logged propensity of that arm."""
    f = campaign.frame[campaign.frame["group"].astype(str) != "suppressed"]
    columns = [ID_COLUMN, "campaign_id", "campaign_date", "incentive", "converted"] + \
        (["revenue"] if "revenue" in f.columns else []) + ["propensity", "featured_category"]
    return f[[c for c in columns if c in f.columns]].reset_index(drop=True)


def _plots(result: dict, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    arms = [a for a, v in result["arms"].items() if a != next(iter(result["arms"])) and v["uplift"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(arms))
    realised = np.array([result["arms"][a]["uplift"] for a in arms])
    low = realised - np.array([result["arms"][a]["ci_low"] for a in arms])
    high = np.array([result["arms"][a]["ci_high"] for a in arms]) - realised
    ax.bar(x - 0.2, realised, 0.4, yerr=[low, high], capsize=4, label="realised (95 % CI)")
    ax.bar(x + 0.2, [result["arms"][a]["expected_uplift"] or 0.0 for a in arms], 0.4, label="expected by the model")
    ax.set_xticks(x, arms)
    ax.set_ylabel("conversion uplift vs holdout")
    paths.append(_save(fig, ax, "Realised vs expected uplift per arm (customers recommended it)",
                       directory / "uplift_per_arm.png"))
    if result["calibration"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        cal = result["calibration"]
        d = [c["decile"] for c in cal]
        ax.plot(d, [c["expected"] for c in cal], "o-", label="expected")
        ax.errorbar(d, [c["realised"] for c in cal],
                    yerr=[[c["realised"] - c["ci_low"] for c in cal], [c["ci_high"] - c["realised"] for c in cal]],
                    fmt="s-", capsize=3, label="realised (model vs holdout, 95 % CI)")
        ax.set_xlabel("decile of expected_net_value")
        ax.set_ylabel("net value per customer")
        paths.append(_save(fig, ax, "Realised net value by decile of expected net value",
                           directory / "net_value_by_decile.png"))
    return paths


def _save(fig, ax, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.axhline(0, color="grey", lw=0.8)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_campaign(result: dict, plan: pd.DataFrame, plan_path: Path, tracking) -> str:
    """One MLflow run in the campaigns experiment: plan hash, counts, every figure, the two plots."""
    import mlflow

    from training.tracking import describe_run, frame_hash, metric_key

    tracking.activate()
    with mlflow.start_run(run_name=f"campaign-{result['campaign_id']}") as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"command": "campaign evaluate", "campaign_id": result["campaign_id"]})
        mlflow.log_params({"plan": str(plan_path), "plan_hash": frame_hash(plan), "customers": result["customers"],
                           "value_basis": result["value_basis"]})
        metrics = {f"customers.{g}": n for g, n in result["groups"].items()}
        for arm, v in result["arms"].items():
            for key in ("n", "rate", "uplift", "ci_low", "ci_high", "expected_uplift"):
                if v.get(key) is not None:
                    metrics[f"arm.{arm}.{key}"] = v[key]
        for key in ("incremental_value", "ci_low", "ci_high", "incremental_conversions", "expected_value"):
            if result["policy"].get(key) is not None:
                metrics[f"policy.{key}"] = result["policy"][key]
        if result["best_single_arm"]:
            for key in ("incremental_value", "ci_low", "ci_high"):
                metrics[f"best_single_arm.{key}"] = result["best_single_arm"][key]
            mlflow.set_tag("best_single_arm", result["best_single_arm"]["arm"])
        mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})
        for path in _plots(result, Path(tmp)):
            mlflow.log_artifact(str(path), "plots")
        mlflow.log_dict(result, "campaign_evaluation.json")
        p = result["policy"]
        if p["incremental_value"] is not None:
            describe_run((
                f"Campaign {result['campaign_id']}: {result['customers']:,} customers. The model's decisions returned "
                f"{p['incremental_value']:.4f} net per customer over the holdout (95 % CI {p['ci_low']:.4f} to "
                f"{p['ci_high']:.4f}{'; the interval includes zero' if p['interval_includes_zero'] else ''})."))
        return run.info.run_id


def write_outputs(result: dict, json_out: Path, training: pd.DataFrame | None, training_out: Path | None) -> None:
    if training_out is not None and training is not None:
        write_table(training, training_out)
    write_text_atomic(json_out, json.dumps(result, indent=2))
