"""The incentive catalogue: which arm means "send nothing", what each incentive costs, what an outcome is worth.

An incentive marked `personalised: true` features one category per customer (a coupon for what they buy):
the customer's top category by affinity among the catalogue's `categories:` (all categories when absent).

Loaded from YAML at the edge (CLI, service start), validated once, then passed around as a frozen
dataclass. The order of `incentives` is the arm order everywhere (columns, ties).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.errors import DataError


@dataclass(frozen=True)
class Incentive:
    name: str
    cost: float
    redemption_cost: float = 0.0
    personalised: bool = False


@dataclass(frozen=True)
class Catalog:
    control: str
    incentives: tuple[Incentive, ...]
    outcome_value: float | None = None
    categories: tuple[str, ...] | None = None  # the categories a personalised incentive may feature; None: all

    @property
    def arms(self) -> list[str]:
        return [inc.name for inc in self.incentives]

    @property
    def personalised(self) -> list[str]:
        return [inc.name for inc in self.incentives if inc.personalised]

    @property
    def costs(self) -> np.ndarray:
        return np.array([inc.cost for inc in self.incentives], dtype=np.float64)

    @property
    def redemption_costs(self) -> np.ndarray:
        return np.array([inc.redemption_cost for inc in self.incentives], dtype=np.float64)

    def for_model(self, arms: list[str], control: str) -> "Catalog":
        """This catalogue (e.g. an override with new costs) in a model's arm order; DataError if arms differ."""
        if control != self.control:
            raise DataError(f"catalogue control {self.control!r} differs from the model's control {control!r}")
        self.check_arms([control, *arms], source="the model")
        by_name = {inc.name: inc for inc in self.incentives}
        return Catalog(self.control, tuple(by_name[a] for a in arms), self.outcome_value, self.categories)

    def check_arms(self, arms_in_data: Iterable[str], source: str = "the data") -> None:
        """DataError naming catalogue arms absent from `source` (control included), or arms of `source`
        absent from the catalogue."""
        seen = {str(a) for a in arms_in_data}
        expected = [self.control, *self.arms]
        missing = [a for a in expected if a not in seen]
        unknown = sorted(seen - set(expected))
        if missing:
            raise DataError(f"catalogue arm(s) not in {source}: {', '.join(map(repr, missing))}")
        if unknown:
            raise DataError(f"arm(s) in {source} missing from the catalogue: {', '.join(map(repr, unknown))}")

    def to_dict(self) -> dict:
        out: dict = {"control": self.control}
        if self.outcome_value is not None:
            out["outcome_value"] = self.outcome_value
        if self.categories is not None:
            out["categories"] = list(self.categories)
        out["incentives"] = [{"name": i.name, "cost": i.cost, "redemption_cost": i.redemption_cost,
                              **({"personalised": True} if i.personalised else {})} for i in self.incentives]
        return out

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "catalogue") -> "Catalog":
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: expected a mapping with 'control' and 'incentives'")
        control = data.get("control")
        if not isinstance(control, str) or not control:
            raise DataError(f"{where}: 'control' must be the name of the no-contact arm")
        outcome_value = data.get("outcome_value")
        if outcome_value is not None:
            outcome_value = _number(outcome_value, f"{where}: outcome_value")
        items = data.get("incentives")
        if not isinstance(items, list) or not items:
            raise DataError(f"{where}: 'incentives' must be a non-empty list")
        incentives = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
                raise DataError(f"{where}: incentives[{i}] needs a 'name'")
            name = item["name"]
            if "cost" not in item:
                raise DataError(f"{where}: incentives[{i}] ({name}) needs a 'cost'")
            cost = _number(item["cost"], f"{where}: incentives[{i}].cost")
            redemption = _number(item.get("redemption_cost", 0.0), f"{where}: incentives[{i}].redemption_cost")
            if cost < 0 or redemption < 0:
                raise DataError(f"{where}: incentives[{i}] ({name}) has a negative cost")
            personalised = item.get("personalised", False)
            if not isinstance(personalised, bool):
                raise DataError(f"{where}: incentives[{i}].personalised must be true or false, got {personalised!r}")
            incentives.append(Incentive(name, cost, redemption, personalised))
        names = [inc.name for inc in incentives]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DataError(f"{where}: duplicate incentive name(s): {', '.join(duplicates)}")
        if control in names:
            raise DataError(f"{where}: control {control!r} is also listed as an incentive")
        return cls(control, tuple(incentives), outcome_value, _categories(data.get("categories"), where))


def _categories(value: object, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise DataError(f"{where}: 'categories' must be a non-empty list of category names")
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise DataError(f"{where}: duplicate categories: {', '.join(map(repr, duplicates))}")
    return tuple(value)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalogue YAML file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: catalogue file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from None
    return Catalog.from_dict(data, where=str(path))


def dump_catalog(catalog: Catalog, path: str | Path) -> Path:
    import yaml

    p = Path(path)
    p.write_text(yaml.safe_dump(catalog.to_dict(), sort_keys=False))
    return p
