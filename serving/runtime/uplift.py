"""The uplift runtime model: the one implementation of "features → per-arm uplift → net value → decision".

It holds a FeatureEncoder, the catalogue, and LightGBM boosters (as model text) with a recipe per
learner kind, so that uplift is computed by calling the boosters directly on one float array:

- two_models:            uplift_a = treated_a(X) − control_a(X)
- solo_model:            uplift_a = solo_a([X, 1]) − solo_a([X, 0])  (arm indicator as last column)
- class_transformation:  z = 1 for (treated, y=1) and (control, y=0); with π_a the arm's treated share in
                         training, P(z=1|X) = π_a·p_a + (1 − π_a)·(1 − p_control), so
                         p_a = (ct_a(X) − (1 − π_a)·(1 − control_a(X))) / π_a and uplift_a = p_a − control_a(X).
                         At π_a = ½ this is the textbook 2·ct_a(X) − 1, which is biased at any other split
                         (+0.16 for everyone at a 40/60 split and a 10 % base rate); models saved before
                         π_a was recorded are read with π_a = ½.

p_control is the mean of the per-arm control estimates (identical boosters are called once).

A recipe exists for the binary outcome and, optionally, for a revenue outcome (same kinds except
class_transformation); with revenue, the revenue uplift replaces outcome_value·Δp in the net value.
Saved as booster text files + runtime.json (no pickle). Batch scoring, the MLflow pyfunc and the
online service all call `predict`, so they cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from serving.runtime import churn as churn_runtime
from serving.runtime.decision import personal
from serving.runtime.boosters import BoosterCaller
from serving.runtime.decision.catalog import Catalog
from serving.runtime.decision import CONTROL, MODEL_RULE, apply_rule, chosen_values, decide, net_values
from serving.runtime.encoding import FeatureEncoder
from serving.runtime.reference import load_reference, save_reference

RUNTIME_FILE = "runtime.json"
FORMAT_VERSION = 1
KINDS = ("two_models", "solo_model", "class_transformation")


@dataclass(frozen=True)
class UpliftPrediction:
    """Per-customer scores; (n, k) arrays have one column per arm in `arms` order."""

    arms: list[str]
    control: str
    uplift: np.ndarray            # Δ P(outcome) of each arm vs control
    p_control: np.ndarray         # (n,)
    p_arm: np.ndarray
    revenue_control: np.ndarray | None  # (n,) expected revenue under control, with a revenue outcome
    revenue_arm: np.ndarray | None
    revenue_uplift: np.ndarray | None
    net_value: np.ndarray
    decision: np.ndarray          # arm index, or CONTROL (-1)
    featured_category: np.ndarray | None = None  # (n,) with a personalised arm: the category it features
    category_affinity: np.ndarray | None = None  # (n,) the customer's affinity for that category

    @property
    def incentive(self) -> np.ndarray:
        names = np.array([*self.arms, self.control], dtype=object)
        return names[np.where(self.decision == CONTROL, len(self.arms), self.decision)]

    @property
    def expected_net_value(self) -> np.ndarray:
        return chosen_values(self.net_value, self.decision)


class UpliftRuntime:
    """Encoder + boosters + recipes + catalogue. Built by training, loaded by serving."""

    def __init__(self, encoder: FeatureEncoder, catalog: Catalog, recipes: Mapping[str, Mapping],
                 boosters: Mapping[str, str | lgb.Booster], metadata: Mapping | None = None):
        self.encoder = encoder
        self.catalog = catalog
        self.recipes = {k: dict(v) for k, v in recipes.items()}
        self.boosters = {name: b if isinstance(b, lgb.Booster) else lgb.Booster(model_str=b)
                         for name, b in boosters.items()}
        self.metadata = dict(metadata or {})
        self.reference: dict | None = None  # drift reference (serving.monitoring.drift), set at training
        self._callers = {name: BoosterCaller(b) for name, b in self.boosters.items()}
        self._allowed = self._allowed_mask()

    def compile_trees(self, on: bool = True) -> "UpliftRuntime":
        """Large batches through the boosters compiled by lleaves (the `fast` extra; compiled now or loaded
        from the cache, see serving.runtime.compiled); small calls are unchanged."""
        for caller in self._callers.values():
            caller.use_compiled(on)
        return self

    @property
    def arms(self) -> list[str]:
        return self.catalog.arms

    @property
    def control(self) -> str:
        return self.catalog.control

    @property
    def learner(self) -> str:
        recipe = self.recipes["outcome"]
        return recipe.get("learner", recipe["kind"])

    # -- scoring ---------------------------------------------------------------------------------
    def _target(self, recipe: Mapping, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value under control (n,), value under each arm (n, k), uplift (n, k)) for one recipe."""
        kind, n, k = recipe["kind"], X.shape[0], len(self.arms)
        callers = self._callers
        out = np.empty((n, k), dtype=np.float64)
        if kind in ("two_models", "class_transformation"):
            cache: dict[str, np.ndarray] = {}  # identical control boosters are stored and called once

            def call(name: str) -> np.ndarray:
                if name not in cache:
                    cache[name] = callers[name].predict(X)
                return cache[name]

            uplift = np.empty((n, k), dtype=np.float64)
            base = np.zeros(n)
            shares = recipe.get("treated_shares") or [0.5] * k
            for j, (name, control) in enumerate(zip(recipe["treated" if kind == "two_models" else "models"],
                                                    recipe["controls"])):
                p_c = call(control)
                base += p_c
                if kind == "two_models":
                    out[:, j] = call(name)
                    uplift[:, j] = out[:, j] - p_c
                else:
                    share = shares[j]
                    uplift[:, j] = (call(name) - (1.0 - share) * (1.0 - p_c)) / share - p_c
                    out[:, j] = np.clip(p_c + uplift[:, j], 0.0, 1.0)
            return base / max(k, 1), out, uplift
        if kind == "solo_model":
            stacked = np.empty((2 * n, X.shape[1] + 1), dtype=np.float64)
            stacked[:n, :-1] = X
            stacked[n:, :-1] = X
            stacked[:n, -1] = 1.0
            stacked[n:, -1] = 0.0
            base = np.zeros(n)
            uplift = np.empty((n, k), dtype=np.float64)
            for j, name in enumerate(recipe["models"]):
                both = callers[name].predict(stacked)
                out[:, j] = both[:n]
                uplift[:, j] = both[:n] - both[n:]
                base += both[n:]
            # each per-arm solo model estimates the control outcome; p_control is their mean, while
            # each arm's uplift uses its own model's estimate (exactly SoloModel.predict)
            return base / max(k, 1), out, uplift
        if kind == "effect":
            # X-learner / DR-learner: a control-outcome model and, per arm, a weighted sum of effect models
            # (regressors of the arm's effect on the outcome): uplift = Σ w·τ(x), value under the arm = control + uplift
            base = np.zeros(n)
            uplift = np.empty((n, k), dtype=np.float64)
            for j, (control, effects) in enumerate(zip(recipe["controls"], recipe["effects"])):
                p_c = callers[control].predict(X)
                base += p_c
                uplift[:, j] = sum(weight * callers[name].predict(X) for name, weight in effects)
                out[:, j] = p_c + uplift[:, j]
                if recipe.get("probability", True):
                    out[:, j] = np.clip(out[:, j], 0.0, 1.0)
            return base / max(k, 1), out, uplift
        raise ValueError(f"unknown learner kind {kind!r}")

    # -- the decision --------------------------------------------------------------------------
    @property
    def validated_arms(self) -> list[str] | None:
        """The arms the decision may send: those whose sends were shown out of fold to pay for their cost
        (`training.uplift.decision`); None for a model trained before that check (every arm)."""
        arms = self.metadata.get("decision", {}).get("validated_arms")
        return None if arms is None else list(arms)

    @property
    def rule(self) -> str:
        """The shipped decision rule: `model` (the net-value decision over the validated arms), or the baseline
        that was worth more out of fold (`serving.runtime.decision.apply_rule`)."""
        return self.metadata.get("decision", {}).get("rule", MODEL_RULE)

    def set_decision(self, validated_arms: list[str] | None = None, rule: str | None = None,
                     **evidence) -> "UpliftRuntime":
        """Record which arms the decision may send and the rule it ships (kept in runtime.json)."""
        decision = dict(self.metadata.get("decision", {}))
        if validated_arms is not None:
            unknown = [a for a in validated_arms if a not in self.arms]
            if unknown:
                raise ValueError(f"validated arms {unknown} are not arms of the model ({self.arms})")
            decision["validated_arms"] = list(validated_arms)
        if rule is not None:
            apply_rule(rule, np.zeros(0, dtype=np.int64), np.zeros((0, len(self.arms))), self.arms)  # known?
            decision["rule"] = rule
        decision.update(evidence)
        self.metadata["decision"] = decision
        self._allowed = self._allowed_mask()
        return self

    def _allowed_mask(self) -> np.ndarray | None:
        arms = self.validated_arms
        return None if arms is None else np.array([a in arms for a in self.arms], dtype=bool)

    @property
    def categories(self) -> dict[str, str]:
        """Category → affinity column the model knows (empty without personalisation)."""
        return dict(self.metadata.get("personalisation", {}).get("categories", {}))

    def _featured(self, X: np.ndarray, cat: Catalog, override: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The featured category and its affinity per row, with a personalised arm in the catalogue. The
        interim runtimes of tuning folds carry no personalisation metadata and skip it; a catalogue given at
        scoring time is checked against the categories the model knows (DataError naming the others)."""
        if not cat.personalised or not (self.categories or override):
            return None, None
        personal.check_categories(cat, list(self.categories))
        names, columns = personal.allowed_columns(cat, self.categories)
        index = [self.encoder.features_.index(c) for c in columns]
        return personal.featured_categories(X[:, index], names)

    def _with_match(self, X: np.ndarray) -> np.ndarray:
        """The boosters' input: with a learned `matched` column, the encoder's columns and a 1 (the category
        featured at decision time is the customer's own); an array that has the column already is kept."""
        if not self.metadata.get("personalisation", {}).get("matched") or X.shape[1] != len(self.encoder.features_):
            return X
        return np.column_stack([X, np.ones(len(X))])

    def predict(self, X: np.ndarray, catalog: Catalog | None = None) -> UpliftPrediction:
        """Score an encoded array (rows from `self.encoder`); `catalog` overrides costs and values."""
        cat = self.catalog if catalog is None else catalog.for_model(self.arms, self.control)
        X = np.asarray(X, dtype=np.float64)
        featured = self._featured(X, cat, catalog is not None)
        X = self._with_match(X)
        p_control, p_arm, uplift = self._target(self.recipes["outcome"], X)
        revenue = (None, None, None)
        if "revenue" in self.recipes:
            recipe = self.recipes["revenue"]
            if recipe["kind"] == "hurdle":
                # expected revenue = P(convert | arm) × mean revenue of a conversion under that arm
                control = p_control * recipe["amount_control"]
                arms = p_arm * np.asarray(recipe["amounts"], dtype=np.float64)
                revenue = (control, arms, arms - control[:, None])
            else:
                revenue = self._target(recipe, X)
        net = net_values(uplift, p_arm, cat.costs, cat.redemption_costs, cat.outcome_value, revenue[2])
        # only arms whose sends were shown to pay out of fold are sent (the others' estimates are kept, not used)
        decision = decide(net if self._allowed is None else np.where(self._allowed, net, -np.inf))
        decision = apply_rule(self.rule, decision, uplift, self.arms)
        return UpliftPrediction(self.arms, self.control, uplift, p_control, p_arm, *revenue, net, decision,
                                *featured)

    def predict_uplift(self, X: np.ndarray) -> np.ndarray:
        """Only Δ P(outcome) per arm, (n, k): what the Qini metrics rank by."""
        return self._target(self.recipes["outcome"], self._with_match(np.asarray(X, dtype=np.float64)))[2]

    def predict_frame(self, frame: pd.DataFrame, catalog: Catalog | None = None) -> UpliftPrediction:
        return self.predict(self.encoder.transform(frame), catalog)

    def predict_records(self, records: Iterable[Mapping[str, object]], catalog: Catalog | None = None,
                        where: str = "customers") -> UpliftPrediction:
        return self.predict(self.encoder.transform_records(records, where=where), catalog)

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        files = {}
        for name, booster in self.boosters.items():
            files[name] = f"{name}.txt"
            (d / files[name]).write_text(booster.model_to_string())
        spec = {"format": FORMAT_VERSION, "encoder": self.encoder.to_dict(), "catalog": self.catalog.to_dict(),
                "recipes": self.recipes, "boosters": files, "metadata": self.metadata}
        (d / RUNTIME_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
        save_reference(d, self.reference)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "UpliftRuntime":
        d = Path(directory)
        spec = json.loads((d / RUNTIME_FILE).read_text())
        if spec.get("format") != FORMAT_VERSION:
            raise ValueError(f"{d}: unsupported uplift runtime format {spec.get('format')!r}")
        boosters = {name: lgb.Booster(model_file=str(d / file)) for name, file in spec["boosters"].items()}
        runtime = cls(FeatureEncoder.from_dict(spec["encoder"]), Catalog.from_dict(spec["catalog"]),
                      spec["recipes"], boosters, spec.get("metadata"))
        runtime.reference = load_reference(d)
        return runtime


def find_runtime_dir(root: str | Path) -> Path:
    root = Path(root)
    if (root / RUNTIME_FILE).is_file():
        return root
    found = sorted(root.rglob(RUNTIME_FILE))
    if not found:
        raise FileNotFoundError(f"no {RUNTIME_FILE} under {root}")
    return found[0].parent


def load_uplift_runtime(model_uri: str) -> UpliftRuntime:
    """Load the runtime from a local directory or any MLflow model URI (runs:/, models:/name@alias, …)."""
    from features.errors import DataError

    if Path(model_uri).is_dir():
        root = Path(model_uri)
    else:
        from serving.runtime.registry import download_model

        root = download_model(model_uri)
    directory = find_runtime_dir(root)
    if (directory / churn_runtime.BOOSTER_FILE).is_file():  # the churn runtime's layout
        raise DataError(f"--model: {model_uri!r} is a churn model; this needs an uplift model "
                        f"(e.g. models:/winback-uplift@champion, from `winback train uplift`)")
    return UpliftRuntime.load(directory)
