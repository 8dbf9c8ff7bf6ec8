"""Shared fixtures: the public data folder (skipped when absent) and tiny transaction tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data next to the repository; tests using it skip on a fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public data sets not found in {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def make_transactions():
    """Build a contract-shaped transactions frame from (customer_id, 'YYYY-MM-DD[ HH:MM]', amount) tuples."""

    def make(rows, **extra_columns) -> pd.DataFrame:
        ids, times, amounts = zip(*rows) if rows else ((), (), ())
        frame = pd.DataFrame({
            "customer_id": pd.Series(ids, dtype="str"),
            "timestamp": pd.to_datetime(pd.Series(times, dtype="str"), format="ISO8601"),
            "amount": pd.Series(amounts, dtype="float64"),
        })
        for name, values in extra_columns.items():
            frame[name] = list(values)
        return frame

    return make
