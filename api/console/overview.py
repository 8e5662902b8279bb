"""The overview (docs/contract.md §11): queue depth, syncs per minute, Stripe rate-limit use, the
outbox and delivery backlogs, the reconciliation cursors and their age, the latest changes, and
a chart of syncs and webhooks per minute over the last hour.

`GET /console/overview` renders it whole (no JavaScript needed); `GET /console/overview/live`
is a server-sent event stream that sends the same figures every `REFRESH_S`, rendered by the
same partial templates, which static/live.js swaps in. One refresh is `QUERIES` Postgres
queries, each an index range or a small table (docs/benchmarks.md, "Console").
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp_jinja2
import asyncpg
import orjson
import redis.exceptions
from aiohttp import web
from aiohttp_sse import sse_response

from api.console.guard import ROOT, guarded, render
from api.context import DB_TIMEOUT_S, SETTINGS, services
from shared.bootstrap import Services

REFRESH_S = 2.0
# Postgres or Redis gone for a moment: the stream stays open and says so.
UNAVAILABLE: tuple[type[BaseException], ...] = (OSError, TimeoutError, asyncpg.PostgresError,
                                                 asyncpg.InterfaceError, redis.exceptions.RedisError)
CHART_MINUTES = 60
CHART_W = 600
CHART_H = 120

# Each with its index: sync_log_synced_at, event_ledger_received, outbox_unpublished,
# webhook_deliveries_due (partial), reconcile_state (a handful of rows), outbox's primary key.
QUERIES: dict[str, str] = {
    "syncs_per_minute": """
        SELECT date_trunc('minute', synced_at) AS minute, count(*) AS n FROM sync_log
        WHERE synced_at > now() - interval '60 minutes' GROUP BY 1""",
    "webhooks_per_minute": """
        SELECT date_trunc('minute', received_at) AS minute, count(*) AS n FROM event_ledger
        WHERE received_at > now() - interval '60 minutes' AND source = 'webhook' GROUP BY 1""",
    "backlog": """
        SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS outbox,
               (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS deliveries,
               (SELECT count(*) FROM webhook_deliveries WHERE status = 'failed') AS failed_deliveries,
               (SELECT count(*) FROM event_ledger WHERE outcome = 'failed') AS failed_events""",
    "cursors": "SELECT name, cursor, updated_at, now() - updated_at AS age FROM reconcile_state ORDER BY name",
    "latest": """
        SELECT customer_id, version, created_at, message FROM outbox ORDER BY id DESC LIMIT 10""",
}


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    syncs: list[Point]
    webhooks: list[Point]
    peak: int


def chart(syncs: dict[datetime, int], webhooks: dict[datetime, int], now: datetime) -> Chart:
    """Two lines, one point a minute for the last hour (pure)."""
    end = now.replace(second=0, microsecond=0)
    minutes = [end - timedelta(minutes=CHART_MINUTES - 1 - i) for i in range(CHART_MINUTES)]
    peak = max([1, *syncs.values(), *webhooks.values()])

    def line(counts: dict[datetime, int]) -> list[Point]:
        return [Point(round(i * CHART_W / (CHART_MINUTES - 1), 1),
                      round(CHART_H - counts.get(m, 0) * (CHART_H - 4) / peak, 1)) for i, m in enumerate(minutes)]

    return Chart(CHART_W, CHART_H, line(syncs), line(webhooks), peak)


def _change(row: asyncpg.Record) -> dict[str, Any]:
    message = orjson.loads(row["message"])
    return {"customer_id": row["customer_id"], "version": row["version"], "at": row["created_at"],
            "added": message.get("added") or [], "removed": message.get("removed") or [],
            "features": message.get("features") or []}


async def _rate_booked_s(deps: Services) -> float:
    """How far ahead the shared Stripe budget is booked (shared/stripe_api/gcra.lua), in s."""
    tat, now = await deps.redis.get(deps.keys.rate("all")), await deps.redis.time()
    if tat is None:
        return 0.0
    return max(0.0, (int(tat) - (int(now[0]) * 1_000_000 + int(now[1]))) / 1e6)


async def figures(deps: Services, rate_per_s: float) -> dict[str, Any]:
    """Everything the overview shows, read once."""
    pool = deps.pool
    async with pool.acquire(timeout=DB_TIMEOUT_S) as conn:
        syncs = {r["minute"]: r["n"] for r in await conn.fetch(QUERIES["syncs_per_minute"], timeout=DB_TIMEOUT_S)}
        hooks = {r["minute"]: r["n"] for r in await conn.fetch(QUERIES["webhooks_per_minute"], timeout=DB_TIMEOUT_S)}
        backlog = await conn.fetchrow(QUERIES["backlog"], timeout=DB_TIMEOUT_S)
        cursors = await conn.fetch(QUERIES["cursors"], timeout=DB_TIMEOUT_S)
        latest = await conn.fetch(QUERIES["latest"], timeout=DB_TIMEOUT_S)
        now: datetime = await conn.fetchval("SELECT now()", timeout=DB_TIMEOUT_S)
    async with asyncio.timeout(DB_TIMEOUT_S):
        queue = int(await deps.redis.zcard(deps.keys.queue))
        booked = await _rate_booked_s(deps)
    last_minute = now.replace(second=0, microsecond=0)
    return {
        "now": now.astimezone(UTC),
        "queue": queue,
        "syncs_last_minute": sum(n for m, n in syncs.items() if m >= last_minute - timedelta(minutes=1)),
        "rate_booked_s": round(booked, 2),
        "rate_queued": int(booked * rate_per_s),
        "rate_per_s": rate_per_s,
        "outbox": backlog["outbox"], "deliveries": backlog["deliveries"],
        "failed_deliveries": backlog["failed_deliveries"], "failed_events": backlog["failed_events"],
        "cursors": cursors,
        "latest": [_change(r) for r in latest],
        "chart": chart(syncs, hooks, now),
    }


STREAMS = web.AppKey("console_streams", set[asyncio.Task[Any]])


async def end_streams(app: web.Application) -> None:
    """On shutdown: a live overview never ends by itself, so it would hold the shutdown up."""
    streams: set[asyncio.Task[Any]] = app[STREAMS]
    for task in list(streams):
        task.cancel()


@guarded
async def overview_page(request: web.Request) -> web.StreamResponse:
    found = await figures(services(request), request.app[SETTINGS].stripe_rate_limit)
    return render(request, "overview.html", {"f": found})


@guarded
async def live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `overview` with the rendered parts, every REFRESH_S."""
    deps = services(request)
    rate = request.app[SETTINGS].stripe_rate_limit
    task = asyncio.current_task()
    if task is not None:
        request.app[STREAMS].add(task)
    try:
        async with sse_response(request) as stream:
            with contextlib.suppress(ConnectionResetError):
                while stream.is_connected():
                    try:
                        found = await figures(deps, rate)
                    except UNAVAILABLE as exc:
                        # the headers are sent: say so on the stream, and try again next time
                        await stream.send(type(exc).__name__, event="unavailable")
                    else:
                        parts = {name: aiohttp_jinja2.render_string(f"parts/{name}.html", request,
                                                                    {"f": found, "root": ROOT})
                                 for name in ("figures", "chart", "latest")}
                        await stream.send(orjson.dumps(parts).decode(), event="overview")
                    await asyncio.sleep(REFRESH_S)
        return stream
    finally:
        if task is not None:
            request.app[STREAMS].discard(task)
