"""`GET /v1/access` and `GET /v1/check`: a user's (or customer's) access, read from Postgres
(`GET /v1/check` through the api's answer cache, api/check_cache.py, kept current by Postgres).

Both read the public views of docs/contract.md §7 (`active_entitlements`, `active_limits`), so they
agree with every other reader: a grant counts only while `valid_until` is in the future, and a
grant for ever (`infinity`) is answered as `valid_until: null`. A user with several customers
(a Customer and a guest purchase side by side) gets the union: a feature is allowed when any of
them grants it, until the latest `valid_until`, with the quantities summed; limits are summed too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from api.errors import ApiError

# docs/contract.md §7: ids are Stripe ids or app user ids; nothing legitimate is longer.
MAX_ID_CHARS = 255


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC; `infinity` (a grant for ever) and NULL are None."""
    if value is None or value.year >= 9999:
        return None
    return value.isoformat().replace("+00:00", "Z")


def valid_id(value: str | None, name: str, *, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise ApiError(400, "missing_parameter", f"{name} is required")
        return None
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise ApiError(400, "invalid_parameter", f"{name} must be printable and at most {MAX_ID_CHARS} characters")
    return value


# `first_end` and `customers` are for the check cache (api/check_cache.py): an answer may be
# kept until its earliest grant ends, and depends on the customers its grants come from.
CHECK_SQL = """
SELECT max(valid_until) AS valid_until, min(valid_until) AS first_end, sum(quantity)::bigint AS quantity,
    count(*) AS n, array_agg(DISTINCT customer_id) AS customers
FROM active_entitlements WHERE user_id = $1 AND feature = $2
"""
CHECK_BY_CUSTOMER_SQL = """
SELECT max(valid_until) AS valid_until, min(valid_until) AS first_end, sum(quantity)::bigint AS quantity,
    count(*) AS n, array_agg(DISTINCT customer_id) AS customers
FROM active_entitlements WHERE customer_id = $1 AND feature = $2
"""


@dataclass(frozen=True)
class CheckAnswer:
    """`body`: `{"allowed", "valid_until", "quantity"}`; `customers`: whose grants it counts;
    `first_end`: the earliest `valid_until` of those grants (None: none, or all for ever)."""

    body: dict[str, Any]
    customers: tuple[str, ...]
    first_end: datetime | None


async def check(pool: asyncpg.Pool, *, user_id: str | None, customer_id: str | None, feature: str,
                timeout_s: float) -> CheckAnswer:
    """An unknown user is simply not allowed."""
    if user_id is not None:
        row = await pool.fetchrow(CHECK_SQL, user_id, feature, timeout=timeout_s)
    else:
        row = await pool.fetchrow(CHECK_BY_CUSTOMER_SQL, customer_id, feature, timeout=timeout_s)
    if row is None or row["n"] == 0:
        return CheckAnswer({"allowed": False, "valid_until": None, "quantity": 0}, (), None)
    first_end: datetime = row["first_end"]
    return CheckAnswer(
        {"allowed": True, "valid_until": iso(row["valid_until"]), "quantity": int(row["quantity"])},
        tuple(row["customers"]),
        None if first_end.year >= 9999 else first_end,
    )


async def access(pool: asyncpg.Pool, *, user_id: str | None, customer_id: str | None,
                 timeout_s: float) -> dict[str, Any] | None:
    """The body of `GET /v1/access` (and of a finished `POST /v1/sync`); None when unknown."""
    async with pool.acquire(timeout=timeout_s) as conn:
        if user_id is not None:
            customers = await conn.fetch(
                "SELECT customer_id, user_id FROM customers WHERE user_id = $1 ORDER BY customer_id",
                user_id, timeout=timeout_s,
            )
        else:
            customers = await conn.fetch(
                "SELECT customer_id, user_id FROM customers WHERE customer_id = $1", customer_id, timeout=timeout_s
            )
        if not customers:
            return None
        ids = [r["customer_id"] for r in customers]
        grants = await conn.fetch(
            """
            SELECT a.customer_id, a.feature, a.valid_until, a.quantity, e.subscription_id AS source
            FROM active_entitlements a
            JOIN entitlements e ON e.customer_id = a.customer_id AND e.feature = a.feature
            WHERE a.customer_id = ANY($1::text[]) ORDER BY a.feature, a.customer_id
            """,
            ids, timeout=timeout_s,
        )
        limits = await conn.fetch(
            """
            SELECT a.customer_id, a.name, a.value, a.valid_until, l.source_id AS source
            FROM active_limits a
            JOIN entitlement_limits l ON l.customer_id = a.customer_id AND l.name = a.name
            WHERE a.customer_id = ANY($1::text[]) ORDER BY a.name, a.customer_id
            """,
            ids, timeout=timeout_s,
        )
        versions = await conn.fetch(
            "SELECT customer_id, version FROM customer_sync WHERE customer_id = ANY($1::text[])",
            ids, timeout=timeout_s,
        )
    return shape_access(customers, grants, limits, versions)


def shape_access(customers: list[Any], grants: list[Any], limits: list[Any], versions: list[Any]) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for row in limits:
        totals[row["name"]] = totals.get(row["name"], 0) + int(row["value"])
    known = {r["customer_id"]: int(r["version"]) for r in versions}
    return {
        "customer_ids": [r["customer_id"] for r in customers],
        "user_id": customers[0]["user_id"],
        "features": sorted({r["feature"] for r in grants}),
        "grants": [
            {
                "feature": r["feature"],
                "valid_until": iso(r["valid_until"]),
                "quantity": int(r["quantity"]),
                "customer_id": r["customer_id"],
                "source": r["source"],
            }
            for r in grants
        ],
        "limits": totals,
        "limit_grants": [
            {
                "name": r["name"],
                "value": int(r["value"]),
                "valid_until": iso(r["valid_until"]),
                "customer_id": r["customer_id"],
                "source": r["source"],
            }
            for r in limits
        ],
        "versions": {r["customer_id"]: known.get(r["customer_id"], 0) for r in customers},
    }
