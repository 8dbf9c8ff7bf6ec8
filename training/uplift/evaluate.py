"""Validation figures for an uplift runtime: per-arm ranking metrics and the policy value table."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
from sklift import metrics as sklift_metrics

from serving.runtime.decision.catalog import Catalog
from serving.runtime.decision import CONTROL
from serving.runtime.uplift import UpliftPrediction
from training.policy import deterministic_policy, dr_terms, dr_value, ipw_value


def quiet(metric, *args, **kwargs):
    """Call a scikit-uplift metric without its scikit-learn deprecation noise (stable_cumsum)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
        return metric(*args, **kwargs)


def qini_auc(y, uplift, treatment) -> float:
    return float(quiet(sklift_metrics.qini_auc_score, y, uplift, treatment))


def arm_rows(arm: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of arm j plus control rows, and the 1/0 treatment flag on them."""
    rows = (arm == j) | (arm == CONTROL)
    return rows, (arm[rows] == j).astype(int)


def arm_metrics(y: np.ndarray, arm: np.ndarray, uplift: np.ndarray, arms: list[str]) -> dict[str, dict[str, float]]:
    """Qini AUC, uplift AUC and uplift at top 30 % per arm, on that arm's rows + control rows."""
    out: dict[str, dict[str, float]] = {"qini_auc": {}, "uplift_auc": {}, "uplift_at_30": {}}
    for j, name in enumerate(arms):
        rows, treatment = arm_rows(arm, j)
        yj, uj = y[rows], uplift[rows, j]
        out["qini_auc"][name] = qini_auc(yj, uj, treatment)
        out["uplift_auc"][name] = float(quiet(sklift_metrics.uplift_auc_score, yj, uj, treatment))
        out["uplift_at_30"][name] = float(quiet(sklift_metrics.uplift_at_k, yj, uj, treatment, strategy="overall",
                                                k=0.3))
    return out


def realised_value(y: np.ndarray, revenue: np.ndarray | None, catalog: Catalog) -> np.ndarray:
    """What one customer's outcome was worth: revenue, or outcome_value × outcome."""
    return revenue.astype(np.float64) if revenue is not None else catalog.outcome_value * y.astype(np.float64)


def net_rewards(y: np.ndarray, revenue: np.ndarray | None, arm: np.ndarray, catalog: Catalog) -> np.ndarray:
    """Realised net reward per logged row: value − cost of the arm received − redemption cost if converted."""
    cost = np.append(catalog.costs, 0.0)[arm]            # arm −1 (control) picks the appended 0
    redemption = np.append(catalog.redemption_costs, 0.0)[arm]
    return realised_value(y, revenue, catalog) - cost - redemption * y


def policies_from_prediction(pred: UpliftPrediction) -> dict[str, np.ndarray]:
    """Standard policies as action indices (0 = control, j+1 = arm j) or probability matrices."""
    n, k = pred.uplift.shape
    best_uplift = np.argmax(pred.uplift, axis=1)
    argmax_uplift = np.where(pred.uplift[np.arange(n), best_uplift] > 0, best_uplift + 1, 0)
    policies: dict[str, np.ndarray] = {"model": pred.decision + 1, "argmax_uplift": argmax_uplift,
                                       "control": np.zeros(n, dtype=np.int64)}
    for j, name in enumerate(pred.arms):
        policies[f"all:{name}"] = np.full(n, j + 1, dtype=np.int64)
    policies["random"] = np.full((n, k + 1), 1.0 / (k + 1))
    return policies


def _matrix(policy: np.ndarray, m: int) -> np.ndarray:
    return policy if policy.ndim == 2 else deterministic_policy(policy, m)


def predicted_net_rewards(pred: UpliftPrediction, revenue: bool, catalog: Catalog) -> np.ndarray:
    """The model's expected net reward of each action (n, k + 1): control first, then each arm."""
    value_ctrl = catalog.outcome_value * pred.p_control if not revenue else pred.revenue_control
    value_arm = catalog.outcome_value * pred.p_arm if not revenue else pred.revenue_arm
    return np.column_stack([value_ctrl, value_arm - catalog.costs - catalog.redemption_costs * pred.p_arm])


def decision_terms(pred: UpliftPrediction, y: np.ndarray, revenue: np.ndarray | None, arm: np.ndarray,
                   propensity: np.ndarray, catalog: Catalog) -> np.ndarray:
    """Per row, the doubly-robust net value of the prediction's decision minus that of sending nothing: their
    mean is the decisions' net value per customer, their std / √n its (paired) standard error."""
    k = len(catalog.arms)
    action = np.where(arm == CONTROL, 0, arm + 1)
    net = net_rewards(y, revenue, arm, catalog)
    predicted = predicted_net_rewards(pred, revenue is not None, catalog)
    model = dr_terms(net, action, propensity, deterministic_policy(pred.decision + 1, k + 1), predicted)
    control = dr_terms(net, action, propensity, deterministic_policy(np.zeros(len(y), dtype=np.int64), k + 1),
                       predicted)
    return model - control


def policy_table(pred: UpliftPrediction, y: np.ndarray, revenue: np.ndarray | None, arm: np.ndarray,
                 propensity: np.ndarray, catalog: Catalog,
                 policies: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """IPW (self-normalised) and doubly-robust value of each policy, per customer.

    policy_value: expected outcome; net_policy_value: expected net value minus that of control for
    everyone (so control is 0); revenue_policy_value when a revenue outcome is given.
    """
    k = len(catalog.arms)
    action = np.where(arm == CONTROL, 0, arm + 1)
    net = net_rewards(y, revenue, arm, catalog)
    predicted_net = predicted_net_rewards(pred, revenue is not None, catalog)
    predicted_outcome = np.column_stack([pred.p_control, pred.p_arm])
    control = deterministic_policy(np.zeros(len(y), dtype=np.int64), k + 1)
    net_control = ipw_value(net, action, propensity, control)
    net_control_dr = dr_value(net, action, propensity, control, predicted_net)
    table: dict[str, dict[str, float]] = {"policy_value": {}, "net_policy_value": {}, "policy_value_dr": {},
                                          "net_policy_value_dr": {}, "send_share": {}}
    if revenue is not None:
        table["revenue_policy_value"] = {}
    for name, policy in policies.items():
        matrix = _matrix(policy, k + 1)
        table["policy_value"][name] = ipw_value(y, action, propensity, matrix)
        table["net_policy_value"][name] = ipw_value(net, action, propensity, matrix) - net_control
        table["policy_value_dr"][name] = dr_value(y, action, propensity, matrix, predicted_outcome)
        table["net_policy_value_dr"][name] = dr_value(net, action, propensity, matrix, predicted_net) - net_control_dr
        table["send_share"][name] = float(1.0 - matrix[:, 0].mean())
        if revenue is not None:
            table["revenue_policy_value"][name] = ipw_value(revenue, action, propensity, matrix)
    return table
