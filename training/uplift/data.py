"""The campaign table for uplift training: validated once, features joined, split by arm × outcome."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from features.errors import DataError, DataWarning
from features.io import read_table
from serving.runtime.decision.catalog import Catalog
from serving.runtime.decision import CONTROL
from serving.runtime.decision.personal import FEATURED_COLUMN
from training.uplift.personal import personalisation

PROPENSITY_COLUMN = "propensity"
CAMPAIGN_DATE_COLUMN = "campaign_date"
CAMPAIGN_ID_COLUMN = "campaign_id"


@dataclass(frozen=True)
class UpliftConfig:
    """Everything `winback train uplift` was asked to do; built by the CLI, passed down."""

    campaign: Path
    treatment_col: str
    control: str
    outcome: str
    catalog: Catalog
    catalog_path: Path
    json_out: Path | None
    revenue_col: str | None = None
    id_col: str = "customer_id"
    features: tuple[str, ...] | None = None
    transactions: Path | None = None
    profiles: Path | None = None
    as_of: pd.Timestamp | None = None
    campaign_date: pd.Timestamp | None = None  # else the campaign table's `campaign_date` column
    trials: int = 20
    timeout: float | None = None
    seed: int = 42
    experiment: str = "winback-uplift"
    register_as: str | None = None
    churn_model: str | None = None
    test_size: float = 0.3
    more_campaigns: tuple[Path, ...] = ()  # further campaign logs stacked with the first (see read_campaigns)
    decision_confidence: float = 0.95  # one-sided confidence of the uplift's lower bound the decision uses
    refit: bool = True  # ship the chosen learner refitted on every row; the validation figures are of the 70 % fit
    storage: str | None = None  # Optuna RDB URL shared by several processes (with study_name)
    study_name: str | None = None
    events: Path | None = None  # engagement events joined as point-in-time features (with transactions)
    event_columns: tuple[str, str, str] = ("customer_id", "timestamp", "event_type")  # id, time, type as named
    event_types: tuple[str, ...] | None = None  # types with their own columns, else the event_top most frequent
    event_top: int = 5


@dataclass(frozen=True)
class CampaignData:
    frame: pd.DataFrame          # features + outcome columns, one row per targeted customer
    features: list[str]
    arm: np.ndarray              # 0..k-1 = catalogue incentives, −1 = control
    y: np.ndarray
    revenue: np.ndarray | None
    propensity: np.ndarray       # probability of the arm each row received
    personalisation: dict | None = None  # see training.uplift.personal
    matched: np.ndarray | None = None    # the boosters' column after the encoder's, with personalised arms

    def boosters_input(self, X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Encoded rows as the boosters are trained on them: with the `matched` column when there is one."""
        if self.matched is None:
            return X
        return np.column_stack([X, self.matched if rows is None else self.matched[rows]])


def outcome_like_columns(frame: pd.DataFrame, y: np.ndarray, min_rows: int = 20) -> list[str]:
    """Numeric columns whose being non-zero exactly implies the outcome, or is implied by it.

    Such a column (e.g. `spend` or `conversion` next to `visit` in a campaign log) was measured after
    the treatment; using it as a feature would leak the outcome. A pre-treatment attribute almost
    never determines a noisy outcome exactly on many rows, so this check keeps real features.
    """
    y = np.asarray(y).astype(bool)
    if y.sum() < min_rows or (~y).sum() < min_rows:
        return []
    leaks = []
    for name in frame.columns:
        col = frame[name]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            continue
        nonzero = (pd.to_numeric(col, errors="coerce").fillna(0).to_numpy() != 0)
        n_nonzero, n_zero = int(nonzero.sum()), int((~nonzero).sum())
        if n_nonzero < min_rows or n_zero < min_rows:
            continue
        if y[nonzero].all() or not y[~nonzero].any():
            leaks.append(str(name))
    return leaks


def _binary(series: pd.Series, name: str) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce")
    if values.isna().any() or not values.isin([0, 1]).all():
        raise DataError(f"column {name!r}: the outcome must be 0/1 for every row")
    return values.to_numpy(dtype=np.int64)


MIN_JOIN_COVERAGE = 0.95  # share of campaign customers that must match a purchase history


def campaign_start(frame: pd.DataFrame, given: pd.Timestamp | None) -> pd.Timestamp | None:
    """The first day of the campaign: `--campaign-date`, else the earliest `campaign_date` in the table,
    else None. Both given: the earlier one (a customer contacted earlier must not be seen after it)."""
    dates = [] if given is None else [pd.Timestamp(given).normalize()]
    if CAMPAIGN_DATE_COLUMN in frame.columns:
        column = pd.to_datetime(frame[CAMPAIGN_DATE_COLUMN], errors="coerce", format="mixed")
        if column.isna().any():
            bad = frame.loc[column.isna(), CAMPAIGN_DATE_COLUMN].iloc[0]
            raise DataError(f"column {CAMPAIGN_DATE_COLUMN!r}: {int(column.isna().sum())} row(s) are not dates "
                            f"(e.g. {bad!r})")
        if column.dt.tz is not None:
            column = column.dt.tz_localize(None)
        dates.append(column.min().normalize())
    return min(dates) if dates else None


def check_as_of_before_campaign(as_of: pd.Timestamp, start: pd.Timestamp | None) -> None:
    """Point-in-time features for uplift must end before the campaign starts: the whole `as_of` day counts,
    so `as_of` on or after the campaign date would let the features see purchases the campaign caused."""
    if start is None:
        warnings.warn(f"no campaign date (give --campaign-date or a {CAMPAIGN_DATE_COLUMN!r} column): cannot check "
                      f"that --as-of {as_of.date()} is before the campaign; features after its start would see "
                      "the campaign's own effect", DataWarning, stacklevel=3)
    elif as_of >= start:
        raise DataError(f"--as-of {as_of.date()} is on or after the campaign date {start.date()}: point-in-time "
                        f"features would include purchases the campaign caused; use --as-of "
                        f"{(start - pd.Timedelta(days=1)).date()} or earlier")


def campaign_cutoffs(frame: pd.DataFrame, as_of: pd.Timestamp, start: pd.Timestamp | None) -> pd.Series:
    """The feature cutoff of every row: `as_of` for the first campaign; a later campaign of a stacked table
    (`campaign_id` + `campaign_date` columns) keeps the same lead time, as_of + (its start − the first start),
    so each campaign's features end before its own start."""
    cutoffs = pd.Series(as_of, index=frame.index)
    if start is None or CAMPAIGN_ID_COLUMN not in frame.columns or CAMPAIGN_DATE_COLUMN not in frame.columns:
        return cutoffs
    dates = pd.to_datetime(frame[CAMPAIGN_DATE_COLUMN], format="mixed")
    if dates.dt.tz is not None:
        dates = dates.dt.tz_localize(None)
    first = dates.groupby(frame[CAMPAIGN_ID_COLUMN].astype(str)).transform("min").dt.normalize()
    return as_of + (first - start)


def _read_events(config: UpliftConfig, first_cutoff) -> tuple[pd.DataFrame | None, tuple[str, ...] | None]:
    """The events file in the events contract and the event types fixed for every cutoff (errors name the file)."""
    if config.events is None:
        return None, None
    from features.events import normalize_events, top_event_types

    id_col, time_col, type_col = config.event_columns
    raw = read_table(config.events, dtype={id_col: "str"}) if str(config.events).lower().endswith(".csv") else \
        read_table(config.events)
    try:
        events = normalize_events(raw, id_col=id_col, time_col=time_col, type_col=type_col)
    except DataError as exc:
        raise DataError(f"--events {config.events}: {exc}") from None
    types = config.event_types if config.event_types is not None else \
        top_event_types(events, pd.Timestamp(first_cutoff), config.event_top)
    return events, tuple(types)


def _join_transaction_features(frame: pd.DataFrame, config: UpliftConfig) -> tuple[pd.DataFrame, list[str]]:
    from features.build import build_features
    from features.contracts import ids_as_strings, normalize_profiles, normalize_transactions

    if config.as_of is None:
        raise DataError("--transactions needs --as-of (the cutoff for point-in-time features)")
    start = campaign_start(frame, config.campaign_date)
    check_as_of_before_campaign(config.as_of, start)
    if config.id_col not in frame.columns:
        raise DataError(f"--id-col: column {config.id_col!r} not in the campaign table (needed to join features)")
    cutoffs = campaign_cutoffs(frame, config.as_of, start)
    transactions = normalize_transactions(read_table(config.transactions), as_of=config.as_of)
    profiles = normalize_profiles(read_table(config.profiles)) if config.profiles is not None else None
    events, event_types = _read_events(config, min(cutoffs))
    ids = ids_as_strings(frame[config.id_col], repr(config.id_col))  # the same id rule as the transactions
    parts = []
    for cutoff in sorted(cutoffs.unique()):
        rows = (cutoffs == cutoff).to_numpy()
        snapshot = build_features(transactions, pd.Timestamp(cutoff), profiles=profiles, events=events,
                                  event_types=event_types)
        parts.append(snapshot.reindex(ids[rows].to_numpy()).set_axis(frame.index[rows]))
    columns = [c for c in parts[0].columns if c not in frame.columns]
    extra = pd.concat(parts).loc[frame.index, columns]
    matched = extra.notna().any(axis=1).to_numpy()
    coverage = float(matched.mean()) if len(matched) else 0.0
    if coverage < MIN_JOIN_COVERAGE:
        unmatched = ", ".join(repr(v) for v in ids[~matched].unique()[:3])
        known = ", ".join(repr(v) for v in transactions["customer_id"].unique()[:3])
        raise DataError(f"--id-col {config.id_col!r}: only {coverage:.1%} of campaign customers ({int(matched.sum()):,} "
                        f"of {len(matched):,}) have a purchase on or before --as-of (at least "
                        f"{MIN_JOIN_COVERAGE:.0%} needed); unmatched e.g. {unmatched}; transaction ids look like "
                        f"{known}: check the id column and its format (leading zeros, prefixes)")
    if coverage < 1.0:
        warnings.warn(f"{coverage:.1%} of campaign customers matched a purchase history; the other "
                      f"{int((~matched).sum()):,} get missing transaction features", DataWarning, stacklevel=3)
    joined = pd.concat([frame, extra], axis=1)  # customers without history: NaN
    return joined, columns


def read_campaigns(paths: list[Path], needed: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """One table from one or several campaign logs, and which rows carry a logged `propensity`.

    Several logs are stacked: each keeps (or, without the column, gets its file name as) a `campaign_id`; a
    customer may appear once per campaign. A log without `propensity` is taken as randomised with the arm
    shares it shows (per campaign)."""
    frames = []
    for path in paths:
        frame = read_table(path)
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: column(s) {', '.join(map(repr, missing))} not found; "
                            f"columns are: {', '.join(map(str, frame.columns))}")
        if len(paths) > 1 and CAMPAIGN_ID_COLUMN not in frame.columns:
            frame = frame.assign(**{CAMPAIGN_ID_COLUMN: Path(path).stem})
        logged = PROPENSITY_COLUMN in frame.columns
        frames.append(frame.assign(_logged=logged))
    if len(frames) == 1:
        frame = frames[0]
    else:
        ids = [set(f[CAMPAIGN_ID_COLUMN].astype(str)) for f in frames]
        shared = sorted({c for i, a in enumerate(ids) for b in ids[i + 1:] for c in a & b})
        if shared:
            raise DataError(f"--campaign: campaign id(s) {', '.join(map(repr, shared[:3]))} appear in more than one "
                            f"file; give each campaign its own campaign_id")
        frame = pd.concat(frames, ignore_index=True)
    logged = frame.pop("_logged").to_numpy(dtype=bool)
    return frame, logged


def observed_shares(arm: np.ndarray, campaign: np.ndarray | None, n_arms: int) -> np.ndarray:
    """Each row's arm share in its campaign: the propensity of a randomised campaign."""
    out = np.empty(len(arm))
    groups = np.zeros(len(arm), dtype=np.int64) if campaign is None else np.unique(campaign, return_inverse=True)[1]
    for g in np.unique(groups):
        on = groups == g
        shares = np.bincount(arm[on] + 1, minlength=n_arms + 1) / on.sum()
        out[on] = shares[arm[on] + 1]
    return out


def load_campaign(config: UpliftConfig) -> CampaignData:
    """Read, check against the catalogue, join point-in-time features, encode arms and outcomes."""
    needed = [config.treatment_col, config.outcome] + ([config.revenue_col] if config.revenue_col else [])
    frame, logged = read_campaigns([config.campaign, *config.more_campaigns], needed)
    if config.control != config.catalog.control:
        raise DataError(f"--control {config.control!r} differs from the catalogue's control "
                        f"{config.catalog.control!r}")
    if config.revenue_col is None and config.catalog.outcome_value is None:
        raise DataError(f"{config.catalog_path}: outcome_value is required unless --revenue-col is given")
    arms_text = frame[config.treatment_col].astype("string")
    if arms_text.isna().any():
        raise DataError(f"column {config.treatment_col!r}: missing arm in {int(arms_text.isna().sum())} row(s)")
    config.catalog.check_arms(arms_text.unique(), source=f"column {config.treatment_col!r}")
    lookup = {name: j for j, name in enumerate(config.catalog.arms)} | {config.control: CONTROL}
    arm = arms_text.map(lookup).to_numpy(dtype=np.int64)
    y = _binary(frame[config.outcome], config.outcome)
    revenue = None
    if config.revenue_col:
        revenue_values = pd.to_numeric(frame[config.revenue_col], errors="coerce")
        if revenue_values.isna().any():
            raise DataError(f"column {config.revenue_col!r}: revenue must be a number for every row")
        revenue = revenue_values.to_numpy(dtype=np.float64)
    campaigns = frame[CAMPAIGN_ID_COLUMN].astype(str).to_numpy() if CAMPAIGN_ID_COLUMN in frame.columns else None
    propensity = observed_shares(arm, campaigns, len(config.catalog.arms))
    if logged.any() and campaigns is not None:
        # a stacked table whose randomised campaigns have no logged propensity: their arm shares stand in
        blank = pd.to_numeric(frame[PROPENSITY_COLUMN], errors="coerce").isna()
        logged = logged & ~blank.groupby(campaigns).transform("all").to_numpy()
    if logged.any():
        given = pd.to_numeric(frame.loc[logged, PROPENSITY_COLUMN], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(given).any() or not np.all((given > 0) & (given <= 1)):
            raise DataError(f"column {PROPENSITY_COLUMN!r}: propensities must be in (0, 1]")
        propensity[logged] = given
    reserved = {config.treatment_col, config.outcome, config.revenue_col, config.id_col, PROPENSITY_COLUMN,
                CAMPAIGN_DATE_COLUMN, CAMPAIGN_ID_COLUMN, FEATURED_COLUMN}
    built: list[str] = []
    if config.transactions is not None:
        frame, built = _join_transaction_features(frame, config)
    if config.features is not None:
        features = list(config.features)
        unknown = [f for f in features if f not in frame.columns]
        if unknown:
            raise DataError(f"--features: column(s) {', '.join(map(repr, unknown))} not found")
        features += [b for b in built if b not in features]
        clash = [f for f in features if f in reserved]
        if clash:
            raise DataError(f"--features: {', '.join(clash)} is the treatment, an outcome or the id, not a feature")
    elif config.transactions is not None:
        features = built  # the campaign table is then the log (arm, outcomes), not customer attributes
    else:
        candidates = [c for c in frame.columns if c not in reserved
                      and not pd.api.types.is_datetime64_any_dtype(frame[c])]
        leaks = outcome_like_columns(frame[candidates], y)
        if leaks:
            warnings.warn(f"left out of the features because they determine the outcome (measured after the "
                          f"campaign?): {', '.join(leaks)}; name them in --features to keep them",
                          DataWarning, stacklevel=2)
        features = [c for c in candidates if c not in leaks]
    if not features:
        raise DataError("no feature columns: give --features or --transactions/--as-of")
    frame = frame.reset_index(drop=True)
    return CampaignData(frame, features, arm, y, revenue, propensity,
                        *personalisation(frame, features, arm, config.catalog))


def stratified_split(arm: np.ndarray, y: np.ndarray, test_size: float, seed: int,
                     rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) stratified by arm × outcome, seeded."""
    rows = np.arange(len(arm)) if rows is None else rows
    strata = (arm[rows] + 1) * 2 + y[rows]
    train, test = train_test_split(rows, test_size=test_size, random_state=seed, stratify=strata)
    return np.sort(train), np.sort(test)
