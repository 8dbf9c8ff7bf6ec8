"""The simulated win-back campaign: heterogeneous incentive effects and their true outcomes.

Every arm acts on the natural 30-day outcome in two ways: it stops a share `harm` of the
customers who would have bought anyway (sleeping dogs), and it wins a share `lift` of those
who would not have. So P(convert | arm) = p0·(1 − harm) + (1 − p0)·lift, exactly, and the
observed outcomes are drawn by that coupling from the natural future.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contracts import unique_ids
from features.errors import DataError
from features.simulate.population import CHANNELS, Population, sigmoid

CATALOG = {
    "control": "no_contact",
    "outcome_value": 40.0,
    "incentives": [
        {"name": "reminder_email", "cost": 0.05, "redemption_cost": 0.0},
        {"name": "discount_10", "cost": 0.10, "redemption_cost": 6.0},
        {"name": "free_shipping", "cost": 0.10, "redemption_cost": 3.0},
    ],
}
ARMS = [CATALOG["control"]] + [item["name"] for item in CATALOG["incentives"]]
# `simulate(personalised=True)`: one more arm, a coupon for one category. It wins lapsed customers back when
# it features their true preferred category; featuring another one keeps MISMATCH_EFFECT of that effect.
PERSONALISED_INCENTIVE = {"name": "category_coupon", "cost": 0.10, "redemption_cost": 5.0, "personalised": True}
COUPON_LIFT = 0.20
MISMATCH_EFFECT = 0.3
RANDOM_FEATURED_SHARE = 0.3  # share of coupon sends featuring a uniformly drawn category (so the match is learnable)
OTHER_SUFFIX = ":other"  # truth columns of the coupon featuring another category than the preferred one
DISCOUNT = 0.10  # campaign revenue of the discount arm is net of it
REVIVAL = 0.35  # incentives reach customers who have silently dropped out this much less well
ONLINE = np.isin(CHANNELS, ["web", "app"])


@dataclass(frozen=True)
class Effects:
    """Per customer × arm (columns in ARMS order): harm, lift and the revenue factor."""

    harm: np.ndarray
    lift: np.ndarray
    revenue_factor: np.ndarray


@dataclass(frozen=True)
class Outcomes:
    arm: np.ndarray
    converted: np.ndarray
    revenue: np.ndarray


def catalog(personalised: bool = False) -> dict:
    """The simulated catalogue, with the category coupon when `personalised`."""
    extra = [dict(PERSONALISED_INCENTIVE)] if personalised else []
    return {**CATALOG, "incentives": [dict(item) for item in CATALOG["incentives"]] + extra}


def arms(personalised: bool = False) -> list[str]:
    return ARMS + ([PERSONALISED_INCENTIVE["name"]] if personalised else [])


def coupon_effects(effects: Effects, pop: Population, alive: np.ndarray, recency: np.ndarray) -> Effects:
    """`effects` with two more columns: the coupon featuring the customer's preferred category, and featuring
    any other one (the arm of a send is column len(ARMS), or len(ARMS) + 1 for a mismatched category)."""
    lapsed = sigmoid((recency - 75) / 20)
    matched = np.where(alive, 1.0, REVIVAL) * COUPON_LIFT * (0.2 + 0.8 * lapsed)
    zeros = np.zeros((len(pop), 2))
    return Effects(harm=np.hstack([effects.harm, zeros]),
                   lift=np.hstack([effects.lift, np.column_stack([matched, MISMATCH_EFFECT * matched])]),
                   revenue_factor=np.append(effects.revenue_factor, [1.0, 1.0]))


def arm_effects(pop: Population, alive: np.ndarray, recency: np.ndarray, basket: np.ndarray) -> Effects:
    """Who each incentive moves, from recency, buying rate, spend, channel and opt-in.

    Reminder: wins back recently lapsed opted-in customers a little; annoys very active ones
    and everyone who never opted in. Discount: large for lapsed price-sensitive customers.
    Free shipping: online customers with small baskets.
    """
    n = len(pop)
    lapsed = sigmoid((recency - 75) / 20)
    recently_lapsed = lapsed * (1 - sigmoid((recency - 200) / 35))
    very_active = (1 - sigmoid((recency - 20) / 7)) * sigmoid(3 * np.log(pop.purchase_rate * 25))
    reach = np.where(alive, 1.0, REVIVAL)
    opt_in = pop.email_opt_in

    harm = np.zeros((n, len(ARMS)))
    lift = np.zeros((n, len(ARMS)))
    harm[:, 1] = np.where(opt_in, 0.18 * very_active, 0.08)
    lift[:, 1] = np.where(opt_in, reach * (0.015 + 0.12 * recently_lapsed), 0.0)
    lift[:, 2] = reach * 0.30 * pop.price_sensitivity * (0.15 + 0.85 * lapsed)
    small_basket = np.clip(1.6 / (1 + basket / 50), 0.3, 1.3)
    online = np.where(ONLINE[pop.preferred_channel], 1.0, 0.1)
    lift[:, 3] = reach * 0.13 * online * small_basket * (0.3 + 0.7 * lapsed)

    factor = np.ones(len(ARMS))
    factor[2] = 1 - DISCOUNT
    return Effects(harm=harm, lift=lift, revenue_factor=factor)


def true_outcomes(effects: Effects, p_natural: np.ndarray, revenue_natural: np.ndarray, basket: np.ndarray):
    """Exact P(convert) and expected 30-day revenue for every arm (n × arms each)."""
    p0 = p_natural[:, None]
    p = p0 * (1 - effects.harm) + (1 - p0) * effects.lift
    revenue = effects.revenue_factor * (
        (1 - effects.harm) * revenue_natural[:, None] + (1 - p0) * effects.lift * basket[:, None]
    )
    return p, revenue


def run_campaign(
    rng: np.random.Generator,
    effects: Effects,
    bought: np.ndarray,
    natural_revenue: np.ndarray,
    extra_basket: np.ndarray,
    n_arms: int = len(ARMS),
    column=None,
) -> Outcomes:
    """Randomise arms uniformly, then couple each outcome to the customer's natural future.

    `bought`/`natural_revenue` are what the customer does in the window without a campaign;
    `extra_basket` is the amount of the purchase an incentive would add. `column(arm)` maps each row's arm
    to its column of `effects` (the personalised coupon's depends on the category it featured).
    """
    n = len(bought)
    rows = np.arange(n)
    arm = rng.integers(0, n_arms, n)
    draw = rng.random(n)
    col = arm if column is None else column(arm)
    kept = bought & (draw >= effects.harm[rows, col])
    won = ~bought & (draw < effects.lift[rows, col])
    revenue = np.where(kept, natural_revenue, 0.0) + np.where(won, extra_basket, 0.0)
    revenue = np.round(revenue * effects.revenue_factor[col], 2)
    return Outcomes(arm=arm, converted=(kept | won).astype(np.int64), revenue=revenue)


def net_value(p: np.ndarray) -> np.ndarray:
    """True expected net value of each arm (n × arms) relative to sending nothing."""
    costs = np.array([0.0] + [item["cost"] for item in CATALOG["incentives"]])
    redemption = np.array([0.0] + [item["redemption_cost"] for item in CATALOG["incentives"]])
    return CATALOG["outcome_value"] * (p - p[:, :1]) - costs - redemption * p


RESPOND_STREAM = 0x7265  # a separate random stream for the answers to a plan
REVENUE_SHAPE = 2.0  # revenue of a converting customer: gamma with this shape around its true mean


def respond(plan, truth, seed: int = 0):
    """The simulator's answer to a campaign plan: per planned customer, `converted` drawn with the true
    P(convert | the incentive sent) and, when converted, `revenue` drawn around the true expected revenue
    per conversion under that incentive (gamma, mean exact), so E[revenue] = expected_revenue:<arm>.

    `plan` needs customer_id and incentive (and featured_category where it sends a personalised incentive: the
    true effect depends on whether it is the customer's preferred category); `truth` is the simulator's
    truth.parquet.
    """
    for name, frame, columns in (("--plan", plan, ("customer_id", "incentive")), ("truth.parquet", truth,
                                                                                 ("customer_id",))):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"{name}: column(s) {', '.join(map(repr, missing))} not found")
    ids = unique_ids(plan["customer_id"], "--plan")
    table = truth.assign(customer_id=truth["customer_id"].astype(str)).set_index("customer_id")
    unknown = ~ids.isin(table.index)
    if unknown.any():
        raise DataError(f"--plan: {int(unknown.sum())} customer(s) not in the simulation's truth, e.g. "
                        f"{ids[unknown].iloc[0]!r}")
    arms = list(dict.fromkeys(plan["incentive"].astype(str)))
    absent = [a for a in arms if f"p_convert:{a}" not in table.columns or f"expected_revenue:{a}" not in table.columns]
    if absent:
        raise DataError(f"--plan: incentive(s) {', '.join(map(repr, absent))} are not arms of the simulation")
    rows = table.loc[ids.to_numpy()]
    sent = plan["incentive"].astype(str).to_numpy()
    other = featured_elsewhere(plan, rows, sent, [a for a in arms if f"p_convert:{a}{OTHER_SUFFIX}" in table.columns])
    p = np.empty(len(plan))
    mean_revenue = np.empty(len(plan))
    for arm in arms:
        on = sent == arm
        p[on] = rows[f"p_convert:{arm}"].to_numpy()[on]
        mean_revenue[on] = rows[f"expected_revenue:{arm}"].to_numpy()[on]
        if f"p_convert:{arm}{OTHER_SUFFIX}" in rows.columns:
            on &= other
            p[on] = rows[f"p_convert:{arm}{OTHER_SUFFIX}"].to_numpy()[on]
            mean_revenue[on] = rows[f"expected_revenue:{arm}{OTHER_SUFFIX}"].to_numpy()[on]
    rng = np.random.default_rng([seed, RESPOND_STREAM])  # not the stream a plan drew with the same seed
    converted = rng.random(len(plan)) < p
    per_conversion = np.divide(mean_revenue, p, out=np.zeros_like(p), where=p > 0)
    revenue = np.where(converted, per_conversion * rng.gamma(REVENUE_SHAPE, 1.0 / REVENUE_SHAPE, len(plan)), 0.0)
    return pd.DataFrame({"customer_id": ids.to_numpy(), "converted": converted.astype(np.int64),
                         "revenue": np.round(revenue, 2)})


def featured_elsewhere(plan: pd.DataFrame, rows: pd.DataFrame, sent: np.ndarray, personalised: list[str]) -> np.ndarray:
    """Per plan row: a personalised incentive featuring another category than the customer's preferred one."""
    on = np.isin(sent, personalised)
    if not on.any():
        return on
    if "featured_category" not in plan.columns:
        raise DataError(f"--plan: column 'featured_category' not found; it is needed for the personalised "
                        f"incentive(s) {', '.join(map(repr, personalised))}")
    featured = plan["featured_category"].astype("string").to_numpy(dtype=object, na_value=None)
    missing = on & pd.isna(featured)
    if missing.any():
        raise DataError(f"--plan: featured_category missing for {int(missing.sum())} customer(s) sent a "
                        f"personalised incentive, e.g. {plan['customer_id'].astype(str).to_numpy()[missing][0]!r}")
    return on & (featured != rows["preferred_category"].astype(str).to_numpy())
