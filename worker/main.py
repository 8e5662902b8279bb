"""The arq worker process (the Procfile's `worker:` line): jobs, cron, timers and the relay.

Scale by running more of these, on any hosts: coordination lives in Redis and Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
from datetime import datetime
from typing import Any

import orjson
import structlog
from aiohttp import web
from arq import cron
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import Worker, func
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import db
from shared.bootstrap import Services, bootstrap
from shared.coordination import EVENTS_POLL, SYNC_FUNCTION, Keys, in_progress_timeout_s
from shared.publishing import Deliverer, DeliveryPolicy, Relay
from shared.serving import Runner, harden, json_errors, metrics_view
from shared.settings import Settings, SettingsError
from worker import keycheck, reconcile, timers, wake
from worker.sync import run_unit

log = structlog.get_logger(__name__)

# arq kills a job after this; the unit's lease (SYNC_LEASE, shorter, renewed while alive) is
# what actually guards a customer, see shared/coordination/coordinator.py.
JOB_TIMEOUT_S = 120
SWEEP_TIMEOUT_S = 6 * 3600
# arq's poll loop does not catch Redis errors: without retries, one Redis restart ends every
# worker process at once. Its connection retries each command instead, for about a minute
# (backoff 0.05 s doubling to 2 s), which outlasts a restart or a fail-over.
ARQ_REDIS_RETRIES = 35
# Between two polls of the queue, unless a job was made due for a waiting caller (worker/wake.py).
POLL_S = 0.1
# How long a starting worker waits for Postgres (a restart, a fail-over) before giving up.
STARTUP_DB_WAIT_S = 60.0


class _Worker(Worker):
    """arq's Worker, except that Redis going away while a cron job is queued does not end the
    process: arq queues crons in a WATCHed pipeline, which redis-py never retries, and calls it
    from its poll loop unguarded. That tick is skipped; the next schedule runs the job.

    And between polls it waits for `jobs_due` or `POLL_S` (arq's own delay is 0): a job made
    due for a waiting caller is picked at once (worker/wake.py)."""

    jobs_due: asyncio.Event

    async def _poll_iteration(self) -> None:
        # Cleared before the queue is read: a job made due during the read sets it again.
        self.jobs_due.clear()
        try:
            await super()._poll_iteration()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            # arq starts jobs in WATCHed pipelines too, which redis-py never retries: a Redis
            # restart then skips this poll, as it skips a cron tick, instead of ending the worker.
            log.warning("worker.poll_skipped", error=type(exc).__name__, hint="Redis was unreachable")
        await wake.until_due(self.jobs_due, POLL_S)

    async def run_cron(self, n: datetime, delay: float, num_windows: int = 2) -> None:
        try:
            await super().run_cron(n, delay, num_windows)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("worker.cron_not_queued", error=type(exc).__name__,
                        hint="Redis was unreachable; the next schedule runs it")


def arq_redis_settings(redis_url: str) -> RedisSettings:
    """arq's connection settings: the URL, plus retries that survive a Redis restart."""
    return dataclasses.replace(
        RedisSettings.from_dsn(redis_url),
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), ARQ_REDIS_RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionError, OSError],
    )


def cron_fields(interval_s: float, name: str) -> dict[str, Any]:
    """arq cron fields for "every `interval_s`", which must divide a minute, an hour or a day."""
    n = int(interval_s)
    if n != interval_s or n <= 0:
        raise SettingsError(f"{name}: must be a whole number of seconds")
    if n < 60 and 60 % n == 0:
        return {"second": set(range(0, 60, n))}
    if n % 60 == 0 and n < 3600 and 3600 % n == 0:
        return {"minute": set(range(0, 60, n // 60)), "second": 0}
    if n % 3600 == 0 and n <= 86400 and 86400 % n == 0:
        return {"hour": set(range(0, 24, n // 3600)), "minute": 0, "second": 0}
    raise SettingsError(f"{name}: {n}s does not divide a minute, an hour or a day evenly")


def cron_slot(ctx: dict[str, Any]) -> int:
    """The scheduled time (ms) of this cron run: the same in every worker. arq names unique
    cron jobs `<name>:<next_run ms>`; its score is not stable (enqueue time when late)."""
    return int(str(ctx["job_id"]).rsplit(":", 1)[1])


async def sync_unit(ctx: dict[str, Any], unit: str) -> str:
    return await run_unit(ctx["deps"], unit, ctx["job_id"])


async def _claimed(ctx: dict[str, Any], name: str, every_s: float) -> bool:
    """True in the one worker that runs this slot of cron job `name`."""
    slot = cron_slot(ctx)
    if not await ctx["deps"].coordinator.claim_cron(name, slot, every_s):
        return False
    log.info("cron.ran", cron=f"reconcile_{name}", slot=slot)
    return True


async def events_cron(ctx: dict[str, Any]) -> str:
    """Every RECONCILE_EVENTS_EVERY: poll the Events API (as a unit: one poll at a time)."""
    deps: Services = ctx["deps"]
    if not await _claimed(ctx, "events", deps.settings.reconcile_events_every.s):
        return "claimed by another worker"
    await deps.coordinator.accept(EVENTS_POLL, reason="reconcile", delay_ms=0)
    return "queued"


async def catalog_cron(ctx: dict[str, Any]) -> str:
    """Every RECONCILE_CATALOG_EVERY: the catalog poll (as the catalog unit: one at a time)."""
    deps: Services = ctx["deps"]
    if not await _claimed(ctx, "catalog", deps.settings.reconcile_catalog_every.s):
        return "claimed by another worker"
    await deps.coordinator.accept_catalog("*", reason="catalog_poll")
    return "queued"


async def sweep_cron(ctx: dict[str, Any]) -> str:
    """Every RECONCILE_SWEEP_EVERY: the full sweep."""
    deps: Services = ctx["deps"]
    if not await _claimed(ctx, "sweep", deps.settings.reconcile_sweep_every.s):
        return "claimed by another worker"
    return f"sweep: {await reconcile.sweep(deps)}"


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    stack = contextlib.AsyncExitStack()
    deps = await stack.enter_async_context(bootstrap(
        settings, postgres=True, stripe_client=True, keys=ctx["keys"],
        pool_size=max(4, settings.worker_concurrency), postgres_wait_s=STARTUP_DB_WAIT_S,
    ))
    ctx["exit_stack"] = stack
    async with deps.pool.acquire() as conn:
        await db.migrate(conn)
    try:
        await keycheck.check(deps)
    except Exception:
        await stack.aclose()
        raise
    relay = Relay(settings.database_url, deps.redis, deps.keys, maxlen=settings.stream_maxlen, wake=deps.outbox_ready)
    deps.background = [
        asyncio.create_task(relay.run_forever(), name="relay"),
        asyncio.create_task(timers.run_forever(deps), name="timers"),
        asyncio.create_task(wake.follow(deps.redis, deps.keys.jobs_due, ctx["jobs_due"]), name="wake"),
        # Outbound webhooks: its own connections and lanes, so no endpoint slows the rest.
        asyncio.create_task(Deliverer(settings.database_url, policy=DeliveryPolicy.from_settings(settings)).run_forever(),
                            name="webhooks"),
    ]
    ctx["deps"] = deps
    if settings.worker_metrics_port is not None:
        runner = await _serve_metrics(settings)
        stack.push_async_callback(runner.cleanup)
    log.info("worker.started", metrics_port=settings.worker_metrics_port, name=ctx["worker_name"],
             concurrency=settings.worker_concurrency, rate_limit=settings.stripe_rate_limit,
             api_base=settings.stripe_api_base)


async def _serve_metrics(settings: Settings) -> web.AppRunner:
    """GET /metrics on METRICS_HOST:WORKER_METRICS_PORT, behind METRICS_TOKEN when it is set (as
    ingest's), served like ingest (no banner, JSON errors, a deadline for request heads); and
    GET /healthz, without a token, for the image's HEALTHCHECK (deploy/healthcheck.py)."""
    async def view(request: web.Request) -> web.Response:
        return await metrics_view(request, settings.metrics_token)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = harden(web.Application(middlewares=[json_errors]))
    app.router.add_get("/metrics", view)
    app.router.add_get("/healthz", healthz)
    runner = Runner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    assert settings.worker_metrics_port is not None
    await web.TCPSite(runner, settings.metrics_host, settings.worker_metrics_port).start()
    return runner


async def shutdown(ctx: dict[str, Any]) -> None:
    deps: Services | None = ctx.get("deps")
    if deps is None:
        return
    for task in deps.background:
        task.cancel()
    for task in deps.background:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await ctx["exit_stack"].aclose()
    log.info("worker.stopped", name=ctx["worker_name"])


def build_worker(settings: Settings, *, keys: Keys | None = None, burst: bool = False) -> Worker:
    keys = keys or Keys(prefix=settings.redis_prefix)
    name = f"{socket.gethostname()}-{os.getpid()}"
    jobs_due = asyncio.Event()
    crons: list[CronJob] = [
        cron(events_cron, name="reconcile_events", unique=True, keep_result=0, timeout=60,
             **cron_fields(settings.reconcile_events_every.s, "RECONCILE_EVENTS_EVERY")),
        cron(catalog_cron, name="reconcile_catalog", unique=True, keep_result=0, timeout=60,
             **cron_fields(settings.reconcile_catalog_every.s, "RECONCILE_CATALOG_EVERY")),
        cron(sweep_cron, name="reconcile_sweep", unique=True, keep_result=0, timeout=SWEEP_TIMEOUT_S,
             **cron_fields(settings.reconcile_sweep_every.s, "RECONCILE_SWEEP_EVERY")),
    ]
    worker = _Worker(
        functions=[func(sync_unit, name=SYNC_FUNCTION, keep_result=0, timeout=JOB_TIMEOUT_S, max_tries=1000)],
        cron_jobs=crons,
        redis_settings=arq_redis_settings(settings.redis_url),
        queue_name=keys.queue,
        keep_result=0,
        max_jobs=settings.worker_concurrency,
        job_timeout=JOB_TIMEOUT_S,
        poll_delay=0,  # `_Worker._poll_iteration` waits instead
        max_tries=1000,
        burst=burst,
        on_startup=startup,
        on_shutdown=shutdown,
        # one health-check key per process, or all workers would share one
        health_check_key=keys.health(name),
        health_check_interval=30,
        job_serializer=orjson.dumps,
        job_deserializer=orjson.loads,
        ctx={"settings": settings, "keys": keys, "worker_name": name, "jobs_due": jobs_due},
        job_completion_wait=10,
    )
    # arq would keep a picked job in progress for the longest timeout of all (the sweep's): see
    # in_progress_timeout_s for why that stops a deployment whose worker died.
    worker.in_progress_timeout_s = in_progress_timeout_s(settings.sync_lease.s)
    worker.jobs_due = jobs_due
    return worker
