"""Buy-till-you-die models of how many purchases a customer will make and what they will spend.

BG/NBD (Fader, Hardie & Lee, 2005): while alive, a customer buys at a Poisson rate λ ~ Gamma(r, α); after
each purchase they drop out with probability p ~ Beta(a, b). Gamma-Gamma (Fader, Hardie & Lee, 2005, "RFM
and CLV"): the mean spend per purchase varies around a customer's own mean, independent of how often they
buy. Both need only four numbers per customer, all in the `winback features build` table:

- x: repeat purchase days (`frequency` − 1), t_x: days from the first to the last purchase day
  (`tenure_days` − `recency_days`), age: days from the first purchase day to the cutoff (`tenure_days`);
- m: mean spend per purchase day (`monetary_total` / `frequency`).

This module holds the predictions (closed forms, vectorised, no fitting); `training.value.btyd` fits the
parameters by maximum likelihood. Times are in days.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import special


@dataclass(frozen=True)
class Rfm:
    """The per-customer summary both models read, as float arrays of one length."""

    x: np.ndarray
    t_x: np.ndarray
    age: np.ndarray
    m: np.ndarray

    @classmethod
    def from_features(cls, frequency, recency_days, tenure_days, monetary_total) -> Rfm:
        """From the feature columns (NaN-free arrays; customers with at least one purchase)."""
        frequency = np.asarray(frequency, dtype=float)
        tenure = np.asarray(tenure_days, dtype=float)
        x = np.maximum(frequency - 1.0, 0.0)
        t_x = np.clip(tenure - np.asarray(recency_days, dtype=float), 0.0, tenure)
        m = np.asarray(monetary_total, dtype=float) / np.maximum(frequency, 1.0)
        return cls(x=x, t_x=t_x, age=tenure, m=m)


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float

    def _odds_dead(self, x, t_x, age) -> np.ndarray:
        """a / (b + x − 1) · ((α + age) / (α + t_x))^(r + x) for x > 0, else 0: P(dead) / P(alive)."""
        x, t_x, age = (np.asarray(v, dtype=float) for v in (x, t_x, age))
        repeat = x > 0
        odds = np.zeros(np.broadcast(x, t_x, age).shape)
        with np.errstate(over="ignore"):
            odds[repeat] = (self.a / (self.b + x[repeat] - 1.0)
                            * np.exp((self.r + x[repeat]) * (np.log(self.alpha + age[repeat])
                                                             - np.log(self.alpha + t_x[repeat]))))
        return odds

    def p_alive(self, x, t_x, age) -> np.ndarray:
        """P(the customer has not dropped out by `age`)."""
        return 1.0 / (1.0 + self._odds_dead(x, t_x, age))

    def _silent(self, x, age, t: float) -> np.ndarray:
        """P(no purchase in (age, age + t] | alive): E[exp(−λt)] with λ ~ Gamma(r + x, α + age) a posteriori."""
        x, age = np.asarray(x, dtype=float), np.asarray(age, dtype=float)
        return np.exp((self.r + x) * (np.log(self.alpha + age) - np.log(self.alpha + age + t)))

    def alive_purchases(self, x, age, t: float) -> np.ndarray:
        """E[purchases in (age, age + t] | x, age, alive at age]: the numerator of equation 10."""
        x, age = np.asarray(x, dtype=float), np.asarray(age, dtype=float)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyper = special.hyp2f1(r + x, b + x, a + b + x - 1.0, t / (alpha + age + t))
        return (a + b + x - 1.0) / (a - 1.0) * (1.0 - self._silent(x, age, t) * hyper)

    def expected_purchases(self, x, t_x, age, t: float) -> np.ndarray:
        """E[purchases in (age, age + t] | x, t_x, age] (equation 10 of the paper)."""
        return self.alive_purchases(x, age, t) / (1.0 + self._odds_dead(x, t_x, age))

    def conditional_purchases(self, x, t_x, age, t: float) -> np.ndarray:
        """E[purchases in (age, age + t] | at least one]: the alive probability cancels, so this stays finite for
        customers whose alive probability underflows (long silences after many purchases)."""
        return self.alive_purchases(x, age, t) / np.maximum(1.0 - self._silent(x, age, t), 1e-300)

    def p_purchase(self, x, t_x, age, t: float) -> np.ndarray:
        """P(at least one purchase in (age, age + t]): alive × (1 − P(no purchase in t | alive))."""
        return self.p_alive(x, t_x, age) * (1.0 - self._silent(x, age, t))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float

    def expected_value(self, x, m) -> np.ndarray:
        """E[spend per purchase | x repeat purchases of mean m]; the population mean p·γ / (q − 1) for x = 0."""
        x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
        population = self.p * self.gamma / (self.q - 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            own = (self.gamma + m * x) * self.p / (self.p * x + self.q - 1.0)
        return np.where(x > 0, own, population)

    def to_dict(self) -> dict:
        return asdict(self)


def expected_spend(bgnbd: BgNbd, gamma_gamma: GammaGamma, rfm: Rfm, t: float) -> np.ndarray:
    """E[spend in the next `t` days]: expected purchases × expected spend per purchase."""
    return bgnbd.expected_purchases(rfm.x, rfm.t_x, rfm.age, t) * gamma_gamma.expected_value(rfm.x, rfm.m)
