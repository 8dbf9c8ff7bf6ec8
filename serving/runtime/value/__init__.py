"""Customer value: what a customer is expected to spend over the horizon if they stay, learned from snapshots.

`value_if_retained` = E[spend in (as_of, as_of + horizon] | the customer buys in it], a LightGBM gamma
regression (log link) that corrects the buy-till-you-die baseline: BG/NBD × Gamma-Gamma's own conditional
expectation (`btyd_conditional_spend`) enters as an offset, so the trees learn a multiplicative correction
of it. Two choices make it hold when it is applied a horizon after its newest training snapshot:

- the baseline carries the decay of purchase rates with the customer's age, which a tree cannot extrapolate;
- the trees read only **age-invariant** columns (short trailing windows, per-purchase and per-day rates,
  gaps): cumulative totals such as `monetary_total` or `spend_365d` grow with tenure, and trees learned on
  younger snapshots read larger totals at scoring time as richer customers (measured on CDNOW, README).

With the churn model's probability p: `expected_spend` = (1 − p) × value_if_retained (no purchase in the
horizon is the churn label), `value_at_risk` = p × value_if_retained, and `clv_12m` = expected_spend × the
BG/NBD ratio of expected purchases over 365 days to those over the horizon (undiscounted).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from serving.runtime.boosters import BoosterCaller
from serving.runtime.value.btyd import BgNbd, GammaGamma, Rfm

RFM_COLUMNS = ("frequency", "recency_days", "tenure_days", "monetary_total")
# columns a tree may read: none of them grows with the customer's age once tenure exceeds their window
INVARIANT_COLUMNS = ("recency_days", "monetary_mean", "gap_mean_days", "gap_std_days", "overdue_ratio",
                     "trend_90d", "spend_30d", "spend_90d", "purchases_30d", "purchases_90d")
RATE_COLUMNS = ("spend_per_day", "purchase_days_per_day", "btyd_conditional_spend")
MIN_RATE_DAYS = 30  # rates divide by tenure clipped below at this many days
CLV_DAYS = 365
VALUE_BOOSTER_FILE = "value_booster.txt"


def rfm_from_columns(column: Callable[[str], np.ndarray]) -> Rfm:
    """The BTYD summary from the feature columns; customers without purchases (NaN) count as x = age = 0."""
    values = [np.nan_to_num(np.asarray(column(name), dtype=float), nan=0.0) for name in RFM_COLUMNS]
    return Rfm.from_features(*values)


def btyd_conditional_spend(bgnbd: BgNbd, gamma_gamma: GammaGamma, rfm: Rfm, days: float) -> np.ndarray:
    """E[spend in the next `days` | at least one purchase in them] under BG/NBD × Gamma-Gamma."""
    return bgnbd.conditional_purchases(rfm.x, rfm.t_x, rfm.age, days) * gamma_gamma.expected_value(rfm.x, rfm.m)


def design(column: Callable[[str], np.ndarray], names: list[str], bgnbd: BgNbd, gamma_gamma: GammaGamma,
           horizon_days: float, rfm: Rfm | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the trees' input matrix with columns `names`, the baseline conditional spend), one row per customer.

    `column(name)` returns a feature column as floats; training passes a DataFrame's, serving the encoded
    array's, so both build the same matrix with this one function."""
    rfm = rfm_from_columns(column)
    baseline = btyd_conditional_spend(bgnbd, gamma_gamma, rfm, horizon_days)
    tenure = np.maximum(rfm.age, MIN_RATE_DAYS)
    derived = {"spend_per_day": np.nan_to_num(np.asarray(column("monetary_total"), dtype=float)) / tenure,
               "purchase_days_per_day": np.nan_to_num(np.asarray(column("frequency"), dtype=float)) / tenure,
               "btyd_conditional_spend": baseline}
    matrix = np.column_stack([derived[n] if n in derived else np.asarray(column(n), dtype=float) for n in names])
    return matrix, baseline


def value_columns(available: list[str]) -> list[str] | None:
    """The trees' columns for a model with features `available`; None without the RFM columns (no value)."""
    if not all(c in available for c in RFM_COLUMNS):
        return None
    return [c for c in INVARIANT_COLUMNS if c in available] + list(RATE_COLUMNS)


class ValueModel:
    """BG/NBD and Gamma-Gamma parameters, the correcting booster (None: the baseline alone) and its columns."""

    def __init__(self, bgnbd: dict, gamma_gamma: dict, horizon_days: int, columns: list[str],
                 booster_model: str | None = None, metadata: dict | None = None):
        self.bgnbd = BgNbd(**bgnbd)
        self.gamma_gamma = GammaGamma(**gamma_gamma)
        self.horizon_days = int(horizon_days)
        self.columns = list(columns)
        self.booster_model = booster_model
        self.metadata = metadata or {}

    def to_dict(self) -> dict:
        return {"bgnbd": self.bgnbd.to_dict(), "gamma_gamma": self.gamma_gamma.to_dict(),
                "horizon_days": self.horizon_days, "columns": self.columns, "metadata": self.metadata}

    @classmethod
    def from_dict(cls, doc: dict, booster_model: str | None) -> "ValueModel":
        return cls(doc["bgnbd"], doc["gamma_gamma"], doc["horizon_days"], doc["columns"], booster_model,
                   doc.get("metadata"))

    @property
    def _caller(self) -> BoosterCaller | None:
        if self.booster_model is None:
            return None
        if getattr(self, "_booster_caller", None) is None:
            import lightgbm as lgb

            self._booster_caller = BoosterCaller(lgb.Booster(model_str=self.booster_model))
        return self._booster_caller

    def if_retained(self, column: Callable[[str], np.ndarray], rfm: Rfm | None = None) -> np.ndarray:
        """value_if_retained per customer: the baseline × the trees' correction (exp of their raw score)."""
        matrix, baseline = design(column, self.columns, self.bgnbd, self.gamma_gamma, self.horizon_days, rfm)
        caller = self._caller
        return baseline if caller is None else baseline * caller.predict(matrix)

    def year_ratio(self, rfm: Rfm) -> np.ndarray:
        """E[purchases in 365 days] / E[purchases in the horizon] under BG/NBD: scales a horizon to 12 months (the
        alive probability cancels, so it is left out: it underflows for long silences)."""
        horizon = self.bgnbd.alive_purchases(rfm.x, rfm.age, self.horizon_days)
        year = self.bgnbd.alive_purchases(rfm.x, rfm.age, CLV_DAYS)
        return year / np.maximum(horizon, 1e-300)
