"""Data contracts: raw purchase and profile tables are normalised, or refused with a message naming the column."""

import re

import numpy as np
import pandas as pd
import pytest

from features.contracts import normalize_profiles, normalize_transactions
from features.errors import DataError


def raw(**columns):
    base = {"customer_id": [1, 2], "timestamp": ["2024-01-01", "2024-01-02"], "amount": [1.0, 2.0]}
    base.update(columns)
    return pd.DataFrame(base)


def test_integer_and_integral_float_ids_become_strings_without_decimal_point():
    assert normalize_transactions(raw(customer_id=[1, 20]))["customer_id"].tolist() == ["1", "20"]
    assert normalize_transactions(raw(customer_id=[1.0, 20.0]))["customer_id"].tolist() == ["1", "20"]
    assert normalize_transactions(raw(customer_id=[" a7 ", "007"]))["customer_id"].tolist() == ["a7", "007"]


def test_mapped_columns_are_renamed_to_contract_names_and_others_dropped():
    df = pd.DataFrame({"cust": ["x"], "when": ["2024-03-05"], "value": ["12.5"], "note": ["hi"], "channel": ["web"]})
    out = normalize_transactions(df, id_col="cust", time_col="when", amount_col="value")
    assert out.columns.tolist() == ["customer_id", "timestamp", "amount", "channel"]
    assert out.loc[0, "amount"] == 12.5
    assert out["amount"].dtype == np.float64


def test_timestamps_accept_iso_yyyymmdd_text_and_yyyymmdd_integers():
    expected = [pd.Timestamp("1997-01-01"), pd.Timestamp("1997-01-02 10:30")]
    assert normalize_transactions(raw(timestamp=["19970101", "1997-01-02T10:30"]))["timestamp"].tolist() == expected
    assert normalize_transactions(raw(timestamp=[19970101, 19970102]))["timestamp"].dt.day.tolist() == [1, 2]


def test_timezone_aware_timestamps_become_naive_utc():
    # 02:00 at +02:00 is midnight UTC; 23:30 at -05:00 is 04:30 UTC the next day
    text = normalize_transactions(raw(timestamp=["2024-01-01T02:00+02:00", "2024-01-01T23:30-05:00"]))
    assert text["timestamp"].tolist() == [pd.Timestamp("2024-01-01 00:00"), pd.Timestamp("2024-01-02 04:30")]
    aware = pd.Series(pd.to_datetime(["2024-06-01 09:00", "2024-06-01 12:00"])).dt.tz_localize("Europe/Paris")
    out = normalize_transactions(raw(timestamp=aware))
    assert out["timestamp"].dt.tz is None
    assert out["timestamp"].tolist() == [pd.Timestamp("2024-06-01 07:00"), pd.Timestamp("2024-06-01 10:00")]


def test_missing_column_lists_existing_columns():
    with pytest.raises(DataError, match=r"'amount'.*missing; columns are: customer_id, timestamp, price"):
        normalize_transactions(pd.DataFrame({"customer_id": [1], "timestamp": ["2024-01-01"], "price": [1.0]}))


def test_unparseable_timestamp_names_column_and_shows_row_numbers_and_values():
    with pytest.raises(DataError) as err:
        normalize_transactions(raw(customer_id=[1, 2, 3], timestamp=["2024-01-01", "yesterday", "2024-13-01"],
                                   amount=[1.0, 2.0, 3.0]))
    message = str(err.value)
    assert "'timestamp'" in message
    assert "row 2: 'yesterday'" in message and "row 3: '2024-13-01'" in message


def test_missing_or_text_amount_is_refused_with_rows():
    with pytest.raises(DataError, match=r"'amount'.*row 2: 'ten'"):
        normalize_transactions(raw(amount=["1.5", "ten"]))
    with pytest.raises(DataError, match=r"'amount'.*row 1: nan"):
        normalize_transactions(raw(amount=[np.nan, 2.0]))


def test_negative_amount_is_refused_unless_refunds_allowed():
    with pytest.raises(DataError, match=r"'amount'.*negative.*row 2: -5"):
        normalize_transactions(raw(amount=[3.0, -5.0]))
    assert normalize_transactions(raw(amount=[3.0, -5.0]), allow_refunds=True)["amount"].tolist() == [3.0, -5.0]


def test_error_shows_at_most_five_offending_rows():
    with pytest.raises(DataError) as err:
        normalize_transactions(raw(customer_id=range(8), timestamp=["2024-01-01"] * 8, amount=[-1.0] * 8))
    message = str(err.value)
    assert len(re.findall(r"row \d+:", message)) == 5
    assert "8 bad value(s)" in message and "and 3 more" in message


def test_empty_table_is_refused():
    with pytest.raises(DataError, match="empty"):
        normalize_transactions(raw().iloc[:0])


def test_all_transactions_after_as_of_are_refused_but_one_on_the_day_is_enough():
    late = raw(timestamp=["2024-01-02 00:00", "2024-02-01"])
    with pytest.raises(DataError, match=r"'timestamp': all 2 transactions are after as_of 2024-01-01"):
        normalize_transactions(late, as_of="2024-01-01")
    same_day = raw(timestamp=["2024-01-01 23:59", "2024-02-01"])
    assert len(normalize_transactions(same_day, as_of="2024-01-01")) == 2


def test_messages_name_the_users_column_when_it_is_mapped():
    df = pd.DataFrame({"cust": ["a"], "when": ["soon"], "value": [1.0]})
    with pytest.raises(DataError, match=r"column 'when' \(timestamp\)"):
        normalize_transactions(df, id_col="cust", time_col="when", amount_col="value")


def test_missing_quantity_is_allowed_but_text_quantity_is_refused():
    assert normalize_transactions(raw(quantity=[2, None]))["quantity"].tolist()[0] == 2.0
    with pytest.raises(DataError, match=r"'quantity'.*row 2: 'two'"):
        normalize_transactions(raw(quantity=["1", "two"]))


def test_missing_customer_id_is_refused():
    with pytest.raises(DataError, match=r"'customer_id'.*row 2"):
        normalize_transactions(raw(customer_id=["a", None]))


def test_input_frame_is_left_unchanged():
    df = raw(customer_id=[1, 2])
    normalize_transactions(df)
    assert df["customer_id"].tolist() == [1, 2] and df["timestamp"].tolist() == ["2024-01-01", "2024-01-02"]


def test_profiles_are_indexed_by_string_id_with_text_as_category_and_bool_as_int():
    df = pd.DataFrame({"cust": [7, 8], "region": ["north", "south"], "age": [31, 40], "vip": [True, False]})
    out = normalize_profiles(df, id_col="cust")
    assert out.index.tolist() == ["7", "8"] and out.index.name == "customer_id"
    assert isinstance(out["region"].dtype, pd.CategoricalDtype)
    assert out["vip"].tolist() == [1, 0] and out["age"].tolist() == [31, 40]
    assert out.columns.tolist() == ["region", "age", "vip"]


def test_duplicate_profile_ids_are_refused():
    with pytest.raises(DataError, match=r"duplicate.*row 1: 'a'.*row 3: 'a'"):
        normalize_profiles(pd.DataFrame({"customer_id": ["a", "b", "a"], "x": [1, 2, 3]}))
