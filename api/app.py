"""The app-facing API's aiohttp app (docs/contract.md §10): `create_app(settings)`.

How it is put together
----------------------
- `bootstrap()` (shared/bootstrap.py) builds every dependency once, in `cleanup_ctx`: the
  Postgres pool, Redis and the coordinator (without a coalescing delay: a caller waits). The
  app holds them under `SERVICES`; the settings under `SETTINGS`; the parsed `API_TOKENS` under
  `TOKENS`.
- One middleware (`_middleware`) does, for every request: the bearer check for every path
  under `/v1/` (401 JSON otherwise), JSON errors for everything that goes wrong (`ApiError`,
  aiohttp's 404/405, Postgres unreachable → 503, anything else a 500 logged with its
  traceback: `shared/serving.py`, shared with ingest), one `api.request` log line with the
  route, the status and the token's *name*, and the metrics of `api/metrics.py`. No response
  carries a `Server:` banner (`harden`), and `python -m api` serves with `shared.serving`'s
  runner (JSON answers to HTTP parser errors, a deadline for request heads).
- `GET /v1/check` answers from an in-process cache (`api/check_cache.py`) while its LISTEN
  connection to Postgres is up (`api/check_feed.py`, started in `cleanup_ctx`), and reads
  Postgres otherwise; `API_CHECK_CACHE_TTL=0` turns the cache off.
- Routes: `/healthz`, `/readyz`, `/metrics` (here), `/v1/access`, `/v1/check` (`api/access.py`),
  `/v1/sync` (`api/sync.py`), `/v1/customers/{id}/timeline` (`api/timeline.py`).

Mounting more routes (the operator console)
-------------------------------------------
`create_app` calls `setup(app)` of the module named by `CONSOLE_MODULE` (`api.console.routes`)
when that module can be imported, after the API's own routes are added and before the app
starts (api/console/). `setup` adds its routes under `/console` with `app.router.add_*`; at request time a
handler finds the dependencies in `request.app[SERVICES]` (a `shared.bootstrap.Services`) and
checks a secret with `request.app[TOKENS].match(secret)` (the token's name, or None). The bearer
middleware guards only `/v1/`: `/console` does its own sign-in (a session cookie), and still
gets the middleware's logs, metrics and JSON errors. Other processes or tests may pass more
set-up functions: `create_app(settings, mounts=[my_setup])`.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import redis.exceptions
import structlog
from aiohttp import web

from api import access, check_cache, metrics, sync, timeline
from api.auth import Tokens
from api.check_cache import CheckCache
from api.check_feed import CheckFeed
from api.context import (
    CACHE_HIT,
    CHECK_CACHE,
    CHECK_FEED,
    DB_TIMEOUT_S,
    SERVICES,
    SETTINGS,
    TOKEN_NAME,
    TOKENS,
    services,
)
from api.errors import ApiError, error_response, json_response
from shared import db
from shared.bootstrap import bootstrap
from shared.coordination import Keys
from shared.serving import harden, http_error, internal_error
from shared.serving import metrics_view as serve_metrics
from shared.settings import Settings

log = structlog.get_logger(__name__)


CONSOLE_MODULE = "api.console.routes"
PROTECTED_PREFIX = "/v1/"
MAX_BODY_BYTES = 64 * 1024
REDIS_TIMEOUT_S = 2.0
POOL_SIZE = 10
# How long a starting API waits for Postgres (a restart) before giving up.
STARTUP_DB_WAIT_S = 60.0
# Answers the check cache holds at most (least recently used out first): ~0.5 KiB each.
CHECK_CACHE_ENTRIES = 100_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Mount = Callable[[web.Application], None]

# Postgres cannot be reached or is going away: the client should retry (503), not a bug (500).
DB_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,
)


def _route_name(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.http_exception is None else None
    return resource.canonical if resource is not None else "unmatched"


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(PROTECTED_PREFIX):
        name = request.app[TOKENS].from_header(request.headers.get("Authorization"))
        if name is None:
            return error_response(401, "unauthorized", "send Authorization: Bearer <a secret of API_TOKENS>",
                                  {"WWW-Authenticate": 'Bearer realm="entitled"'})
        request[TOKEN_NAME] = name
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.reason, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error(exc)
    except DB_UNAVAILABLE as exc:
        log.warning("api.database_unavailable", error=type(exc).__name__)
        return error_response(503, "database_unavailable", "Postgres cannot be reached; retry later",
                              {"Retry-After": "1"})


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = _route_name(request)
    status = 500
    try:
        response = await _answer(request, handler)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects and the like, raised on purpose
        status = exc.status
        raise
    except Exception as exc:
        return internal_error(exc, route=route)  # a JSON 500, logged with its traceback
    finally:
        elapsed = time.perf_counter() - started
        token = request.get(TOKEN_NAME, "-")
        metrics.REQUESTS.labels(route, str(status), token).inc()
        metrics.REQUEST_SECONDS.labels(route).observe(elapsed)
        emit = log.debug if request.get(CACHE_HIT, False) else log.info
        emit("api.request", method=request.method, route=route, status=status, token=token,
             ms=round(elapsed * 1000, 2))


async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when Postgres answers (every read needs it); Redis is reported, and only
    `POST /v1/sync` needs it, so its loss makes the API degraded, not unready."""
    deps = services(request)
    body: dict[str, Any] = {"postgres": "ok", "redis": "ok"}
    try:
        async with asyncio.timeout(1.0):
            await deps.pool.fetchval("SELECT 1")
    except (*DB_UNAVAILABLE, asyncpg.PostgresError) as exc:
        body["postgres"] = type(exc).__name__
    try:
        async with asyncio.timeout(1.0):
            await deps.redis.ping()
    except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
        body["redis"] = type(exc).__name__
    ok = body["postgres"] == "ok"
    body["status"] = ("ready" if body["redis"] == "ok" else "degraded") if ok else "unavailable"
    return json_response(body, 200 if ok else 503)


async def metrics_view(request: web.Request) -> web.Response:
    return await serve_metrics(request, request.app[SETTINGS].metrics_token)


def _subject(request: web.Request) -> tuple[str | None, str | None]:
    user_id = access.valid_id(request.query.get("user_id"), "user_id", required=False)
    customer_id = access.valid_id(request.query.get("customer_id"), "customer_id", required=False)
    if (user_id is None) == (customer_id is None):
        raise ApiError(400, "invalid_parameter", "give exactly one of user_id and customer_id")
    return user_id, customer_id


async def get_access(request: web.Request) -> web.Response:
    user_id, customer_id = _subject(request)
    found = await access.access(services(request).pool, user_id=user_id, customer_id=customer_id,
                                timeout_s=DB_TIMEOUT_S)
    if found is None:
        raise ApiError(404, "not_found", "no such user" if user_id else "no such customer")
    return json_response(found)


def _json_body(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def get_check(request: web.Request) -> web.Response:
    """From the check cache while its LISTEN is up (api/check_cache.py), else from Postgres."""
    user_id, customer_id = _subject(request)
    feature = access.valid_id(request.query.get("feature"), "feature")
    assert feature is not None
    cache = request.app[CHECK_CACHE]
    k = check_cache.key(user_id, customer_id, feature)
    feed = request.app[CHECK_FEED]
    if cache.usable and feed is not None and feed.caught_up():
        cached = cache.get(k, time.monotonic())
        if cached is not None:
            metrics.CHECK_CACHE_HIT.inc()
            request[CACHE_HIT] = True
            return _json_body(cached)
        metrics.CHECK_CACHE_MISS.inc()
    else:
        metrics.CHECK_CACHE_BYPASS.inc()
    generation = cache.generation  # before reading: a change heard meanwhile refuses the fill
    answer = await access.check(services(request).pool, user_id=user_id, customer_id=customer_id,
                                feature=feature, timeout_s=DB_TIMEOUT_S)
    body = orjson.dumps(answer.body)
    ends_in_s = None if answer.first_end is None else (answer.first_end - datetime.now(UTC)).total_seconds()
    cache.put(k, body, customers=answer.customers,
              life_s=check_cache.entry_life_s(request.app[SETTINGS].api_check_cache_ttl.s, ends_in_s,
                                             spread=random.random()),
              now=time.monotonic(), generation=generation)
    return _json_body(body)


def _optional_mounts() -> list[Mount]:
    try:
        module = importlib.import_module(CONSOLE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name is not None and CONSOLE_MODULE.startswith(exc.name):
            return []  # no console in this build
        raise
    setup: Mount = module.setup
    return [setup]


def create_app(settings: Settings, *, keys: Keys | None = None, mounts: Iterable[Mount] | None = None,
               with_console: bool = True) -> web.Application:
    """The API's app; its dependencies are opened and closed with it (`cleanup_ctx`)."""
    app = harden(web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_middleware]))
    app[SETTINGS] = settings
    app[TOKENS] = Tokens(settings.api_tokens)
    caching = settings.api_check_cache_ttl.s > 0
    app[CHECK_CACHE] = CheckCache(max_entries=CHECK_CACHE_ENTRIES if caching else 0)
    app[CHECK_FEED] = CheckFeed(app[CHECK_CACHE], settings.database_url) if caching else None

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        async with bootstrap(settings, postgres=True, keys=keys, coalesce=False, redis_timeout_s=REDIS_TIMEOUT_S,
                             pool_size=POOL_SIZE, postgres_wait_s=STARTUP_DB_WAIT_S, run_waiter=True,
                             light_reset=True) as deps:
            async with deps.pool.acquire() as conn:
                await db.migrate(conn)
            app[SERVICES] = deps
            feed = app[CHECK_FEED]
            if feed is not None:
                feed.start()
            log.info("api.started", port=settings.api_port, tokens=sorted(settings.api_tokens),
                     check_cache_ttl_s=settings.api_check_cache_ttl.s)
            try:
                yield
            finally:
                if feed is not None:
                    await feed.close()

    app.cleanup_ctx.append(services_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/v1/access", get_access)
    app.router.add_get("/v1/check", get_check)
    app.router.add_post("/v1/sync", sync.post_sync)
    app.router.add_get("/v1/customers/{customer_id}/timeline", timeline.get_timeline)
    for mount in [*(_optional_mounts() if with_console else []), *(mounts or [])]:
        mount(app)
    return app
