"""Optuna studies shared by several processes (`--storage URL --study-name NAME`): opening the storage.

Used by `train churn` and `train uplift`: workers on one or several machines join one study in an RDB
(PostgreSQL in a team, see README "Team setup")."""

from __future__ import annotations

import time

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, ProgrammingError, SQLAlchemyError

from features.errors import DataError, first_line

STORAGE_ATTEMPTS = 5


def shown_url(url: str | None) -> str:
    """A storage URL as it may be printed: the password replaced by ***."""
    if url is None:
        return "in memory"
    try:
        return repr(make_url(url).render_as_string(hide_password=True))
    except (ArgumentError, ValueError):
        return repr(url)


def open_storage(url: str | None) -> optuna.storages.RDBStorage | None:
    """The Optuna storage behind `--storage` (None: the study lives in memory). A URL that cannot be parsed,
    lacks its driver or cannot be reached is a DataError naming it (password hidden), not a traceback.

    Opening creates Optuna's tables when they are missing. Workers started together on an empty database all
    try, and PostgreSQL refuses all but one (a unique violation in its catalogue: measured, 3 of 4 threads);
    those open it again once the tables exist."""
    if url is None:
        return None
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError) as exc:  # another process was creating the same tables
            if attempt == STORAGE_ATTEMPTS - 1:
                raise DataError(f"--storage: cannot open Optuna storage {shown_url(url)}: "
                                f"{first_line(exc)}") from None
            time.sleep(0.2 * (attempt + 1))
        except (ValueError, ImportError, SQLAlchemyError) as exc:
            raise DataError(f"--storage: cannot open Optuna storage {shown_url(url)}: {first_line(exc)}") from None
