"""Maximum-likelihood fits of the BG/NBD and Gamma-Gamma models (predictions: `serving.runtime.value.btyd`).

The parameters are fitted on their logarithms (all four / three are positive) with L-BFGS-B from a few
starting points; the best converged optimum is kept. Customers with no repeat purchase carry information on
BG/NBD (they buy rarely or died early) but none on Gamma-Gamma, which is fitted on repeat buyers only.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from features.errors import DataError
from serving.runtime.value.btyd import BgNbd, GammaGamma, Rfm

_BGNBD_STARTS = ((0.5, 10.0, 1.0, 2.0), (0.2, 50.0, 0.5, 1.5), (1.0, 5.0, 2.0, 5.0))
_GG_STARTS = ((1.0, 2.0, 10.0), (5.0, 4.0, 20.0), (2.0, 10.0, 100.0))


def bgnbd_log_likelihood(params: BgNbd, x, t_x, age) -> np.ndarray:
    """Per-customer log-likelihood of (x, t_x, age) under BG/NBD (equation 6 of the paper)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, age = (np.asarray(v, dtype=float) for v in (x, t_x, age))
    common = (special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
              + special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x))
    alive = -(r + x) * np.log(alpha + age)
    with np.errstate(divide="ignore", invalid="ignore"):
        dead = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1.0, 1e-300)) - (r + x) * np.log(alpha + t_x),
                        -np.inf)
    return common + np.logaddexp(alive, dead)


def gamma_gamma_log_likelihood(params: GammaGamma, x, m) -> np.ndarray:
    """Per-customer log-likelihood of the mean spend m over x ≥ 1 purchases (constant terms dropped)."""
    p, q, g = params.p, params.q, params.gamma
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    return (special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q) + q * np.log(g)
            + (p * x - 1.0) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(g + m * x))


def _best(objective, starts) -> np.ndarray:
    best = None
    for start in starts:
        result = optimize.minimize(objective, np.log(start), method="L-BFGS-B", bounds=[(-12.0, 12.0)] * len(start))
        if np.isfinite(result.fun) and (best is None or result.fun < best.fun):
            best = result
    if best is None:
        raise DataError("the buy-till-you-die model could not be fitted (no finite likelihood)")
    return np.exp(best.x)


def fit_bgnbd(rfm: Rfm) -> BgNbd:
    """BG/NBD parameters by maximum likelihood; DataError with fewer than 2 customers or no repeat purchase."""
    if len(rfm.x) < 2 or not np.any(rfm.x > 0):
        raise DataError("BG/NBD needs at least 2 customers and some repeat purchases")
    n = len(rfm.x)

    def negative(theta):
        return -bgnbd_log_likelihood(BgNbd(*np.exp(theta)), rfm.x, rfm.t_x, rfm.age).sum() / n

    return BgNbd(*(float(v) for v in _best(negative, _BGNBD_STARTS)))


def fit_gamma_gamma(rfm: Rfm) -> GammaGamma:
    """Gamma-Gamma parameters by maximum likelihood on customers with repeat purchases and positive spend."""
    keep = (rfm.x > 0) & (rfm.m > 0)
    if keep.sum() < 2:
        raise DataError("Gamma-Gamma needs at least 2 customers with repeat purchases and positive spend")
    x, m = rfm.x[keep], rfm.m[keep]

    def negative(theta):
        return -gamma_gamma_log_likelihood(GammaGamma(*np.exp(theta)), x, m).sum() / len(x)

    return GammaGamma(*(float(v) for v in _best(negative, _GG_STARTS)))
