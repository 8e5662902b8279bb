"""The webhook receiver: verify, deduplicate, queue, answer. docs/contract.md §4 is its contract.

It never calls Stripe and never touches Postgres: one Redis script call per accepted event
(`Coordinator.accept`) records the event id, the customer's pending work and, when needed, the
arq job, atomically. A 200 is sent only once that call has returned; if Redis is down or slower
than `ENQUEUE_TIMEOUT_S` the answer is 503 and Stripe retries later.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.exceptions
import structlog
from aiohttp import web
from redis.asyncio import Redis

from ingest import metrics
from ingest.verify import RejectedError, verify
from shared import tracing
from shared.bootstrap import bootstrap
from shared.coordination import (
    AcceptedEvent,
    BadEventError,
    Coordinator,
    Keys,
    Route,
    created_of,
    event_hints,
    is_stripe_id,
    route,
)
from shared.serving import harden, json_errors
from shared.serving import metrics_view as serve_metrics
from shared.settings import Settings

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 1024 * 1024
ENQUEUE_TIMEOUT_S = 2.0
# A body not read in full by then is a slow sender holding a connection (Stripe sends at once).
BODY_TIMEOUT_S = 10.0
# Event types as Stripe spells them: `invoice.paid`, `v1.customer.subscription.updated`,
# `v2.core.account[requirements].updated`.
_EVENT_TYPE = re.compile(r"[a-z0-9_][a-z0-9_.\[\]]*")
MAX_TYPE_LENGTH = 255
# A hint copied into the queued record (`client_reference_id`): printable, bounded.
MAX_HINT_LENGTH = 255

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
COORDINATOR = web.AppKey("coordinator", Coordinator)


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return _answer(orjson.dumps(payload), status)


def _answer(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


# The common answers, encoded once.
_RECEIVED = orjson.dumps({"received": True})
_IGNORED = orjson.dumps({"received": True, "ignored": True})
_DUPLICATE = orjson.dumps({"received": True, "duplicate": True})


def _reject(reason: str, message: str, status: int = 400, **fields: str) -> web.Response:
    metrics.REJECTIONS.labels(reason).inc()
    log.info("ingest.rejected", reason=reason, status=status, detail=message, **fields)
    return _json({"error": {"reason": reason, "message": message}}, status)


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RejectedError("body_too_large", f"body is over {MAX_BODY_BYTES} bytes", 413)
    try:
        if request.content.is_eof():  # the body came with the head: nothing to wait for, no timer
            return await request.read()
        async with asyncio.timeout(BODY_TIMEOUT_S):
            return await request.read()
    except TimeoutError:
        raise RejectedError("body_timeout", f"the body was not sent within {BODY_TIMEOUT_S:g}s", 408) from None
    except web.HTTPRequestEntityTooLarge:
        raise RejectedError("body_too_large", f"body is over {MAX_BODY_BYTES} bytes", 413) from None
    except web.RequestPayloadError:
        # e.g. a Content-Encoding the bytes do not decode with (Stripe never compresses)
        raise RejectedError("unreadable_body", "the body could not be read as sent (bad encoding)") from None


def _parse_event(body: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RejectedError("invalid_json", "body is not JSON") from None
    if not isinstance(event, dict):
        raise RejectedError("not_an_event", "body is not a Stripe event object")
    if event.get("object") not in ("event", "v2.core.event"):
        raise RejectedError("not_an_event", 'body is not a Stripe event (object must be "event" or "v2.core.event")')
    event_id, event_type = event.get("id"), event.get("type")
    # Both are copied into the queued record and the ledger: Stripe's shapes only (docs/contract.md §4).
    if not is_stripe_id(event_id, prefix="evt_"):
        raise RejectedError("not_an_event", "event id is not a Stripe event id (evt_...)")
    if not isinstance(event_type, str) or len(event_type) > MAX_TYPE_LENGTH or not _EVENT_TYPE.fullmatch(event_type):
        raise RejectedError("not_an_event", "event has no valid type")
    if not isinstance(event.get("livemode"), bool):
        raise RejectedError("not_an_event", "event has no livemode flag")
    return event


def _hints(event: dict[str, Any]) -> dict[str, str]:
    """`event_hints`, each a printable string of bounded length (it is queued and stored)."""
    hints = event_hints(event)
    for name, value in hints.items():
        if len(value) > MAX_HINT_LENGTH or not value.isprintable():
            raise RejectedError("not_an_event", f"{name} is not a printable string of at most {MAX_HINT_LENGTH}")
    return hints


def _checked(request: web.Request, body: bytes, settings: Settings) -> tuple[dict[str, Any], Route, int]:
    """The verified event, its route and its creation time; RejectedError otherwise."""
    verify(body, request.headers.get("Stripe-Signature"), settings.stripe_webhook_secret, time.time())
    event = _parse_event(body)
    if settings.livemode is not None and event["livemode"] != settings.livemode:
        mode = "live" if settings.livemode else "test"
        raise RejectedError("wrong_mode", f"event livemode={event['livemode']} but the configured key is a {mode} key")
    try:
        return event, route(event), created_of(event)
    except BadEventError as exc:
        raise RejectedError("not_an_event", str(exc)) from None


async def webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        event, work, created = _checked(request, await _read_body(request), settings)
        hints = _hints(event)
    except RejectedError as exc:
        return _reject(exc.reason, exc.message, exc.status)

    event_id, event_type = event["id"], event["type"]
    # The ids go into each line by hand, not bound as contextvars: binding and resetting cost a
    # few percent of the receiver's CPU per event, for lines that are debug (docs/benchmarks.md).
    if work.unit is None:
        metrics.received(event_type, "ignored").inc()
        log.debug("ingest.ignored", event_id=event_id, event_type=event_type)
        return _answer(_IGNORED)
    record = tracing.stamp(AcceptedEvent.now(event_id, event_type, "webhook", created, **hints))
    # A thin event may share its id with the snapshot event the Events API poller later
    # feeds for it; keep their dedupe keys apart so the snapshot is not taken for a repeat.
    dedupe_id = event_id if event["object"] == "event" else f"thin:{event_id}"
    started = time.perf_counter()
    try:
        # The coordinator bounds the call by ENQUEUE_TIMEOUT_S (create_app: accept_timeout_s).
        with tracing.span("unit.accepted", unit=work.unit.wire):
            outcome = await request.app[COORDINATOR].accept(
                work.unit, event=record, dedupe_id=dedupe_id, reason=event_type, catalog_item=work.catalog_item
            )
    except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
        # Never 200 for an event that is not queued: Stripe will deliver it again.
        return _reject("queue_unavailable", f"could not queue the event ({type(exc).__name__}); retry later", 503,
                       event_id=event_id, event_type=event_type)
    metrics.ENQUEUE_SECONDS.observe(time.perf_counter() - started)
    if outcome == "duplicate":
        metrics.received(event_type, "duplicate").inc()
        log.debug("ingest.duplicate", event_id=event_id, event_type=event_type)
        return _answer(_DUPLICATE)
    metrics.received(event_type, "queued").inc()
    # debug, not info: the worker records every event in the ledger (`entitled show`)
    log.debug("ingest.queued", event_id=event_id, event_type=event_type, unit=work.unit.wire,
              item=work.catalog_item, outcome=outcome)
    return _answer(_RECEIVED)


async def healthz(_request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(1.0):
            await request.app[REDIS].ping()
    except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
        return _json({"status": "unavailable", "redis": type(exc).__name__}, 503)
    return _json({"status": "ready"})


async def metrics_view(request: web.Request) -> web.Response:
    return await serve_metrics(request, request.app[SETTINGS].metrics_token)


async def method_not_allowed(_request: web.Request) -> web.Response:
    return _reject("method_not_allowed", "use POST", 405)


def create_app(settings: Settings, *, keys: Keys | None = None) -> web.Application:
    """The receiver's aiohttp app; Redis is opened and closed with it (`cleanup_ctx`)."""
    # json_errors: aiohttp's 404s and anything unexpected answer JSON (a 500 is logged in full)
    app = harden(web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors]))
    app[SETTINGS] = settings

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        # ingest never touches Postgres or Stripe: Redis and the coordinator only.
        async with bootstrap(settings, keys=keys, redis_timeout_s=ENQUEUE_TIMEOUT_S,
                             accept_timeout_s=ENQUEUE_TIMEOUT_S) as services:
            app[REDIS] = services.redis
            app[COORDINATOR] = services.coordinator
            if settings.livemode is None:
                log.warning("ingest.mode_unchecked", hint="set STRIPE_API_KEY to reject events of the other mode")
            log.info("ingest.started", port=settings.port, secrets=len(settings.stripe_webhook_secret))
            yield

    app.cleanup_ctx.append(services_ctx)
    app.router.add_post("/webhooks/stripe", tracing.webhook_handler(webhook))
    app.router.add_route("*", "/webhooks/stripe", method_not_allowed)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app
