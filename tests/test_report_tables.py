"""The report's tables on hand-computed inputs: segment matrix, headline = its sums, actions, budget curve with
peak and break-even, reasons; and the input checks (exit-2 errors) of `serving.strategy.inputs`."""

import json

import numpy as np
import pandas as pd
import pytest

from features.errors import DataError
from serving.runtime.decision.catalog import Catalog, Incentive
from serving.strategy import inputs
from serving.strategy.curve import budget_curve, candidates
from serving.strategy.report import build_report
from serving.strategy.tables import actions, customer_plan, headline, reasons_table, segment_table

ARMS, CONTROL = ["email", "discount"], "none"
COSTS = {"none": 0.0, "email": 0.5, "discount": 2.0}
CATALOG = Catalog("none", (Incentive("email", 0.5), Incentive("discount", 2.0, 1.0)), 40.0)


def six_customers() -> pd.DataFrame:
    """Two segments: at_risk/high (a, b, c) and new/low (d, e, f)."""
    return pd.DataFrame({
        "customer_id": list("abcdef"),
        "churn_probability": [0.9, 0.7, 0.5, 0.2, 0.1, 0.3],
        "lifecycle_stage": ["at_risk"] * 3 + ["new"] * 3,
        "value_tier": ["high"] * 3 + ["low"] * 3,
        "value_at_risk": [90.0, 70.0, 50.0, 4.0, 1.0, 3.0],
        "incentive": ["discount", "discount", "email", "none", "none", "none"],
        "expected_net_value": [5.0, 3.0, 1.0, 0.0, 0.0, 0.0],
        "uplift:email": [0.05, 0.02, 0.04, 0.001, -0.01, -0.02],
        "uplift:discount": [0.20, 0.15, 0.03, 0.002, -0.02, -0.01],
        "reason_1": ["recency_days", "recency_days", "frequency", "tenure_days", None, "tenure_days"],
    })


def test_segment_matrix_by_hand():
    plan = customer_plan(six_customers(), ARMS, CONTROL, COSTS)
    seg = segment_table(plan, ARMS, CONTROL)
    assert seg[["lifecycle_stage", "value_tier"]].values.tolist() == [["at_risk", "high"], ["new", "low"]]
    top, low = seg.iloc[0], seg.iloc[1]
    assert top["customers"] == 3 and top["mean_churn_probability"] == pytest.approx(0.7)
    assert top["expected_churners"] == pytest.approx(2.1) and top["value_at_risk"] == pytest.approx(210.0)
    assert top["sends"] == 3 and top["send_cost"] == pytest.approx(2 + 2 + 0.5)  # two discounts, one email
    assert top["expected_net_value"] == pytest.approx(9.0)
    assert top["share:discount"] == pytest.approx(2 / 3) and top["share:email"] == pytest.approx(1 / 3)
    assert low["sends"] == 0 and low["send_cost"] == 0 and low["share:none"] == 1.0
    assert low["do_not_disturb"] == 2  # e and f: every arm's uplift below zero; d has a positive one


def test_headline_equals_the_sums_of_the_segment_matrix():
    rng = np.random.default_rng(5)
    n = 500
    frame = pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)], "churn_probability": rng.random(n),
                          "lifecycle_stage": rng.choice(["new", "active", "at_risk", "dormant"], n),
                          "value_tier": rng.choice(["low", "mid", "high"], n), "value_at_risk": rng.gamma(2, 30, n),
                          "incentive": rng.choice([*ARMS, CONTROL], n), "uplift:email": rng.normal(0, .05, n),
                          "uplift:discount": rng.normal(0, .05, n)})
    frame["expected_net_value"] = np.where(frame["incentive"] == CONTROL, 0.0, rng.gamma(1, 2, n))
    plan = customer_plan(frame, ARMS, CONTROL, COSTS)
    seg, head = segment_table(plan, ARMS, CONTROL), headline(plan)
    for column in ("customers", "expected_churners", "value_at_risk", "sends", "send_cost", "expected_net_value",
                   "do_not_disturb"):
        assert seg[column].sum() == pytest.approx(head[column]), column
    assert head["expected_churners"] == pytest.approx(frame["churn_probability"].sum())
    assert head["expected_net_value"] == pytest.approx(frame.loc[frame["incentive"] != CONTROL,
                                                                  "expected_net_value"].sum())
    assert list(seg["value_at_risk"]) == sorted(seg["value_at_risk"], reverse=True)


def test_unknown_costs_stay_unknown():
    plan = customer_plan(six_customers(), ARMS, CONTROL, None)
    assert headline(plan)["send_cost"] is None
    assert segment_table(plan, ARMS, CONTROL)["send_cost"].isna().all()


def test_budget_curve_ranks_by_net_value_per_cost_with_its_peak():
    # ratios: free +1 first, 5/1, 3/2, −2/1 last → costs 0, 0, 1, 3, 4 and values 0, 1, 6, 9, 7
    curve = budget_curve(np.array([5.0, -2.0, 3.0, 1.0]), np.array([1.0, 1.0, 2.0, 0.0]), 3.0, 9.0)
    assert curve["cost"].tolist() == [0, 0, 1, 3, 4] and curve["net_value"].tolist() == [0, 1, 6, 9, 7]
    assert (curve["peak_budget"], curve["peak_net_value"]) == (3.0, 9.0)
    assert curve["break_even_budget"] is None  # still +7 with every send


def test_break_even_is_where_the_net_value_returns_to_zero_after_the_peak():
    curve = budget_curve(np.array([2.0, -1.0, -3.0]), np.array([1.0, 1.0, 1.0]), 1.0, 2.0)
    assert curve["net_value"].tolist() == [0, 2, 1, -2]
    assert curve["peak_budget"] == 1.0 and curve["break_even_budget"] == 3.0


def test_budget_candidates_are_every_customers_best_arm_when_net_values_are_given():
    frame = six_customers().assign(**{"net_value:email": [1, 0.5, 1.0, -0.2, -1, -2],
                                      "net_value:discount": [5, 3, 0.5, -0.1, -2, -1]})
    value, cost, what = candidates(customer_plan(frame, ARMS, CONTROL, COSTS), ARMS, COSTS)
    assert value.tolist() == [5, 3, 1.0, -0.1, -1, -1] and cost.tolist() == [2, 2, 0.5, 2, 0.5, 2]
    assert what == "every customer's best arm"
    plain, _, what = candidates(customer_plan(six_customers(), ARMS, CONTROL, COSTS), ARMS, COSTS)
    assert plain.tolist() == [5, 3, 1] and what.startswith("the plan's sends")


def test_one_action_line_per_segment_from_its_numbers():
    frame = six_customers()
    frame.loc[3, ["uplift:email", "uplift:discount"]] = -0.001  # now every new/low customer is put off by every arm
    plan = customer_plan(frame, ARMS, CONTROL, COSTS)
    lines = actions(segment_table(plan, ARMS, CONTROL), ARMS)
    assert lines[0]["line"] == ("high-value at-risk: discount to 67\u00a0%, email to 33\u00a0% — expected net value "
                                "+3.00 per customer sent")
    assert lines[1]["action"] == "do_not_disturb" and "do not disturb" in lines[1]["line"]
    plan = customer_plan(six_customers(), ARMS, CONTROL, COSTS)
    assert actions(segment_table(plan, ARMS, CONTROL), ARMS)[1]["line"] == \
        "low-value new: send nothing — uplift below cost; 2 do not disturb (every incentive lowers their return)"


def test_a_segment_left_out_by_the_budget_says_so():
    frame = six_customers().assign(**{"net_value:email": [1, 0.5, 1.0, 0.3, -1, -2],
                                      "net_value:discount": [5, 3, 0.5, -0.1, -2, -1]})
    plan = customer_plan(frame, ARMS, CONTROL, COSTS)
    line = actions(segment_table(plan, ARMS, CONTROL), ARMS)[1]["line"]
    assert line.startswith("low-value new: send nothing — worth it for 1 customer, but outside the budget")


def test_reasons_table_counts_first_reasons_per_segment():
    plan = customer_plan(six_customers(), ARMS, CONTROL, COSTS)
    table = reasons_table(plan, segment_table(plan, ARMS, CONTROL))
    assert table.values.tolist() == [["at_risk", "high", 1, "recency_days", 2, 2 / 3],
                                     ["at_risk", "high", 2, "frequency", 1, 1 / 3],
                                     ["new", "low", 1, "tenure_days", 2, 2 / 3]]
    assert reasons_table(plan.drop(columns="reason_1"), segment_table(plan, ARMS, CONTROL)) is None


def test_report_document_carries_the_campaign_and_notes_missing_reasons():
    frame = six_customers()
    scores = frame[["customer_id", "churn_probability", "lifecycle_stage", "value_tier", "value_at_risk"]]
    recs = frame[["customer_id", "incentive", "expected_net_value", "uplift:email", "uplift:discount"]]
    campaign = {"total_incremental_value": 12.0}
    doc = build_report(scores, recs.sample(frac=1, random_state=0), CATALOG, "--catalog", campaign, {})
    assert doc["headline"]["send_cost"] == pytest.approx(4.5) and doc["headline"]["campaign"] is campaign
    assert doc["reasons"] == {"available": False, "note": doc["reasons"]["note"]}
    assert "no reasons in the scores file" in doc["reasons"]["note"]
    assert doc["budget_curve"]["chosen_budget"] == pytest.approx(4.5)
    json.dumps(doc)  # plain values only
    assert build_report(scores, recs, None, None, None, {})["budget_curve"]["available"] is False


def test_scores_and_recommendations_of_different_customers_are_refused():
    frame = six_customers()
    with pytest.raises(DataError, match=r"\(6 customers\) and --recommendations \(5\).*1 only in the scores.*'f'"):
        inputs.join(frame[["customer_id", "churn_probability"]], frame[["customer_id", "incentive"]].head(5))


def test_a_missing_column_names_the_column_and_the_file(tmp_path):
    six_customers().drop(columns="value_at_risk").to_csv(tmp_path / "scores.csv", index=False)
    with pytest.raises(DataError, match=r"scores.csv: column 'value_at_risk' is missing"):
        inputs.read_scores(tmp_path / "scores.csv")


def test_an_incentive_missing_from_the_catalogue_is_refused():
    recs = six_customers().replace({"incentive": {"email": "sms"}})
    with pytest.raises(DataError, match="'sms' not in the catalogue"):
        inputs.arms_and_control(recs, CATALOG)


@pytest.mark.parametrize("text", ["{not json", json.dumps({"policy": {"incremental_value": 1.0}}),
                                  json.dumps({"policy": {"incremental_value": "x", "ci_low": 0, "ci_high": 1,
                                                         "n_model": 1, "n_holdout": 1}})])
def test_a_bad_campaign_evaluation_is_refused(tmp_path, text):
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(DataError, match="--campaign-eval"):
        inputs.read_campaign(tmp_path / "c.json")


def test_campaign_return_is_per_customer_times_customers_sent(tmp_path):
    doc = {"campaign_id": "w2", "policy": {"incremental_value": 0.5, "ci_low": -0.1, "ci_high": 1.1, "n_model": 100,
                                           "n_holdout": 20}}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    c = inputs.read_campaign(tmp_path / "c.json")
    assert (c["total_incremental_value"], c["total_ci_low"], c["total_ci_high"]) == pytest.approx((50, -10, 110))
    assert c["interval_includes_zero"] is True
