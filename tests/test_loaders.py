"""Loaders for the public reference data: row counts and the published arm rates (skipped without the data)."""

import pandas as pd
import pytest

from features.errors import DataError
from features.loaders import read_cdnow, read_hillstrom

# Published in ../shared/data/README.md: visit, conversion, mean spend per arm
HILLSTROM_ARM_RATES = {
    "Mens E-Mail": (0.1828, 0.01253, 1.4226),
    "Womens E-Mail": (0.1514, 0.00884, 1.0772),
    "No E-Mail": (0.1062, 0.00573, 0.6528),
}


@pytest.mark.parametrize("header", ["customer_id  date number_of_cds  dollar_value\r\n", ""])
def test_cdnow_file_with_or_without_header_gives_transactions(tmp_path, header):
    path = tmp_path / "cdnow.txt"
    path.write_text(header + " 00001 19970101  1   11.77\r\n 00002 19970112  5   0.00\r\n")
    out = read_cdnow(path)
    assert out.columns.tolist() == ["customer_id", "timestamp", "amount", "quantity"]
    assert out["customer_id"].tolist() == ["1", "2"]
    assert out["timestamp"].tolist() == [pd.Timestamp("1997-01-01"), pd.Timestamp("1997-01-12")]
    assert out["amount"].tolist() == [11.77, 0.0] and out["quantity"].tolist() == [1.0, 5.0]


def test_cdnow_bad_date_names_the_file_and_column(tmp_path):
    path = tmp_path / "cdnow.txt"
    path.write_text("00001 19971301 1 11.77\n")
    with pytest.raises(DataError, match=r"cdnow.txt.*'timestamp'.*row 1: '19971301'"):
        read_cdnow(path)


def test_hillstrom_missing_column_is_named(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("recency,history\n1,2.0\n")
    with pytest.raises(DataError, match="history_segment"):
        read_hillstrom(path)


@pytest.mark.data
def test_cdnow_master_has_published_row_and_customer_counts(shared_data):
    tx = read_cdnow(shared_data / "cdnow_master.txt")
    assert len(tx) == 69_659 and tx["customer_id"].nunique() == 23_570
    assert tx["timestamp"].min() == pd.Timestamp("1997-01-01") and tx["timestamp"].max() == pd.Timestamp("1998-06-30")
    assert (tx["amount"] == 0).sum() > 0  # zero-value rows are kept


@pytest.mark.data
def test_hillstrom_has_three_arms_with_published_rates(shared_data):
    campaign = read_hillstrom(shared_data / "hillstrom.csv")
    assert len(campaign) == 64_000 and campaign["customer_id"].is_unique
    assert campaign["customer_id"].tolist()[:2] == ["1", "2"]
    assert campaign["segment"].value_counts().to_dict() == {
        "Womens E-Mail": 21_387, "Mens E-Mail": 21_307, "No E-Mail": 21_306,
    }
    assert isinstance(campaign["segment"].dtype, pd.CategoricalDtype)
    rates = campaign.groupby("segment", observed=True)[["visit", "conversion", "spend"]].mean()
    for arm, published in HILLSTROM_ARM_RATES.items():
        assert rates.loc[arm].tolist() == pytest.approx(published, abs=5e-5)
