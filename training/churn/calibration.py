"""The churn booster's calibration: Platt scaling, or a logistic stack on its logit, log-linear terms and BG/NBD's
point-in-time log-odds of no purchase (see serving.runtime.churn.apply_calibration, which applies it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from features.errors import DataError
from serving.runtime.churn import apply_calibration, btyd_silent_logit, logit, stack_terms
from serving.runtime.value import RFM_COLUMNS
from training.churn.data import ChurnData
from training.value.model import point_in_time_fits

# Log-linear terms of the stacking calibration (when the model has all of them): trees rank every
# value beyond the training range alike, a logistic term on log1p(x) keeps ordering them.
STACK_COLUMNS = ("recency_days", "frequency", "tenure_days")


def fit_platt(raw: np.ndarray, y: np.ndarray) -> dict:
    """Platt scaling on the logit of the raw probability, fitted on validation rows."""
    model = LogisticRegression(C=1e6, max_iter=1000).fit(logit(raw).reshape(-1, 1), y.astype(int))
    return {"method": "platt", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}


def fit_stack(raw: np.ndarray, terms: np.ndarray, columns: list[str], y: np.ndarray) -> dict:
    """Logistic layer on [logit(raw), log1p(columns)(, btyd)], fitted on validation rows (see apply_calibration)."""
    model = LogisticRegression(C=1.0, max_iter=1000).fit(np.column_stack([logit(raw), terms]), y.astype(int))
    return {"method": "logistic_stack", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0]),
            "columns": list(columns), "weights": [float(w) for w in model.coef_[0, 1:]]}


@dataclass(frozen=True)
class BtydFits:
    """BG/NBD fitted point in time: once per labelled snapshot (on that snapshot's customers), once as of the
    cutoff (what scoring uses). Feeds the stack's `btyd_silent_logit` term and the value model."""

    by_snapshot: dict  # snapshot date → (BgNbd, GammaGamma)
    scoring: tuple  # (BgNbd, GammaGamma) as of the cutoff
    horizon_days: int

    def term_spec(self, fit: tuple) -> dict:
        return {"bgnbd": fit[0].to_dict(), "horizon_days": int(self.horizon_days)}

    def terms(self, X: np.ndarray, feature_names: list[str], snapshots: np.ndarray) -> np.ndarray:
        """Each row's `btyd_silent_logit` with its own snapshot's fit, shape (n,)."""
        out = np.full(len(X), np.nan)
        for snapshot, fit in self.by_snapshot.items():
            at = np.flatnonzero(snapshots == snapshot)
            if len(at):
                spec = self.term_spec(fit)
                out[at] = btyd_silent_logit(X[at], feature_names, spec["bgnbd"], spec["horizon_days"])
        if np.isnan(out).any():
            raise DataError("BG/NBD stack term: a row's snapshot has no BG/NBD fit")
        return out


def btyd_fits(data: ChurnData) -> BtydFits | None:
    """The point-in-time BG/NBD fits of a transactions training set; None for a customer table, or when BG/NBD
    cannot be fitted (too few repeat buyers)."""
    if data.kind != "transactions" or data.latest_features is None or not set(RFM_COLUMNS) <= set(data.feature_columns):
        return None
    fitted = point_in_time_fits(data)
    return None if fitted is None else BtydFits(*fitted, int(data.description["horizon_days"]))


def fit_calibration(raw: np.ndarray, X: np.ndarray, feature_names: list[str], y: np.ndarray,
                    stack: bool, btyd: BtydFits | None = None,
                    snapshots: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """The calibration (stacking when asked and possible, else Platt) and the calibrated probabilities.

    Fitted on the validation rows: Platt keeps the booster's ranking; the stack's weights can
    change it slightly, so the validation AUC of a stacked model is a little optimistic (the test
    figures in the README come from later, unseen labels). With `btyd` (and each row's snapshot) the stack
    has one more term, BG/NBD's log-odds of no purchase in the horizon: each row's with its snapshot's fit,
    the stored one (for scoring) with the cutoff's.
    """
    columns = [c for c in STACK_COLUMNS if c in feature_names]
    if stack and len(columns) == len(STACK_COLUMNS):
        terms = stack_terms(X, feature_names, columns)
        if btyd is not None and snapshots is not None:
            terms = np.column_stack([terms, btyd.terms(X, feature_names, snapshots)])
        calibration = fit_stack(raw, terms, columns, y)
        if btyd is not None and snapshots is not None:
            calibration["btyd"] = btyd.term_spec(btyd.scoring)
        return calibration, apply_calibration(raw, calibration, terms)
    calibration = fit_platt(raw, y)
    return calibration, apply_calibration(raw, calibration)
