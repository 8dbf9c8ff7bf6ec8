"""The online service: POST /score, POST /recommend, GET /model-info over the packaged champion models.

Thin by design: the body is validated by `serving.api.schemas`, one call into `serving.api.online` does the
work on the LightGBM boosters, and the answer goes back. Models and the optional feature snapshot are
loaded once per worker in `__init__`, where the settings (environment) are read too — never at import.

    bentoml serve serving.service:Winback      # or: winback serve --port 3000 --workers 2
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse

from features.errors import DataError
from serving.api import model_store, online
from serving.api.metrics import ServiceMetrics
from serving.api.asgi import (LOGGER, RequestGuard, accept_one_connection_per_wakeup, cancel_request_timers,
                          complete_openapi, refuse)
from serving.api.schemas import (Customer, EventsRequest, EventsResponse, ModelInfo, RecommendRequest,
                                 RecommendResponse, ScoreRequest, ScoreResponse)

INLINE_MAX_CUSTOMERS = 64  # larger requests run in a worker thread so they never stall small ones
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
ONLINE_FIX = ("fix: give --online-store / WINBACK_ONLINE_STORE sqlite:///online.db (a file) or redis://host:port/db, "
              "or leave it unset")
# request latency histogram buckets (seconds): fine below 5 ms, where single-customer calls land
LATENCY_BUCKETS = [0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


@dataclass(frozen=True)
class ServiceSettings:
    """What the environment configures, read once when a worker starts."""

    api_token: str | None = None
    features_path: str | None = None
    startup_error_file: str | None = None  # set by `winback serve`: where a worker that cannot start says why
    prediction_metrics: bool = True  # WINBACK_PREDICTION_METRICS=off leaves /metrics with BentoML's own only
    # the online store (POST /events, lookups by id that follow every event): URL, its day, profiles, triggers
    online_store: str | None = None
    as_of: str | None = None
    profiles_path: str | None = None
    trigger_churn: str | None = None
    trigger_stages: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ServiceSettings":
        env = os.environ if environ is None else environ
        return cls(api_token=env.get("WINBACK_API_TOKEN") or None, features_path=env.get("WINBACK_FEATURES") or None,
                   startup_error_file=env.get("WINBACK_STARTUP_ERROR_FILE") or None,
                   prediction_metrics=env.get("WINBACK_PREDICTION_METRICS", "on").lower() not in {"off", "0", "false"},
                   online_store=env.get("WINBACK_ONLINE_STORE") or None, as_of=env.get("WINBACK_AS_OF") or None,
                   profiles_path=env.get("WINBACK_PROFILES") or None,
                   trigger_churn=env.get("WINBACK_TRIGGER_CHURN") or None,
                   trigger_stages=env.get("WINBACK_TRIGGER_STAGES") or None)


class StartupError(RuntimeError):
    """The service cannot start (unreadable snapshot, corrupt model); the message names the file and the fix."""


def _in_server_worker() -> bool:
    from bentoml._internal.context import server_context

    return server_context.worker_index is not None


def _stop_server(message: str, settings: ServiceSettings) -> None:
    """A worker that cannot start stops the whole server instead of being restarted forever.

    The message goes to `winback serve` (which prints it once and exits non-zero) through the startup
    error file, or, under a bare `bentoml serve`, to the log as one line; the BentoML arbiter (this
    worker's parent) is asked to stop; the worker exits.
    Outside a server (an ASGI app in tests) it raises StartupError instead.
    """
    if not _in_server_worker():
        raise StartupError(message)
    if settings.startup_error_file:  # `winback serve` prints it once, for every worker
        error_file = Path(settings.startup_error_file)
        try:
            if not error_file.exists():
                error_file.write_text(message + "\n")
        except OSError:
            logging.getLogger(LOGGER).error("cannot start: %s", message)
    else:
        logging.getLogger(LOGGER).error("cannot start: %s", message)
    import psutil

    parent = psutil.Process(os.getppid())
    command = " ".join(parent.cmdline())
    if "bentoml" in command and "serve" in command:
        parent.send_signal(signal.SIGTERM)
    logging.shutdown()
    os._exit(3)


SNAPSHOT_FIX = ("fix: give --features / WINBACK_FEATURES a table written by `winback features build`, "
                "or leave it unset to serve customers sent with their features")


class BearerAuth:
    """ASGI middleware: when the service has an API token, every path but the health checks and
    metrics needs `Authorization: Bearer <token>`, else 401. The token comes from the running
    service's settings, so nothing is read at import time."""

    def __init__(self, app, token: Callable[[], str | None]):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        expected = self.token()
        if expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + expected.encode()):
                response = JSONResponse({"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _service_token() -> str | None:
    try:
        return bentoml.get_current_service().settings.api_token
    except bentoml.exceptions.BentoMLException:  # not started yet: refuse rather than serve unguarded
        return os.environ.get("WINBACK_API_TOKEN") or None


info_app = FastAPI(title="winback model info", docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.service(
    name="winback",
    workers=2,  # one process per core; each worker computes small requests inline on its event loop
    traffic={"timeout": 60},
    metrics={"enabled": True, "namespace": "bentoml_service", "duration": {"buckets": LATENCY_BUCKETS}},
)
@bentoml.asgi_app(info_app, path="/")
class Winback:
    """Churn risk with reasons, and which incentive to send, for one or 10,000 customers per call."""

    churn_model = model_store.PackagedBentoModel(model_store.CHURN.name)
    uplift_model = model_store.PackagedBentoModel(model_store.UPLIFT.name)

    def __init__(self) -> None:
        self.settings = ServiceSettings.from_env()
        cancel_request_timers()
        if _in_server_worker():
            accept_one_connection_per_wakeup()
        try:
            self.churn = model_store.load_packaged(self.churn_model)
            self.uplift = model_store.load_packaged(self.uplift_model)
            online.warm_up(self.churn, self.uplift)  # parses every booster now, not at the first request
        except Exception as exc:  # any failure here would make BentoML restart the worker forever
            _stop_server(f"a packaged model cannot be loaded ({_one_line(exc)}); fix: package the champions "
                         f"again with `winback package`", self.settings)
        self.snapshot = None
        if self.settings.features_path:
            path = self.settings.features_path
            if not Path(path).is_file():
                _stop_server(f"WINBACK_FEATURES={path}: file not found; {SNAPSHOT_FIX}", self.settings)
            try:
                self.snapshot = online.FeatureSnapshot.load(path, [self.churn.encoder, self.uplift.encoder])
            except Exception as exc:
                _stop_server(f"WINBACK_FEATURES={path}: cannot be used as the feature snapshot ({_one_line(exc)}); "
                             f"{SNAPSHOT_FIX}", self.settings)
        self.live = None
        if self.settings.online_store:
            if self.snapshot is not None:
                _stop_server("WINBACK_FEATURES and WINBACK_ONLINE_STORE are both set; customers are looked up in one "
                             "of them: keep one", self.settings)
            self.live = self._open_online_store()
        self.lookup = self.snapshot if self.live is None else self.live  # where customers sent by id are found
        self.info = ModelInfo(
            models=[model_store.describe(self.churn_model), model_store.describe(self.uplift_model)],
            churn_features=self.churn.feature_names, uplift_features=list(self.uplift.encoder.features_),
            arms=self.uplift.arms, control=self.uplift.control,
            feature_snapshot=self.settings.features_path or self.settings.online_store,
            snapshot_customers=len(self.snapshot or self.live or ()))
        self._big_requests = anyio.CapacityLimiter(2)
        self._writes = anyio.CapacityLimiter(1)  # one batch at a time per worker: the store serialises them anyway
        self.metrics = None
        if self.settings.prediction_metrics:
            self.metrics = ServiceMetrics.for_process(self.churn.encoder.features_, self.uplift.encoder.features_,
                                                      [*self.uplift.arms, self.uplift.control])
            self.metrics.describe_models([dict(m) for m in self.info.models])

    def _open_online_store(self):
        """The online store named by the settings, with the engine that scores what `POST /events` writes."""
        from serving.online.engine import Clock, OnlineEngine, TriggerRule
        from serving.online.live import LiveFeatures
        from serving.online.store import open_store

        settings, where = self.settings, f"WINBACK_ONLINE_STORE={self.settings.online_store}"
        try:
            import datetime as dt

            day = dt.date.fromisoformat(settings.as_of) if settings.as_of else None
        except ValueError:
            _stop_server(f"WINBACK_AS_OF={settings.as_of}: not a date YYYY-MM-DD", self.settings)
        try:
            churn = float(settings.trigger_churn) if settings.trigger_churn else 0.5
            stages = tuple(s.strip() for s in (settings.trigger_stages or "at_risk,dormant,churned").split(",")
                           if s.strip())
            rule = TriggerRule(churn_threshold=churn, stages=stages)
        except (ValueError, DataError) as exc:
            _stop_server(f"WINBACK_TRIGGER_CHURN / WINBACK_TRIGGER_STAGES: {_one_line(exc)}", self.settings)
        profiles = None
        if settings.profiles_path:
            from features.contracts import normalize_profiles
            from features.io import read_table

            try:
                profiles = normalize_profiles(read_table(settings.profiles_path))
            except Exception as exc:
                _stop_server(f"WINBACK_PROFILES={settings.profiles_path}: {_one_line(exc)}", self.settings)
        try:
            store = open_store(settings.online_store)
            store.ping()
        except ImportError as exc:
            _stop_server(f"{where}: {_one_line(exc)} (install the scale extra: pip install 'winback[scale]')",
                         self.settings)
        except Exception as exc:
            # a store that cannot be reached at start is a configuration error, not a degraded state: stop
            _stop_server(f"{where}: cannot be opened ({_one_line(exc)}); {ONLINE_FIX}", self.settings)
        return LiveFeatures(OnlineEngine(store, self.churn, self.uplift, profiles, rule, Clock(day)))

    @bentoml.on_startup
    def _freeze_startup_objects(self) -> None:
        """Move everything allocated at start (libraries, models, snapshot) out of the garbage collector's
        reach: full collections otherwise walk them all and stall requests for a tenth of a second."""
        gc.collect()
        gc.freeze()

    @bentoml.api(route="/score", input_spec=ScoreRequest)
    async def score(self, customers: list[Customer]) -> ScoreResponse:
        """Churn probability, risk tier, lifecycle stage, value tier and the top 3 reasons (TreeSHAP)."""
        return await self._answer("/score", len(customers), lambda: ScoreResponse(
            scores=online.score_rows(self.churn, customers, self.lookup, self.metrics)))

    @bentoml.api(route="/recommend", input_spec=RecommendRequest)
    async def recommend(self, customers: list[Customer], max_sends: int | None = None,
                        budget: float | None = None) -> RecommendResponse:
        """The incentive with the highest expected net value per customer (packaged catalogue); with
        `max_sends` / `budget`, only the sends that fit the caps."""
        return await self._answer("/recommend", len(customers), lambda: RecommendResponse(
            recommendations=online.recommend_rows(self.churn, self.uplift, customers, self.lookup, max_sends,
                                                  budget, self.metrics)))

    @bentoml.api(route="/events", input_spec=EventsRequest)
    async def events(self, transactions: list[dict[str, Any]] | None = None,
                     events: list[dict[str, Any]] | None = None) -> EventsResponse:
        """Apply purchases and engagement events to the online store, whole or not at all, once per event id:
        the customers' features and scores follow at once, and threshold crossings write triggers."""
        from serving.online.live import StoreUnavailable

        if self.live is None:
            return refuse("POST", "/events", 409, "the service has no online store; start it with "
                          "--online-store / WINBACK_ONLINE_STORE to accept events")
        try:
            done = await anyio.to_thread.run_sync(self.live.ingest, transactions or [], events or [],
                                                  limiter=self._writes)
        except DataError as exc:
            return refuse("POST", "/events", 422, str(exc))
        except StoreUnavailable as exc:
            return refuse("POST", "/events", 503, str(exc))
        return EventsResponse(**done.to_dict())

    @info_app.get("/model-info", response_model=ModelInfo)
    async def model_info(self) -> ModelInfo:
        """Packaged model versions, MLflow run ids, feature lists and incentive arms."""
        return self.info

    async def _answer(self, route: str, n: int, compute: Callable[[], Any]) -> Any:
        try:
            if n <= INLINE_MAX_CUSTOMERS:
                return compute()
            return await anyio.to_thread.run_sync(compute, limiter=self._big_requests)
        except online.UnknownCustomer as exc:
            return refuse("POST", route, 404, str(exc))
        except RuntimeError as exc:  # serving.online.live.StoreUnavailable: no store and no last state
            if type(exc).__name__ != "StoreUnavailable":
                raise
            return refuse("POST", route, 503, str(exc))
        except DataError as exc:
            return refuse("POST", route, 422, str(exc))

    def openapi(self, document: dict) -> dict:
        """BentoML's OpenAPI document completed with these models' features and every error status."""
        return complete_openapi(document, {"/score": [self.churn.encoder],
                                           "/recommend": [self.churn.encoder, self.uplift.encoder]},
                                bearer=self.settings.api_token is not None)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _service_openapi(document: dict) -> dict:
    return bentoml.get_current_service().openapi(document)


class ReadyProbe:
    """ASGI middleware: `GET /readyz` answers 200 "degraded: …" while the online store is unreachable (the
    service still answers from its last state, so it should keep its traffic); otherwise BentoML's probe."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/readyz":
            try:
                live = bentoml.get_current_service().live
            except (bentoml.exceptions.BentoMLException, AttributeError):
                live = None
            status = live.status() if live is not None else None
            if status is not None:
                from starlette.responses import PlainTextResponse

                return await PlainTextResponse(status + "\n", status_code=200)(scope, receive, send)
        return await self.app(scope, receive, send)


# outermost first: the token is checked before the body is read
Winback.add_asgi_middleware(BearerAuth, token=_service_token)
Winback.add_asgi_middleware(RequestGuard, openapi=_service_openapi)
Winback.add_asgi_middleware(ReadyProbe)
