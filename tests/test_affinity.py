"""Category affinity features (hand-computed values, the cutoff, the cap, the reference that makes chunks equal
one pass) and the simulator's category truth."""

import numpy as np
import pandas as pd
import pytest

from features.affinity import (HALF_LIFE_DAYS, PRIOR_PURCHASES, AffinityReference, affinity_reference,
                               categories_of, column_names)
from features.build import build_features
from features.contracts import normalize_transactions
from features.errors import DataError
from features.simulate import simulate
from features.simulate.campaign import ARMS, OTHER_SUFFIX, RANDOM_FEATURED_SHARE, respond

AS_OF = "2025-06-30"


def purchases(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount", "category"])
    return normalize_transactions(frame.assign(timestamp=pd.to_datetime(frame["timestamp"], format="mixed")))


def test_affinity_is_the_recency_weighted_spend_share_shrunk_toward_an_even_split():
    tx = purchases([("a", "2025-06-30", 30.0, "toys"), ("a", "2025-06-30", 10.0, "home"),
                    ("b", "2025-06-30", 50.0, "home")])
    f = build_features(tx, AS_OF)
    share = {"a": {"toys": 0.75, "home": 0.25}, "b": {"toys": 0.0, "home": 1.0}}
    prior = {"toys": 0.5, "home": 0.5}  # two categories
    for cid, rows in (("a", 2), ("b", 1)):
        k = PRIOR_PURCHASES / (PRIOR_PURCHASES + rows)
        for category in ("toys", "home"):
            expected = (1 - k) * share[cid][category] + k * prior[category]
            assert f.loc[cid, f"affinity_{category}"] == pytest.approx(expected)
    assert list(f["top_affinity_category"].astype(str)) == ["toys", "home"]


def test_older_purchases_weigh_half_per_half_life():
    tx = purchases([("a", "2025-06-30", 10.0, "toys"), ("a", "2025-06-30", 10.0, "home"),
                    ("a", str((pd.Timestamp(AS_OF) - pd.Timedelta(days=HALF_LIFE_DAYS)).date()), 20.0, "home")])
    f = build_features(tx, AS_OF)
    raw_toys = 10 / (10 + 10 + 0.5 * 20)  # 1/3
    k = PRIOR_PURCHASES / (PRIOR_PURCHASES + 3)
    assert f.loc["a", "affinity_toys"] == pytest.approx((1 - k) * raw_toys + k * 0.5)


def test_purchase_after_the_cutoff_changes_no_affinity():
    rows = [("a", "2025-05-01", 10.0, "toys"), ("a", "2025-06-30 23:59", 10.0, "home"),
            ("b", "2025-03-01", 5.0, "grocery")]
    before = build_features(purchases(rows), AS_OF)
    after = build_features(purchases(rows + [("a", "2025-07-01", 999.0, "toys"),
                                              ("b", "2025-07-02", 50.0, "electronics")]), AS_OF)
    pd.testing.assert_frame_equal(before.filter(like="affinity"), after.filter(like="affinity"))


def test_only_the_categories_with_most_spend_get_a_column_and_names_are_sanitised():
    tx = purchases([("a", "2025-06-01", 30.0, "Home & Garden"), ("a", "2025-06-01", 20.0, "toys"),
                    ("b", "2025-06-01", 5.0, "books")])
    f = build_features(tx, AS_OF, affinity_categories=2)
    assert [c for c in f.columns if c.startswith("affinity_")] == ["affinity_home_garden", "affinity_toys"]  # by name
    assert f.loc["b", "top_affinity_category"] in ("Home & Garden", "toys")  # books has no column
    assert column_names(["A b", "a-b"]) == {"A b": "affinity_a_b", "a-b": "affinity_a_b_2"}


def random_purchases(customers: int = 60, rows: int = 500, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.Timestamp(AS_OF) - pd.to_timedelta(rng.integers(0, 700, rows), unit="D")
    categories = rng.choice(["books", "Home & Garden", "toys", "grocery", "beauty"], rows, p=[.3, .25, .2, .15, .1])
    return purchases(list(zip([f"c{i:02d}" for i in rng.integers(0, customers, rows)], days.astype(str),
                              rng.gamma(2.0, 20.0, rows).round(2), categories)))


def in_two_chunks(tx: pd.DataFrame, **options) -> pd.DataFrame:
    first = (tx["customer_id"] < "c30").to_numpy()
    return pd.concat([build_features(tx[first], AS_OF, **options), build_features(tx[~first], AS_OF, **options)])


def test_features_built_in_chunks_with_the_reference_of_the_whole_equal_one_pass():
    # the first chunk's customers also buy a lot of beauty, which is not in the whole input's top 3
    tx = pd.concat([random_purchases(), purchases([(f"c0{i}", "2025-06-01", 400.0, "beauty") for i in range(5)])])
    tx = tx.reset_index(drop=True)
    whole = build_features(tx, AS_OF, affinity_categories=3)
    reference = affinity_reference(tx, AS_OF, max_categories=3)
    assert reference.categories == ("Home & Garden", "books", "toys")
    pd.testing.assert_frame_equal(in_two_chunks(tx, affinity_reference=reference), whole, check_exact=True)
    with pytest.raises(AssertionError):  # each chunk's own top categories: other columns
        pd.testing.assert_frame_equal(in_two_chunks(tx, affinity_categories=3), whole)


def test_given_categories_keep_their_order_and_an_unknown_one_has_zero_affinity():
    tx = purchases([("a", "2025-06-30", 30.0, "toys"), ("a", "2025-06-30", 10.0, "home"),
                    ("b", "2025-06-30", 50.0, "home")])
    reference = affinity_reference(tx, AS_OF, categories=["toys", "unseen", "home"])
    assert reference.categories == ("toys", "unseen", "home")
    f = build_features(tx, AS_OF, affinity_reference=reference)
    assert [c for c in f.columns if c.startswith("affinity_")] == ["affinity_toys", "affinity_unseen", "affinity_home"]
    # an unseen category has no spend: only the prior's third, shrunk by the customer's rows
    k = PRIOR_PURCHASES / (PRIOR_PURCHASES + f.loc["b", "purchase_count"])
    assert f.loc["b", "affinity_unseen"] == pytest.approx(k / 3)
    assert list(f["top_affinity_category"].astype(str)) == ["toys", "home"]
    assert AffinityReference.from_dict(reference.to_dict()) == reference
    with pytest.raises(DataError, match="categories"):
        AffinityReference.from_dict({"levels": ["a"]})


def test_a_fresh_sample_of_one_population_gets_the_same_affinity_distribution():
    """The prior depends on nothing but the category list: two samples of one simulated population give
    short-history customers identical values (a stage-mean prior moved them, and drift monitoring flagged it)."""
    values = []
    for seed in (7, 8):
        sample = simulate(customers=3000, seed=seed)
        tx = normalize_transactions(sample.transactions, as_of=sample.history_end)
        f = build_features(tx, sample.history_end)
        one = f[(f["purchase_count"] == 1)]
        columns = [c for c in f.columns if c.startswith("affinity_")]
        values.append(set(np.round(one[columns].to_numpy(dtype=float).ravel(), 12)))
    assert values[0] == values[1]  # the same few values: (1 − k)·{0, 1} + k / categories


def test_a_models_categories_come_from_its_feature_names_and_top_category_levels():
    names = ["recency_days", "affinity_home_garden", "affinity_toys", "affinity_a_b_2", "top_affinity_category"]
    assert categories_of(names, ["A b", "a-b", "Home & Garden", "toys"]) == ["Home & Garden", "toys", "a-b"]
    assert categories_of(names) == ["home_garden", "toys", "a_b_2"]  # no levels: the column suffix


# -- the simulator ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim():
    return simulate(customers=4000, seed=11, personalised=True)


def test_truth_names_each_customers_preferred_category_and_observed_affinity_finds_it(sim):
    tx = normalize_transactions(sim.transactions, as_of=sim.history_end)
    f = build_features(tx, sim.history_end)
    preferred = sim.truth.set_index("customer_id").loc[f.index, "preferred_category"].astype(str)
    top = f["top_affinity_category"].astype(str)
    popular = tx["category"].value_counts().idxmax()
    assert (top == preferred).mean() > 0.7
    assert (top == preferred).mean() > (preferred == popular).mean() + 0.3


def test_the_coupon_works_better_on_the_preferred_category_and_default_data_has_no_coupon(sim):
    t = sim.truth
    assert (t["p_convert:category_coupon"] >= t[f"p_convert:category_coupon{OTHER_SUFFIX}"]).all()
    assert (t["p_convert:category_coupon"] > t[f"p_convert:category_coupon{OTHER_SUFFIX}"]).mean() > 0.5
    plain = simulate(customers=300, seed=11)
    assert "featured_category" not in plain.campaign and set(plain.campaign["incentive"]) == set(ARMS)
    assert [i["name"] for i in sim.catalog["incentives"]][-1] == "category_coupon"


def test_campaign_logs_the_featured_category_and_randomises_a_share_of_it(sim):
    c = sim.campaign.merge(sim.truth[["customer_id", "preferred_category"]], on="customer_id")
    coupon = c["incentive"] == "category_coupon"
    assert c.loc[coupon, "featured_category"].notna().all() and c.loc[~coupon, "featured_category"].isna().all()
    tx = normalize_transactions(sim.transactions, as_of=sim.history_end)
    top = build_features(tx, sim.history_end)["top_affinity_category"].astype(str)
    observed = c.loc[coupon, "featured_category"].to_numpy() == top.loc[c.loc[coupon, "customer_id"]].to_numpy()
    # a random sixth of the randomised share lands on the observed top category anyway
    expected = 1 - RANDOM_FEATURED_SHARE * 5 / 6
    assert observed.mean() == pytest.approx(expected, abs=0.04)


def test_respond_uses_the_featured_category_of_the_plan(sim):
    t = sim.truth
    ids = t["customer_id"]
    other = t["preferred_category"].map(lambda c: "toys" if c != "toys" else "home")
    matched, mismatched = (respond(pd.DataFrame({"customer_id": ids, "incentive": "category_coupon",
                                                 "featured_category": featured}), t, seed=1)["converted"].mean()
                           for featured in (t["preferred_category"], other))
    assert matched == pytest.approx(t["p_convert:category_coupon"].mean(), abs=0.025)
    assert mismatched == pytest.approx(t[f"p_convert:category_coupon{OTHER_SUFFIX}"].mean(), abs=0.025)
    with pytest.raises(DataError, match="featured_category"):
        respond(pd.DataFrame({"customer_id": ids[:3], "incentive": "category_coupon"}), t)
