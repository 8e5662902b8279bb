"""`POST /v1/sync`: run a customer's sync now and answer with its fresh access (docs/contract.md §10).

The success page of an app's Checkout calls it with the session id while the webhooks are still
on their way (scenario 12). The API never calls Stripe: it takes the unit through the same
coordination scripts as ingest (`Coordinator.accept`, without a coalescing delay, and
`expedite` to make an already queued job due now), so the run is still one at a time per
customer, and a worker does the reading. The API waits for the run's end by subscription
(`RunWaiter`), up to `SYNC_WAIT_S`, then answers `GET /v1/access`'s body, or 202.

A Checkout Session id is a unit of its own that a worker resolves to its customer (docs/contract.md §5.1:
a session without a Customer is the customer, `customer_id` = the session id); once that run
names the customer, the customer's own run is awaited the same way. Webhooks arriving after
find nothing changed, so they publish nothing more.
"""

from __future__ import annotations

import asyncio
import math
import re

import orjson
import redis.exceptions
import structlog
from aiohttp import web

from api import access, metrics
from api.check_cache import Change
from api.context import CHECK_CACHE, DB_TIMEOUT_S, services
from api.errors import ApiError, json_response
from shared.bootstrap import Services
from shared.coordination import RunDone, Unit, UnitKind

log = structlog.get_logger(__name__)

SYNC_WAIT_S = 10.0
THROTTLE_MS = 5000
REDIS_TIMEOUT_S = 2.0
REASON = "api.sync"
# Stripe ids: a prefix, then letters, digits and underscores. `sub_` and our own `__` units are
# not for callers; a guest purchase's customer id is its session id (`cs_`).
CUSTOMER_ID = re.compile(r"^(cus|cs)_[A-Za-z0-9_]{1,250}$")
SESSION_ID = re.compile(r"^cs_[A-Za-z0-9_]{1,250}$")
REDIS_DOWN = (redis.exceptions.RedisError, OSError, TimeoutError)


class NotFinishedError(Exception):
    """The run did not end before the deadline."""


async def _subject(request: web.Request) -> tuple[str, str]:
    """("checkout_session_id" | "customer_id", the id) from the JSON body."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    given = [k for k in ("checkout_session_id", "customer_id") if k in body]
    if len(given) != 1:
        raise ApiError(400, "invalid_parameter", "give exactly one of checkout_session_id and customer_id")
    field = given[0]
    value = body[field]
    pattern = SESSION_ID if field == "checkout_session_id" else CUSTOMER_ID
    if not isinstance(value, str) or not pattern.match(value):
        expected = "cs_..." if field == "checkout_session_id" else "cus_... (or a guest purchase's cs_...)"
        raise ApiError(400, "invalid_parameter", f"{field} must be a Stripe id like {expected}")
    return field, value


async def _throttle(deps: Services, subject: str) -> None:
    """At most one call per customer (or session id) per 5 s; Redis down is 503."""
    key = deps.keys.api_sync_throttle(subject)
    async with asyncio.timeout(REDIS_TIMEOUT_S):
        if await deps.redis.set(key, "1", nx=True, px=THROTTLE_MS):
            return
        left_ms = await deps.redis.pttl(key)
    metrics.SYNCS.labels("throttled").inc()
    retry = max(1, math.ceil(max(left_ms, 0) / 1000))
    raise ApiError(429, "too_many_syncs", f"one sync per {subject} per {THROTTLE_MS // 1000} s",
                   {"Retry-After": str(retry)})


async def run_now(deps: Services, unit: Unit, deadline: float) -> RunDone:
    """Queue the unit with no delay and wait until a run that covers this request ends well."""
    loop = asyncio.get_running_loop()
    coordinator = deps.coordinator
    with deps.waiter.watch(unit.wire) as ended:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            await coordinator.accept(unit, reason=REASON, delay_ms=0)
            # Read after accepting: at least this request's own seq (later work only raises it,
            # which at worst waits for one run more).
            target = await coordinator.seq(unit)
            await coordinator.expedite(unit)
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    done = await ended.get()
            except TimeoutError:
                raise NotFinishedError(unit.wire) from None
            if done.seq >= target and done.ok:
                return done
            if done.seq < target:
                # A run that started before this request ended; `finish` queued the next one
                # with the coalescing delay: nobody should wait for that delay.
                async with asyncio.timeout(REDIS_TIMEOUT_S):
                    await coordinator.expedite(unit)
            # A failed run covering us is retried with backoff by `finish`; keep waiting.


async def _settle(deps: Services, unit: Unit, deadline: float) -> str | None:
    """The customer whose access is fresh now, or None when Stripe knows none."""
    done = await run_now(deps, unit, deadline)
    customer = done.customer_id
    if customer is None or (unit.kind is UnitKind.CUSTOMER and customer == unit.id):
        return customer
    # A session that resolved to a real customer: now that customer's run.
    await run_now(deps, Unit.customer(customer), deadline)
    return customer


async def post_sync(request: web.Request) -> web.Response:
    field, subject = await _subject(request)
    unit = Unit(UnitKind.CHECKOUT, subject) if field == "checkout_session_id" else Unit.customer(subject)
    deps = services(request)
    try:
        await _throttle(deps, subject)
        if not deps.waiter.listening.is_set():
            raise redis.exceptions.ConnectionError("not subscribed to run announcements")
        deadline = asyncio.get_running_loop().time() + SYNC_WAIT_S
        customer = await _settle(deps, unit, deadline)
    except NotFinishedError:
        metrics.SYNCS.labels("queued").inc()
        log.info("api.sync_queued", subject=subject)
        return json_response({"queued": True}, 202)
    except REDIS_DOWN as exc:
        metrics.SYNCS.labels("unavailable").inc()
        log.warning("api.sync_unavailable", error=type(exc).__name__)
        raise ApiError(503, "queue_unavailable", "Redis cannot be reached; retry later", {"Retry-After": "1"}) from None
    found = None
    if customer is not None:
        found = await access.access(deps.pool, user_id=None, customer_id=customer, timeout_s=DB_TIMEOUT_S)
        # The run's commit is read now; its notification may still be on its way to the check
        # cache: the caller's next check must not see what was before (docs/contract.md §10).
        user_ids = frozenset({found["user_id"]} if found is not None and found["user_id"] else set())
        request.app[CHECK_CACHE].apply(Change(customer_id=customer, user_ids=user_ids))
    if found is None:
        metrics.SYNCS.labels("unknown").inc()
        raise ApiError(404, "not_found", f"Stripe knows no customer for {subject}")
    metrics.SYNCS.labels("done").inc()
    log.info("api.synced", subject=subject, customer_id=customer, features=found["features"])
    return json_response(found)
