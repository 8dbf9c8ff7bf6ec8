"""Unit tests of the service's HTTP edge: field paths, error messages, request timers, connection spreading."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from pydantic import ValidationError

from serving.api.asgi import (accept_one_connection_per_wakeup, cancel_request_timers, describe_validation_error,
                          field_of, field_path)
from serving.api.schemas import RecommendRequest


def test_field_paths_read_like_the_request():
    assert field_path(("customers", 3, "features", "recency_days")) == "customers[3].features.recency_days"
    assert field_path(()) == "body"
    assert field_of("customers[1].customer_id: unknown customer 'x'") == "customers[1].customer_id"
    assert field_of("something went wrong") is None


def test_a_nan_or_an_object_for_a_feature_is_one_error_naming_the_field():
    with pytest.raises(ValidationError) as caught:
        RecommendRequest.model_validate_json('{"customers": [{"customer_id": "a", "features": {"x": {"v": 1}}}]}')
    assert describe_validation_error(caught.value) == (
        "customers[0].features.x", "customers[0].features.x: expected a number, a string, a boolean or null, got an object")
    with pytest.raises(ValidationError) as caught:
        RecommendRequest.model_validate_json('{"customers": [{"customer_id": "a", "features": {"x": NaN}}], "y": 1}')
    field, message = describe_validation_error(caught.value)
    assert message == "customers[0].features.x: expected a finite number or null (missing), got nan (and 1 more error)"


def _middleware(app, timeout):
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    cancel_request_timers()
    return TimeoutMiddleware(app, timeout=timeout)


async def _call(middleware):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await middleware({"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send)
    return sent


def test_request_timer_is_cancelled_when_the_request_ends():
    async def fast(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run():
        sent = await _call(_middleware(fast, timeout=60))
        loop = asyncio.get_running_loop()
        return sent, [h for h in loop._scheduled if not h.cancelled()]

    sent, pending = asyncio.run(run())
    assert sent[0]["status"] == 200
    assert pending == []  # BentoML's own middleware leaves a 60 s timer (and the request's context) behind


def test_request_that_does_not_answer_in_time_gets_a_504():
    async def slow(scope, receive, send):
        await asyncio.sleep(5)

    sent = asyncio.run(_call(_middleware(slow, timeout=0.05)))
    assert sent[0]["status"] == 504


@contextlib.contextmanager
def pending_connections(count: int):
    """A non-blocking listening socket with `count` clients waiting, an event loop, and the transports the
    loop makes (filled as it accepts); everything closed afterwards."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(count)]
    made = []

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(transport)

    loop = asyncio.new_event_loop()
    try:
        yield loop, listener, Protocol, made
    finally:
        for transport in made:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        for client in clients:
            client.close()
        listener.close()


def test_one_connection_is_accepted_per_wakeup():
    accept_one_connection_per_wakeup()
    with pending_connections(3) as (loop, listener, protocol, made):
        loop._accept_connection(protocol, listener, None, None, 100)  # what one readable event triggers
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(made) == 1  # asyncio alone takes all 3 (up to the backlog) in one go


def test_a_worker_holding_connections_waits_before_taking_another():
    from serving.api.asgi import ACCEPT_DELAY_PER_CONNECTION

    accept_one_connection_per_wakeup()

    class Busy:  # what asyncio's Server exposes: how many connections this worker holds
        _active_count = 4

        def is_serving(self):
            return True

        def _attach(self):
            self._active_count += 1

        def _detach(self):
            self._active_count -= 1

    with pending_connections(1) as (loop, listener, protocol, made):
        loop._accept_connection(protocol, listener, None, Busy(), 100)
        loop.run_until_complete(asyncio.sleep(0))
        assert made == []  # stepped back: a less busy worker gets the first chance
        loop.run_until_complete(asyncio.sleep(4 * ACCEPT_DELAY_PER_CONNECTION + 0.05))
        assert len(made) == 1  # nobody else took it: accepted after the wait
