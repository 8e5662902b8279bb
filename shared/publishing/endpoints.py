"""Outbound webhook endpoints (docs/contract.md §10): add, list, remove; and the failed deliveries.

An endpoint gets every `access-changed` message committed after it was added (a trigger on
`outbox`, migration 0005, makes its delivery rows). Its secret is a fresh `whsec_` key, as the
Standard Webhooks specification names them: `whsec_` and 32 random bytes in base64.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import asyncpg

SECRET_PREFIX = "whsec_"


class EndpointError(ValueError):
    """An endpoint URL or id the command refuses."""


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    secret: str


@dataclass(frozen=True)
class EndpointStats:
    endpoint: Endpoint
    created_at: datetime
    pending: int
    delivered: int
    failed: int
    last_error: str | None


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def valid_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"{url!r} is not an http(s) URL")
    return url


async def add(pool: asyncpg.Pool | asyncpg.Connection, url: str) -> Endpoint:
    endpoint = Endpoint(id="ep_" + secrets.token_hex(8), url=valid_url(url), secret=new_secret())
    await pool.execute("INSERT INTO webhook_endpoints (id, url, secret) VALUES ($1, $2, $3)",
                       endpoint.id, endpoint.url, endpoint.secret)
    return endpoint


async def remove(pool: asyncpg.Pool, endpoint_id: str) -> None:
    """Stop delivering to the endpoint; what it is still owed is canceled (the rows stay)."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "UPDATE webhook_endpoints SET removed_at = now() WHERE id = $1 AND removed_at IS NULL RETURNING id",
            endpoint_id)
        if found is None:
            raise EndpointError(f"no endpoint {endpoint_id!r}")
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'canceled', leased_until = NULL"
            " WHERE endpoint_id = $1 AND status = 'pending'", endpoint_id)


async def active(pool: asyncpg.Pool | asyncpg.Connection) -> list[Endpoint]:
    rows = await pool.fetch("SELECT id, url, secret FROM webhook_endpoints WHERE removed_at IS NULL ORDER BY id")
    return [Endpoint(r["id"], r["url"], r["secret"]) for r in rows]


async def stats(pool: asyncpg.Pool) -> list[EndpointStats]:
    rows = await pool.fetch(
        """
        SELECT e.id, e.url, e.secret, e.created_at,
               count(*) FILTER (WHERE d.status = 'pending') AS pending,
               count(*) FILTER (WHERE d.status = 'delivered') AS delivered,
               count(*) FILTER (WHERE d.status = 'failed') AS failed,
               (SELECT last_error FROM webhook_deliveries l WHERE l.endpoint_id = e.id
                  AND l.last_error IS NOT NULL ORDER BY l.last_attempt_at DESC NULLS LAST LIMIT 1) AS last_error
        FROM webhook_endpoints e LEFT JOIN webhook_deliveries d ON d.endpoint_id = e.id
        WHERE e.removed_at IS NULL
        GROUP BY e.id ORDER BY e.created_at, e.id
        """
    )
    return [EndpointStats(Endpoint(r["id"], r["url"], r["secret"]), r["created_at"], r["pending"], r["delivered"],
                          r["failed"], r["last_error"]) for r in rows]


async def failed_deliveries(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    """Deliveries given up on after the retry period, newest first."""
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT d.id, d.endpoint_id, e.url, d.customer_id, d.version, d.message_id, d.attempts, d.created_at,"
        " d.last_attempt_at, d.last_status, d.last_error"
        " FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
        " WHERE d.status = 'failed' ORDER BY d.created_at DESC, d.id DESC LIMIT $1", limit)
    return rows


async def retry_failed(pool: asyncpg.Pool, delivery_id: int) -> bool:
    """Try a delivery given up on once more, now (the operator console's replay). Its retry
    period is over, so an endpoint still failing leaves it `failed` again after that one attempt.
    False when it is not a failed delivery of an endpoint still configured."""
    found = await pool.fetchval(
        "UPDATE webhook_deliveries d SET status = 'pending', next_attempt_at = now(), leased_until = NULL"
        " FROM webhook_endpoints e WHERE d.id = $1 AND d.status = 'failed' AND e.id = d.endpoint_id"
        " AND e.removed_at IS NULL RETURNING d.id", delivery_id)
    return found is not None
