"""Simulated purchases: seasonal Poisson buying while alive, and its exact window probabilities.

Time is measured in days since the history start; day d covers [d, d+1) and the seasonal
multiplier is constant within a day, so the cumulative intensity is piecewise linear and
event times are drawn by inverting it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.simulate.population import (
    CATEGORIES,
    CATEGORY_PRICE,
    CATEGORY_SHARES,
    CHANNELS,
    PREFERRED_CATEGORY_SHARE,
    Population,
)

PREFERRED_CHANNEL_SHARE = 0.75
EXTRA_QUANTITY = 0.5  # quantity is 1 + Poisson(EXTRA_QUANTITY)
MEAN_QUANTITY = 1.0 + EXTRA_QUANTITY
PRICE_SIGMA = 0.35


def seasonality(start: pd.Timestamp, days: int) -> np.ndarray:
    """Daily purchase multiplier: December peak, summer dip, busier weekends; mean about 1."""
    dates = pd.date_range(start, periods=days, freq="D")
    doy = dates.day_of_year.to_numpy(dtype=float)
    december = 0.7 * np.exp(-0.5 * ((doy - 352) / 9) ** 2)
    summer = -0.25 * np.exp(-0.5 * ((doy - 215) / 22) ** 2)
    weekend = np.where(dates.day_of_week.to_numpy() >= 5, 1.12, 0.95)
    season = (1.0 + december + summer) * weekend
    return season / season[: min(days, 365)].mean()


def cumulative_intensity(season: np.ndarray) -> np.ndarray:
    """C[d] = total seasonal multiplier before day d (length days + 1)."""
    return np.concatenate([[0.0], np.cumsum(season)])


def place_events(
    rng: np.random.Generator, start: np.ndarray, end: np.ndarray, rate: np.ndarray, cumulative: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(customer index, time) of seasonal Poisson events in (start, end]; none where end <= start."""
    grid = np.arange(len(cumulative), dtype=float)
    low = np.interp(start, grid, cumulative)
    mass = np.maximum(np.interp(end, grid, cumulative) - low, 0.0)
    customer = np.repeat(np.arange(len(start)), rng.poisson(rate * mass))
    target = low[customer] + rng.random(len(customer)) * mass[customer]
    return customer, np.interp(target, cumulative, grid)


def draw_purchases(
    rng: np.random.Generator, customer: np.ndarray, time: np.ndarray, pop: Population
) -> dict[str, np.ndarray]:
    """Purchases sorted by customer and clock time, each with a basket around the customer's habits."""
    n = len(customer)
    day = np.floor(time).astype(np.int64)
    seconds = time_of_day(rng, n)
    order = np.lexsort((seconds, day, customer))
    customer, day, seconds = customer[order], day[order], seconds[order]
    category = draw_categories(rng, customer, pop)
    channel = np.where(
        rng.random(n) < PREFERRED_CHANNEL_SHARE, pop.preferred_channel[customer], rng.integers(0, len(CHANNELS), n)
    )
    return {
        "customer": customer,
        "day": day,
        "seconds": seconds,
        "category": category,
        "channel": channel,
        **draw_baskets(rng, customer, category, pop),
    }


def draw_baskets(
    rng: np.random.Generator, customer: np.ndarray, category: np.ndarray, pop: Population
) -> dict[str, np.ndarray]:
    """Quantity and amount of purchases, priced by the customer's spend level and the category."""
    n = len(customer)
    quantity = 1 + rng.poisson(EXTRA_QUANTITY, n)
    price = pop.spend_level[customer] * CATEGORY_PRICE[category] * rng.lognormal(-PRICE_SIGMA**2 / 2, PRICE_SIGMA, n)
    amount = np.maximum(np.round(quantity * price, 2), 0.5)
    return {"quantity": quantity, "amount": amount}


def extra_basket(rng: np.random.Generator, pop: Population) -> np.ndarray:
    """Amount of one more purchase per customer, as an incentive would add it."""
    customer = np.arange(len(pop))
    return draw_baskets(rng, customer, draw_categories(rng, customer, pop), pop)["amount"]


def draw_categories(rng: np.random.Generator, customer: np.ndarray, pop: Population) -> np.ndarray:
    """Mostly the customer's preferred category, otherwise one by overall popularity."""
    n = len(customer)
    preferred = rng.random(n) < PREFERRED_CATEGORY_SHARE
    return np.where(preferred, pop.preferred_category[customer], rng.choice(len(CATEGORIES), size=n, p=CATEGORY_SHARES))


def select(purchases: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {key: values[keep] for key, values in purchases.items()}


def concat(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds after midnight: a lunchtime and an evening peak, nothing in the small hours."""
    hours = np.where(rng.random(n) < 0.5, rng.normal(12.5, 2.0, n), rng.normal(19.0, 2.2, n))
    return np.round(np.clip(hours, 7.0, 23.99) * 3600).astype(np.int64)


def no_purchase_probability(rate: np.ndarray, dropout: np.ndarray, season: np.ndarray) -> np.ndarray:
    """P(no purchase during the days of `season`) for customers alive at its start.

    Exact for a constant-per-day intensity: either the customer dies before buying
    (hazard `dropout`) or survives the window without a purchase.
    """
    quiet = np.ones_like(rate)  # P(alive and no purchase so far)
    died_quiet = np.zeros_like(rate)
    for level in season:
        hazard = rate * level + dropout
        died_quiet += quiet * dropout * -np.expm1(-hazard) / hazard
        quiet *= np.exp(-hazard)
    return quiet + died_quiet


def expected_purchases(rate: np.ndarray, dropout: np.ndarray, season: np.ndarray) -> np.ndarray:
    """Expected number of purchases during the days of `season` for customers alive at its start."""
    alive = np.ones_like(rate)  # P(alive at the start of the day)
    within_day = -np.expm1(-dropout) / dropout  # mean share of a day lived, given alive at its start
    total = np.zeros_like(rate)
    for level in season:
        total += alive * within_day * level
        alive *= np.exp(-dropout)
    return rate * total
