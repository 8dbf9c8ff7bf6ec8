"""The online fast path as a unit: request records → arrays → answers, and its equality with batch."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from conftest_service import CATALOG, churn_runtime, feature_table, uplift_runtime
from features.errors import DataError
from serving.api import online
from serving.api.schemas import MAX_CUSTOMERS, Customer, RecommendRequest, ScoreRequest


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return feature_table()


@pytest.fixture(scope="module")
def churn(table):
    return churn_runtime(table)


@pytest.fixture(scope="module")
def uplift(table):
    return uplift_runtime(table)


@pytest.fixture(scope="module")
def snapshot(table, churn, uplift):
    return online.FeatureSnapshot.from_frame(table, [churn.encoder, uplift.encoder], path="feats.parquet")


def record(table: pd.DataFrame, i: int) -> dict:
    """Row i of the feature table as a JSON-like feature dict (NaN → None, category → str)."""
    row = table.drop(columns="customer_id").iloc[i].to_dict()
    return {k: (None if isinstance(v, float) and math.isnan(v) else v if isinstance(v, float) else str(v))
            for k, v in row.items()}


def customers(table: pd.DataFrame, rows, inline=True) -> list[Customer]:
    return [Customer(customer_id=table["customer_id"].iloc[i], features=record(table, i) if inline else None)
            for i in rows]


# -- encoding ---------------------------------------------------------------------------------------
def test_lookup_by_id_gives_the_same_row_as_sending_the_features(table, churn, snapshot):
    inline = online.encode_customers(customers(table, range(20)), churn.encoder)
    looked_up = online.encode_customers(customers(table, range(20), inline=False), churn.encoder, snapshot)
    np.testing.assert_array_equal(looked_up, inline)


def test_mixed_request_keeps_request_order(table, churn, snapshot):
    mixed = [*customers(table, [3], inline=False), *customers(table, [7]), *customers(table, [5], inline=False)]
    X = online.encode_customers(mixed, churn.encoder, snapshot)
    np.testing.assert_array_equal(X, churn.encoder.transform(table.iloc[[3, 7, 5]]))


def test_missing_feature_names_the_customer_position_in_the_request(table, churn, snapshot):
    broken = customers(table, [1])[0].features | {}
    del broken["frequency"]
    request = [*customers(table, [0], inline=False), Customer(customer_id="c1", features=broken)]
    with pytest.raises(DataError, match=r"^customers\[1\]\.features\.frequency: missing feature$"):
        online.encode_customers(request, churn.encoder, snapshot)


def test_text_for_a_numeric_feature_names_the_field(table, churn):
    bad = Customer(customer_id="c0", features=record(table, 0) | {"recency_days": "forty"})
    with pytest.raises(DataError, match=r"^customers\[0\]\.features\.recency_days: expected a number, got str$"):
        online.encode_customers([bad], churn.encoder)


def test_unknown_id_names_the_id(table, churn, snapshot):
    request = customers(table, [0, 1], inline=False) + [Customer(customer_id="nobody")]
    with pytest.raises(DataError, match=r"^customers\[2\]\.customer_id: unknown customer 'nobody'"):
        online.encode_customers(request, churn.encoder, snapshot)


def test_lookup_without_a_snapshot_says_how_to_start_with_one(churn):
    with pytest.raises(DataError, match=r"customers\[0\]\.features: missing.*WINBACK_FEATURES"):
        online.encode_customers([Customer(customer_id="c0")], churn.encoder, None)


def test_unseen_category_scores_like_a_missing_one(table, churn):
    unseen = Customer(customer_id="a", features=record(table, 0) | {"top_category": "spaceships"})
    missing = Customer(customer_id="b", features=record(table, 0) | {"top_category": None})
    a, b = online.score_rows(churn, [unseen, missing])
    assert a["churn_probability"] == b["churn_probability"]


def test_snapshot_with_duplicate_ids_is_refused(table, churn):
    doubled = pd.concat([table.iloc[:3], table.iloc[:1]])
    with pytest.raises(DataError, match="duplicate customer_id 'c0'"):
        online.FeatureSnapshot.from_frame(doubled, [churn.encoder])


# -- answers ----------------------------------------------------------------------------------------
def test_reasons_are_the_three_largest_treeshap_contributions(table, churn):
    (row,) = online.score_rows(churn, customers(table, [4]))
    X = churn.encoder.transform(table.iloc[[4]])
    contrib = churn.booster.predict(X, pred_contrib=True)[0]
    # TreeSHAP is exact: contributions + bias add up to the raw log-odds
    assert contrib.sum() == pytest.approx(churn.booster.predict(X, raw_score=True)[0])
    top = np.argsort(-contrib[:-1])[:3]
    assert [r["feature"] for r in row["reasons"]] == [churn.feature_names[j] for j in top]
    assert [r["contribution"] for r in row["reasons"]] == pytest.approx(contrib[top].tolist())


def test_recommendation_is_the_arm_with_the_best_positive_net_value(table, churn, uplift):
    rows = online.recommend_rows(churn, uplift, customers(table, range(60)))
    pred = uplift.predict(uplift.encoder.transform(table.iloc[:60]))
    for row, net in zip(rows, pred.net_value):
        best = int(np.argmax(net))
        expected = CATALOG.arms[best] if net[best] > 0 else CATALOG.control
        assert row["incentive"] == expected
        assert row["expected_net_value"] == (net[best] if net[best] > 0 else 0.0)
    assert {r["incentive"] for r in rows} - {CATALOG.control}, "fixture should recommend some sends"


def test_max_sends_keeps_only_the_sends_with_the_highest_net_value(table, churn, uplift):
    request = customers(table, range(60))
    free = online.recommend_rows(churn, uplift, request)
    capped = online.recommend_rows(churn, uplift, request, max_sends=2)
    sends = [r for r in capped if r["incentive"] != CATALOG.control]
    assert len(sends) == 2
    best = sorted((r["expected_net_value"] for r in free if r["incentive"] != CATALOG.control), reverse=True)
    assert sorted((r["expected_net_value"] for r in sends), reverse=True) == pytest.approx(best[:2])


def test_online_answers_equal_batch_scoring_and_batch_recommend(tmp_path, table, churn, uplift, snapshot):
    from serving.batch.recommend import recommend
    from serving.batch.score import score_feature_table

    features = tmp_path / "features.parquet"
    table.to_parquet(features)
    score_feature_table(churn, table, tmp_path / "scores.parquet")
    recommend(uplift, features, tmp_path / "recs.parquet")
    batch_scores = pd.read_parquet(tmp_path / "scores.parquet").set_index("customer_id")
    batch_recs = pd.read_parquet(tmp_path / "recs.parquet").set_index("customer_id")

    ids = list(range(0, len(table), 7))
    for inline in (True, False):
        request = customers(table, ids, inline=inline)
        scores = online.score_rows(churn, request, snapshot)
        recs = online.recommend_rows(churn, uplift, request, snapshot)
        for s, r in zip(scores, recs):
            b, br = batch_scores.loc[s["customer_id"]], batch_recs.loc[r["customer_id"]]
            assert s["churn_probability"] == b["churn_probability"]
            assert s["risk_tier"] == b["risk_tier"]
            for name in ("expected_spend", "value_if_retained", "value_at_risk", "clv_12m"):
                assert s[name] == b[name] and s[name] > 0, name
            assert r["incentive"] == br["incentive"]
            assert r["expected_net_value"] == br["expected_net_value"]
            assert [r["uplift"][a] for a in CATALOG.arms] == [br[f"uplift:{a}"] for a in CATALOG.arms]


# -- request schema ---------------------------------------------------------------------------------
def test_request_limits_are_one_to_ten_thousand_customers():
    one = {"customer_id": "c", "features": {"recency_days": 1}}
    assert len(ScoreRequest.model_validate({"customers": [one] * MAX_CUSTOMERS}).customers) == 10_000
    for n in (0, MAX_CUSTOMERS + 1):
        with pytest.raises(ValidationError) as err:
            ScoreRequest.model_validate({"customers": [one] * n})
        assert err.value.errors()[0]["loc"] == ("customers",)


@pytest.mark.parametrize("body,loc", [
    ({"customers": [{"customer_id": "c", "nickname": "x"}]}, ("customers", 0, "nickname")),
    ({"customers": [{"customer_id": "c"}], "extra": 1}, ("extra",)),
    ({"customers": [{"customer_id": "c", "features": {"recency_days": [1, 2]}}]},
     ("customers", 0, "features", "recency_days")),
    ({"customers": [{"features": {}}]}, ("customers", 0, "customer_id")),
    ({"customers": [{"customer_id": "c"}], "max_sends": -1}, ("max_sends",)),
])
def test_malformed_bodies_are_rejected_naming_the_field(body, loc):
    with pytest.raises(ValidationError) as err:
        RecommendRequest.model_validate(body)
    assert err.value.errors()[0]["loc"][:len(loc)] == loc


def test_feature_values_keep_their_json_type():
    request = ScoreRequest.model_validate_json(
        '{"customers": [{"customer_id": "c", "features": {"a": 40, "b": "40", "c": true, "d": null, "e": 1.5}}]}')
    assert request.customers[0].features == {"a": 40, "b": "40", "c": True, "d": None, "e": 1.5}
    assert type(request.customers[0].features["c"]) is bool
