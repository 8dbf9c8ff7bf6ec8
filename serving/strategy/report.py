"""The report document: every table of the page as plain JSON-able values, built from the checked inputs."""

from __future__ import annotations

import math

import pandas as pd

from serving.runtime.decision.catalog import Catalog
from serving.strategy import curve as budget
from serving.strategy import inputs, tables

NO_REASONS = "no reasons in the scores file (score with `winback score --reasons 3`)"


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with plain Python numbers, NaN as None."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in rows]


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_report(scores: pd.DataFrame, recommendations: pd.DataFrame, catalog: Catalog | None,
                 cost_source: str | None, campaign: dict | None, provenance: dict) -> dict:
    """headline, segments, actions, budget_curve, reasons, provenance: the JSON document and the page's content."""
    arms, control = inputs.arms_and_control(recommendations, catalog)
    costs = inputs.send_costs(catalog, arms, control)
    plan = tables.customer_plan(inputs.join(scores, recommendations), arms, control, costs)
    segments = tables.segment_table(plan, arms, control)
    head = tables.headline(plan, campaign)
    if costs is None:
        curve = {"available": False, "reason": "send cost unknown: pass --catalog (the recommendations file does "
                                               "not record its catalogue)"}
    else:
        value, cost, what = budget.candidates(plan, arms, costs)
        drawn = budget.thin(budget.budget_curve(value, cost, head["send_cost"], head["expected_net_value"]))
        curve = {"available": True, "ranked": what, **{k: _clean(v) for k, v in drawn.items()}}
    reasons = tables.reasons_table(plan, segments)
    return {"arms": arms, "control": control, "cost_source": cost_source,
            "costs": costs, "headline": head, "segments": _records(segments),
            "actions": tables.actions(segments, arms), "budget_curve": curve,
            "reasons": {"available": False, "note": NO_REASONS} if reasons is None else
            {"available": True, "reason_columns": tables.reason_columns(plan), "rows": _records(reasons)},
            "provenance": provenance}
