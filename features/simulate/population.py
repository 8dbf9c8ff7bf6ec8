"""Simulated customers: hidden buying parameters and the profile a model may observe.

The hidden parameters follow a Pareto/NBD-like story: every customer has a gamma-distributed
purchase rate, a gamma-distributed drop-out rate (an exponential lifetime that starts at the
first purchase), a lognormal spend level and a price sensitivity. The observable profile
(age, region, channels, opt-ins) is drawn with noise from those parameters, so it is
informative without giving them away.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REGIONS = np.array(["north", "south", "east", "west", "central"])
REGION_SHARES = np.array([0.22, 0.24, 0.18, 0.20, 0.16])
REGION_RATE = np.array([1.00, 0.92, 1.00, 1.05, 1.15])  # city customers buy a bit more often

CHANNELS = np.array(["web", "store", "app"])
SIGNUP_CHANNELS = np.array(["web", "store", "app", "referral"])

CATEGORIES = np.array(["grocery", "beauty", "apparel", "home", "toys", "electronics"])
CATEGORY_SHARES = np.array([0.30, 0.18, 0.20, 0.14, 0.10, 0.08])
CATEGORY_PRICE = np.array([0.6, 1.0, 1.4, 1.6, 1.1, 3.0])  # price multiplier on the spend level
PREFERRED_CATEGORY_SHARE = 0.6  # share of a customer's purchases in their preferred category

MEAN_RATE = 1 / 40  # purchases per day
RATE_SHAPE = 1.3
MEAN_DROPOUT = 1 / 420  # per day: mean lifetime about 14 months
DROPOUT_SHAPE = 1.5
MEDIAN_SPEND = 28.0  # unit price level, before category and quantity


@dataclass(frozen=True)
class Population:
    """One row per customer, as parallel numpy arrays; times are days since history start."""

    join: np.ndarray
    death: np.ndarray
    purchase_rate: np.ndarray
    dropout_rate: np.ndarray
    spend_level: np.ndarray
    price_sensitivity: np.ndarray
    preferred_category: np.ndarray
    preferred_channel: np.ndarray
    age: np.ndarray
    region: np.ndarray
    signup_channel: np.ndarray
    email_opt_in: np.ndarray
    loyalty_member: np.ndarray

    def __len__(self) -> int:
        return len(self.join)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def gumbel_choice(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """One category index per row of `logits` (n × k), drawn with softmax probabilities."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def draw_joins(rng: np.random.Generator, n: int, cumulative: np.ndarray, history_days: int) -> np.ndarray:
    """First-purchase times: more joins as the business grows and in busy seasons.

    The extra early weight stands for customers from before the history, first seen early on.
    """
    days = np.arange(history_days)
    growth = 1.0 + 0.8 * days / history_days + 4.0 * np.exp(-days / 30)
    weight = np.diff(cumulative[: history_days + 1]) * growth
    grid = np.concatenate([[0.0], np.cumsum(weight)])
    return np.interp(rng.random(n) * grid[-1], grid, np.arange(history_days + 1, dtype=float))


def draw_population(rng: np.random.Generator, n: int, cumulative: np.ndarray, history_days: int,
                    shift: float = 0.0) -> Population:
    """Hidden parameters first, then the profile drawn from them with noise.

    `shift` > 0 draws a changed population from the same random numbers (0 changes nothing): purchase
    rates × e^(−1.5·shift), drop-out rates × e^shift, spend levels × e^shift, and the app channel's
    logit + 3·shift (a channel-mix move) — for demonstrating drift and decay."""
    join = draw_joins(rng, n, cumulative, history_days)
    age = np.clip(np.round(rng.normal(44, 14, n)), 18, 85).astype(np.int64)
    region = rng.choice(len(REGIONS), size=n, p=REGION_SHARES)
    rate = rng.gamma(RATE_SHAPE, MEAN_RATE / RATE_SHAPE, n) * REGION_RATE[region] * np.exp(-1.5 * shift)
    dropout = rng.gamma(DROPOUT_SHAPE, MEAN_DROPOUT / DROPOUT_SHAPE, n) * np.exp(shift)
    death = join + rng.exponential(1.0, n) / dropout
    spend = MEDIAN_SPEND * np.exp(0.006 * (age - 44) + rng.normal(0, 0.45, n) + shift)

    engagement = 0.6 * np.log(rate / MEAN_RATE) - 0.4 * np.log(dropout / MEAN_DROPOUT)
    loyalty = rng.random(n) < sigmoid(-0.5 + engagement + rng.normal(0, 0.8, n))
    opt_in = rng.random(n) < sigmoid(0.3 + 0.5 * loyalty + 0.3 * engagement - 0.015 * (age - 44))
    price_sensitivity = sigmoid(
        -0.3 - 0.5 * (age - 44) / 14 - 0.8 * np.log(spend / MEDIAN_SPEND) - 0.5 * loyalty + rng.normal(0, 0.7, n)
    )

    category = rng.choice(len(CATEGORIES), size=n, p=CATEGORY_SHARES)
    age_z = (age - 44) / 14
    channel_logits = np.column_stack([np.zeros(n), 0.6 * age_z, -0.2 - 0.8 * age_z + 3 * shift])
    channel = gumbel_choice(rng, channel_logits)
    signup = np.where(rng.random(n) < 0.6, channel, rng.integers(0, len(SIGNUP_CHANNELS), n))

    return Population(
        join=join,
        death=death,
        purchase_rate=rate,
        dropout_rate=dropout,
        spend_level=spend,
        price_sensitivity=price_sensitivity,
        preferred_category=category,
        preferred_channel=channel,
        age=age,
        region=region,
        signup_channel=signup,
        email_opt_in=opt_in,
        loyalty_member=loyalty,
    )


def mean_basket(pop: Population, mean_quantity: float) -> np.ndarray:
    """Expected amount of one purchase: spend level × quantity × the customer's category mix."""
    other = float(CATEGORY_SHARES @ CATEGORY_PRICE)
    mix = PREFERRED_CATEGORY_SHARE * CATEGORY_PRICE[pop.preferred_category] + (1 - PREFERRED_CATEGORY_SHARE) * other
    return pop.spend_level * mean_quantity * mix
