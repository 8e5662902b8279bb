"""The worker's start-up check of `STRIPE_API_KEY`: a wrong key is one line, before any sync.

Without it an invalid key, or a live key pointed at a database of test-mode customers (the
demo's, say), is found only when the first sync fails, long after "receiving webhooks". One
cheap read (`GET /v1/events?limit=1`, which a read-only restricted key may make) proves that
Stripe takes the key; the mode of the customers already stored must be the key's.
An unreachable Stripe (or Redis, which holds the shared rate limit, restarting at that moment)
is not a wrong key: it is logged and the worker starts, since its reads retry and Stripe's own
retries and the reconciliation catch up.
"""

from __future__ import annotations

import asyncio

import asyncpg
import stripe
import structlog
from redis.exceptions import RedisError

from shared.bootstrap import Services
from shared.preflight import DependencyError, stripe_error
from shared.stripe_api import RateLimitWaitError

log = structlog.get_logger()

CHECK_TIMEOUT_S = 15.0


def mode_conflict(key_live: bool, stored_modes: set[bool]) -> str | None:
    """Why a key of this mode must not serve a database holding customers of these modes."""
    other = not key_live
    if other not in stored_modes:
        return None
    key_mode, data_mode = ("live", "test") if key_live else ("test", "live")
    return (f"STRIPE_API_KEY: a {key_mode}-mode key, but DATABASE_URL holds {data_mode}-mode customers; "
            "give each mode a database of its own")


async def stored_modes(pool: asyncpg.Pool) -> set[bool]:
    rows = await pool.fetch("SELECT DISTINCT livemode FROM customers")
    return {bool(row["livemode"]) for row in rows}


async def check(deps: Services) -> None:
    """Raise DependencyError (one line) for a key Stripe refuses or of the other mode."""
    settings = deps.settings
    key_live = bool(settings.livemode)
    conflict = mode_conflict(key_live, await stored_modes(deps.pool))
    if conflict:
        raise DependencyError(conflict)
    try:
        await asyncio.wait_for(
            deps.stripe.raw_request_async("get", "/v1/events", limit=1), CHECK_TIMEOUT_S)
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        raise stripe_error(settings.stripe_api_base, exc) from None
    except (stripe.APIConnectionError, TimeoutError) as exc:
        log.warning("stripe.unreachable_at_start", api_base=settings.stripe_api_base,
                    error=type(exc).__name__)
    except (RedisError, OSError, RateLimitWaitError) as exc:
        # The shared rate limit lives in Redis: a Redis restart at this moment (the fault run's
        # case), or a budget booked far ahead, is no reason to stop a worker that arq's own
        # connection carries through it.
        log.warning("stripe.key_check_skipped", reason="rate limit unavailable", error=type(exc).__name__)
    except stripe.StripeError as exc:
        # Stripe is there and took the key; anything else (a 5xx, say) is for the syncs to retry.
        log.warning("stripe.key_check_inconclusive", status=exc.http_status, error=type(exc).__name__)
