"""Champion / challenger in the MLflow model registry, the same rule for churn and uplift models.

A new version is aliased `champion` only when all of these hold:
- the current champion is the same kind of model (`kind_differences`: horizon and label rule for churn,
  arms and outcome for uplift); otherwise the run says so and the alias stays;
- on rows that neither model's tuning, early stopping or calibration saw, the candidate beats the champion
  by more than the standard error of the paired difference (same rows: what they share cancels);
- the champion alias still points where it pointed when the comparison began.

A champion that cannot be loaded (artifact store down, network, a damaged model) is an error
(`PromotionError`, exit 2): nothing is registered and no alias moves.

Concurrent runs: MLflow's registry has no compare-and-set, so promotion is optimistic, and the decision is
made once by the registry's own order. A run that would promote registers its version with a claim (tag
`winback.promotion.claim`: the champion it compared with); version numbers are handed out one at a time, so
among runs that compared with the same champion the lowest claiming version takes the decision and the others
stay `challenger` (runs that finish in lockstep, e.g. workers sharing an Optuna study, all re-read the alias
before any of them moves it: measured). Then the alias is read again immediately before it is moved; a run
that finds it moved does not promote either (alias `challenger`, the reason in the version's
`winback.promotion` tag and a warning). Claims older than CLAIM_WINDOW_S before the version (a run that died
between registering and moving the alias) are ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

from features.errors import DataError, DataWarning, first_line

CHAMPION, CHALLENGER = "champion", "challenger"
CLAIM_TAG = "winback.promotion.claim"
CLAIM_WINDOW_S = 600


class PromotionError(DataError):
    """The comparison with the champion could not be made; no alias may move."""


class NotComparable(Exception):
    """The champion is another kind of model or cannot read this data: the candidate is not compared."""


@dataclass(frozen=True)
class Comparison:
    """Candidate and champion measured on the same held-out rows; the difference's SE is paired."""

    metric: str
    rows: int
    candidate: float
    candidate_se: float
    champion: float
    champion_se: float
    difference: float
    difference_se: float

    @classmethod
    def from_paired(cls, metric: str, rows: int, paired: dict) -> "Comparison":
        """From `paired_auc` / `paired_difference` output (a = candidate, b = champion)."""
        return cls(metric, int(rows), paired["value_a"], paired["se_a"], paired["value_b"], paired["se_b"],
                   paired["difference"], paired["se_difference"])

    @property
    def beats(self) -> bool:
        return self.difference > self.difference_se

    def describe(self) -> str:
        return (f"{self.metric} on {self.rows:,} held-out rows: candidate {self.candidate:.4f} ± {self.candidate_se:.4f}, "
                f"champion {self.champion:.4f} ± {self.champion_se:.4f}, difference {self.difference:+.4f} "
                f"± {self.difference_se:.4f}")


def kind_differences(candidate: dict, champion: dict) -> list[str]:
    """What makes two models of different kinds, e.g. ["horizon_days: champion 90, candidate 120"]."""
    return [f"{key}: champion {champion.get(key)!r}, candidate {value!r}"
            for key, value in candidate.items() if champion.get(key) != value]


def champion_version(name: str) -> str | None:
    """The version the `champion` alias points at, None when there is none; PromotionError when the
    registry cannot be asked (a registry that is down must not look like "no champion yet")."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        model = MlflowClient().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise PromotionError(f"cannot read the registry for {name!r}: {first_line(exc)}") from None
    version = model.aliases.get(CHAMPION)
    return None if version is None else str(version)


def load_champion(load: Callable[[str], object], model_uri: str):
    """`load(model_uri)`, any failure turned into a PromotionError naming the champion."""
    try:
        return load(model_uri)
    except Exception as exc:  # artifact store, network, damaged files: all mean "cannot compare"
        raise PromotionError(f"the current champion {model_uri} cannot be loaded, so the new model cannot be "
                             f"compared with it and no alias was moved: {first_line(exc)}") from None


def register_and_promote(model_uri: str, name: str, compare: Callable[[str], Comparison]) -> dict:
    """Register `model_uri` as a new version of `name` and alias it `champion` or `challenger`.

    `compare(champion_uri)` measures both models on the same held-out rows; it raises NotComparable when the
    champion is another kind of model, PromotionError when it cannot be loaded (then nothing is registered).
    Returns {"name", "version", "alias", "champion_version", "reason", "comparison"} and logs the
    comparison to the active run (metrics `promotion.*`, tag `winback.promotion`).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    before = champion_version(name)
    comparison = None
    if before is None:
        promote, reason = True, "first version of this model: no champion yet"
    else:
        try:
            comparison = compare(f"models:/{name}/{before}")
        except NotComparable as exc:
            promote, reason = False, f"not compared with champion version {before}: {exc}; the champion alias stays"
        else:
            promote = comparison.beats
            verdict = "beats" if promote else "does not beat"
            reason = (f"{verdict} champion version {before} by more than the standard error of the paired "
                      f"difference ({comparison.describe()})")
    claim = f"over version {before}" if before is not None else "over no champion"
    version = str(mlflow.register_model(model_uri, name, tags={CLAIM_TAG: claim} if promote else None).version)
    if promote:
        earlier = earlier_claim(name, version, claim)
        if earlier is not None:
            promote = False
            reason = (f"version {earlier}, registered just before it by another run that compared with the same "
                      f"champion ({claim.removeprefix('over ')}), takes the decision; not promoted")
            warnings.warn(reason, DataWarning, stacklevel=2)
    if promote:
        now = champion_version(name)  # re-read immediately before moving: another run may have promoted
        if now != before:
            promote = False
            reason = (f"the champion alias moved from version {before} to {now} while this run compared; not "
                      f"promoted (train again to compare with the new champion)")
            warnings.warn(reason, DataWarning, stacklevel=2)
    alias = CHAMPION if promote else CHALLENGER
    client = MlflowClient()
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "winback.promotion", reason)
    figures = {} if comparison is None else asdict(comparison)
    if comparison is not None:
        client.set_model_version_tag(name, version, comparison.metric, f"{comparison.candidate:.6f}")
        mlflow.log_metrics({f"promotion.{k}": v for k, v in figures.items() if isinstance(v, float)})
    mlflow.set_tags({"registered_name": name, "registered_version": version, "registered_alias": alias,
                     "winback.promotion": reason})
    return {"name": name, "version": version, "alias": alias, "champion_version": before, "reason": reason,
            "comparison": figures}


def earlier_claim(name: str, version: str, claim: str) -> str | None:
    """The lowest version of `name` below `version` that claimed the champion alias over the same champion
    within CLAIM_WINDOW_S before it, if any: that run takes the decision."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    created = client.get_model_version(name, version).creation_timestamp
    rivals = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")
              if int(v.version) < int(version) and v.tags.get(CLAIM_TAG) == claim
              and created - v.creation_timestamp <= CLAIM_WINDOW_S * 1000]
    return str(min(rivals)) if rivals else None


def registry_note(registered: dict | None) -> str:
    """The run description's paragraph on where the model went in the registry, and why ('' if not registered)."""
    if not registered:
        return ""
    return (f"\n\nRegistry: {registered['name']} version {registered['version']} @{registered['alias']} — "
            f"{registered['reason']}.")
