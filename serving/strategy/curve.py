"""The budget curve: expected net value against send budget, sends ranked by net value per unit of cost.

The candidates are every customer's best arm when the recommendations carry `net_value:<arm>` (so the curve
goes past the plan: it peaks where the sends stop paying and falls to break-even), else the plan's own sends.
The ranking is the one `--budget` uses in `serving.runtime.decision.decide_with_cap` (free sends first, then
net value per cost, then net value), with losing free sends last.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_POINTS = 400


def candidates(plan: pd.DataFrame, arms: list[str], costs: dict[str, float]) -> tuple[np.ndarray, np.ndarray, str]:
    """(net value, cost) of one candidate send per customer, and what the candidates are."""
    columns = [f"net_value:{a}" for a in arms]
    if all(c in plan.columns for c in columns):
        net = plan[columns].to_numpy(dtype=float)
        best = np.argmax(net, axis=1)
        value = np.take_along_axis(net, best[:, None], axis=1)[:, 0]
        return value, np.array([costs[a] for a in arms])[best], "every customer's best arm"
    sends = plan["send"].to_numpy()
    return (plan.loc[sends, "net_value"].to_numpy(dtype=float), plan.loc[sends, "send_cost"].to_numpy(dtype=float),
            "the plan's sends (no net_value:<arm> columns)")


def ranking(value: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Order of the candidates: net value per unit of cost, highest first (a free send that gains first, one
    that loses last), ties by net value then position."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(cost > 0, value / np.where(cost > 0, cost, 1.0), np.sign(value) * np.inf)
    return np.lexsort((np.arange(len(value)), -value, -ratio))


def budget_curve(value: np.ndarray, cost: np.ndarray, chosen_budget: float, chosen_value: float) -> dict:
    """Cumulative cost and cumulative net value along the ranking from (0, 0); the peak; the break-even (the
    first budget past the peak where the cumulative net value is back at or below 0, None if it never is);
    the plan's own (budget, net value) as the chosen point."""
    order = ranking(value, cost)
    spent = np.concatenate([[0.0], np.cumsum(cost[order])])
    gained = np.concatenate([[0.0], np.cumsum(value[order])])
    peak = int(np.argmax(gained))
    after = np.flatnonzero(gained[peak + 1:] <= 0)
    even = None if peak == 0 or not len(after) else float(spent[peak + 1 + after[0]])
    return {"candidates": int(len(value)), "cost": spent, "net_value": gained,
            "peak_budget": float(spent[peak]), "peak_net_value": float(gained[peak]),
            "break_even_budget": even, "chosen_budget": float(chosen_budget), "chosen_net_value": float(chosen_value),
            "total_budget": float(spent[-1]), "total_net_value": float(gained[-1])}


def thin(curve: dict, points: int = MAX_POINTS) -> dict:
    """The curve for JSON and plotting: at most `points` evenly spaced points, the peak and both ends kept."""
    n = len(curve["cost"])
    keep = np.unique(np.concatenate([np.linspace(0, n - 1, min(points, n)).round().astype(int),
                                     [int(np.argmax(curve["net_value"]))]]))
    return {**curve, "cost": curve["cost"][keep].tolist(), "net_value": curve["net_value"][keep].tolist()}
