"""Shared by the online-store tests: two feature tables are the same table."""

from __future__ import annotations

import numpy as np
import pandas as pd


def assert_same_features(online: pd.DataFrame, batch: pd.DataFrame) -> None:
    """Every customer and every column: numbers equal to 1e-9 (NaN where NaN), text equal."""
    online = online.set_index("customer_id").sort_index() if "customer_id" in online else online.sort_index()
    batch = batch.set_index("customer_id").sort_index() if "customer_id" in batch else batch.sort_index()
    assert online.index.astype(str).tolist() == batch.index.astype(str).tolist()
    assert sorted(online.columns) == sorted(batch.columns)
    for name in batch.columns:
        a, b = online[name], batch[name]
        if pd.api.types.is_numeric_dtype(b) and not isinstance(b.dtype, pd.CategoricalDtype):
            np.testing.assert_allclose(pd.to_numeric(a).to_numpy(float), b.to_numpy(float), rtol=1e-9, atol=1e-9,
                                       equal_nan=True, err_msg=name)
        else:
            left = a.astype(object).where(a.notna(), None).map(lambda v: None if v is None else str(v)).tolist()
            right = b.astype(object).where(b.notna(), None).map(lambda v: None if v is None else str(v)).tolist()
            assert left == right, name
