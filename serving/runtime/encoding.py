"""Feature encoder: a table or a list of request records → one 2-D float64 array in model order.

The single implementation of "how a customer becomes a row of numbers", shared by training (which
fits it and trains the boosters on its output), batch scoring and the online service. Categorical
columns become integer codes into a category list kept with the model; an unseen value or a missing
one becomes NaN, which LightGBM routes like a missing category.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from features.build import AMOUNT_FEATURES, COUNT_FEATURES
from features.events import never_negative
from features.errors import DataError


def _is_categorical(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


class FeatureEncoder:
    """Learns the feature order and category levels of a training table; encodes rows identically later.

    sklearn-style: `__init__` stores arguments, `fit` sets `features_`, `categories_` and `minimums_`:
    a lower bound of 0 for the count, day and amount features of `features.build` that were never
    negative in training. A value below it is an impossible input (a negative recency or spend), refused
    with an error naming the field rather than scored like an ordinary number.
    """

    def __init__(self, features: Sequence[str] | None = None):
        self.features = features

    def fit(self, frame: pd.DataFrame) -> "FeatureEncoder":
        names = list(self.features) if self.features is not None else list(frame.columns)
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise DataError(f"feature column(s) not found: {', '.join(missing)}")
        self.features_ = names
        self.categories_: dict[str, list[str]] = {}
        for name in names:
            col = frame[name]
            if isinstance(col.dtype, pd.CategoricalDtype):
                levels = [str(v) for v in col.cat.categories]
            elif _is_categorical(col):
                levels = sorted({str(v) for v in col.dropna().unique()})
            else:
                continue
            self.categories_[name] = levels
        self.minimums_ = {}
        for name in names:
            if name in self.categories_ or (name not in COUNT_FEATURES | AMOUNT_FEATURES and not never_negative(name)):
                continue
            values = pd.to_numeric(frame[name], errors="coerce")
            if not (values < 0).any():
                self.minimums_[name] = 0.0
        self._build_lookup()
        return self

    def _build_lookup(self) -> None:
        self._index = {name: i for i, name in enumerate(self.features_)}
        self._bounds = [(j, name, self.minimums_[name]) for j, name in enumerate(self.features_)
                        if name in self.minimums_]
        self._codes = {name: {level: float(code) for code, level in enumerate(levels)}
                       for name, levels in self.categories_.items()}

    @property
    def categorical_indices(self) -> list[int]:
        return [self._index[name] for name in self.categories_]

    @property
    def categorical_features(self) -> list[str]:
        return list(self.categories_)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode a table (columns by name, extra columns ignored) into float64 (n, n_features)."""
        missing = [n for n in self.features_ if n not in frame.columns]
        if missing:
            raise DataError(f"missing feature column(s): {', '.join(missing)}")
        out = np.empty((len(frame), len(self.features_)), dtype=np.float64)
        for j, name in enumerate(self.features_):
            col = frame[name]
            if name in self.categories_:
                out[:, j] = self._category_codes(col, self.categories_[name])
            elif pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                out[:, j] = col.astype("float64").to_numpy(na_value=np.nan)
            elif col.isna().all():
                out[:, j] = np.nan
            else:  # text where the model needs a number: refused, as the online service refuses "5"
                sample = col.dropna().iloc[0]
                raise DataError(f"column {name!r} must be numeric, got text (e.g. {sample!r}); convert it first "
                                f"(for a customer table, `winback score --table` does)")
        for j, name, minimum in self._bounds:
            below = np.flatnonzero(out[:, j] < minimum)
            if len(below):
                rows = ", ".join(str(frame.index[i]) for i in below[:3])
                raise DataError(f"column {name!r}: {len(below)} value(s) below {minimum:g}, impossible for this "
                                f"feature (first rows: {rows})")
        return out

    @staticmethod
    def _category_codes(col: pd.Series, levels: list[str]) -> np.ndarray:
        """Position of each value in `levels` as float; unseen or missing → NaN."""
        if isinstance(col.dtype, pd.CategoricalDtype):
            # Map the (few) categories once, then index by the per-row codes.
            lookup = pd.Index(levels).get_indexer(col.cat.categories.astype(str)).astype(np.float64)
            lookup[lookup < 0] = np.nan
            # code −1 (missing) picks the NaN appended last, also when the column has no categories at all
            return np.append(lookup, np.nan)[col.cat.codes.to_numpy()]
        text = col.astype("string")
        positions = pd.Index(levels).get_indexer(text.fillna("\x00missing"))
        return np.where(positions < 0, np.nan, positions.astype(np.float64))

    def transform_records(self, records: Iterable[Mapping[str, object]], where: str = "features") -> np.ndarray:
        """Encode request records (dicts of feature → value) without building a DataFrame.

        Missing keys and wrong types raise DataError naming `where[i].feature`; None means missing.
        """
        rows = list(records)
        out = np.empty((len(rows), len(self.features_)), dtype=np.float64)
        codes = self._codes
        for i, rec in enumerate(rows):
            row = out[i]
            for j, name in enumerate(self.features_):
                try:
                    value = rec[name]
                except KeyError:
                    raise DataError(f"{where}[{i}].{name}: missing feature") from None
                if value is None:
                    row[j] = np.nan
                elif name in codes:
                    if isinstance(value, (dict, list)):
                        raise DataError(f"{where}[{i}].{name}: expected a category value, got {type(value).__name__}")
                    row[j] = codes[name].get(str(value), np.nan)
                elif isinstance(value, bool) or isinstance(value, (int, float)):
                    row[j] = float(value)
                else:
                    raise DataError(f"{where}[{i}].{name}: expected a number, got {type(value).__name__}")
            for j, name, minimum in self._bounds:
                if row[j] < minimum:
                    raise DataError(f"{where}[{i}].{name}: {rec[name]!r} is below {minimum:g}, impossible for "
                                    f"this feature")
        return out

    def to_dict(self) -> dict:
        return {"features": list(self.features_), "categories": {k: list(v) for k, v in self.categories_.items()},
                "minimums": dict(self.minimums_)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "FeatureEncoder":
        enc = cls(features=list(data["features"]))
        enc.features_ = list(data["features"])
        enc.categories_ = {k: list(v) for k, v in data["categories"].items()}
        if "minimums" in data:
            enc.minimums_ = {k: float(v) for k, v in data["minimums"].items()}
        else:  # saved before bounds were recorded: counts and days are never negative, amounts may be
            enc.minimums_ = {n: 0.0 for n in enc.features_ if n in COUNT_FEATURES and n not in enc.categories_}
        enc._build_lookup()
        return enc
