"""The report's numbers from one joined customer table (scores + recommendations): the per-customer plan, the
segment matrix (lifecycle stage × value tier), the headline (its column sums), one action line per segment
and the most frequent churn reasons per segment. Pure pandas; every figure is a sum or a share of customers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.strategy.inputs import OPTIONAL_VALUES

SEGMENT = ["lifecycle_stage", "value_tier"]
REASON_PREFIX = "reason_"
TOP_REASONS = 3


def customer_plan(joined: pd.DataFrame, arms: list[str], control: str,
                  costs: dict[str, float] | None) -> pd.DataFrame:
    """Per customer: `send` (incentive is not the control), `send_cost` (NaN when costs are unknown),
    `net_value` (expected_net_value of a send, 0 otherwise), `do_not_disturb` (every arm's uplift below 0)
    and `left_out` (some arm's net value is positive but nothing is sent: a cap; needs net_value:<arm>)."""
    send = joined["incentive"].to_numpy() != control
    uplift = [f"uplift:{a}" for a in arms if f"uplift:{a}" in joined.columns]
    net = [f"net_value:{a}" for a in arms]
    out = joined.assign(
        send=send,
        send_cost=joined["incentive"].map(costs).astype(float) if costs is not None else np.nan,
        net_value=np.where(send, joined["expected_net_value"].to_numpy(dtype=float), 0.0),
        do_not_disturb=(joined[uplift].to_numpy(dtype=float).max(axis=1) < 0) if uplift else False)
    if all(c in joined.columns for c in net):
        out["left_out"] = ~send & (joined[net].to_numpy(dtype=float).max(axis=1) > 0)
    return out


def segment_table(plan: pd.DataFrame, arms: list[str], control: str) -> pd.DataFrame:
    """One row per lifecycle stage × value tier: customers, mean churn probability, expected churners, value at
    risk, sends, send cost, expected net value, do-not-disturb count, the share of each incentive (`share:<arm>`,
    control included) and the optional value columns' sums; largest value at risk first."""
    extra = [c for c in OPTIONAL_VALUES if c in plan.columns]
    groups = plan.groupby(SEGMENT, sort=True, dropna=False)
    table = groups.agg(customers=("customer_id", "size"), mean_churn_probability=("churn_probability", "mean"),
                       expected_churners=("churn_probability", "sum"), value_at_risk=("value_at_risk", "sum"),
                       sends=("send", "sum"), send_cost=("send_cost", lambda s: s.sum(min_count=1)),
                       expected_net_value=("net_value", "sum"), do_not_disturb=("do_not_disturb", "sum"),
                       **{c: (c, "sum") for c in extra})
    if "left_out" in plan.columns:
        table["left_out"] = groups["left_out"].sum()
    mix = pd.crosstab([plan[k] for k in SEGMENT], plan["incentive"]).reindex(columns=[*arms, control], fill_value=0)
    shares = mix.div(table["customers"], axis=0).add_prefix("share:")
    table = table.join(shares)
    table[["sends", "do_not_disturb"]] = table[["sends", "do_not_disturb"]].astype(np.int64)
    table = table.reset_index()
    return table.sort_values(["value_at_risk", *SEGMENT], ascending=[False, True, True], kind="stable",
                             ignore_index=True)


def headline(plan: pd.DataFrame, campaign: dict | None = None) -> dict:
    """The page's first line, summed over customers (the segment matrix's columns add up to it)."""
    known = not plan["send_cost"].isna().any()
    out = {"customers": int(len(plan)), "expected_churners": float(plan["churn_probability"].sum()),
           "mean_churn_probability": float(plan["churn_probability"].mean()),
           "value_at_risk": float(plan["value_at_risk"].sum()), "sends": int(plan["send"].sum()),
           "send_cost": float(plan["send_cost"].sum()) if known else None,
           "expected_net_value": float(plan["net_value"].sum()),
           "do_not_disturb": int(plan["do_not_disturb"].sum()),
           "sends_by_incentive": {str(k): int(v) for k, v in plan.loc[plan["send"], "incentive"].value_counts().items()}}
    out.update({c: float(plan[c].sum()) for c in OPTIONAL_VALUES if c in plan.columns})
    out["campaign"] = campaign
    return out


def segment_name(stage: str, tier: str) -> str:
    return f"{tier}-value {stage}".replace("_", "-")


def _percent(share: float) -> str:
    return f"{100 * share:.0f}\u00a0%" if share >= 0.005 else "<1\u00a0%"


def _customers(n) -> str:
    return f"{int(n):,} customer{'' if n == 1 else 's'}"


def action(row: pd.Series, arms: list[str]) -> dict:
    """What to do with one segment, from its numbers: the incentive mix and its expected net value per customer
    sent, or why nothing is sent; customers every incentive would put off are flagged 'do not disturb'."""
    dnd = int(row["do_not_disturb"])
    if row["sends"] > 0:
        mix = sorted(((row[f"share:{a}"], a) for a in arms if row[f"share:{a}"] > 0), reverse=True)
        per_send = row["expected_net_value"] / row["sends"]
        kind = "send"
        line = (", ".join(f"{a} to {_percent(s)}" for s, a in mix)
                + f" — expected net value {per_send:+.2f} per customer sent")
    elif dnd == row["customers"]:
        kind, line = "do_not_disturb", "send nothing — every incentive lowers their return (do not disturb)"
    elif row.get("left_out", 0) > 0:
        kind = "send_nothing"
        line = f"send nothing — worth it for {_customers(row['left_out'])}, but outside the budget"
    else:
        kind, line = "send_nothing", "send nothing — uplift below cost"
    if kind == "send" and row.get("left_out", 0) > 0:
        line += f"; {int(row['left_out']):,} more worth it but outside the budget"
    if dnd and kind != "do_not_disturb":
        line += f"; {dnd:,} do not disturb (every incentive lowers their return)"
    return {"lifecycle_stage": row["lifecycle_stage"], "value_tier": row["value_tier"],
            "segment": segment_name(row["lifecycle_stage"], row["value_tier"]), "action": kind,
            "line": f"{segment_name(row['lifecycle_stage'], row['value_tier'])}: {line}"}


def actions(segments: pd.DataFrame, arms: list[str]) -> list[dict]:
    """One action per segment row, in the matrix's order (a handful of segments, not customers)."""
    return [action(row, arms) for _, row in segments.iterrows()]


def reason_columns(frame: pd.DataFrame) -> list[str]:
    found = [c for c in frame.columns if c.startswith(REASON_PREFIX) and c[len(REASON_PREFIX):].isdigit()]
    return sorted(found, key=lambda c: int(c[len(REASON_PREFIX):]))


def reasons_table(plan: pd.DataFrame, segments: pd.DataFrame, top: int = TOP_REASONS) -> pd.DataFrame | None:
    """The `top` most frequent first reasons (reason_1, the feature raising churn risk most) per segment, as a
    share of the segment's customers, in the segment matrix's order; None when the scores carry no reasons."""
    if "reason_1" not in plan.columns:
        return None
    first = plan.dropna(subset=["reason_1"])
    counts = first.groupby([*SEGMENT, "reason_1"], sort=True).size().rename("customers").reset_index()
    counts = counts.merge(segments[[*SEGMENT, "customers"]].rename(columns={"customers": "segment_customers"}),
                          on=SEGMENT)
    counts["share"] = counts["customers"] / counts["segment_customers"]
    order = segments[SEGMENT].assign(segment_rank=np.arange(len(segments)))
    counts = counts.merge(order, on=SEGMENT).sort_values(["segment_rank", "customers", "reason_1"],
                                                         ascending=[True, False, True], kind="stable")
    counts["rank"] = counts.groupby("segment_rank").cumcount() + 1
    counts = counts[counts["rank"] <= top].rename(columns={"reason_1": "reason"})
    return counts[[*SEGMENT, "rank", "reason", "customers", "share"]].reset_index(drop=True)
