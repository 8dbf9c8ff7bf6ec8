"""Offline policy value: what a targeting policy would have earned per customer, from logged experiment data.

Actions are column indices 0..m-1 (0 = control in this project). A policy is an (n, m) matrix of
action probabilities per customer (one-hot for a deterministic policy). Pure functions; inputs are
checked the way scikit-uplift's metrics check theirs.
"""

from __future__ import annotations

import numpy as np


def _check(rewards, actions, propensities, policy) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rewards = np.asarray(rewards, dtype=np.float64)
    actions = np.asarray(actions)
    propensities = np.asarray(propensities, dtype=np.float64)
    policy = np.asarray(policy, dtype=np.float64)
    n = len(rewards)
    if n == 0:
        raise ValueError("policy value needs at least one logged row")
    if policy.ndim != 2:
        raise ValueError(f"policy must be an (n, m) matrix of action probabilities, got shape {policy.shape}")
    if not (len(actions) == len(propensities) == policy.shape[0] == n):
        raise ValueError(f"inconsistent lengths: rewards {n}, actions {len(actions)}, "
                         f"propensities {len(propensities)}, policy {policy.shape[0]}")
    if not np.issubdtype(actions.dtype, np.integer) or actions.min() < 0 or actions.max() >= policy.shape[1]:
        raise ValueError(f"actions must be integers in 0..{policy.shape[1] - 1}")
    if not np.all((propensities > 0) & (propensities <= 1)):
        raise ValueError("propensities must be in (0, 1]")
    if np.any(policy < 0) or not np.allclose(policy.sum(axis=1), 1.0):
        raise ValueError("each policy row must be a probability distribution over actions")
    if not np.all(np.isfinite(rewards)):
        raise ValueError("rewards must be finite")
    return rewards, actions.astype(np.int64), propensities, policy


def deterministic_policy(choice: np.ndarray, n_actions: int) -> np.ndarray:
    """One-hot (n, n_actions) policy matrix from one action index per customer."""
    choice = np.asarray(choice, dtype=np.int64)
    out = np.zeros((len(choice), n_actions))
    out[np.arange(len(choice)), choice] = 1.0
    return out


def ipw_value(rewards, actions, propensities, policy, self_normalized: bool = True) -> float:
    """Inverse-propensity-weighted value of `policy` per customer.

    Weight w_i = policy[i, a_i] / e_i. Self-normalised (Σ w·r / Σ w, lower variance, the default) or
    plain (mean of w·r). Self-normalised "everyone gets arm a" in a randomised trial is exactly that
    arm's observed mean.
    """
    rewards, actions, propensities, policy = _check(rewards, actions, propensities, policy)
    weights = policy[np.arange(len(actions)), actions] / propensities
    if not self_normalized:
        return float(np.mean(weights * rewards))
    total = weights.sum()
    if total == 0:
        raise ValueError("the policy never takes a logged action; its value cannot be estimated")
    return float(np.sum(weights * rewards) / total)


def ipw_estimate(rewards, actions, propensities, policy) -> tuple[float, np.ndarray]:
    """The self-normalised IPW value of `policy` and its per-row influence (linearisation)
    ψ_i = w_i·(r_i − V) / mean(w).

    mean(ψ) is 0; std(ψ)/√n is the value's standard error, and for two policies scored on the same rows
    std(ψ_A − ψ_B)/√n is the standard error of their difference (paired: what the rows share cancels).
    """
    rewards, actions, propensities, policy = _check(rewards, actions, propensities, policy)
    weights = policy[np.arange(len(actions)), actions] / propensities
    if weights.sum() == 0:
        raise ValueError("the policy never takes a logged action; its value cannot be estimated")
    value = float(np.sum(weights * rewards) / weights.sum())
    return value, weights * (rewards - value) / weights.mean()


def difference(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray]) -> tuple[float, float]:
    """(V_a − V_b, its paired standard error) of two `ipw_estimate`s on the same rows."""
    return a[0] - b[0], float(np.std(a[1] - b[1], ddof=1) / np.sqrt(len(a[1])))


def paired_difference(rewards, actions, propensities, policy_a, policy_b) -> dict[str, float]:
    """Self-normalised IPW values of two policies on the same logged rows, their difference (a − b) and
    the standard errors of each and of the difference (paired)."""
    a = ipw_estimate(rewards, actions, propensities, policy_a)
    b = ipw_estimate(rewards, actions, propensities, policy_b)
    root = np.sqrt(len(a[1]))
    diff, se = difference(a, b)
    return {"value_a": a[0], "value_b": b[0], "se_a": float(np.std(a[1], ddof=1) / root),
            "se_b": float(np.std(b[1], ddof=1) / root), "difference": diff, "se_difference": se}


def dr_terms(rewards, actions, propensities, policy, predicted_rewards) -> np.ndarray:
    """Per row, the doubly-robust term of `policy`'s value: the model's predicted reward under the policy,
    corrected by the propensity-weighted residual on the logged action. Their mean is `dr_value`."""
    rewards, actions, propensities, policy = _check(rewards, actions, propensities, policy)
    predicted = np.asarray(predicted_rewards, dtype=np.float64)
    if predicted.shape != policy.shape:
        raise ValueError(f"predicted_rewards has shape {predicted.shape}, expected {policy.shape}")
    rows = np.arange(len(actions))
    direct = np.sum(policy * predicted, axis=1)
    return direct + policy[rows, actions] / propensities * (rewards - predicted[rows, actions])


def dr_value(rewards, actions, propensities, policy, predicted_rewards) -> float:
    """Doubly-robust value (the mean of `dr_terms`). Unbiased if either the propensities or the reward model
    are right."""
    return float(np.mean(dr_terms(rewards, actions, propensities, policy, predicted_rewards)))


def observed_propensities(actions, n_actions: int) -> np.ndarray:
    """Propensity of each row's logged action, estimated by the observed action shares."""
    actions = np.asarray(actions, dtype=np.int64)
    shares = np.bincount(actions, minlength=n_actions) / len(actions)
    return shares[actions]
