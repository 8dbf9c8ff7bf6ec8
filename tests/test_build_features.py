"""Point-in-time features: hand-computed values, windows, the as_of cutoff and no leakage from the future."""

import numpy as np
import pandas as pd
import pytest

from features.build import FEATURE_DESCRIPTIONS, build_features
from features.errors import DataError

AS_OF = "2024-06-30"
BASE_COLUMNS = [
    "recency_days", "frequency", "purchase_count", "monetary_total", "monetary_mean", "tenure_days",
    "purchases_30d", "spend_30d", "purchases_90d", "spend_90d", "purchases_180d", "spend_180d",
    "purchases_365d", "spend_365d", "trend_90d", "gap_mean_days", "gap_std_days", "overdue_ratio",
]  # fmt: skip


@pytest.fixture
def small(make_transactions):
    # Days before 2024-06-30 (2024 is a leap year): Jan 1 → 181, Mar 1 → 121, Jun 20 → 10, Jun 1 → 29,
    # 2023-06-30 → 366.
    return make_transactions([
        ("a", "2024-01-01 09:00", 10.0),
        ("a", "2024-01-01 14:00", 5.0),   # same day: a second row, not a second purchase day
        ("a", "2024-03-01", 20.0),
        ("a", "2024-06-20", 1.0),
        ("b", "2024-06-01", 7.0),
        ("b", "2024-06-30 23:59", 3.0),   # on as_of: counts
        ("c", "2024-07-01 00:00", 99.0),  # the day after as_of: ignored, c has no row
        ("d", "2023-06-30", 50.0),
    ])


def test_hand_computed_features_for_three_customers(small):
    f = build_features(small, AS_OF)
    assert f.index.tolist() == ["a", "b", "d"] and f.index.name == "customer_id"
    assert f.columns.tolist() == BASE_COLUMNS
    expected = pd.DataFrame(
        {
            "recency_days": [10, 0, 366],
            "frequency": [3, 2, 1],
            "purchase_count": [4, 2, 1],
            "monetary_total": [36, 10, 50],            # a: 10 + 5 + 20 + 1
            "monetary_mean": [9, 5, 50],               # a: 36 / 4 rows
            "tenure_days": [181, 29, 366],
            "purchases_30d": [1, 2, 0],                # ages < 30: a Jun 20; b Jun 1 (29) and Jun 30 (0)
            "spend_30d": [1, 10, 0],
            "purchases_90d": [1, 2, 0],
            "spend_90d": [1, 10, 0],
            "purchases_180d": [2, 2, 0],               # a: Mar 1 (121) joins; Jan 1 (181) does not
            "spend_180d": [21, 10, 0],
            "purchases_365d": [4, 2, 0],               # d: 366 days is outside (as_of - 365, as_of]
            "spend_365d": [36, 10, 0],
            "trend_90d": [(1 - 20) / (1 + 20), 1, 0],  # a: last90 = 1, prev90 = 20; b: prev90 = 0; d: both 0
            "gap_mean_days": [85.5, 29, np.nan],       # a: gaps 60 and 111 → (181 - 10) / 2
            "gap_std_days": [25.5 * np.sqrt(2), np.nan, np.nan],  # sqrt((25.5² + 25.5²) / 1)
            "overdue_ratio": [10 / 85.5, 0, np.nan],
        },
        index=pd.Index(["a", "b", "d"], dtype="str", name="customer_id"),
        dtype="float64",
    )
    pd.testing.assert_frame_equal(f, expected)


def test_trailing_windows_include_day_n_minus_one_and_exclude_day_n(make_transactions):
    ages = [0, 29, 30, 89, 90, 179, 180, 364, 365]
    as_of = pd.Timestamp(AS_OF)
    rows = [("x", str((as_of - pd.Timedelta(days=age)).date()), 1.0) for age in ages]
    f = build_features(make_transactions(rows), AS_OF).loc["x"]
    assert [f["purchases_30d"], f["purchases_90d"], f["purchases_180d"], f["purchases_365d"]] == [2, 4, 6, 8]
    assert f["purchase_count"] == 9


def test_trend_is_minus_one_when_only_the_previous_quarter_has_spend(make_transactions):
    f = build_features(make_transactions([("x", "2024-03-01", 5.0)]), AS_OF)  # 121 days: previous 90 only
    assert f.loc["x", "trend_90d"] == -1.0


def test_optional_columns_give_quantity_category_and_channel_features(make_transactions):
    tx = make_transactions(
        [("a", "2024-06-01", 1.0), ("a", "2024-06-02", 1.0), ("a", "2024-06-03", 1.0), ("a", "2024-06-04", 1.0),
         ("b", "2024-06-01", 1.0)],
        quantity=[2, 3, 1, 4, 1],
        category=["toys", "books", "books", "toys", None],   # a: tie 2-2 → alphabetically first, books
        channel=["web", "web", "store", "web", "store"],
    )
    f = build_features(tx, AS_OF)
    assert f["quantity_total"].tolist() == [10.0, 1.0]
    assert f["category_count"].tolist() == [2.0, 0.0]
    assert f["top_category"].tolist()[0] == "books" and pd.isna(f["top_category"].tolist()[1])
    assert f["channel_count"].tolist() == [2.0, 1.0] and f["top_channel"].tolist() == ["web", "store"]
    assert isinstance(f["top_channel"].dtype, pd.CategoricalDtype)
    assert set(f.columns) - set(BASE_COLUMNS) == {"quantity_total", "category_count", "top_category",
                                                  "channel_count", "top_channel", "top_affinity_category",
                                                  "affinity_books", "affinity_toys"}
    assert {c for c in f.columns if not c.startswith("affinity_")} <= set(FEATURE_DESCRIPTIONS)


def test_profiles_are_joined_by_customer_and_missing_ones_are_nan(small):
    profiles = pd.DataFrame({"age": [30.0, 41.0]}, index=pd.Index(["a", "d"], dtype="str", name="customer_id"))
    f = build_features(small, AS_OF, profiles)
    assert f["age"].tolist()[0] == 30.0 and np.isnan(f["age"].tolist()[1]) and f["age"].tolist()[2] == 41.0


def test_profile_column_named_like_a_feature_is_refused(small):
    profiles = pd.DataFrame({"frequency": [1]}, index=pd.Index(["a"], dtype="str", name="customer_id"))
    with pytest.raises(DataError, match="'frequency'"):
        build_features(small, AS_OF, profiles)


def test_ids_sort_as_strings_and_row_order_does_not_matter(small):
    shuffled = small.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(build_features(shuffled, AS_OF), build_features(small, AS_OF))


def test_no_purchase_up_to_as_of_gives_an_empty_table_with_all_columns(small):
    f = build_features(small, "2020-01-01")
    assert len(f) == 0 and f.columns.tolist() == BASE_COLUMNS


def random_transactions(seed: int, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2023-01-01")
    return pd.DataFrame({
        "customer_id": pd.Series(rng.integers(0, 40, n).astype(str), dtype="str"),
        "timestamp": start + pd.to_timedelta(rng.integers(0, 546 * 24 * 60, n), unit="min"),  # up to 2024-06-30
        "amount": np.round(rng.gamma(2.0, 20.0, n), 2),
        "quantity": rng.integers(1, 4, n).astype(float),
        "category": rng.choice(["books", "music", "toys"], n),
    })


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transaction_after_cutoff_changes_no_feature(seed):
    rng = np.random.default_rng(100 + seed)
    past = random_transactions(seed)
    before = build_features(past, AS_OF)
    k = 60
    future = pd.DataFrame({
        "customer_id": pd.Series(rng.choice([*before.index[:10], "new1", "new2"], k), dtype="str"),
        # the very first instant of the next day, then up to a year later
        "timestamp": pd.Timestamp("2024-07-01") + pd.to_timedelta(np.r_[0, rng.integers(0, 365 * 1440, k - 1)],
                                                                   unit="min"),
        "amount": rng.choice([0.0, 1e12, 5.0], k),
        "quantity": np.full(k, 1e6),
        "category": rng.choice(["books", "zzz-unseen"], k),
    })
    # future rows at random places; past rows keep their order, so every sum adds up in the same order
    is_future = rng.permutation(np.r_[np.ones(k, bool), np.zeros(len(past), bool)])
    order = np.empty(len(is_future), dtype=int)
    order[is_future] = np.arange(k)
    order[~is_future] = k + np.arange(len(past))
    mixed = pd.concat([future, past], ignore_index=True).iloc[order].reset_index(drop=True)
    assert (mixed["timestamp"] >= pd.Timestamp("2024-07-01")).sum() == k
    pd.testing.assert_frame_equal(build_features(mixed, AS_OF), before, check_exact=True)


def test_matches_a_per_customer_reference_on_random_data():
    tx = random_transactions(7)
    f = build_features(tx, AS_OF)
    as_of = pd.Timestamp(AS_OF)
    for cid, rows in tx.groupby("customer_id"):
        days = sorted({(as_of - t.normalize()).days for t in rows["timestamp"]})  # ages, newest first
        gaps = np.diff(days)
        row = f.loc[cid]
        assert row["recency_days"] == days[0] and row["tenure_days"] == days[-1]
        assert row["frequency"] == len(days)
        ages = (as_of - rows["timestamp"].dt.normalize()).dt.days
        assert row["spend_90d"] == pytest.approx(rows["amount"][ages < 90].sum())
        assert row["purchases_180d"] == (ages < 180).sum()
        if len(gaps) >= 2:
            assert row["gap_std_days"] == pytest.approx(np.std(gaps, ddof=1))
        top = rows["category"].value_counts().sort_index(kind="stable").idxmax()
        assert row["top_category"] == top


def test_raw_profiles_with_a_customer_id_column_are_joined_by_id():
    from features.contracts import normalize_profiles

    tx = pd.DataFrame({"customer_id": ["a", "b"], "timestamp": pd.to_datetime(["2025-01-02", "2025-01-03"]),
                       "amount": [10.0, 20.0]})
    raw = pd.DataFrame({"customer_id": ["b", "a"], "region": ["north", "south"]})
    features = build_features(tx, pd.Timestamp("2025-01-31"), profiles=raw)
    assert "customer_id" not in features.columns
    assert features["region"].astype(str).tolist() == ["south", "north"]
    expected = build_features(tx, pd.Timestamp("2025-01-31"), profiles=normalize_profiles(raw))
    pd.testing.assert_frame_equal(features, expected)
