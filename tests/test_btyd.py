"""BG/NBD and Gamma-Gamma: the fits recover known parameters, the predictions match simulated futures.

Customers are drawn from the models' own stories (a Poisson buyer who may drop out after each repeat
purchase; spends around a customer's own mean), so the truth is known."""

import numpy as np
import pandas as pd
import pytest

from features.build import build_features
from features.errors import DataError
from serving.runtime.value.btyd import BgNbd, GammaGamma, Rfm, expected_spend
from training.value.btyd import fit_bgnbd, fit_gamma_gamma

TRUE_BG = BgNbd(r=0.3, alpha=30.0, a=0.8, b=2.5)
TRUE_GG = GammaGamma(p=6.0, q=4.0, gamma=15.0)
HORIZON = 180.0


def _simulate(n=30000, seed=0, max_purchases=400):
    """First purchase at day 0, observed at an age of 200–400 days, then a future of HORIZON days."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(TRUE_BG.r, 1.0 / TRUE_BG.alpha, n)
    drop = rng.beta(TRUE_BG.a, TRUE_BG.b, n)
    last_repeat = rng.geometric(drop)  # dies right after this repeat purchase
    times = np.cumsum(rng.exponential(1.0 / rate[:, None], (n, max_purchases)), axis=1)
    alive_purchase = np.arange(1, max_purchases + 1)[None, :] <= last_repeat[:, None]
    age = rng.uniform(200.0, 400.0, n)
    seen = alive_purchase & (times <= age[:, None])
    x = seen.sum(axis=1).astype(float)
    t_x = np.where(seen, times, 0.0).max(axis=1)
    future = (alive_purchase & (times > age[:, None]) & (times <= age[:, None] + HORIZON)).sum(axis=1)
    alive = last_repeat > x  # has not made the purchase after which they drop out
    nu = rng.gamma(TRUE_GG.q, 1.0 / TRUE_GG.gamma, n)  # a customer's own mean spend is p / nu
    spends = rng.gamma(TRUE_GG.p, 1.0 / nu[:, None], (n, int(max(x.max(), 1))))
    m = np.where(x > 0, (spends * (np.arange(spends.shape[1])[None, :] < x[:, None])).sum(axis=1) / np.maximum(x, 1),
                 0.0)
    return Rfm(x=x, t_x=t_x, age=age, m=m), future, alive, TRUE_GG.p * nu ** -1.0


@pytest.fixture(scope="module")
def simulated():
    return _simulate()


def test_bgnbd_fit_recovers_the_parameters_it_was_simulated_with(simulated):
    rfm = simulated[0]
    fitted = fit_bgnbd(rfm)
    assert fitted.r == pytest.approx(TRUE_BG.r, rel=0.1) and fitted.alpha == pytest.approx(TRUE_BG.alpha, rel=0.15)
    assert fitted.a == pytest.approx(TRUE_BG.a, rel=0.25) and fitted.b == pytest.approx(TRUE_BG.b, rel=0.25)


def test_conditional_expectations_add_up_to_the_simulated_future(simulated):
    rfm, future, alive, _ = simulated
    expected = TRUE_BG.expected_purchases(rfm.x, rfm.t_x, rfm.age, HORIZON)
    assert expected.sum() == pytest.approx(future.sum(), rel=0.03)
    busy = rfm.x >= 3  # and per group: recent frequent buyers against the rest
    assert expected[busy].sum() == pytest.approx(future[busy].sum(), rel=0.05)
    assert TRUE_BG.p_alive(rfm.x, rfm.t_x, rfm.age).mean() == pytest.approx(alive.mean(), abs=0.01)
    never = rfm.x == 0
    assert np.all(TRUE_BG.p_alive(rfm.x[never], rfm.t_x[never], rfm.age[never]) == 1.0)  # cannot have dropped out


def test_gamma_gamma_fit_and_its_expected_spend_per_purchase(simulated):
    rfm, _, _, true_mean = simulated
    fitted = fit_gamma_gamma(rfm)
    assert fitted.p == pytest.approx(TRUE_GG.p, rel=0.15) and fitted.q == pytest.approx(TRUE_GG.q, rel=0.2)
    repeat = rfm.x > 0
    assert fitted.expected_value(rfm.x[repeat], rfm.m[repeat]).sum() == pytest.approx(true_mean[repeat].sum(), rel=0.03)
    assert fitted.expected_value([0.0], [0.0])[0] == pytest.approx(fitted.p * fitted.gamma / (fitted.q - 1))
    both = expected_spend(TRUE_BG, TRUE_GG, rfm, HORIZON)
    assert both == pytest.approx(TRUE_BG.expected_purchases(rfm.x, rfm.t_x, rfm.age, HORIZON)
                                 * TRUE_GG.expected_value(rfm.x, rfm.m))


def test_rfm_comes_from_the_features_build_table():
    tx = pd.DataFrame({"customer_id": ["a", "a", "a", "a", "b"],
                       "timestamp": pd.to_datetime(["2024-01-01", "2024-01-11", "2024-01-11", "2024-01-31",
                                                    "2024-02-05"]),
                       "amount": [10.0, 5.0, 15.0, 30.0, 8.0]})
    f = build_features(tx, pd.Timestamp("2024-02-10"))
    rfm = Rfm.from_features(f.frequency, f.recency_days, f.tenure_days, f.monetary_total)
    # a: purchase days 0, 10, 30 (two rows on day 10 are one purchase of 20), as of day 40
    assert rfm.x.tolist() == [2.0, 0.0] and rfm.t_x.tolist() == [30.0, 0.0] and rfm.age.tolist() == [40.0, 5.0]
    assert rfm.m.tolist() == [20.0, 8.0]


def test_too_little_data_is_a_clear_error():
    one = Rfm(x=np.array([0.0, 0.0]), t_x=np.zeros(2), age=np.array([10.0, 20.0]), m=np.array([5.0, 6.0]))
    with pytest.raises(DataError, match="repeat purchases"):
        fit_bgnbd(one)
    with pytest.raises(DataError, match="repeat purchases"):
        fit_gamma_gamma(one)
