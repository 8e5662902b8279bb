"""`python -m worker`: run one arq worker process (the Procfile's `worker:` line)."""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg
from redis.exceptions import RedisError

from shared import logs, preflight
from shared.settings import SettingsError, load
from worker.main import build_worker

# A worker started while Redis (re)starts waits this long for it; arq's own retries, built to ride
# out a restart while running, would take minutes to say that Redis is not there at all.
STARTUP_REDIS_WAIT_S = 30.0


async def _wait_for_redis(url: str) -> None:
    deadline = time.monotonic() + STARTUP_REDIS_WAIT_S
    warned = False
    while True:
        try:
            await preflight.check_redis(url, timeout_s=3.0)
            return
        except preflight.DependencyError as exc:
            if time.monotonic() >= deadline:
                raise
            if not warned:
                print(f"entitled worker: {exc}; waiting up to {STARTUP_REDIS_WAIT_S:g}s", file=sys.stderr)
                warned = True
            await asyncio.sleep(1.0)


def main() -> None:
    try:
        settings = load(need_api_key=True)
        worker = build_worker(settings)
    except SettingsError as exc:
        print(f"entitled worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_format, settings.log_level)
    try:
        asyncio.run(_wait_for_redis(settings.redis_url))
    except preflight.DependencyError as exc:
        print(f"entitled worker: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        worker.run()
    except preflight.DependencyError as exc:  # a key Stripe refuses, or of the other mode
        print(f"entitled worker: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except RedisError as exc:
        # arq retried the connection first (see worker/main.py, ARQ_REDIS_RETRIES)
        print(f"entitled worker: {preflight.redis_error(settings.redis_url, exc)}", file=sys.stderr)
        raise SystemExit(1) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # the start-up waited STARTUP_DB_WAIT_S for Postgres first
        print(f"entitled worker: {preflight.postgres_error(settings.database_url, exc)}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
