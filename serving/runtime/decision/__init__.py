"""Which incentive to send: net value per arm, the argmax decision, and a batch-wide send/budget cap.

Pure numpy on (n, k) arrays whose columns follow the catalogue's arm order. A decision is an arm
index in 0..k-1, or CONTROL (-1) for "send nothing".
"""

from __future__ import annotations

import numpy as np

CONTROL = -1


def net_values(uplift: np.ndarray, p_arm: np.ndarray, costs: np.ndarray, redemption_costs: np.ndarray,
               outcome_value: float | None = None, revenue_uplift: np.ndarray | None = None) -> np.ndarray:
    """Expected net value of each arm per customer, (n, k):

    outcome_value·uplift_a − cost_a − redemption_cost_a·p_a, where uplift_a = p_a − p_control; with a
    revenue outcome, `revenue_uplift` (n, k) replaces outcome_value·uplift_a.
    """
    if revenue_uplift is not None:
        gain = np.asarray(revenue_uplift, dtype=np.float64)
    else:
        if outcome_value is None:
            raise ValueError("outcome_value is needed when there is no revenue uplift")
        gain = outcome_value * np.asarray(uplift, dtype=np.float64)
    return gain - np.asarray(costs, dtype=np.float64) - np.asarray(redemption_costs, dtype=np.float64) * p_arm


def decide(net_value: np.ndarray) -> np.ndarray:
    """The arm with the highest strictly positive net value per row, else CONTROL.

    Ties go to the first arm in catalogue order (np.argmax returns the first maximum).
    """
    net_value = np.asarray(net_value, dtype=np.float64)
    if net_value.shape[1] == 0:
        return np.full(net_value.shape[0], CONTROL, dtype=np.int64)
    best = np.argmax(net_value, axis=1)
    best_value = np.take_along_axis(net_value, best[:, None], axis=1)[:, 0]
    return np.where(best_value > 0, best, CONTROL).astype(np.int64)


MODEL_RULE = "model"


def rule_names(arms: list[str]) -> list[str]:
    """The decision rules a model may ship: its own net-value decision, and the baselines it is compared with."""
    return [MODEL_RULE, "argmax_uplift", "control", *(f"all:{arm}" for arm in arms)]


def apply_rule(rule: str | None, decision: np.ndarray, uplift: np.ndarray, arms: list[str]) -> np.ndarray:
    """The decision under a shipped rule: `model` (or None) keeps `decision` (the net-value argmax);
    `argmax_uplift` sends the arm of highest positive uplift whatever it costs; `control` sends nothing;
    `all:<arm>` sends that arm to everyone."""
    if rule is None or rule == MODEL_RULE:
        return decision
    n = len(decision)
    if rule == "control":
        return np.full(n, CONTROL, dtype=np.int64)
    if rule == "argmax_uplift":
        if uplift.shape[1] == 0:
            return np.full(n, CONTROL, dtype=np.int64)
        best = np.argmax(uplift, axis=1)
        return np.where(uplift[np.arange(n), best] > 0, best, CONTROL).astype(np.int64)
    if rule.startswith("all:") and rule[4:] in arms:
        return np.full(n, arms.index(rule[4:]), dtype=np.int64)
    raise ValueError(f"unknown decision rule {rule!r} (known: {', '.join(rule_names(arms))})")


def chosen_values(values: np.ndarray, decision: np.ndarray, control_value: float = 0.0) -> np.ndarray:
    """values[i, decision[i]], or `control_value` where the decision is CONTROL."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[1] == 0:
        return np.full(len(decision), control_value)
    picked = np.take_along_axis(values, np.maximum(decision, 0)[:, None], axis=1)[:, 0]
    return np.where(decision == CONTROL, control_value, picked)


def decide_with_cap(net_values: np.ndarray, costs: np.ndarray, max_sends: int | None = None,
                    budget: float | None = None, decision: np.ndarray | None = None) -> np.ndarray:
    """Argmax decision (or the given `decision`, e.g. a model's shipped rule), then the sends that fit the
    caps; every other row goes to CONTROL.

    - `max_sends` (a count cap): the N sends with the highest expected net value (ties by row order).
    - `budget` (a money cap on the total send cost, the sum of `costs` of the chosen arms): sends ranked
      by net value per unit of cost (a free send first; then net value, then row order), and the longest
      prefix of that ranking whose cost fits is kept — the greedy answer to "most value for the money".
    - Both: the budget's selection, then at most `max_sends` of it, highest net value first; both hold.
    """
    net_values = np.asarray(net_values, dtype=np.float64)
    costs = np.asarray(costs, dtype=np.float64)
    if max_sends is not None and max_sends < 0:
        raise ValueError("max_sends must be >= 0")
    if budget is not None and budget < 0:
        raise ValueError("budget must be >= 0")
    if net_values.ndim != 2 or net_values.shape[1] != len(costs):
        raise ValueError(f"net_values has shape {net_values.shape}, expected (n, {len(costs)})")
    decision = decide(net_values) if decision is None else np.asarray(decision, dtype=np.int64)
    if max_sends is None and budget is None:
        return decision
    sends = np.flatnonzero(decision != CONTROL)
    arm = decision[sends]
    value = net_values[sends, arm]
    keep = np.ones(len(sends), dtype=bool)
    if budget is not None:
        cost = costs[arm]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(cost > 0, value / np.where(cost > 0, cost, 1.0), np.inf)
        order = np.lexsort((sends, -value, -ratio))
        spent = np.cumsum(cost[order])  # non-decreasing, so this keeps a prefix of the ranking
        keep[order[spent > budget * (1 + 1e-12) + 1e-12]] = False  # absorb float summation error only
    if max_sends is not None:
        candidates = np.flatnonzero(keep)
        by_value = candidates[np.lexsort((sends[candidates], -value[candidates]))]
        keep[by_value[max_sends:]] = False
    capped = decision.copy()
    capped[sends[~keep]] = CONTROL
    return capped
