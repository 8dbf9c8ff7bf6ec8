"""Unit: inverse-propensity and doubly-robust policy values on hand-computed logs."""

import numpy as np
import pytest

from training.policy import deterministic_policy, dr_value, ipw_value, observed_propensities

# four logged customers, actions 0 (control) / 1 (incentive), propensity 0.5 each
REWARDS = np.array([1.0, 0.0, 1.0, 1.0])
ACTIONS = np.array([0, 0, 1, 1])
PROPENSITY = np.full(4, 0.5)


def test_self_normalised_ipw_of_always_treat_is_the_treated_mean():
    policy = deterministic_policy(np.ones(4, dtype=int), 2)
    assert ipw_value(REWARDS, ACTIONS, PROPENSITY, policy) == 1.0


def test_plain_ipw_weights_matching_rows_by_inverse_propensity():
    # policy [1, 1, 1, 0] matches the log on row 2 only (reward 1, weight 1/0.5) → 2 / 4 rows
    policy = deterministic_policy(np.array([1, 1, 1, 0]), 2)
    assert ipw_value(REWARDS, ACTIONS, PROPENSITY, policy, self_normalized=False) == 0.5


def test_stochastic_policy_value_is_the_mixture_of_its_arms():
    half = np.full((4, 2), 0.5)
    # self-normalised: weights all 1 → mean reward 0.75
    assert ipw_value(REWARDS, ACTIONS, PROPENSITY, half) == pytest.approx(0.75)


def test_doubly_robust_with_a_perfect_reward_model_is_its_direct_estimate():
    predicted = np.array([[0.5, 1.0]] * 4)
    rewards = np.array([0.5, 0.5, 1.0, 1.0])
    policy = deterministic_policy(np.ones(4, dtype=int), 2)
    assert dr_value(rewards, ACTIONS, PROPENSITY, policy, predicted) == pytest.approx(1.0)


def test_doubly_robust_corrects_a_wrong_reward_model():
    predicted = np.zeros((4, 2))
    policy = deterministic_policy(np.ones(4, dtype=int), 2)
    # direct 0 + (1/0.5)·(1 − 0) on rows 2, 3 → (2 + 2)/4 = 1.0
    assert dr_value(REWARDS, ACTIONS, PROPENSITY, policy, predicted) == pytest.approx(1.0)


def test_observed_propensities_are_arm_shares():
    assert observed_propensities(np.array([0, 0, 0, 1]), 2).tolist() == [0.75, 0.75, 0.75, 0.25]


@pytest.mark.parametrize("kwargs,message", [
    ({"propensities": np.array([0.5, 0.5, 0.0, 0.5])}, "propensities"),
    ({"actions": np.array([0, 0, 2, 1])}, "actions"),
    ({"rewards": np.array([1.0, 0.0])}, "inconsistent lengths"),
    ({"policy": np.full((4, 2), 0.7)}, "probability distribution"),
])
def test_bad_inputs_are_refused_with_a_message(kwargs, message):
    args = {"rewards": REWARDS, "actions": ACTIONS, "propensities": PROPENSITY,
            "policy": deterministic_policy(np.ones(4, dtype=int), 2)} | kwargs
    with pytest.raises(ValueError, match=message):
        ipw_value(**args)


def test_paired_difference_of_two_policies_by_hand():
    from training.policy import deterministic_policy, paired_difference

    # rows (action, reward): (0, 1), (0, 0), (1, 0), (1, 1), each logged with propensity ½
    rewards, actions, e = np.array([1.0, 0.0, 0.0, 1.0]), np.array([0, 0, 1, 1]), np.full(4, 0.5)
    always0 = deterministic_policy(np.zeros(4, dtype=int), 2)
    always1 = deterministic_policy(np.ones(4, dtype=int), 2)
    out = paired_difference(rewards, actions, e, always0, always1)
    # V = ½ each; influences ψ0 = [1, −1, 0, 0], ψ1 = [0, 0, −1, 1]; se = std(ddof 1) / √4
    assert out["value_a"] == out["value_b"] == 0.5 and out["difference"] == 0.0
    assert out["se_a"] == pytest.approx(np.sqrt(2 / 3) / 2)
    assert out["se_difference"] == pytest.approx(np.sqrt(4 / 3) / 2)
    same = paired_difference(rewards, actions, e, always0, always0)
    assert same["difference"] == 0.0 and same["se_difference"] == 0.0  # identical policies: nothing to test
