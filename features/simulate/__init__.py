"""A synthetic customer data platform: two years of purchases, a randomised campaign, the truth.

`simulate` draws customers with hidden Pareto/NBD-like buying (see `features.simulate.population`),
their seasonal purchases (`features.simulate.purchases`) and a win-back campaign with heterogeneous
incentive effects (`features.simulate.campaign`). Everything is vectorised numpy and fixed by the seed.
The truth table holds the exact probabilities the observed outcomes were drawn from.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from features.simulate import events as engagement
from features.simulate import purchases as purchases
from features.errors import DataError
from features.io import write_table
from features.simulate import campaign as campaign
from features.build import build_features
from features.simulate.campaign import arm_effects, run_campaign, true_outcomes
from features.simulate.population import (
    CATEGORIES,
    CHANNELS,
    REGIONS,
    SIGNUP_CHANNELS,
    Population,
    draw_population,
    mean_basket,
)

HISTORY_START = pd.Timestamp("2024-01-01")
HISTORY_END = pd.Timestamp("2025-12-31")
CAMPAIGN_DATE = HISTORY_END + pd.Timedelta(days=1)
HISTORY_DAYS = (CAMPAIGN_DATE - HISTORY_START).days  # 731: the history is [0, 731) in days
CONVERSION_DAYS = 30
CHURN_DAYS = 180
TRANSACTION_COLUMNS = ["customer_id", "timestamp", "amount", "quantity", "category", "channel"]
FILES = ["transactions.parquet", "customers.parquet", "campaign.parquet", "incentives.yaml", "truth.parquet"]
EVENTS_FILE = "events.parquet"  # written when the simulation has engagement events
EVENTS_STREAM = 1001  # spawn key of the events' own random stream: the other outputs do not move


@dataclass(frozen=True)
class Simulation:
    """The observable tables, the catalogue, the truth, and the natural future if asked for."""

    transactions: pd.DataFrame
    customers: pd.DataFrame
    campaign: pd.DataFrame
    truth: pd.DataFrame
    catalog: dict
    future_transactions: pd.DataFrame
    history_start: pd.Timestamp = field(default=HISTORY_START)
    history_end: pd.Timestamp = field(default=HISTORY_END)
    campaign_date: pd.Timestamp = field(default=CAMPAIGN_DATE)
    events: pd.DataFrame | None = None  # engagement events in the history (simulate(..., events=True))


FEATURED_STREAM = 0x6361  # the random stream of the categories the personalised coupon features


def simulate(customers: int = 5000, seed: int = 0, future_days: int = 0, shift: float = 0.0,
             events: bool = False, personalised: bool = False) -> Simulation:
    """Simulate `customers` customers; `future_days` > 0 adds their natural purchases after the history;
    `shift` > 0 changes the population (see `draw_population`) to demonstrate drift; `events` adds their
    engagement events (see `features.simulate.events`, drawn from a random stream of their own); `personalised` adds
    the category coupon to the catalogue and the campaign (`campaign.PERSONALISED_INCENTIVE`).

    The campaign and truth do not depend on `future_days`: the same seed gives the same frames; without
    `personalised` they are those of the simulator before the coupon existed.
    """
    if customers <= 0:
        raise DataError(f"customers: must be a positive number of customers, got {customers}")
    if future_days < 0:
        raise DataError(f"future_days: must be zero or more, got {future_days}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    population_rng, history_rng, window_rng, later_rng, campaign_rng = streams

    end = float(HISTORY_DAYS)
    window_end = end + CONVERSION_DAYS
    season = purchases.seasonality(HISTORY_START, HISTORY_DAYS + max(CHURN_DAYS, CONVERSION_DAYS, future_days))
    cumulative = purchases.cumulative_intensity(season)
    if not 0.0 <= shift <= 5.0:
        raise DataError(f"shift: must be between 0 and 5, got {shift}")
    pop = draw_population(population_rng, customers, cumulative, HISTORY_DAYS, shift)
    rate = pop.purchase_rate

    first = (np.arange(customers), pop.join)
    repeat = purchases.place_events(history_rng, pop.join, np.minimum(pop.death, end), rate, cumulative)
    history = purchases.draw_purchases(
        history_rng, np.concatenate([first[0], repeat[0]]), np.concatenate([first[1], repeat[1]]), pop
    )
    history["day"] = np.minimum(history["day"], HISTORY_DAYS - 1)
    last = np.cumsum(np.bincount(history["customer"], minlength=customers)) - 1
    recency = end - history["day"][last] - history["seconds"][last] / 86400

    now = np.full(customers, end)
    window = purchases.draw_purchases(
        window_rng, *purchases.place_events(window_rng, now, np.minimum(pop.death, window_end), rate, cumulative), pop
    )
    bought = np.bincount(window["customer"], minlength=customers) > 0
    natural_revenue = np.bincount(window["customer"], weights=window["amount"], minlength=customers)

    alive = pop.death > end
    basket = mean_basket(pop, purchases.MEAN_QUANTITY)
    churn, p_natural, revenue_natural = natural_truth(pop, alive, basket, season)
    ids = customer_ids(customers)
    arms = campaign.arms(personalised)
    effects = arm_effects(pop, alive, recency, basket)
    featured, column = None, None
    if personalised:
        effects = campaign.coupon_effects(effects, pop, alive, recency)
        featured = featured_categories(np.random.default_rng([seed, FEATURED_STREAM]), transactions_frame(history, ids))
        coupon = len(arms) - 1
        mismatch = np.where(featured == pop.preferred_category, coupon, coupon + 1)
        column = lambda arm: np.where(arm == coupon, mismatch, arm)  # noqa: E731
    p_convert, expected_revenue = true_outcomes(effects, p_natural, revenue_natural, basket)
    outcomes = run_campaign(campaign_rng, effects, bought, natural_revenue, purchases.extra_basket(campaign_rng, pop),
                            len(arms), column)

    truth = pd.DataFrame({"customer_id": labels(ids, np.arange(customers)), "churn_probability": churn})
    names = arms + [f"{arms[-1]}{campaign.OTHER_SUFFIX}"] if personalised else arms
    for j, arm in enumerate(names):
        truth[f"p_convert:{arm}"] = p_convert[:, j]
    for j, arm in enumerate(names):
        truth[f"expected_revenue:{arm}"] = expected_revenue[:, j]
    truth["preferred_category"] = labels(CATEGORIES, pop.preferred_category)
    campaign_frame = pd.DataFrame(
        {
            "customer_id": labels(ids, np.arange(customers)),
            "campaign_date": np.full(customers, CAMPAIGN_DATE.to_datetime64()).astype("datetime64[us]"),
            "incentive": labels(np.array(arms), outcomes.arm),
            "converted": outcomes.converted,
            "revenue": outcomes.revenue,
        }
    )
    if personalised:
        sent = outcomes.arm == len(arms) - 1
        campaign_frame["featured_category"] = pd.Series(labels(CATEGORIES, featured)).where(sent)

    future = purchases.select(window, window["day"] < end + future_days)
    if future_days > CONVERSION_DAYS:
        later = purchases.place_events(
            later_rng, np.full(customers, window_end), np.minimum(pop.death, end + future_days), rate, cumulative
        )
        future = purchases.concat(future, purchases.draw_purchases(later_rng, *later, pop))
        order = np.lexsort((future["seconds"], future["day"], future["customer"]))
        future = purchases.select(future, order)

    return Simulation(
        transactions=transactions_frame(history, ids),
        customers=customers_frame(pop, ids),
        campaign=campaign_frame,
        truth=truth,
        catalog=campaign.catalog(personalised),
        future_transactions=transactions_frame(future, ids),
        events=events_frame(engagement.simulate_events(_events_rng(seed), pop, HISTORY_DAYS), ids) if events else None,
    )


def _events_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(EVENTS_STREAM,)))


def timestamps(table: dict[str, np.ndarray]) -> np.ndarray:
    """datetime64[us] of simulated rows from their history day and second of the day."""
    seconds = table["day"] * 86400 + table["seconds"]
    return (np.datetime64(HISTORY_START.date(), "s") + seconds.astype("timedelta64[s]")).astype("datetime64[us]")


def events_frame(table: dict[str, np.ndarray], ids: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": labels(ids, table["customer"]),
            "timestamp": timestamps(table),
            "event_type": labels(engagement.EVENT_TYPES, table["type"]),
            "channel": labels(engagement.EVENT_CHANNELS, table["type"]),
        }
    )


def featured_categories(rng: np.random.Generator, transactions: pd.DataFrame) -> np.ndarray:
    """Category index the coupon features per customer: the observed top category by affinity on the last
    history day (what `recommend` picks), or for RANDOM_FEATURED_SHARE of customers one drawn uniformly."""
    top = build_features(transactions, HISTORY_END)["top_affinity_category"].astype(str).to_numpy()
    observed = pd.Index(CATEGORIES).get_indexer(top)  # every customer bought at least once, in id order
    drawn = rng.integers(0, len(CATEGORIES), len(observed))
    return np.where(rng.random(len(observed)) < campaign.RANDOM_FEATURED_SHARE, drawn, observed)


def natural_truth(pop: Population, alive: np.ndarray, basket: np.ndarray, season: np.ndarray):
    """Without a campaign: P(no purchase in 180 days), P(purchase in 30 days), expected 30-day spend."""
    after = season[HISTORY_DAYS:]
    rate, dropout = pop.purchase_rate[alive], pop.dropout_rate[alive]
    churn = np.ones(len(pop))
    churn[alive] = purchases.no_purchase_probability(rate, dropout, after[:CHURN_DAYS])
    p_natural = np.zeros(len(pop))
    p_natural[alive] = 1 - purchases.no_purchase_probability(rate, dropout, after[:CONVERSION_DAYS])
    revenue = np.zeros(len(pop))
    revenue[alive] = basket[alive] * purchases.expected_purchases(rate, dropout, after[:CONVERSION_DAYS])
    return churn, p_natural, revenue


def customer_ids(n: int) -> np.ndarray:
    """'C000001', 'C000002', ... (wider when there are a million customers or more)."""
    width = max(6, len(str(n)))
    return np.char.add("C", np.char.zfill(np.arange(1, n + 1).astype(str), width))


def labels(names: np.ndarray, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """String column `names[codes]` built in Arrow, without millions of Python strings."""
    return pd.arrays.ArrowStringArray(pa.array(names).take(pa.array(codes))).astype("str")


def transactions_frame(table: dict[str, np.ndarray], ids: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": labels(ids, table["customer"]),
            "timestamp": timestamps(table),
            "amount": table["amount"],
            "quantity": table["quantity"],
            "category": labels(CATEGORIES, table["category"]),
            "channel": labels(CHANNELS, table["channel"]),
        }
    )


def customers_frame(pop: Population, ids: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": labels(ids, np.arange(len(pop))),
            "age": pop.age,
            "region": labels(REGIONS, pop.region),
            "signup_channel": labels(SIGNUP_CHANNELS, pop.signup_channel),
            "email_opt_in": pop.email_opt_in,
            "loyalty_member": pop.loyalty_member,
        }
    )


def write_simulation(sim: Simulation, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the five files of the data platform (six with events) atomically; returns name → path."""
    out = Path(output_dir)
    tables = {
        "transactions.parquet": sim.transactions,
        "customers.parquet": sim.customers,
        "campaign.parquet": sim.campaign,
        "truth.parquet": sim.truth,
    }
    paths = {name: write_table(df, out / name) for name, df in tables.items()}
    paths["incentives.yaml"] = write_yaml(sim.catalog, out / "incentives.yaml")
    if sim.events is not None:
        paths[EVENTS_FILE] = write_table(sim.events, out / EVENTS_FILE)
    return {name: paths[name] for name in [*FILES, EVENTS_FILE] if name in paths}


def write_yaml(data: dict, path: Path) -> Path:
    """Write YAML beside `path` and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
