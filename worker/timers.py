"""The timer loop every worker runs: re-checks that fall due, and runs that died.

Access must end on time even when no webhook comes (docs/contract.md §5). Each sync leaves one
re-check per customer in a Redis sorted set; every second, each worker asks Redis to turn the
due ones into work (`fire_due`, atomic, so each fires once however many workers run). As a
backstop for a Redis that lost its data, once a minute the loop also queues customers whose
`customer_sync.next_check_at` passed without a sync.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import redis.exceptions
import structlog

from shared.bootstrap import Services
from shared.coordination import Unit

log = structlog.get_logger(__name__)

TICK_S = 1.0
BACKSTOP_EVERY_S = 60.0
BACKSTOP_GRACE_S = 30


async def run_forever(deps: Services) -> None:
    last_backstop = time.monotonic()
    while True:
        try:
            rechecked, revived = await deps.coordinator.fire_due()
            if rechecked:
                log.info("timers.rechecks", customers=len(rechecked))
            if revived:
                log.warning("timers.revived", units=[u.wire for u in revived], hint="their runs' leases expired")
            if time.monotonic() - last_backstop >= BACKSTOP_EVERY_S:
                last_backstop = time.monotonic()
                await backstop(deps)
        except asyncio.CancelledError:
            raise
        except (OSError, redis.exceptions.RedisError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("timers.error", error=type(exc).__name__, detail=str(exc)[:200])
        await asyncio.sleep(TICK_S)


async def backstop(deps: Services) -> int:
    """Queue customers whose re-check is overdue in Postgres (Redis lost it, or never got it)."""
    rows = await deps.pool.fetch(
        "SELECT customer_id FROM customer_sync"
        " WHERE next_check_at < now() - make_interval(secs => $1) ORDER BY next_check_at LIMIT 1000",
        BACKSTOP_GRACE_S,
    )
    for row in rows:
        await deps.coordinator.accept(Unit.customer(row["customer_id"]), reason="recheck", delay_ms=0)
    if rows:
        log.warning("timers.backstop", customers=len(rows))
    return len(rows)
