"""Unit and data tests of churn labels, snapshots and label tables (hand-computed answers)."""

import warnings

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from features.errors import DataError
from training.labels import (
    FUTURE_SPEND,
    LABEL,
    SNAPSHOT,
    churn_labels,
    coerce_attributes,
    parse_label,
    snapshot_dates,
    snapshot_frame,
    stack_snapshots,
    table_frame,
)

T = pd.Timestamp("2024-06-30")


def test_snapshot_dates_step_back_from_cutoff_minus_horizon():
    dates = snapshot_dates(pd.Timestamp("1997-12-31"), 182, snapshots=3, step_days=30)
    assert [str(d.date()) for d in dates] == ["1997-07-02", "1997-06-02", "1997-05-03"]


@pytest.mark.parametrize("horizon,snapshots,step", [(0, 1, 30), (-5, 1, 30), (90, 0, 30), (90, 2, 0)])
def test_snapshot_dates_refuse_nonpositive_arguments(horizon, snapshots, step):
    with pytest.raises(DataError):
        snapshot_dates(T, horizon, snapshots, step)


def test_label_window_is_after_the_snapshot_day_up_to_horizon_inclusive(make_transactions):
    tx = make_transactions([
        ("a", "2024-06-01", 10), ("a", "2024-07-10", 5),          # returns within 30 days → 0
        ("b", "2024-06-01", 10),                                   # never returns → 1
        ("c", "2024-06-01", 10), ("c", "2024-07-31 00:00", 5),     # day 31 → outside window → 1
        ("d", "2024-06-01", 10), ("d", "2024-07-30 23:00", 5),     # day 30 → inside → 0
        ("e", "2024-06-30 18:00", 10),                             # later on the snapshot day: history → 1
    ])
    labels = churn_labels(tx, ["a", "b", "c", "d", "e"], T, horizon_days=30)
    assert labels.to_dict() == {"a": 0, "b": 1, "c": 1, "d": 0, "e": 1}


def test_purchase_after_snapshot_changes_no_feature_only_the_label(make_transactions):
    rows = [("a", "2024-01-05", 20), ("a", "2024-05-01", 30), ("b", "2024-03-01", 15)]
    before = snapshot_frame(make_transactions(rows), T, horizon_days=60)
    after = snapshot_frame(make_transactions(rows + [("a", "2024-07-01 09:00", 500), ("c", "2024-07-02", 9)]),
                           T, horizon_days=60)
    features = [c for c in before.columns if c not in (LABEL, FUTURE_SPEND)]
    pdt.assert_frame_equal(before[features], after[features])
    assert list(after.index) == ["a", "b"]  # a customer first seen after T is not in the snapshot
    assert before[LABEL].to_dict() == {"a": 1, "b": 1}
    assert after[LABEL].to_dict() == {"a": 0, "b": 1}
    assert after[FUTURE_SPEND].to_dict() == {"a": 500.0, "b": 0.0}  # the value model's target: the window's spend
    assert before.loc["a", "recency_days"] == 60 and before.loc["a", "frequency"] == 2


def test_stacked_snapshots_repeat_customers_with_their_own_labels(make_transactions):
    tx = make_transactions([("a", "2024-01-10", 10), ("a", "2024-03-15", 10), ("b", "2024-02-20", 10)])
    dates = snapshot_dates(pd.Timestamp("2024-04-30"), 30, snapshots=2, step_days=31)  # 03-31, 02-29
    stacked = stack_snapshots(tx, dates, 30)
    got = {(cid, str(d.date())): y for cid, d, y in zip(stacked.index, stacked[SNAPSHOT], stacked[LABEL])}
    # a bought 03-15: inside (02-29, 03-30] → 0 at 02-29; nothing in (03-31, 04-30] → 1 at 03-31
    # b bought 02-20 only → 1 both times
    assert got == {("a", "2024-03-31"): 1, ("b", "2024-03-31"): 1, ("a", "2024-02-29"): 0, ("b", "2024-02-29"): 1}


def test_snapshot_before_all_data_is_a_data_error(make_transactions):
    with pytest.raises(DataError, match="no transactions on or before"):
        snapshot_frame(make_transactions([("a", "2024-08-01", 10)]), T, 30)


def test_label_text_in_any_common_form_becomes_zero_or_one():
    values = pd.Series(["Yes", "no", "TRUE", "false", "1", "0", 1.0, 0])
    assert parse_label(values, "Churn").tolist() == [1, 0, 1, 0, 1, 0, 1, 0]


def test_unparseable_or_blank_label_names_the_column():
    with pytest.raises(DataError, match="column 'Churn'.*2 value"):
        parse_label(pd.Series(["yes", "maybe", None]), "Churn")


def test_text_numbers_become_numbers_blanks_missing_and_words_categories():
    raw = pd.DataFrame({"charges": ["29.85", " ", "108.5"], "contract": ["Month", "Two year", ""],
                        "tenure": [1, 34, 2], "senior": [True, False, True]})
    out = coerce_attributes(raw)
    assert out["charges"].tolist()[0] == 29.85 and np.isnan(out["charges"].iloc[1]) and out["charges"].dtype == float
    assert out["contract"].tolist() == ["Month", "Two year", None]
    assert out["tenure"].tolist() == [1, 34, 2]
    assert out["senior"].tolist() == [1.0, 0.0, 1.0]


def test_table_frame_indexes_by_id_and_drops_id_and_target_from_attributes():
    raw = pd.DataFrame({"customerID": ["x1", "x2"], "Churn": ["Yes", "No"], "plan": ["a", "b"]})
    out = table_frame(raw, target="Churn", id_col="customerID")
    assert list(out.columns) == ["plan", LABEL]
    assert out[LABEL].to_dict() == {"x1": 1, "x2": 0}


def test_table_frame_names_a_missing_target_column():
    with pytest.raises(DataError, match="--target: column 'churn'"):
        table_frame(pd.DataFrame({"a": [1]}), target="churn")


def test_profile_columns_that_look_time_varying_are_warned_about():
    from features.errors import DataWarning
    from training.churn.data import warn_time_varying_profiles

    static = pd.DataFrame({"customer_id": ["a"], "age": [30], "region": ["north"], "signup_channel": ["web"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_time_varying_profiles(static)  # nothing to say
    changing = static.assign(order_count=[3], last_login=["2024-01-01"], days_since_visit=[4])
    with pytest.warns(DataWarning, match="order_count, last_login, days_since_visit look time-varying"):
        warn_time_varying_profiles(changing)
