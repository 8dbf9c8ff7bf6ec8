"""The synthetic data platform: contract of the files, plausibility, and truth that matches outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import typer
import yaml
from typer.testing import CliRunner

from features.errors import DataError
from features.simulate import CAMPAIGN_DATE, EVENTS_FILE, HISTORY_END, HISTORY_START, FILES, simulate, write_simulation
from features.simulate.campaign import ARMS, Effects, net_value, run_campaign, true_outcomes
from features.simulate.purchases import expected_purchases, no_purchase_probability, seasonality
from winback.cli_simulate import register

N = 20_000


@pytest.fixture(scope="module")
def sim():
    return simulate(N, seed=7, future_days=180)


@pytest.fixture(scope="module")
def per_customer(sim):
    """Observable summaries per customer, in truth order."""
    tx = sim.transactions
    grouped = tx.groupby("customer_id")
    channel = tx.groupby(["customer_id", "channel"]).size().unstack(fill_value=0).idxmax(axis=1)
    frame = pd.DataFrame(
        {
            "transactions": grouped.size(),
            "recency_days": (sim.campaign_date - grouped["timestamp"].max()).dt.days,
            "main_channel": channel,
        }
    )
    return frame.loc[sim.truth["customer_id"]].join(sim.customers.set_index("customer_id"))


def probabilities(truth: pd.DataFrame) -> np.ndarray:
    return truth[[f"p_convert:{arm}" for arm in ARMS]].to_numpy()


# --- unit: the exact window probabilities -------------------------------------------------


def test_no_purchase_probability_without_dropout_is_poisson_zero():
    p = no_purchase_probability(np.array([0.01]), np.array([1e-12]), np.ones(100))
    assert p[0] == pytest.approx(np.exp(-1.0), rel=1e-9)


def test_no_purchase_probability_adds_death_before_first_purchase():
    # λ = 0.02, μ = 0.01, 50 days: e^-1.5 + (μ / (λ + μ)) · (1 − e^-1.5) = 0.22313 + 0.25896
    p = no_purchase_probability(np.array([0.02]), np.array([0.01]), np.ones(50))
    assert p[0] == pytest.approx(0.482087, abs=1e-6)


def test_expected_purchases_discounts_by_survival():
    # λ (1 − e^-μH) / μ with λ = 0.1, μ = 0.01, H = 30: 10 · (1 − e^-0.3) = 2.59182
    n = expected_purchases(np.array([0.1]), np.array([0.01]), np.ones(30))
    assert n[0] == pytest.approx(2.591818, abs=1e-6)


def test_true_outcome_mixes_kept_natural_buyers_and_won_non_buyers():
    effects = Effects(harm=np.array([[0.0, 0.25]]), lift=np.array([[0.0, 0.1]]), revenue_factor=np.array([1.0, 0.9]))
    p, revenue = true_outcomes(effects, np.array([0.4]), np.array([20.0]), np.array([50.0]))
    # 0.4 · 0.75 + 0.6 · 0.1 = 0.36; 0.9 · (0.75 · 20 + 0.6 · 0.1 · 50) = 16.2
    np.testing.assert_allclose(p, [[0.4, 0.36]])
    np.testing.assert_allclose(revenue, [[20.0, 16.2]])


def test_full_harm_stops_every_natural_buyer_and_full_lift_wins_every_other():
    n = 400
    effects = Effects(harm=np.ones((n, 4)), lift=np.ones((n, 4)), revenue_factor=np.ones(4))
    bought = np.arange(n) % 2 == 0
    out = run_campaign(np.random.default_rng(0), effects, bought, np.full(n, 30.0), np.full(n, 12.5))
    np.testing.assert_array_equal(out.converted, (~bought).astype(int))
    np.testing.assert_array_equal(out.revenue, np.where(bought, 0.0, 12.5))


def test_net_value_of_control_is_zero_and_discount_pays_redemption():
    p = np.array([[0.2, 0.2, 0.3, 0.2]])
    # discount: 40 · 0.1 − 0.10 − 6 · 0.3 = 2.1; free shipping: 0 − 0.10 − 3 · 0.2 = −0.7
    np.testing.assert_allclose(net_value(p), [[0.0, -0.05, 2.1, -0.7]])


def test_december_is_the_busiest_month_and_august_quieter_than_average():
    season = pd.Series(seasonality(pd.Timestamp("2024-01-01"), 366), index=pd.date_range("2024-01-01", periods=366))
    monthly = season.groupby(season.index.month).mean()
    assert monthly.idxmax() == 12
    assert monthly[12] > 1.2
    assert monthly[8] < 0.95


# --- data: the files' contract -----------------------------------------------------------


def test_dates_are_two_years_of_history_then_the_campaign_day():
    assert (HISTORY_START, HISTORY_END, CAMPAIGN_DATE) == (
        pd.Timestamp("2024-01-01"),
        pd.Timestamp("2025-12-31"),
        pd.Timestamp("2026-01-01"),
    )


def test_transactions_have_the_contract_columns_and_values(sim):
    tx = sim.transactions
    assert list(tx.columns) == ["customer_id", "timestamp", "amount", "quantity", "category", "channel"]
    assert pd.api.types.is_datetime64_any_dtype(tx["timestamp"])
    assert pd.api.types.is_integer_dtype(tx["quantity"]) and tx["quantity"].min() >= 1
    assert tx["amount"].min() > 0
    assert set(tx["channel"]) == {"web", "store", "app"}
    assert set(tx["category"]) == {"grocery", "beauty", "apparel", "home", "toys", "electronics"}
    assert tx["customer_id"].str.fullmatch(r"C\d{6}").all()
    assert tx["timestamp"].dt.hour.between(7, 23).all()


def test_no_transaction_falls_outside_the_history(sim):
    assert sim.transactions["timestamp"].min() >= HISTORY_START
    assert sim.transactions["timestamp"].max() < HISTORY_END + pd.Timedelta(days=1)


def test_every_table_holds_exactly_the_customers_who_bought(sim):
    buyers = sorted(sim.transactions["customer_id"].unique())
    assert len(buyers) == N
    for table in (sim.customers, sim.campaign, sim.truth):
        assert table["customer_id"].tolist() == buyers


def test_campaign_table_has_one_arm_and_outcome_per_customer(sim):
    c = sim.campaign
    assert list(c.columns) == ["customer_id", "campaign_date", "incentive", "converted", "revenue"]
    assert (c["campaign_date"] == CAMPAIGN_DATE).all()
    assert set(c["incentive"]) == set(ARMS)
    assert set(c["converted"]) == {0, 1}
    assert (c.loc[c["converted"] == 0, "revenue"] == 0).all()
    assert (c.loc[c["converted"] == 1, "revenue"] > 0).all()


def test_truth_has_churn_and_both_quantities_for_every_arm(sim):
    expected = ["customer_id", "churn_probability"]
    expected += [f"p_convert:{arm}" for arm in ARMS] + [f"expected_revenue:{arm}" for arm in ARMS]
    assert list(sim.truth.columns) == expected + ["preferred_category"]
    values = sim.truth.drop(columns=["customer_id", "preferred_category"])
    assert values.min().min() >= 0 and sim.truth["churn_probability"].max() <= 1


def test_future_purchases_start_after_the_history_and_stop_at_future_days(sim):
    future = sim.future_transactions
    assert future["timestamp"].min() >= CAMPAIGN_DATE
    assert future["timestamp"].max() < CAMPAIGN_DATE + pd.Timedelta(days=180)
    assert simulate(50, seed=7).future_transactions.empty


# --- data: determinism -------------------------------------------------------------------


def test_same_seed_gives_identical_frames():
    a, b = simulate(800, seed=3), simulate(800, seed=3)
    for name in ("transactions", "customers", "campaign", "truth"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def test_different_seed_gives_different_purchases():
    a, b = simulate(800, seed=3), simulate(800, seed=4)
    assert not a.transactions["amount"].equals(b.transactions["amount"])


def test_asking_for_the_future_changes_nothing_observed():
    a, b = simulate(800, seed=3), simulate(800, seed=3, future_days=365)
    for name in ("transactions", "customers", "campaign", "truth"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))


def test_zero_customers_is_a_data_error():
    with pytest.raises(DataError, match="customers"):
        simulate(0, seed=0)


# --- model: plausibility and truth that matches the simulated outcomes --------------------


def test_churn_rate_is_plausible(sim):
    # about half the customers have dropped out after a mean lifetime of ~14 months
    assert 0.40 < sim.truth["churn_probability"].mean() < 0.75


def test_observed_future_churn_matches_true_churn_probability(sim):
    bought = sim.future_transactions["customer_id"].unique()
    observed = 1 - len(bought) / N
    assert observed == pytest.approx(sim.truth["churn_probability"].mean(), abs=0.015)


def test_most_customers_have_between_1_and_30_transactions(per_customer):
    counts = per_customer["transactions"]
    assert counts.min() >= 1
    assert (counts <= 30).mean() > 0.9
    assert (counts == 1).mean() < 0.5


def test_customers_join_throughout_the_history(sim):
    first = sim.transactions.groupby("customer_id")["timestamp"].min()
    # joins grow by 80 % over the two years: ~27 % in the last half year, ~15 % in the first two months
    assert 0.2 < (first >= pd.Timestamp("2025-07-01")).mean() < 0.35
    assert 0.08 < (first < pd.Timestamp("2024-03-01")).mean() < 0.25


def test_loyalty_members_buy_more_often_but_do_not_give_it_away(per_customer):
    counts = np.log(per_customer["transactions"])
    loyal = per_customer["loyalty_member"].astype(bool)
    assert counts[loyal].mean() > counts[~loyal].mean() + 0.2
    assert 0.05 < np.corrcoef(loyal, counts)[0, 1] < 0.5


def test_every_arm_gets_about_a_quarter_of_customers(sim):
    shares = sim.campaign["incentive"].value_counts(normalize=True)
    np.testing.assert_allclose(shares[ARMS], 0.25, atol=0.02)


def test_control_conversion_is_plausible_and_matches_truth(sim):
    control = sim.campaign["incentive"] == ARMS[0]
    true_rate = sim.truth["p_convert:no_contact"].mean()
    assert 0.10 < true_rate < 0.30
    assert sim.campaign.loc[control, "converted"].mean() == pytest.approx(true_rate, abs=0.02)


def test_observed_outcomes_are_drawn_from_the_true_probabilities(sim):
    arm = sim.campaign["incentive"].map({a: j for j, a in enumerate(ARMS)}).to_numpy()
    rows = np.arange(N)
    p = probabilities(sim.truth)[rows, arm]
    revenue = sim.truth[[f"expected_revenue:{a}" for a in ARMS]].to_numpy()[rows, arm]
    assert sim.campaign["converted"].mean() == pytest.approx(p.mean(), abs=0.01)
    assert sim.campaign["revenue"].mean() == pytest.approx(revenue.mean(), rel=0.06)


def test_incentives_lift_conversion_on_average_by_a_few_points(sim):
    uplift = (probabilities(sim.truth) - probabilities(sim.truth)[:, :1]).mean(axis=0)
    assert 0.01 < uplift[2] < 0.08  # discount
    assert 0.005 < uplift[3] < 0.06  # free shipping
    assert -0.02 < uplift[1] < 0.02  # reminder: wins and sleeping dogs roughly cancel


def test_reminder_lowers_conversion_without_opt_in_and_for_very_active_customers(sim, per_customer):
    p = probabilities(sim.truth)
    reminder = p[:, 1] - p[:, 0]
    opt_in = per_customer["email_opt_in"].to_numpy(dtype=bool)
    very_active = ((per_customer["recency_days"] <= 7) & (per_customer["transactions"] >= 10)).to_numpy()
    assert reminder[~opt_in].mean() < -0.01
    assert reminder[opt_in & very_active].mean() < -0.03
    lapsed = per_customer["recency_days"].between(90, 150).to_numpy()
    assert reminder[opt_in & lapsed].mean() > 0.02


def test_free_shipping_helps_online_customers_far_more_than_store_customers(sim, per_customer):
    p = probabilities(sim.truth)
    shipping = p[:, 3] - p[:, 0]
    store = (per_customer["main_channel"] == "store").to_numpy()
    assert shipping[~store].mean() > 3 * shipping[store].mean()


def test_discount_never_pays_for_customers_who_would_buy_anyway(sim):
    p = probabilities(sim.truth)
    likely_buyers = p[:, 0] > 0.6
    assert likely_buyers.sum() > 1000
    assert (net_value(p)[likely_buyers, 2] < 0).all()


def test_sending_nothing_is_best_for_many_and_each_incentive_for_some(sim):
    best = np.bincount(net_value(probabilities(sim.truth)).argmax(axis=1), minlength=len(ARMS)) / N
    assert 0.2 < best[0] < 0.8
    assert (best[1:] > 0.05).all()


# --- files and command line ---------------------------------------------------------------


def test_write_simulation_writes_the_five_files_that_read_back_equal(tmp_path):
    small = simulate(200, seed=1)
    paths = write_simulation(small, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(FILES)
    assert list(paths) == FILES
    back = pd.read_parquet(paths["campaign.parquet"])
    pd.testing.assert_frame_equal(back, small.campaign, check_dtype=False)
    catalog = yaml.safe_load(paths["incentives.yaml"].read_text())
    assert catalog["control"] == "no_contact" and catalog["outcome_value"] == 40.0
    assert [item["name"] for item in catalog["incentives"]] == ["reminder_email", "discount_10", "free_shipping"]
    assert catalog["incentives"][1] == {"name": "discount_10", "cost": 0.10, "redemption_cost": 6.0}


@pytest.fixture
def cli():
    app = typer.Typer()
    register(app)

    @app.callback()
    def main():  # a callback keeps `simulate` as a named sub-command
        pass

    return app


def test_cli_writes_the_files_and_summarises_arms(cli, tmp_path):
    result = CliRunner().invoke(cli, ["simulate", "--customers", "300", "--seed", "2", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*FILES, EVENTS_FILE])  # events on by default
    assert "300 customers" in result.output and "churn rate" in result.output
    for arm in ARMS:
        assert arm in result.output


def test_cli_rejects_zero_customers_with_one_line_and_exit_2(cli, tmp_path):
    result = CliRunner().invoke(cli, ["simulate", "--customers", "0", "--output-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--customers" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())
