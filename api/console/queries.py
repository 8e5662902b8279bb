"""What the console's pages read from Postgres (docs/contract.md §7, §10, §11). Reads only;
every query is bounded (a `LIMIT`, or an index range)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from api.context import DB_TIMEOUT_S

SEARCH_LIMIT = 50
HISTORY_SYNCS = 500  # the picture's syncs (sync_log keeps history.KEEP_DAYS days)
HISTORY_EVENTS = 1000
FAILED_LIMIT = 100

SEARCH_SQL = """
SELECT c.customer_id, c.user_id, c.email, c.deleted, s.synced_at,
       coalesce(array_agg(a.feature ORDER BY a.feature) FILTER (WHERE a.feature IS NOT NULL), '{}') AS features
FROM customers c
LEFT JOIN customer_sync s USING (customer_id)
LEFT JOIN active_entitlements a USING (customer_id)
WHERE c.customer_id = $1 OR c.user_id = $1 OR lower(c.email) = lower($1)
GROUP BY c.customer_id, s.synced_at
ORDER BY c.customer_id LIMIT $2
"""


@dataclass(frozen=True)
class Grant:
    feature: str
    quantity: int
    valid_until: datetime | None  # None: for ever
    source_id: str
    why: list[str]


async def search(pool: asyncpg.Pool, text: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(SEARCH_SQL, text.strip(), SEARCH_LIMIT, timeout=DB_TIMEOUT_S)
    return rows


async def customer(pool: asyncpg.Pool, customer_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        # Two primary-key lookups: a customer is known by either row.
        "SELECT k.customer_id, c.user_id, c.user_id_source, c.email, c.deleted, c.test_clock, c.livemode,"
        " s.version, s.synced_at, s.next_check_at, s.last_reason"
        " FROM (SELECT $1::text AS customer_id) k LEFT JOIN customers c ON c.customer_id = k.customer_id"
        " LEFT JOIN customer_sync s ON s.customer_id = k.customer_id"
        " WHERE c.customer_id IS NOT NULL OR s.customer_id IS NOT NULL",
        customer_id, timeout=DB_TIMEOUT_S)
    return row


def _why_of(source_id: str, why: list[str]) -> list[str]:
    # The decision's sentences are one per subscription, each opening with its id.
    mine = [line for line in why if line.startswith(f"{source_id} ")]
    return mine or [f"granted by {source_id}"]


async def access_now(pool: asyncpg.Pool, customer_id: str) -> tuple[list[Grant], list[str]]:
    """The grants in force and the last sync's why (shared/access/explain.py's sentences)."""
    rows = await pool.fetch(
        "SELECT feature, quantity, valid_until, subscription_id FROM entitlements"
        " WHERE customer_id = $1 AND valid_until > now() ORDER BY feature", customer_id, timeout=DB_TIMEOUT_S)
    decision = await pool.fetchval(
        "SELECT decision FROM sync_log WHERE customer_id = $1 ORDER BY synced_at DESC, id DESC LIMIT 1",
        customer_id, timeout=DB_TIMEOUT_S)
    why: list[str] = list(_decoded(decision).get("why") or [])
    grants = [Grant(r["feature"], int(r["quantity"]), None if r["valid_until"].year >= 9999 else r["valid_until"],
                    r["subscription_id"], _why_of(r["subscription_id"], why)) for r in rows]
    return grants, why


def _decoded(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    decoded = orjson.loads(value) if isinstance(value, str | bytes) else value
    return decoded if isinstance(decoded, dict) else {}


async def syncs(pool: asyncpg.Pool, customer_id: str) -> list[tuple[datetime, dict[str, Any], dict[str, Any]]]:
    """The customer's recorded syncs, oldest first: (when, what Stripe said, the decision)."""
    rows = await pool.fetch(
        "SELECT synced_at, stripe, decision FROM ("
        "  SELECT id, synced_at, stripe, decision FROM sync_log WHERE customer_id = $1"
        "  ORDER BY synced_at DESC, id DESC LIMIT $2) recent ORDER BY synced_at, id",
        customer_id, HISTORY_SYNCS, timeout=DB_TIMEOUT_S)
    return [(r["synced_at"], _decoded(r["stripe"]), _decoded(r["decision"])) for r in rows]


async def events(pool: asyncpg.Pool, customer_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT event_id, type, source, received_at, outcome FROM event_ledger WHERE customer_id = $1"
        " ORDER BY received_at DESC LIMIT $2", customer_id, HISTORY_EVENTS, timeout=DB_TIMEOUT_S)
    return rows


async def failed_events(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT event_id, type, customer_id, source, received_at, attempts, error FROM event_ledger"
        " WHERE outcome = 'failed' ORDER BY received_at DESC LIMIT $1", FAILED_LIMIT, timeout=DB_TIMEOUT_S)
    return rows

