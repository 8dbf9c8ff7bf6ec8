"""Category affinity: per customer, how much of their (recent) spend goes to each category, as of `as_of`.

`affinity_<category>` is the recency-weighted spend share of the category: every purchase's amount is
weighted by 0.5^(age / HALF_LIFE_DAYS), so a purchase a year ago counts a quarter of one today. A customer
with few purchases says little about their taste, so the share is shrunk toward a prior: the mean share
among customers of the same lifecycle stage (`features.segment`), with weight k / (k + purchase rows),
k = PRIOR_PURCHASES. One purchase of toys is then not "100 % toys".

Catalogues can hold thousands of categories; only the MAX_CATEGORIES with the most spend up to `as_of` get
a column (in alphabetical order; the rest still count in every share's denominator), and
`top_affinity_category` names the customer's highest one. Everything is two bincounts over (customer × category) codes.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

HALF_LIFE_DAYS = 180.0
PRIOR_PURCHASES = 3.0
MAX_CATEGORIES = 20
PREFIX = "affinity_"
TOP_COLUMN = "top_affinity_category"

DESCRIPTIONS = {
    f"{PREFIX}<category>": f"Recency-weighted spend share of the category (half-life {HALF_LIFE_DAYS:g} days), "
    f"shrunk toward the mean share of the customer's lifecycle stage with weight {PRIOR_PURCHASES:g} / "
    f"({PRIOR_PURCHASES:g} + purchase rows); only the {MAX_CATEGORIES} categories with the most spend.",
    TOP_COLUMN: "The category with the highest affinity (ties: the alphabetically first).",
}


def column_names(categories) -> dict[str, str]:
    """Category → its affinity column: lower case, anything but letters and digits as `_`; a name that
    would repeat another gets `_2`, `_3`, … in the order given (alphabetical)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in categories:
        base = PREFIX + (re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_") or "blank")
        column, i = base, 1
        while column in taken:
            i += 1
            column = f"{base}_{i}"
        taken.add(column)
        out[str(name)] = column
    return out


def category_map(frame: pd.DataFrame) -> dict[str, str]:
    """Category → affinity column of a feature table: the names come from `top_affinity_category`'s levels
    (a categorical in a `build_features` table), in the order the columns were made; a column whose
    category cannot be recovered (a table read from CSV) is named by its column suffix."""
    columns = [c for c in frame.columns if str(c).startswith(PREFIX)]
    named: dict[str, str] = {}
    if TOP_COLUMN in frame.columns and isinstance(frame[TOP_COLUMN].dtype, pd.CategoricalDtype):
        named = {k: v for k, v in column_names(frame[TOP_COLUMN].cat.categories).items() if v in columns}
    by_column = {v: k for k, v in named.items()}
    return {by_column.get(c, c[len(PREFIX):]): c for c in columns}


def affinity(codes: np.ndarray, age: np.ndarray, amount: np.ndarray, labels: pd.Series, n: int,
             stage: np.ndarray, max_categories: int = MAX_CATEGORIES) -> dict[str, object]:
    """`affinity_<category>` columns and `top_affinity_category` for n customers.

    `codes`, `age` (days before as_of) and `amount` describe the kept purchase rows; `labels` their
    categories; `stage` a lifecycle stage label per customer (the prior's groups).
    """
    label_code, names = pd.factorize(labels.to_numpy(), sort=True)
    known = label_code >= 0
    spend = np.maximum(np.nan_to_num(amount), 0.0)
    total_by_category = np.bincount(label_code[known], weights=spend[known], minlength=len(names))
    keep = np.sort(np.lexsort((np.arange(len(names)), -total_by_category))[:max_categories])  # then by name
    bucket = np.full(len(names) + 1, len(keep), dtype=np.int64)  # the others share one bucket
    bucket[keep] = np.arange(len(keep))
    width = len(keep) + 1
    category = bucket[np.where(known, label_code, len(names))]
    weight = spend * np.exp2(-age / HALF_LIFE_DAYS)
    flat = codes * width + category
    weighted = np.bincount(flat, weights=weight, minlength=n * width).reshape(n, width)
    rows = np.bincount(codes[known], minlength=n).astype(float)
    total = weighted.sum(axis=1, keepdims=True)
    share = np.divide(weighted, total, out=np.zeros_like(weighted), where=total > 0)[:, :-1]
    prior = _group_means(share, total[:, 0] > 0, stage)
    strength = (PRIOR_PURCHASES / (PRIOR_PURCHASES + rows))[:, None]
    values = (1 - strength) * share + strength * prior
    kept_names = [str(names[i]) for i in keep]
    out: dict[str, object] = {col: values[:, j] for j, col in enumerate(column_names(kept_names).values())}
    top = np.argmax(values, axis=1) if len(keep) else np.full(n, -1)  # ties: the alphabetically first
    out[TOP_COLUMN] = pd.Categorical.from_codes(np.where(rows > 0, top, -1),
                                                categories=pd.Index(kept_names, dtype="str"))
    return out


def _group_means(share: np.ndarray, has_spend: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Per row, the mean share among rows of its group with some spend (the population's when none)."""
    codes, uniques = pd.factorize(group)
    counts = np.bincount(codes[has_spend], minlength=len(uniques)).astype(float)
    overall = share[has_spend].mean(axis=0) if has_spend.any() else np.zeros(share.shape[1])
    means = np.tile(overall, (len(uniques), 1))
    for j in range(share.shape[1]):  # one bincount per category column (few columns, vectorised over customers)
        sums = np.bincount(codes[has_spend], weights=share[has_spend, j], minlength=len(uniques))
        means[counts > 0, j] = sums[counts > 0] / counts[counts > 0]
    return means[codes]
