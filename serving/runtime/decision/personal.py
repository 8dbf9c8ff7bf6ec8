"""Personalised incentives: which category a personalised arm features for each customer.

The featured category is the customer's highest `affinity_<category>` (see `features.affinity`) among the
catalogue's `categories:` (all the model knows when the catalogue names none); a customer whose affinities
are all missing gets the first allowed category. The model records at training which categories it has
affinity columns for (`metadata["personalisation"]["categories"]`, category → column); a catalogue naming
another category cannot be served and is refused.

With `matched` recorded, the model's boosters were trained with one more column after the encoder's: 1
unless the row's personalised incentive featured another category than this rule picks. At decision time
the rule's own category is featured, so that column is 1 for every customer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from features.errors import DataError
from serving.runtime.decision.catalog import Catalog

FEATURED_COLUMN = "featured_category"
AFFINITY_COLUMN = "category_affinity"
MATCHED_FEATURE = "matched"


def check_categories(catalog: Catalog, known: Sequence[str], source: str = "the model") -> None:
    """DataError naming catalogue categories `source` has no affinity for (or a personalised arm without any)."""
    if not catalog.personalised:
        return
    if not known:
        raise DataError(f"personalised incentive(s) {', '.join(map(repr, catalog.personalised))} need category "
                        f"affinity features (affinity_<category>, from transactions with a category column), "
                        f"and {source} has none")
    unknown = [c for c in catalog.categories or () if c not in set(known)]
    if unknown:
        raise DataError(f"catalogue categories: {', '.join(map(repr, unknown))} not known to {source} (its "
                        f"categories: {', '.join(map(repr, known))})")


def allowed_columns(catalog: Catalog, categories: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(category names, their affinity columns) a personalised arm may feature, in the catalogue's order."""
    names = list(catalog.categories) if catalog.categories is not None else list(categories)
    return names, [categories[name] for name in names]


def featured_categories(affinities: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `affinities` (n, len(names)): the featured category (the highest; missing counts as −inf,
    ties go to the first name) and its affinity (NaN when all are missing)."""
    scores = np.where(np.isnan(affinities), -np.inf, affinities)
    best = np.argmax(scores, axis=1) if len(names) else np.zeros(len(affinities), dtype=np.int64)
    value = np.take_along_axis(affinities, best[:, None], axis=1)[:, 0]
    return np.asarray(names, dtype=object)[best], value


def matched_indicator(featured_logged: np.ndarray, chosen: np.ndarray, personalised_row: np.ndarray) -> np.ndarray:
    """The `matched` training column: 0 where a personalised incentive featured another category than the
    rule's choice, else 1 (control and other arms included, so that the column only tells those rows apart)."""
    return np.where(personalised_row & (featured_logged != chosen), 0.0, 1.0)
