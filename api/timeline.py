"""`GET /v1/customers/{customer_id}/timeline`: what happened to a customer, newest first.

Four kinds of items, merged by time:

- `event`: a Stripe event accepted for the customer (`type`, `id`, `source`: webhook, events
  API poller, sweep, replay; what became of it);
- `sync`: one sync: its reason, the events it handled, what Stripe said (`stripe`: the customer
  and its subscriptions as the policy read them) and the decision (`decision`: the features
  granted until when, by which subscription, with the policy's `why`); recorded by the worker
  (`shared.publishing.history`, kept 7 days);
- `message`: an `access-changed` message, and when the relay published it;
- `delivery`: an outbound webhook delivery of a message to an endpoint, with its status.

Paginated by an opaque `cursor` (the position after the last item given, `next_cursor`), with
`limit` items a page (default 50, at most 200). Each source is read with the cursor as a row
comparison `(at, kind, key) < cursor`, so a page costs four indexed reads of at most `limit + 1`
rows, however long the history.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from api.access import iso, valid_id
from api.context import DB_TIMEOUT_S, services
from api.errors import ApiError, json_response

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# Before every item: the first page's cursor.
_TOP = (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "~", "~")

# Text keys compare byte-wise (COLLATE "C"), as Python compares them when merging.
_SOURCES: dict[str, str] = {
    "event": """
        SELECT received_at AS at, event_id AS key, event_id, type, source, outcome, attempts, processed_at, error
        FROM event_ledger
        WHERE customer_id = $1 AND (received_at, 'event'::text, event_id COLLATE "C") < ($2, $3::text, $4::text COLLATE "C")
        ORDER BY received_at DESC, event_id COLLATE "C" DESC LIMIT $5""",
    "sync": """
        SELECT synced_at AS at, lpad(id::text, 20, '0') AS key, reason, event_ids, changed, version, stripe, decision
        FROM sync_log
        WHERE customer_id = $1 AND (synced_at, 'sync'::text, lpad(id::text, 20, '0') COLLATE "C") < ($2, $3::text, $4::text COLLATE "C")
        ORDER BY synced_at DESC, id DESC LIMIT $5""",
    "message": """
        SELECT created_at AS at, lpad(id::text, 20, '0') AS key, version, message, published_at
        FROM outbox
        WHERE customer_id = $1 AND (created_at, 'message'::text, lpad(id::text, 20, '0') COLLATE "C") < ($2, $3::text, $4::text COLLATE "C")
        ORDER BY created_at DESC, id DESC LIMIT $5""",
    "delivery": """
        SELECT d.created_at AS at, lpad(d.id::text, 20, '0') AS key, d.id, d.endpoint_id, e.url, d.message_id,
               d.version, d.status, d.attempts, d.last_attempt_at, d.last_status, d.last_error, d.delivered_at,
               d.next_attempt_at
        FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
        WHERE d.customer_id = $1
          AND (d.created_at, 'delivery'::text, lpad(d.id::text, 20, '0') COLLATE "C") < ($2, $3::text, $4::text COLLATE "C")
        ORDER BY d.created_at DESC, d.id DESC LIMIT $5""",
}


def encode_cursor(at: datetime, kind: str, key: str) -> str:
    raw = orjson.dumps([at.astimezone(UTC).isoformat(), kind, key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, str]:
    try:
        at, kind, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(at)
        if not (isinstance(kind, str) and isinstance(key, str)) or moment.tzinfo is None:
            raise ValueError("not a cursor")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise ApiError(400, "invalid_parameter", "cursor is not one this API gave") from None
    return moment, kind, key


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ApiError(400, "invalid_parameter", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def _item(kind: str, row: asyncpg.Record) -> dict[str, Any]:
    head: dict[str, Any] = {"kind": kind, "at": iso(row["at"])}
    if kind == "event":
        return {**head, "id": row["event_id"], "type": row["type"], "source": row["source"],
                "outcome": row["outcome"], "attempts": row["attempts"], "processed_at": iso(row["processed_at"]),
                "error": row["error"]}
    if kind == "sync":
        return {**head, "reason": row["reason"], "event_ids": list(row["event_ids"]), "changed": row["changed"],
                "version": row["version"], "stripe": row["stripe"], "decision": row["decision"]}
    if kind == "message":
        message = orjson.loads(row["message"])
        return {**head, "id": message.get("id"), "version": row["version"], "published_at": iso(row["published_at"]),
                "message": message}
    return {**head, "id": str(row["id"]), "endpoint_id": row["endpoint_id"], "url": row["url"],
            "message_id": row["message_id"], "version": row["version"], "status": row["status"],
            "attempts": row["attempts"], "last_attempt_at": iso(row["last_attempt_at"]),
            "last_status": row["last_status"], "last_error": row["last_error"],
            "delivered_at": iso(row["delivered_at"]),
            "next_attempt_at": iso(row["next_attempt_at"]) if row["status"] == "pending" else None}


async def _known(conn: asyncpg.Connection, customer_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM customer_sync WHERE customer_id = $1)"
        " OR EXISTS (SELECT 1 FROM event_ledger WHERE customer_id = $1)", customer_id, timeout=DB_TIMEOUT_S)
    return bool(found)


async def timeline(pool: asyncpg.Pool, customer_id: str, *, limit: int,
                   cursor: tuple[datetime, str, str] | None) -> dict[str, Any] | None:
    """A page of the customer's timeline, or None for a customer we know nothing of."""
    after = cursor or _TOP
    rows: list[tuple[datetime, str, str, asyncpg.Record]] = []
    async with pool.acquire(timeout=DB_TIMEOUT_S) as conn:
        if cursor is None and not await _known(conn, customer_id):
            return None
        for kind, sql in _SOURCES.items():
            found = await conn.fetch(sql, customer_id, *after, limit + 1, timeout=DB_TIMEOUT_S)
            rows.extend((r["at"], kind, r["key"], r) for r in found)
    page = heapq.nlargest(limit + 1, rows, key=lambda r: (r[0], r[1], r[2]))
    more = len(page) > limit
    page = page[:limit]
    return {
        "customer_id": customer_id,
        "items": [_item(kind, row) for _at, kind, _key, row in page],
        "next_cursor": encode_cursor(*page[-1][:3]) if more else None,
    }


async def get_timeline(request: web.Request) -> web.Response:
    customer_id = valid_id(request.match_info.get("customer_id"), "customer_id")
    assert customer_id is not None
    limit = _limit(request.query.get("limit"))
    raw_cursor = request.query.get("cursor")
    cursor = decode_cursor(raw_cursor) if raw_cursor else None
    page = await timeline(services(request).pool, customer_id, limit=limit, cursor=cursor)
    if page is None:
        raise ApiError(404, "not_found", "no such customer")
    return json_response(page)
