"""The feature encoder: one implementation of 'customer → row of numbers' for training, batch and online."""

import numpy as np
import pandas as pd
import pytest

from features.errors import DataError
from serving.runtime.encoding import FeatureEncoder


@pytest.fixture
def encoder():
    train = pd.DataFrame({
        "recency_days": [3.0, 40.0, np.nan],
        "top_channel": ["web", "store", None],
        "region": pd.Categorical(["north", "south", "north"], categories=["north", "south"]),
    })
    return FeatureEncoder().fit(train)


def test_categories_are_learned_sorted_and_kept_in_model_order(encoder):
    assert encoder.to_dict() == {
        "features": ["recency_days", "top_channel", "region"],
        "categories": {"top_channel": ["store", "web"], "region": ["north", "south"]},
        "minimums": {"recency_days": 0.0},
    }
    assert encoder.categorical_indices == [1, 2]


def test_table_and_records_encode_to_identical_arrays(encoder):
    frame = pd.DataFrame({"recency_days": [7, None], "top_channel": ["web", "app"], "region": ["south", None],
                          "unused": [1, 2]})
    records = [{"recency_days": 7, "top_channel": "web", "region": "south"},
               {"recency_days": None, "top_channel": "app", "region": None}]
    expected = np.array([[7.0, 1.0, 1.0], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(encoder.transform(frame), expected)
    np.testing.assert_array_equal(encoder.transform_records(records), expected)


def test_unseen_category_becomes_missing_not_an_error(encoder):
    out = encoder.transform_records([{"recency_days": 1, "top_channel": "kiosk", "region": "east"}])
    assert np.isnan(out[0, 1]) and np.isnan(out[0, 2])


def test_record_missing_a_feature_names_it(encoder):
    with pytest.raises(DataError, match=r"features\[1\]\.region: missing feature"):
        encoder.transform_records([{"recency_days": 1, "top_channel": "web", "region": "north"},
                                   {"recency_days": 1, "top_channel": "web"}])


def test_record_with_text_for_a_number_names_the_field(encoder):
    with pytest.raises(DataError, match=r"features\[0\]\.recency_days: expected a number, got str"):
        encoder.transform_records([{"recency_days": "ten", "top_channel": "web", "region": "north"}])


def test_round_trip_through_dict_keeps_encoding(encoder):
    clone = FeatureEncoder.from_dict(encoder.to_dict())
    rec = [{"recency_days": 2, "top_channel": "store", "region": "north"}]
    np.testing.assert_array_equal(clone.transform_records(rec), encoder.transform_records(rec))


def test_negative_counts_and_days_are_refused_online_and_in_batch(encoder):
    with pytest.raises(DataError, match=r"^customers\[1\]\.recency_days: -3 is below 0, impossible"):
        encoder.transform_records([{"recency_days": 2, "top_channel": "web", "region": None},
                                   {"recency_days": -3, "top_channel": "web", "region": None}], where="customers")
    frame = pd.DataFrame({"recency_days": [1.0, -0.5], "top_channel": ["web", "web"], "region": [None, None]},
                         index=pd.Index(["a", "b"], name="customer_id"))
    with pytest.raises(DataError, match=r"column 'recency_days': 1 value\(s\) below 0.*first rows: b"):
        encoder.transform(frame)


def test_amounts_are_bounded_only_when_training_had_no_refunds():
    frame = pd.DataFrame({"spend_90d": [0.0, 12.5], "monetary_total": [-4.0, 30.0], "trend_90d": [-1.0, 0.5]})
    fitted = FeatureEncoder().fit(frame)
    assert fitted.minimums_ == {"spend_90d": 0.0}  # refunds in monetary_total; trend_90d may be negative
    fitted.transform_records([{"spend_90d": 1.0, "monetary_total": -9.0, "trend_90d": -0.5}])


def test_models_saved_before_bounds_bound_counts_and_days_only():
    old = FeatureEncoder.from_dict({"features": ["recency_days", "spend_90d", "top_channel"],
                                    "categories": {"top_channel": ["web"]}})
    assert old.minimums_ == {"recency_days": 0.0}


def test_text_for_a_numeric_feature_is_refused_in_batch_as_online(encoder):
    frame = pd.DataFrame({"recency_days": ["5", "7"], "top_channel": ["web", "web"], "region": [None, None]})
    with pytest.raises(DataError, match=r"column 'recency_days' must be numeric, got text \(e\.g\. '5'\)"):
        encoder.transform(frame)
    with pytest.raises(DataError, match=r"features\[0\]\.recency_days: expected a number, got str"):
        encoder.transform_records([{"recency_days": "5", "top_channel": "web", "region": None}])
