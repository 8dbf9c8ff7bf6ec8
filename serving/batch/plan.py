"""A campaign plan from recommendations: a global holdout, an exploration share, caps and a contact policy.

Every customer of the recommendation file gets one row: the group it falls in, the incentive actually
sent, and the exact probability (under this design) of receiving each arm. Those propensities are what
makes the campaign measurable (holdout against model, IPW) and usable as training data later: once the
model's own decisions are deployed, only the holdout and the exploration keep every arm observed.

- holdout: `hash(salt, customer_id)` in the first `control_share` of [0, 1) — the same customers for every
  campaign with the same salt, whatever is recommended;
- exploration: an `explore_share` of all customers (seeded draw among the others) gets an arm drawn
  uniformly from every arm, "send nothing" included;
- model: the others get the recommendation, subject to `max_sends` / `budget` (the rules of
  `winback recommend`, applied to the model group's sends; in the other groups' propensities the model's
  share goes to the uncapped recommendation, as whether a cap would have cut them depends on the draw);
- suppressed: a customer contacted in the last `min_days_between_contacts` days (earlier plans) is sent
  nothing, whatever group the draws put it in (holdout excepted), with propensity 1 for "send nothing".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.contracts import unique_ids
from features.errors import DataError
from serving.batch.recommend import ID_COLUMN
from serving.runtime.decision.catalog import Catalog
from serving.runtime.decision import CONTROL, decide_with_cap

DEFAULT_SALT = "winback-global-holdout-v1"
GROUPS = ("holdout", "explore", "model", "suppressed")
PROPENSITY_PREFIX = "propensity:"
REQUIRED = (ID_COLUMN, "incentive", "expected_net_value")


@dataclass(frozen=True)
class PlanDesign:
    campaign_id: str
    campaign_date: pd.Timestamp
    control_share: float = 0.10
    explore_share: float = 0.05
    salt: str = DEFAULT_SALT
    seed: int = 0
    max_sends: int | None = None
    budget: float | None = None
    min_days_between_contacts: int | None = None

    def check(self) -> None:
        for name, share in (("--control-share", self.control_share), ("--explore-share", self.explore_share)):
            if not 0.0 <= share <= 1.0:
                raise DataError(f"{name}: must be between 0 and 1, got {share}")
        if self.control_share + self.explore_share > 1.0:
            raise DataError(f"--control-share + --explore-share: {self.control_share} + {self.explore_share} "
                            f"is over 1")
        if self.max_sends is not None and self.max_sends < 0:
            raise DataError(f"--max-sends: must be >= 0, got {self.max_sends}")
        if self.budget is not None and self.budget < 0:
            raise DataError(f"--budget: must be >= 0, got {self.budget}")
        if self.min_days_between_contacts is not None and self.min_days_between_contacts < 0:
            raise DataError(f"--min-days-between-contacts: must be >= 0, got {self.min_days_between_contacts}")


def holdout_draws(ids: np.ndarray, salt: str) -> np.ndarray:
    """A uniform number in [0, 1) per customer id from blake2b(salt, id): stable across runs and machines."""
    prefix = salt.encode() + b"\x00"
    out = np.empty(len(ids), dtype=np.float64)
    for i, cid in enumerate(ids):
        digest = hashlib.blake2b(prefix + str(cid).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def arms_of(recommendations: pd.DataFrame, catalog: Catalog | None) -> tuple[list[str], str]:
    """The incentives and the control arm: the catalogue's, else the `uplift:<arm>` columns and the one
    recommended value that is not among them."""
    if catalog is not None:
        return list(catalog.arms), catalog.control
    arms = [c.split(":", 1)[1] for c in recommendations.columns if c.startswith("uplift:")]
    others = sorted(set(recommendations["incentive"].astype(str)) - set(arms))
    if not arms or len(others) != 1:
        raise DataError("--catalog is needed: the recommendations do not name the arms (uplift:<arm> columns) "
                        "and exactly one control value")
    return arms, others[0]


def check_recommendations(frame: pd.DataFrame, arms: list[str], control: str) -> None:
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"recommendations: column(s) {', '.join(map(repr, missing))} not found (expected the "
                        f"output of `winback recommend`)")
    unique_ids(frame[ID_COLUMN], "recommendations")
    unknown = sorted(set(frame["incentive"].astype(str)) - set(arms) - {control})
    if unknown:
        raise DataError(f"recommendations: incentive(s) {', '.join(map(repr, unknown[:5]))} are not in the "
                        f"catalogue ({', '.join([control, *arms])})")
    if pd.to_numeric(frame["expected_net_value"], errors="coerce").isna().any():
        raise DataError("recommendations: expected_net_value must be a number on every row")


def recently_contacted(ids: np.ndarray, history: pd.DataFrame | None, control: str, date: pd.Timestamp,
                       days: int | None) -> np.ndarray:
    """Customers sent something other than `control` in the `days` days before `date` (earlier plans)."""
    if history is None or days is None:
        return np.zeros(len(ids), dtype=bool)
    missing = [c for c in (ID_COLUMN, "campaign_date", "incentive") if c not in history.columns]
    if missing:
        raise DataError(f"--history: column(s) {', '.join(map(repr, missing))} not found (expected earlier plans)")
    when = pd.to_datetime(history["campaign_date"], errors="coerce")
    if when.isna().any():
        raise DataError("--history: campaign_date must be a date on every row")
    sent = history["incentive"].astype(str) != control
    recent = sent & (when < date) & (when > date - pd.Timedelta(days=days))
    contacted = set(history.loc[recent.to_numpy(), ID_COLUMN].astype(str))
    return np.isin(ids.astype(str), list(contacted))


def plan_campaign(recommendations: pd.DataFrame, design: PlanDesign, catalog: Catalog | None = None,
                  history: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per customer of `recommendations`: group, incentive sent, recommendation, propensities."""
    design.check()
    arms, control = arms_of(recommendations, catalog)
    check_recommendations(recommendations, arms, control)
    n, k = len(recommendations), len(arms)
    ids = recommendations[ID_COLUMN].astype(str).to_numpy()
    names = np.array([control, *arms], dtype=object)  # action index 0 = control, j + 1 = arm j
    recommended = pd.Series(recommendations["incentive"].astype(str).to_numpy()).map(
        {name: i for i, name in enumerate(names)}).to_numpy(dtype=np.int64)
    value = pd.to_numeric(recommendations["expected_net_value"]).to_numpy(dtype=np.float64)

    holdout = holdout_draws(ids, design.salt) < design.control_share
    rest = 1.0 - design.control_share
    explore_rate = design.explore_share / rest if rest > 0 else 0.0
    rng = np.random.default_rng(design.seed)
    explore = ~holdout & (rng.random(n) < explore_rate)
    explored_arm = rng.integers(0, k + 1, n)
    suppressed = ~holdout & recently_contacted(ids, history, control, design.campaign_date,
                                               design.min_days_between_contacts)
    model = ~holdout & ~explore & ~suppressed

    # the model's policy with the caps (applied to the model group's sends, as `winback recommend` applies them)
    policy = recommended.copy()
    if design.max_sends is not None or design.budget is not None:
        if design.budget is not None and catalog is None:
            raise DataError("--budget needs --catalog (the cost of each incentive)")
        costs = catalog.costs if catalog is not None else np.zeros(k)
        rows = np.flatnonzero(model & (recommended > 0))
        net = np.full((len(rows), k), -np.inf)
        net[np.arange(len(rows)), recommended[rows] - 1] = value[rows]
        capped = decide_with_cap(net, costs, max_sends=design.max_sends, budget=design.budget,
                                 decision=recommended[rows] - 1)
        policy[rows] = np.where(capped == CONTROL, 0, capped + 1)

    action = np.where(holdout | suppressed, 0, np.where(explore, explored_arm, policy))
    group = np.select([holdout, suppressed, explore], ["holdout", "suppressed", "explore"], "model")
    # exact propensities of the design: holdout (c) → control, exploration (e) → uniform over k + 1 arms,
    # model (1 − c − e) → the capped policy; a suppressed customer gets control whatever the draws
    shares = np.zeros((n, k + 1))
    shares[:, 0] += design.control_share
    shares += design.explore_share / (k + 1)
    shares[np.arange(n), policy] += 1.0 - design.control_share - design.explore_share
    shares[suppressed] = 0.0
    shares[suppressed, 0] = 1.0
    out = pd.DataFrame({
        ID_COLUMN: ids,
        "campaign_id": design.campaign_id,
        "campaign_date": np.full(n, design.campaign_date.to_datetime64()).astype("datetime64[us]"),
        "group": group,
        "incentive": names[action],
        "recommended_incentive": names[recommended],
        "expected_net_value": value,
        "propensity": shares[np.arange(n), action],
    })
    for i, name in enumerate(names):
        out[f"{PROPENSITY_PREFIX}{name}"] = shares[:, i]
    if "featured_category" in recommendations.columns:  # what a personalised incentive features, if sent
        out["featured_category"] = recommendations["featured_category"].to_numpy()
    uplift = [f"uplift:{a}" for a in arms]
    if all(c in recommendations.columns for c in uplift):  # what the model expected of the incentive sent
        expected = np.column_stack([np.zeros(n), recommendations[uplift].to_numpy(dtype=np.float64)])
        out["expected_uplift"] = expected[np.arange(n), action]
    return out


def plan_summary(plan: pd.DataFrame, catalog: Catalog | None) -> tuple[pd.DataFrame, float | None]:
    """Customers per group × incentive sent, and the total send cost (None without a catalogue)."""
    counts = pd.crosstab(plan["group"], plan["incentive"])
    if catalog is None:
        return counts, None
    cost = {inc.name: inc.cost for inc in catalog.incentives}
    return counts, float(plan["incentive"].map(cost).fillna(0.0).sum())
