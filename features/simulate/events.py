"""Simulated engagement: visits, app sessions, e-mails and service contacts that fade before a drop-out.

Each customer's engagement follows their hidden purchase rate times a noisy personal level, starts a
few weeks before the first purchase (browsing prospects), and decays linearly over the 30–90 days
before their hidden drop-out to a tenth of its level (a trickle remains afterwards). Purchases keep
their rate until the drop-out, so falling engagement warns before recency can. Support tickets and
complaints become more likely while engagement decays. E-mails are sent to opted-in customers
whatever they do; opens and clicks follow engagement. Times are days since the history start; all
events are Poisson processes drawn by thinning, vectorised over customers.
"""

from __future__ import annotations

import numpy as np

from features.simulate.population import Population

VISITS_PER_PURCHASE = 3.0
APP_SESSIONS_PER_PURCHASE = (0.3, 0.6, 5.0)  # by preferred channel: web, store, app
EMAIL_SENDS_PER_DAY = 1 / 7
OPEN_PROBABILITY, CLICK_GIVEN_OPEN = 0.35, 0.3
SUPPORT_PER_DAY, COMPLAINT_PER_DAY = 1 / 250, 1 / 1200
CONTACT_BOOST = 4.0  # service contacts × (1 + boost · lost engagement) while engagement decays
LEVEL_SIGMA = 0.5  # personal engagement level: lognormal noise around the purchase rate
DECAY_DAYS = (30.0, 90.0)  # engagement decays over this many days before the drop-out (uniform)
FLOOR, AFTER = 0.1, 0.03  # activity at the drop-out, and after it
BROWSE_DAYS = 20.0  # mean days of browsing before the first purchase
EVENT_TYPES = np.array(["visit", "app_session", "email_send", "email_open", "email_click", "support_ticket",
                        "complaint"])
EVENT_CHANNELS = np.array(["web", "app", "email", "email", "email", "phone", "phone"])


def activity(pop: Population, decay: np.ndarray, customer: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Engagement multiplier at `time`: 1 until the decay starts, linear down to FLOOR at the drop-out, then AFTER."""
    death = pop.death[customer]
    days = decay[customer]
    fading = FLOOR + (1 - FLOOR) * (death - time) / days
    return np.where(time < death - days, 1.0, np.where(time < death, fading, AFTER))


def _poisson_times(rng: np.random.Generator, start: np.ndarray, end: np.ndarray,
                   rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(customer, time) of homogeneous Poisson events of `rate` per day in [start, end)."""
    span = np.maximum(end - start, 0.0)
    customer = np.repeat(np.arange(len(start)), rng.poisson(rate * span))
    return customer, start[customer] + rng.random(len(customer)) * span[customer]


def simulate_events(rng: np.random.Generator, pop: Population, history_days: int) -> dict[str, np.ndarray]:
    """Engagement events in [0, history_days): customer, type (index into EVENT_TYPES), day and seconds,
    sorted by customer and time."""
    n = len(pop)
    level = pop.purchase_rate * rng.lognormal(-LEVEL_SIGMA**2 / 2, LEVEL_SIGMA, n)
    decay = rng.uniform(*DECAY_DAYS, n)
    start = np.maximum(pop.join - rng.exponential(BROWSE_DAYS, n), 0.0)
    end = np.full(n, float(history_days))
    parts = []

    app_rate = np.asarray(APP_SESSIONS_PER_PURCHASE)[pop.preferred_channel]
    for kind, rate in ((0, VISITS_PER_PURCHASE * level), (1, app_rate * level)):
        customer, time = _poisson_times(rng, start, end, rate)
        keep = rng.random(len(time)) < activity(pop, decay, customer, time)
        parts.append((customer[keep], np.full(keep.sum(), kind), time[keep]))

    sends = np.where(pop.email_opt_in, EMAIL_SENDS_PER_DAY, 0.0)
    customer, time = _poisson_times(rng, pop.join, end, sends)
    parts.append((customer, np.full(len(customer), 2), time))
    relative = np.clip(level / np.mean(level), 0.2, 3.0) ** 0.5
    opened = rng.random(len(time)) < np.minimum(OPEN_PROBABILITY * relative[customer], 0.95) * \
        activity(pop, decay, customer, time)
    open_time = time[opened] + rng.exponential(0.5, opened.sum())
    parts.append((customer[opened], np.full(opened.sum(), 3), open_time))
    clicked = rng.random(opened.sum()) < CLICK_GIVEN_OPEN
    parts.append((customer[opened][clicked], np.full(clicked.sum(), 4),
                  open_time[clicked] + rng.exponential(0.01, clicked.sum())))

    for kind, base in ((5, SUPPORT_PER_DAY), (6, COMPLAINT_PER_DAY)):
        customer, time = _poisson_times(rng, pop.join, end, np.full(n, base * (1 + CONTACT_BOOST)))
        fading = 1.0 - activity(pop, decay, customer, time)
        boost = np.where(time < pop.death[customer], 1 + CONTACT_BOOST * fading, 0.2)
        keep = rng.random(len(time)) < boost / (1 + CONTACT_BOOST)
        parts.append((customer[keep], np.full(keep.sum(), kind), time[keep]))

    customer, kind, time = (np.concatenate(x) for x in zip(*parts))
    inside = time < history_days
    customer, kind, time = customer[inside], kind[inside], time[inside]
    order = np.lexsort((time, customer))
    customer, kind, time = customer[order], kind[order], time[order]
    day = np.floor(time).astype(np.int64)
    return {"customer": customer, "type": kind, "day": day,
            "seconds": np.minimum(np.round((time - day) * 86400), 86399).astype(np.int64)}
