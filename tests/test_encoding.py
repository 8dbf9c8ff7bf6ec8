"""The feature encoder: one implementation of 'customer → row of numbers' for training, batch and online."""

import numpy as np
import pandas as pd
import pytest

from features.errors import DataError
from serving.encoding import FeatureEncoder


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
