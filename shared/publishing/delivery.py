"""Outbound webhooks: the delivery loop of every worker (docs/contract.md §10).

Where deliveries come from
--------------------------
A trigger on `outbox` (migration 0005) writes one `webhook_deliveries` row per message and
active endpoint in the transaction that commits the change, so nothing can be lost between the
change and its deliveries, whatever crashes. The sync's NOTIFY on `entitled_outbox` wakes this
loop at once; it polls every second besides.

The promises, and how each is kept
----------------------------------
- **Signed as Standard Webhooks says**: the body is the message's JSON text, `webhook-id` its
  `id`, `webhook-timestamp` the time of the attempt, `webhook-signature` by the `standardwebhooks`
  package with the endpoint's `whsec_` secret. A receiver dedupes by `webhook-id`.
- **In version order per customer and endpoint**: a row is claimed only when no row of a lower
  version for the same customer and endpoint is still pending (in flight counts as pending).
  A delivery given up on (`failed`) no longer holds the next back.
- **Retries**: any non-2xx answer (redirects too: they are never followed), a timeout or a
  connection error is retried with exponential backoff and jitter: the first retry after 5-10 s,
  doubling to at most an hour (`retry_delay_s`). The last attempt is at 3 days; a delivery that
  fails then is marked `failed` (`entitled deliveries --failed`, the metric
  `entitled_webhook_deliveries_failed`).
- **One slow or dead endpoint delays no other**: each endpoint has a lane of its own (a task,
  its own HTTP connection pool, at most `concurrency` requests in flight); lanes share only a
  small Postgres pool of the delivery loop's own, used for short queries, never held across a
  request. The relay, the stream and the view use other connections and never wait for it.
- **Several workers never deliver one row at once**: a lane claims rows with
  `FOR UPDATE SKIP LOCKED` and a lease (`leased_until`, longer than the request timeout). A
  worker that dies mid-request leaves its lease to expire; another worker then sends the
  delivery again (at least once).

Time: leases use Postgres' clock; the schedule (when a retry is due, when to give up) uses
`clock`, which a test may advance to play an endpoint down for an hour without waiting one (a
row is due when either clock has reached it: new rows are stamped by Postgres).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import structlog
from prometheus_client import Counter, Gauge, Histogram
from standardwebhooks.webhooks import Webhook

from shared import db, tracing
from shared.publishing.endpoints import Endpoint, active
from shared.publishing.history import prune as prune_history
from shared.publishing.outbox import OUTBOX_CHANNEL
from shared.settings import Settings

log = structlog.get_logger(__name__)

DELIVERIES = Counter(
    "entitled_webhook_deliveries_total",
    "Outbound webhook attempts, by endpoint and outcome.",
    ["endpoint", "outcome"],  # delivered | retrying | failed
)
DELIVERY_SECONDS = Histogram(
    "entitled_webhook_delivery_seconds",
    "Time of one outbound webhook attempt, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FAILED = Gauge("entitled_webhook_deliveries_failed",
               "Deliveries given up on after the retry period (kept 30 days), at the last count.")
PENDING = Gauge("entitled_webhook_deliveries_pending", "Deliveries owed, by endpoint, at the last count.",
                ["endpoint"])

Clock = Callable[[], datetime]
USER_AGENT = "entitled-webhooks/1"
# Read at most this much of an endpoint's answer: only its status matters.
MAX_ANSWER_BYTES = 64 * 1024
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
)


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_s: float = 10.0
    # requests in flight at once per endpoint, per worker process
    concurrency: int = 64
    retry_first_s: float = 10.0
    retry_cap_s: float = 3600.0
    give_up_after_s: float = 3 * 86400.0
    # how long a claim outlives the request's timeout before another worker may take the row
    lease_margin_s: float = 30.0
    idle_poll_s: float = 1.0
    endpoints_poll_s: float = 2.0
    housekeeping_every_s: float = 60.0
    pool_size: int = 4

    @property
    def lease_s(self) -> float:
        return self.timeout_s + self.lease_margin_s

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        """The WEBHOOK_* settings (README, "Configuration"); the rest keep their defaults."""
        return cls(timeout_s=settings.webhook_timeout.s, concurrency=settings.webhook_concurrency,
                   retry_first_s=settings.webhook_retry_first.s,
                   retry_cap_s=max(settings.webhook_retry_cap.s, settings.webhook_retry_first.s),
                   give_up_after_s=settings.webhook_give_up_after.s)


def retry_delay_s(failed_attempts: int, policy: DeliveryPolicy) -> float:
    """The wait after the n-th failed attempt: `retry_first_s` doubling, at most `retry_cap_s`,
    times a jitter of 50-100 % (so endpoints recovering together are not hit at once)."""
    base: float = min(policy.retry_first_s * 2.0 ** max(failed_attempts - 1, 0), policy.retry_cap_s)
    return base * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Claimed:
    id: int
    message_id: str
    customer_id: str
    version: int
    message: str
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class Result:
    id: int
    status: str  # delivered | pending (a retry is due at next_at) | failed
    next_at: datetime
    code: int | None
    error: str | None
    at: datetime


def judge(row: Claimed, code: int | None, error: str | None, now: datetime, policy: DeliveryPolicy) -> Result:
    """What one attempt's answer makes of the delivery (pure)."""
    if error is None and code is not None and 200 <= code < 300:
        return Result(row.id, "delivered", now, code, None, now)
    deadline = row.created_at + timedelta(seconds=policy.give_up_after_s)
    if now >= deadline:
        return Result(row.id, "failed", now, code, error or f"HTTP {code}", now)
    # The last try falls on the deadline itself: "retried for 3 days" means up to then.
    next_at = min(now + timedelta(seconds=retry_delay_s(row.attempts + 1, policy)), deadline)
    return Result(row.id, "pending", next_at, code, error or f"HTTP {code}", now)


_CLAIM = """
UPDATE webhook_deliveries d SET leased_until = now() + make_interval(secs => $3)
FROM (
    SELECT c.id FROM webhook_deliveries c
    WHERE c.endpoint_id = $1 AND c.status = 'pending' AND c.next_attempt_at <= greatest($2, now())
      AND (c.leased_until IS NULL OR c.leased_until < now())
      AND NOT (c.id = ANY($5::bigint[]))
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries e
          WHERE e.endpoint_id = c.endpoint_id AND e.customer_id = c.customer_id
            AND e.status = 'pending' AND e.version < c.version)
    ORDER BY c.id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
) picked
WHERE d.id = picked.id
RETURNING d.id, d.message_id, d.customer_id, d.version, d.message, d.attempts, d.created_at
"""

_SETTLE = """
UPDATE webhook_deliveries d SET
    status = r.status, attempts = d.attempts + 1, next_attempt_at = r.next_at, leased_until = NULL,
    last_attempt_at = r.at, last_status = r.code, last_error = r.error,
    delivered_at = CASE WHEN r.status = 'delivered' THEN r.at END
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::int[], $5::text[], $6::timestamptz[])
    AS r(id, status, next_at, code, error, at)
WHERE d.id = r.id AND d.status = 'pending'
"""


class _Lane:
    """One endpoint's deliveries in this process: claims, requests, and writes their outcomes."""

    def __init__(self, endpoint: Endpoint, pool: asyncpg.Pool, policy: DeliveryPolicy, clock: Clock) -> None:
        self.endpoint = endpoint
        self.pool = pool
        self.policy = policy
        self.clock = clock
        self.signer = Webhook(endpoint.secret)
        self.wake = asyncio.Event()
        self.inflight: dict[int, asyncio.Task[None]] = {}
        self.done: list[Result] = []
        self.log = log.bind(endpoint_id=endpoint.id)

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.policy.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_s)
        backoff = 0.2
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            try:
                while True:
                    try:
                        await self._step(session)
                        backoff = 0.2
                    except DB_ERRORS as exc:
                        self.log.warning("webhook.db_retrying", error=type(exc).__name__, in_s=backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
            finally:
                for task in self.inflight.values():
                    task.cancel()
                await asyncio.gather(*self.inflight.values(), return_exceptions=True)

    async def _step(self, session: aiohttp.ClientSession) -> None:
        self.wake.clear()
        if self.done:
            await self._settle()
        free = self.policy.concurrency - len(self.inflight)
        claimed = await self._claim(free) if free > 0 else []
        for row in claimed:
            task = asyncio.create_task(self._attempt(session, row), name=f"webhook-{row.id}")
            self.inflight[row.id] = task
        if len(claimed) < free or free <= 0:
            # Nothing more is due now: wait for a new message, a finished request or the poll.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.policy.idle_poll_s)

    async def _claim(self, limit: int) -> list[Claimed]:
        busy = [*self.inflight, *(r.id for r in self.done)]
        rows = await self.pool.fetch(_CLAIM, self.endpoint.id, self.clock(), self.policy.lease_s, limit, busy)
        return [Claimed(r["id"], r["message_id"], r["customer_id"], r["version"], r["message"], r["attempts"],
                        r["created_at"]) for r in rows]

    async def _settle(self) -> None:
        done, self.done = self.done, []
        try:
            await self.pool.execute(
                _SETTLE, [r.id for r in done], [r.status for r in done], [r.next_at for r in done],
                [r.code for r in done], [r.error for r in done], [r.at for r in done])
        except BaseException:
            self.done = done + self.done  # written next time; the lease keeps others off meanwhile
            raise

    async def _attempt(self, session: aiohttp.ClientSession, row: Claimed) -> None:
        code, error = None, None
        sent_at = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": row.message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self.signer.sign(row.message_id, sent_at, row.message),
        }
        started = time.perf_counter()
        async with tracing.delivery_span(message_id=row.message_id, customer_id=row.customer_id,
                                         version=row.version, endpoint_id=self.endpoint.id, url=self.endpoint.url,
                                         attempt=row.attempts + 1):
            try:
                async with session.post(self.endpoint.url, data=row.message.encode(), headers=headers,
                                        allow_redirects=False) as answer:
                    code = answer.status
                    await answer.content.read(MAX_ANSWER_BYTES)
            except TimeoutError:
                error = f"timeout after {self.policy.timeout_s:g}s"
            except Exception as exc:  # any failure of the request is the endpoint's: retried, never fatal
                error = f"{type(exc).__name__}: {exc}"[:300]
            tracing.note(**{"http.response.status_code": code, "error.type": error})
        elapsed = time.perf_counter() - started
        result = judge(row, code, error, self.clock(), self.policy)
        self._report(row, result, elapsed)
        self.done.append(result)
        del self.inflight[row.id]
        self.wake.set()

    def _report(self, row: Claimed, result: Result, elapsed: float) -> None:
        outcome = {"delivered": "delivered", "pending": "retrying"}.get(result.status, "failed")
        DELIVERIES.labels(self.endpoint.id, outcome).inc()
        DELIVERY_SECONDS.labels(self.endpoint.id).observe(elapsed)
        fields: dict[str, Any] = {"message_id": row.message_id, "customer_id": row.customer_id,
                                  "version": row.version, "attempt": row.attempts + 1, "status": result.code,
                                  "ms": round(elapsed * 1000, 1)}
        if result.status == "delivered":
            self.log.info("webhook.delivered", **fields)
        elif result.status == "pending":
            self.log.warning("webhook.retrying", error=result.error,
                             in_s=round((result.next_at - result.at).total_seconds(), 1), **fields)
        else:
            self.log.error("webhook.failed", error=result.error, hint="`entitled deliveries --failed` lists it",
                           **fields)


class Deliverer:
    """The delivery loop of one worker process: a lane per active endpoint."""

    def __init__(self, database_url: str, *, policy: DeliveryPolicy | None = None, clock: Clock = wall_clock) -> None:
        self.database_url = database_url
        self.policy = policy or DeliveryPolicy()
        self.clock = clock
        self.lanes: dict[str, tuple[_Lane, asyncio.Task[None]]] = {}

    def poke(self) -> None:
        """Look for due deliveries now (a new message, or a test that advanced the clock)."""
        for lane, _task in self.lanes.values():
            lane.wake.set()

    async def run_forever(self) -> None:
        # min_size 0: the pool connects on demand, so a Postgres outage at start is retried below.
        pool = await db.create_pool(self.database_url, min_size=0, max_size=self.policy.pool_size)
        listener = asyncio.create_task(self._listen(), name="webhooks-listen")
        last_housekeeping = 0.0
        try:
            while True:
                try:
                    await self._refresh_lanes(pool)
                    if time.monotonic() - last_housekeeping >= self.policy.housekeeping_every_s:
                        last_housekeeping = time.monotonic()
                        await housekeeping(pool)
                except DB_ERRORS as exc:
                    log.warning("webhook.db_retrying", error=type(exc).__name__)
                await asyncio.sleep(self.policy.endpoints_poll_s)
        finally:
            listener.cancel()
            tasks = [task for _lane, task in self.lanes.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(listener, *tasks, return_exceptions=True)
            self.lanes.clear()
            await pool.close()

    async def _refresh_lanes(self, pool: asyncpg.Pool) -> None:
        wanted = {e.id: e for e in await active(pool)}
        for endpoint_id in list(self.lanes):
            lane, task = self.lanes[endpoint_id]
            if wanted.get(endpoint_id) != lane.endpoint or task.done():
                task.cancel()
                del self.lanes[endpoint_id]
                log.info("webhook.lane_stopped", endpoint_id=endpoint_id)
        for endpoint_id, endpoint in wanted.items():
            if endpoint_id not in self.lanes:
                lane = _Lane(endpoint, pool, self.policy, self.clock)
                self.lanes[endpoint_id] = (lane, asyncio.create_task(lane.run(), name=f"webhooks-{endpoint_id}"))
                log.info("webhook.lane_started", endpoint_id=endpoint_id, url=endpoint.url)

    async def _listen(self) -> None:
        """Wake the lanes on each committed message (the sync's NOTIFY); reconnect when lost."""
        while True:
            try:
                conn = await asyncpg.connect(self.database_url)
            except DB_ERRORS:
                await asyncio.sleep(2.0)
                continue
            try:
                await conn.add_listener(OUTBOX_CHANNEL, lambda *_args: self.poke())
                while not conn.is_closed():
                    await asyncio.sleep(self.policy.idle_poll_s)
                    with contextlib.suppress(*DB_ERRORS):
                        await conn.execute("SELECT 1")
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)


async def housekeeping(pool: asyncpg.Pool) -> None:
    """Counts for the gauges; old rows go (delivered and canceled after 7 days, failed after 30,
    sync summaries after history's retention)."""
    FAILED.set(await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'"))
    for row in await pool.fetch(
        "SELECT e.id, count(d.id) AS n FROM webhook_endpoints e LEFT JOIN webhook_deliveries d"
        " ON d.endpoint_id = e.id AND d.status = 'pending' WHERE e.removed_at IS NULL GROUP BY e.id"
    ):
        PENDING.labels(row["id"]).set(row["n"])
    await pool.execute(
        "DELETE FROM webhook_deliveries WHERE (status IN ('delivered', 'canceled') AND created_at < now() - interval '7 days')"
        " OR (status = 'failed' AND created_at < now() - interval '30 days')")
    await prune_history(pool)
