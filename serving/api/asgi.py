"""The service's HTTP edge, in front of BentoML: bodies checked with errors that name the field, one log
line per refused request, and an OpenAPI document that tells clients the truth.

- `RequestGuard` (ASGI middleware) validates the bodies of POST /score and /recommend against
  `serving.api.schemas` before BentoML sees them. A bad body is a 400 whose `error` names the field in the
  request's own terms (`customers[0].features.recency_days: expected a number, ...`), one error per
  field, and one log line: no traceback, no internal class names. A valid body reaches BentoML
  unchanged, which then parses it into the same models.
- It also serves `/docs.json` completed from the loaded models (`complete_openapi`): the features each
  endpoint needs with their types and lower bounds, and every status the service answers (400, 401,
  404, 422) with its body.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from serving.runtime.encoding import FeatureEncoder
from serving.api.schemas import FEATURE_VALUE_SCHEMA, ErrorBody, EventsRequest, RecommendRequest, ScoreRequest

BODY_MODELS: dict[str, type[BaseModel]] = {"/score": ScoreRequest, "/recommend": RecommendRequest,
                                           "/events": EventsRequest}
OPENAPI_PATH = "/docs.json"
LOGGER = "winback.service"
_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]-]*): ")


# -- errors --------------------------------------------------------------------------------------
def field_path(loc: Sequence[str | int]) -> str:
    """('customers', 0, 'features', 'x') → 'customers[0].features.x'; the whole body is 'body'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def describe_validation_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) of a body's validation errors: the first one, and how many more there are."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    field = field_path(first["loc"])
    if first["type"] == "json_invalid":
        message = "the body is not valid JSON"
    elif first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "missing":
        message = "required field missing"
    else:
        message = first["msg"]
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return field, f"{field}: {message}{more}"


def field_of(message: str) -> str | None:
    """The request field a service error message starts with (`customers[2].customer_id: ...`), if any."""
    match = _FIELD.match(message)
    return match.group(1) if match else None


def refuse(method: str, path: str, status: int, message: str, field: str | None = None) -> JSONResponse:
    """The 4xx answer (an `ErrorBody`) and its one log line: method, path, status and the message."""
    logging.getLogger(LOGGER).warning("%s %s %d %s", method, path, status, message)
    body = ErrorBody(error=message, field=field if field is not None else field_of(message))
    return JSONResponse(body.model_dump(), status_code=status)


# -- middleware -------------------------------------------------------------------------------------
async def _read_body(receive) -> tuple[bytes, dict | None]:
    """The whole request body, and the message that ended reading early (a disconnect), if any."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


class RequestGuard:
    """ASGI middleware: body validation for the API routes and the completed OpenAPI document."""

    def __init__(self, app, openapi: Callable[[dict], dict] | None = None):
        self.app = app
        self.openapi = openapi

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if method == "POST" and path in BODY_MODELS:
            media_type = dict(scope["headers"]).get(b"content-type", b"application/json").split(b";")[0].strip()
            if media_type.lower() != b"application/json":
                message = f"content-type {media_type.decode('latin-1')!r}: send the body as application/json"
                return await refuse(method, path, 415, message, "content-type")(scope, receive, send)
            body, ended = await _read_body(receive)
            if ended is not None:  # the client went away before sending its whole body
                return None
            try:
                BODY_MODELS[path].model_validate_json(body)
            except ValidationError as exc:
                field, message = describe_validation_error(exc)
                return await refuse(method, path, 400, message, field)(scope, receive, send)
            replay = iter([{"type": "http.request", "body": body, "more_body": False}])

            async def receive_again():
                return next(replay, None) or await receive()

            return await self.app(scope, receive_again, send)
        if method == "GET" and path == OPENAPI_PATH and self.openapi is not None:
            return await self._serve_document(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _serve_document(self, scope, receive, send):
        """BentoML's document, completed (built per request: clients fetch it rarely)."""
        start, parts = {}, []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(parts)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if start.get("status") == 200:
            body = json.dumps(self.openapi(json.loads(body))).encode()
        await send({"type": "http.response.start", "status": start.get("status", 500),
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# -- OpenAPI ------------------------------------------------------------------------------------------
ERRORS = {
    "400": "The body is not valid JSON or breaks the request schema; `field` names the culprit.",
    "401": "Missing or wrong bearer token (only when the service runs with WINBACK_API_TOKEN).",
    "404": "A customer sent without features is not in the feature snapshot or online store (or none is loaded).",
    "415": "The body is not sent as application/json.",
    "503": "With an online store: it cannot be reached and a customer asked by id is not in this worker's last state.",
    "422": "Well-formed, but impossible for the model: a feature it needs is missing, text where it "
           "needs a number, or a value below the feature's minimum (e.g. a negative recency).",
}


EVENTS_ERRORS = {
    "400": ERRORS["400"],
    "401": ERRORS["401"],
    "409": "The service runs without an online store (start it with --online-store / WINBACK_ONLINE_STORE).",
    "415": ERRORS["415"],
    "422": "Well-formed, but a row breaks the transactions or events contract (e.g. transactions[3].amount); "
           "nothing of the batch is applied.",
    "503": "The online store cannot be reached; nothing of the batch is applied: send it again.",
}


def features_schema(encoders: Sequence[FeatureEncoder]) -> dict:
    """JSON schema of `features` for models with these encoders: every feature they need, typed."""
    properties: dict[str, dict] = {}
    for encoder in encoders:
        for name in encoder.features_:
            if name in properties:
                continue
            if name in encoder.categories_:
                properties[name] = {**FEATURE_VALUE_SCHEMA, "description": "category (an unseen one counts as missing)"}
                continue
            number = {"type": "number"}
            if name in encoder.minimums_:
                number["minimum"] = encoder.minimums_[name]
            properties[name] = {"anyOf": [number, {"type": "boolean"}, {"type": "null"}]}
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": FEATURE_VALUE_SCHEMA,
            "description": "feature name → value (null = missing); other keys are ignored"}


def complete_openapi(document: dict, endpoints: dict[str, Sequence[FeatureEncoder]], bearer: bool) -> dict:
    """BentoML's document, completed: per-endpoint feature schemas, every error status, bearer auth."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    customer = schemas.get("Customer", {})
    for route, encoders in endpoints.items():
        name = route.strip("/").capitalize()
        schemas[f"{name}Features"] = features_schema(encoders)
        schemas[f"{name}Customer"] = {
            **customer, "title": f"{name}Customer",
            "properties": {**customer.get("properties", {}), "features": {
                "anyOf": [{"$ref": f"#/components/schemas/{name}Features"}, {"type": "null"}],
                "description": "omit (or null) to look the customer up in the feature snapshot"}}}
        operation = document["paths"][route]["post"]
        operation["requestBody"]["required"] = True
        request = operation["requestBody"]["content"]["application/json"]["schema"]
        request["properties"]["customers"]["items"] = {"$ref": f"#/components/schemas/{name}Customer"}
        if request.get("title") in schemas:
            schemas[request["title"]] = request
        operation["responses"].update({status: {"description": text, "content": error}
                                       for status, text in ERRORS.items()})
    events = document["paths"].get("/events", {}).get("post")
    if events is not None:
        events["requestBody"]["required"] = True
        events["responses"].pop("404", None)  # BentoML's default set; /events never answers 404
        events["responses"].update({status: {"description": text, "content": error}
                                    for status, text in EVENTS_ERRORS.items()})
    info = document["paths"].get("/model-info", {}).get("get")
    if info is not None:
        info.setdefault("responses", {})["401"] = {"description": ERRORS["401"], "content": error}
    if bearer:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for route in [*endpoints, "/events", "/model-info"]:
            for operation in document["paths"].get(route, {}).values():
                operation["security"] = [{"bearer": []}]
    return document


# -- connections ----------------------------------------------------------------------------------
ACCEPT_DELAY_PER_CONNECTION = 0.0005  # seconds a worker waits per connection it already holds


def accept_one_connection_per_wakeup() -> None:
    """Spread keep-alive connections over the workers instead of letting one worker take them all.

    BentoML's workers share one listening socket, and asyncio accepts every pending connection (up to
    the backlog, 2,048) each time the socket is readable. A client opening 8 connections at once then
    lands all 8 on whichever worker woke first: that worker saturates one core while the other idles
    (measured: one worker at 100 % CPU, the other at 0 %, half the throughput). Here a worker accepts one
    connection per wakeup, and a worker that already holds k connections waits k × 0.5 ms before taking
    the next one, so the worker with fewer connections (usually) takes it: least-connections balancing
    without any shared state. Called once in each server worker, before it starts listening.
    """
    from asyncio import selector_events

    loop_class = selector_events.BaseSelectorEventLoop
    accept = loop_class._accept_connection
    if getattr(accept, "one_per_wakeup", False):
        return

    def accept_one(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100, *args):
        held = getattr(server, "_active_count", 0)
        if held == 0:
            return accept(self, protocol_factory, sock, sslcontext, server, 1, *args)
        self._remove_reader(sock.fileno())  # step back: another worker may take this connection first

        def take_one_and_listen_again():
            if server is not None and not server.is_serving():
                return
            accept(self, protocol_factory, sock, sslcontext, server, 1, *args)
            self._start_serving(protocol_factory, sock, sslcontext, server, backlog, *args)

        self.call_later(ACCEPT_DELAY_PER_CONNECTION * held, take_one_and_listen_again)

    accept_one.one_per_wakeup = True
    loop_class._accept_connection = accept_one


def cancel_request_timers() -> None:
    """Make BentoML's request timeout release each request when it ends, not `timeout` seconds later.

    BentoML 1.4's TimeoutMiddleware arms a `loop.call_later(timeout, ...)` per request and never
    cancels it, so every request's timer, future and context (its tracing span included) stay alive for
    the whole timeout, 60 s here. Measured at 1,200 requests/s: worker memory grew by a third over a
    minute and the garbage collector walked 20 extra objects per request, stalling requests for a
    third of a second. This replaces the middleware's call with one of the same meaning — a 504 when no
    answer has started within the timeout — whose timer is cancelled when the request ends.
    """
    import asyncio

    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    if getattr(TimeoutMiddleware.__call__, "cancels_its_timer", False):
        return

    async def call(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        answered, expired = [], []

        async def send_marking(message):
            answered.append(True)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, send_marking))

        def expire():
            if not answered and not task.done():
                expired.append(True)
                task.cancel()

        timer = asyncio.get_running_loop().call_later(self.timeout, expire)
        try:
            await task
        except asyncio.CancelledError:
            if not expired:
                raise
            body = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                status_code=504)
            await body(scope, receive, send)
        finally:
            timer.cancel()

    call.cancels_its_timer = True
    TimeoutMiddleware.__call__ = call
