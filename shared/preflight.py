"""One-line answers for a dependency that is not there: Postgres, Redis, Stripe.

A process that cannot reach what it needs says so in one line naming the setting and the
dependency (`DATABASE_URL: cannot reach Postgres at 127.0.0.1:5432 (connection refused)`), never
with a traceback. `entitled run` and the CLI check before they start anything; the worker turns
the same errors into the same line when it gives up.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import asyncpg
import stripe
from redis.asyncio import Redis
from redis.exceptions import RedisError

CHECK_TIMEOUT_S = 5.0


class DependencyError(Exception):
    """A dependency cannot be reached or used; the message is one line naming its setting."""


def where(url: str) -> str:
    """host:port of a URL, without the user name or password it may carry."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port}" if parts.port else host


def reason(exc: BaseException) -> str:
    """The short cause of a connection failure: `connection refused`, `timed out`, ..."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    # asyncpg joins one error per address it tried; the first says enough
    return first.removeprefix("Multiple exceptions: ")[:160]


def postgres_error(url: str, exc: BaseException) -> DependencyError:
    if isinstance(exc, asyncpg.UndefinedTableError):
        return DependencyError(f"DATABASE_URL: the database at {where(url)} is not migrated "
                               "(run `entitled migrate`)")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return DependencyError(f"DATABASE_URL: {reason(exc)} at {where(url)} (create it, then `entitled migrate`)")
    return DependencyError(f"DATABASE_URL: cannot reach Postgres at {where(url)} ({reason(exc)})")


def redis_error(url: str, exc: BaseException) -> DependencyError:
    return DependencyError(f"REDIS_URL: cannot reach Redis at {where(url)} ({reason(exc)})")


def stripe_error(api_base: str, exc: stripe.StripeError) -> DependencyError:
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return DependencyError(f"STRIPE_API_KEY: Stripe refused the key ({exc.user_message or type(exc).__name__})")
    if isinstance(exc, stripe.APIConnectionError):
        return DependencyError(f"STRIPE_API_BASE: cannot reach Stripe at {where(api_base)} "
                               "(after retries; check the network or STRIPE_API_BASE)")
    return DependencyError(f"Stripe answered {exc.http_status or 'an error'}: "
                           f"{exc.user_message or type(exc).__name__}")


async def check_postgres(url: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    try:
        conn = await asyncpg.connect(url, timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise postgres_error(url, exc) from None
    await conn.close()


async def check_redis(url: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise redis_error(url, exc) from None
    finally:
        await client.aclose()
