"""Personalised arms in the training data: the categories the model knows and the `matched` column.

A campaign log of a personalised incentive says which category each send featured (`featured_category`).
Rows where it was another category than the one the serving rule (`serving.runtime.decision.personal`) picks for the
customer teach the model what a mismatch costs; the `matched` column tells them apart, and the runtime
predicts with matched = 1, the category it will feature.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from features.affinity import category_map
from features.errors import DataWarning
from serving.runtime.decision.catalog import Catalog
from serving.runtime.decision.personal import (FEATURED_COLUMN, allowed_columns, check_categories, featured_categories,
                                      matched_indicator)


def personalisation(frame: pd.DataFrame, features: list[str], arm: np.ndarray,
                    catalog: Catalog) -> tuple[dict | None, np.ndarray | None]:
    """(the runtime's `personalisation` metadata, the `matched` column) — (None, None) without a personalised
    arm; DataError when the features have no affinity or the catalogue names a category they lack."""
    if not catalog.personalised:
        return None, None
    categories = category_map(frame[features])
    check_categories(catalog, list(categories), source="the training features")
    if FEATURED_COLUMN not in frame.columns:
        warnings.warn(f"no {FEATURED_COLUMN!r} column in the campaign table: the personalised incentive(s) "
                      f"{', '.join(catalog.personalised)} are learned without the effect of featuring the "
                      f"customer's own category", DataWarning, stacklevel=3)
        return {"categories": categories, "matched": False}, None
    names, columns = allowed_columns(catalog, categories)
    chosen, _ = featured_categories(frame[columns].to_numpy(dtype=np.float64), names)
    personalised_row = np.isin(arm, [catalog.arms.index(a) for a in catalog.personalised])
    logged = frame[FEATURED_COLUMN].astype("string").fillna("").to_numpy(dtype=object)
    matched = matched_indicator(logged, chosen, personalised_row)
    share = float(matched[personalised_row].mean()) if personalised_row.any() else float("nan")
    return {"categories": categories, "matched": True, "matched_share": share}, matched
