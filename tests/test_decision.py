"""Unit: net value per arm, the argmax decision with control fallback, and the batch cap."""

import numpy as np
import pytest

from serving.runtime.decision import CONTROL, chosen_values, decide, decide_with_cap, net_values


def test_net_value_is_outcome_value_times_uplift_minus_send_and_redemption_costs():
    # 30·0.10 − 0.10 − 2·0.30 = 2.30 ; 30·(−0.01) − 0.10 − 0 = −0.40
    net = net_values(uplift=np.array([[0.10, -0.01]]), p_arm=np.array([[0.30, 0.19]]),
                     costs=np.array([0.10, 0.10]), redemption_costs=np.array([2.0, 0.0]), outcome_value=30.0)
    np.testing.assert_allclose(net, [[2.30, -0.40]])


def test_revenue_uplift_replaces_outcome_value_times_uplift():
    net = net_values(uplift=np.array([[0.5]]), p_arm=np.array([[0.2]]), costs=np.array([1.0]),
                     redemption_costs=np.array([5.0]), outcome_value=None, revenue_uplift=np.array([[4.0]]))
    np.testing.assert_allclose(net, [[4.0 - 1.0 - 5.0 * 0.2]])


def test_all_negative_or_zero_net_value_falls_back_to_control():
    net = np.array([[-0.5, -0.1], [0.0, -1.0], [0.2, 0.3]])
    assert decide(net).tolist() == [CONTROL, CONTROL, 1]


def test_ties_go_to_the_first_arm_in_catalogue_order():
    net = np.array([[0.4, 0.4, 0.1], [0.1, 0.7, 0.7]])
    assert decide(net).tolist() == [0, 1]


def test_chosen_value_is_zero_for_control():
    net = np.array([[-0.5, -0.1], [0.2, 0.3]])
    assert chosen_values(net, decide(net)).tolist() == [0.0, 0.3]


def test_budget_keeps_highest_net_value_per_unit_cost_and_is_never_exceeded():
    # best arms: row0 arm1 (3.0/2 = 1.5), row1 arm0 (2.0/1 = 2.0), row2 arm1 (5.0/2 = 2.5), row3 control
    net = np.array([[1.0, 3.0], [2.0, 0.5], [0.1, 5.0], [-1.0, -2.0]])
    costs = np.array([1.0, 2.0])
    capped = decide_with_cap(net, costs, budget=3.0)
    assert capped.tolist() == [CONTROL, 0, 1, CONTROL]      # 2.0 + 1.0 = 3.0 ≤ 3.0; adding row0 → 5.0
    assert np.sum(np.where(capped >= 0, costs[np.maximum(capped, 0)], 0.0)) <= 3.0


def test_budget_sum_of_float_costs_equal_to_budget_is_allowed():
    net = np.full((3, 1), 1.0)
    assert decide_with_cap(net, np.array([0.1]), budget=0.3).tolist() == [0, 0, 0]


def test_max_sends_keeps_the_highest_net_values_and_leaves_the_rest_on_control():
    net = np.array([[1.0], [3.0], [2.0], [-1.0]])
    assert decide_with_cap(net, np.array([1.0]), max_sends=2).tolist() == [CONTROL, 0, 0, CONTROL]


def test_cap_ties_are_broken_by_row_order():
    net = np.array([[1.0], [1.0], [1.0]])
    assert decide_with_cap(net, np.array([0.5]), max_sends=2).tolist() == [0, 0, CONTROL]


def test_free_sends_rank_before_any_paid_send_under_a_budget():
    net = np.array([[0.1, 0.0], [0.0, 9.0]])
    assert decide_with_cap(net, np.array([0.0, 1.0]), budget=0.5).tolist() == [0, CONTROL]


# By hand: arm a costs 5, arm b costs 1. Row 0 sends a (net 10, 2 per unit of cost), row 1 sends b (net 6,
# 6 per unit), row 2 sends b (net 3, 3 per unit), row 3 sends a (net 7, 1.4 per unit).
NET = np.array([[10.0, 1.0], [0.5, 6.0], [0.2, 3.0], [7.0, 0.0]])
COSTS = np.array([5.0, 1.0])


def test_count_cap_keeps_the_largest_net_values_not_the_best_ratios():
    # by net value: row 0 (10), row 3 (7); by value per cost it would have been rows 1 and 2 (total 9 < 17)
    assert decide_with_cap(NET, COSTS, max_sends=2).tolist() == [0, CONTROL, CONTROL, 0]


def test_money_cap_keeps_the_best_value_per_unit_of_cost():
    # ratio order rows 1 (cost 1), 2 (cost 1), 0 (cost 5), 3: budget 7 fits rows 1, 2 and 0 (7), not row 3
    assert decide_with_cap(NET, COSTS, budget=7.0).tolist() == [0, 1, 1, CONTROL]
    # budget 6: rows 1, 2 (2); row 0 would make 7 → the prefix stops there
    assert decide_with_cap(NET, COSTS, budget=6.0).tolist() == [CONTROL, 1, 1, CONTROL]


def test_both_caps_hold_together():
    # budget 7 selects rows 1, 2, 0; at most 2 of them, highest net value first: rows 0 (10) and 1 (6)
    capped = decide_with_cap(NET, COSTS, max_sends=2, budget=7.0)
    assert capped.tolist() == [0, 1, CONTROL, CONTROL]
    sent = capped != CONTROL
    assert sent.sum() <= 2 and COSTS[capped[sent]].sum() <= 7.0


def test_no_cap_is_the_plain_decision():
    net = np.array([[1.0, 2.0], [-1.0, -2.0]])
    assert decide_with_cap(net, np.array([1.0, 1.0])).tolist() == decide(net).tolist()


def test_negative_budget_is_refused():
    with pytest.raises(ValueError, match="budget"):
        decide_with_cap(np.zeros((1, 1)), np.array([1.0]), budget=-1.0)
