"""Which arms the shipped decision may send, and which rule it ships — both decided on the validation rows,
which neither the fit nor the choice of learner and parameters has seen.

`validate_arms` asks, per arm, whether the validation customers the model would send it to are worth more sent
than not: the realised net value (outcome value − cost − redemption) of those of them who got the arm against
those who got nothing, self-normalised inverse-propensity weighted, with its standard error. An arm is kept only
when the lower confidence bound of that difference is above zero, at a one-sided confidence split between the
arms (Bonferroni: a campaign without any effect passes no arm in 95 % of cases, however many arms). Customers of
a dropped arm are decided again among the others, so the check is repeated until no arm is dropped. A model whose
uplift estimates chase noise then sends nothing for nothing; a model whose targeting pays keeps its decisions as
they are: the estimates themselves are not shrunk (on the simulator, rescaling them by a calibration fitted out of
fold lost a third of the true value: a few thousand rows cannot measure a slope that is nonetheless real).

Why not the tuning folds, which hold more rows: the trial shipped is the one whose out-of-fold value on those rows
was highest, so its value there is biased upwards — on campaigns without any effect the check passed arms at
2.4 standard errors. `choose_rule` compares the model's decisions with the baselines the training table prints on
the same validation rows (paired, the same customers): a baseline replaces the model when it is worth more by
more than its confidence bound, so that noise in a few thousand rows does not ship a rule that loses money.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import NormalDist

import numpy as np

from serving.runtime.decision import CONTROL, MODEL_RULE, apply_rule, decide, rule_names
from serving.runtime.decision.catalog import Catalog
from training.uplift.evaluate import net_rewards
from training.policy import deterministic_policy, difference, ipw_estimate

DEFAULT_CONFIDENCE = 0.95
MIN_ROWS = 20  # rows of the arm and of control among its sends, below which an arm cannot be shown to pay


def _weighted(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Self-normalised weighted mean and its standard error (effective sample size (Σw)² / Σw²)."""
    mean = float(np.sum(weights * values) / weights.sum())
    var = float(np.sum(weights * (values - mean) ** 2) / weights.sum())
    return mean, np.sqrt(var / (weights.sum() ** 2 / np.sum(weights ** 2)))


def send_evidence(reward: np.ndarray, arm: np.ndarray, propensity: np.ndarray, decision: np.ndarray, j: int) -> dict:
    """Net value per customer of sending arm j to the customers `decision` sends it to, over sending them
    nothing, from those of them who got j and those who got nothing."""
    sent = decision == j
    got, none = sent & (arm == j), sent & (arm == CONTROL)
    out = {"sends": int(sent.sum()), "rows_arm": int(got.sum()), "rows_control": int(none.sum())}
    if got.sum() < MIN_ROWS or none.sum() < MIN_ROWS:
        return {**out, "value": None, "se": None}
    a, se_a = _weighted(reward[got], 1.0 / propensity[got])
    c, se_c = _weighted(reward[none], 1.0 / propensity[none])
    return {**out, "value": a - c, "se": float(np.hypot(se_a, se_c))}


def validate_arms(net_value: np.ndarray, y: np.ndarray, revenue: np.ndarray | None, arm: np.ndarray,
                  propensity: np.ndarray, catalog: Catalog,
                  confidence: float = DEFAULT_CONFIDENCE) -> tuple[list[str], dict[str, dict]]:
    """(the arms whose sends pay at `confidence`, the evidence per arm) from out-of-fold net values."""
    k = len(catalog.arms)
    z = z_value(confidence, k)
    reward = net_rewards(y, revenue, arm, catalog)
    allowed = np.ones(k, dtype=bool)
    evidence: dict[str, dict] = {}
    while True:
        decision = decide(np.where(allowed, net_value, -np.inf))
        dropped = False
        for j in np.flatnonzero(allowed):
            seen = send_evidence(reward, arm, propensity, decision, j)
            lower = None if seen["value"] is None else seen["value"] - z * seen["se"]
            evidence[catalog.arms[j]] = {**seen, "lower_bound": lower, "validated": lower is not None and lower > 0}
            if not evidence[catalog.arms[j]]["validated"]:  # no sends out of fold is no evidence either
                allowed[j], dropped = False, True
        if not dropped:
            break
    for j in np.flatnonzero(~allowed):
        evidence[catalog.arms[j]]["validated"] = False
    return [a for a, ok in zip(catalog.arms, allowed) if ok], evidence


def rule_decisions(net_value: np.ndarray, uplift: np.ndarray, arms: list[str], validated: list[str]) -> dict:
    """Every rule's decision per row (arm index or CONTROL), the model's over its validated arms."""
    allowed = np.array([a in validated for a in arms], dtype=bool)
    model = decide(np.where(allowed, net_value, -np.inf))
    return {rule: apply_rule(rule, model, uplift, arms) for rule in rule_names(arms)}


def z_value(confidence: float, tests: int) -> float:
    """One-sided normal quantile at `confidence`, split between `tests` (Bonferroni); 0 at a confidence of 0.5
    (the point estimate decides)."""
    if confidence <= 0.5:
        return 0.0
    return NormalDist().inv_cdf(1.0 - (1.0 - confidence) / max(tests, 1))


def choose_rule(decisions: Mapping[str, np.ndarray], y: np.ndarray, revenue: np.ndarray | None, arm: np.ndarray,
                propensity: np.ndarray, catalog: Catalog,
                confidence: float = DEFAULT_CONFIDENCE) -> tuple[str, dict[str, dict]]:
    """The rule to ship and, per rule, its IPW net value per customer over sending nothing and its paired
    difference from the model's (± se). The model's decisions ship unless a baseline beats them by more than
    z·se (one-sided at `confidence`, split between the baselines); then the baseline with the highest value
    among those that do. `random`, a mixture of control and the single arms, is never a candidate."""
    k = len(catalog.arms)
    action = np.where(arm == CONTROL, 0, arm + 1)
    reward = net_rewards(y, revenue, arm, catalog)
    estimates = {rule: ipw_estimate(reward, action, propensity, deterministic_policy(d + 1, k + 1))
                 for rule, d in decisions.items()}
    control = estimates["control"]
    model = estimates[MODEL_RULE]
    baselines = [r for r in decisions if r != MODEL_RULE]
    z = z_value(confidence, len(baselines))
    table: dict[str, dict] = {}
    for rule, estimate in estimates.items():
        value = difference(estimate, control)[0]
        diff, se = difference(estimate, model)
        table[rule] = {"net_policy_value": value, "minus_model": diff, "minus_model_se": se,
                       "beats_model": rule != MODEL_RULE and diff - z * se > 0}
    better = [r for r in baselines if table[r]["beats_model"]]
    rule = max(better, key=lambda r: table[r]["net_policy_value"]) if better else MODEL_RULE
    return rule, table
