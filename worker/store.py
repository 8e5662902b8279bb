"""Postgres side of a sync: the fence, what we held before, and the one write transaction.

The write is fenced (see `shared/coordination/coordinator.py`): it commits only while `customer_sync.fence`
still equals the fence this run took when it started, so a run that lost its lease can never
overwrite a newer run's result. Customers, subscriptions, entitlements, the version, the
outbox row and the event ledger change together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared import tracing
from shared.access import FOREVER, Access, CustomerFacts, Known, Subscription
from shared.coordination import AcceptedEvent
from shared.publishing import AccessChanged, EntitlementRow, LimitRow, diff, history, outbox
from worker import payments_store


class FencedOutError(Exception):
    """A newer run started for this customer; this run's result must not be written."""


# asyncpg writes this as Postgres `infinity` (docs/contract.md §7: a purchase granted for ever).
INFINITY = datetime.max.replace(tzinfo=UTC)


def ts(seconds: float | None) -> datetime | None:
    if seconds is None:
        return None
    return INFINITY if seconds >= FOREVER else datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class Written:
    changed: bool
    version: int
    message: AccessChanged | None


async def bump_fence(pool: asyncpg.Pool, customer_id: str) -> int:
    fence: int = await pool.fetchval(
        """
        INSERT INTO customer_sync (customer_id, fence) VALUES ($1, 1)
        ON CONFLICT (customer_id) DO UPDATE SET fence = customer_sync.fence + 1
        RETURNING fence
        """,
        customer_id,
    )
    return fence


async def load_known(pool: asyncpg.Pool, customer_id: str) -> Known:
    """What the previous sync recorded, for the policy (`shared.access.Known`)."""
    async with pool.acquire() as conn:
        customer = await conn.fetchrow(
            "SELECT user_id, user_id_source FROM customers WHERE customer_id = $1", customer_id
        )
        subs = await conn.fetch(
            "SELECT subscription_id, past_due_since FROM subscriptions"
            " WHERE customer_id = $1 AND past_due_since IS NOT NULL",
            customer_id,
        )
        reads_payments = await payments_store.reads_payments(conn, customer_id)
    return Known(
        reads_payments=reads_payments,
        user_id=customer["user_id"] if customer else None,
        user_id_source=customer["user_id_source"] if customer else None,
        past_due_since={r["subscription_id"]: r["past_due_since"].timestamp() for r in subs},
    )


def _items_json(sub: Subscription) -> list[dict[str, Any]]:
    return [
        {
            "id": i.id,
            "price": i.price_id,
            "product": i.product_id,
            "current_period_start": i.current_period_start,
            "current_period_end": i.current_period_end,
            "quantity": i.quantity,
        }
        for i in sub.items
    ]


def entitlement_rows(access: Access, offset_s: float) -> frozenset[EntitlementRow]:
    """The decision's grants as `entitlements` rows, shifted from the customer's clock to the wall's."""
    return frozenset(
        EntitlementRow(g.feature, ts(g.valid_until + offset_s), g.subscription_id, g.quantity)
        for g in access.grants.values()
    )


def limit_rows(access: Access, offset_s: float) -> frozenset[LimitRow]:
    """The decision's limits (docs/contract.md §5.2) as `entitlement_limits` rows, on the wall clock."""
    return frozenset(
        LimitRow(g.name, g.value, ts(g.valid_until + offset_s), g.source_id) for g in access.limits.values()
    )


async def write(
    pool: asyncpg.Pool,
    *,
    fence: int,
    facts: CustomerFacts,
    access: Access,
    offset_s: float,
    events: Sequence[AcceptedEvent],
    reason: str,
) -> Written:
    """Write one sync's result in one transaction; publish intent goes to the outbox."""
    cid = facts.customer_id
    now = datetime.now(UTC)
    async with pool.acquire() as conn, tracing.span("postgres.transaction", purpose="sync.write"), conn.transaction():
        row = await conn.fetchrow(
            "SELECT fence, version FROM customer_sync WHERE customer_id = $1 FOR UPDATE", cid
        )
        if row is None or row["fence"] != fence:
            raise FencedOutError(f"fence {fence} is no longer current for {cid}")
        version: int = row["version"]
        held = [
            EntitlementRow(r["feature"], r["valid_until"], r["subscription_id"], r["quantity"])
            for r in await conn.fetch(
                "SELECT feature, valid_until, subscription_id, quantity FROM entitlements WHERE customer_id = $1", cid
            )
        ]
        held_limits = [
            LimitRow(r["name"], r["value"], r["valid_until"], r["source_id"])
            for r in await conn.fetch(
                "SELECT name, value, valid_until, source_id FROM entitlement_limits WHERE customer_id = $1", cid
            )
        ]
        old = await conn.fetchrow("SELECT user_id FROM customers WHERE customer_id = $1", cid)
        rows = entitlement_rows(access, offset_s)
        limits = limit_rows(access, offset_s)
        change = diff(held, old["user_id"] if old else None, rows, access.user_id,
                      held_limits=held_limits, limits=limits)

        # a guest purchase (docs/contract.md §5.1) has a row as soon as its session is one
        if facts.customer is not None or (facts.is_guest and facts.purchases) or old is not None or change.after:
            await _write_customer(conn, facts, access)
        await _write_subscriptions(conn, cid, facts.subscriptions, access.past_due_since)
        await payments_store.write(conn, facts, access)
        if change.rows_changed:
            await conn.execute("DELETE FROM entitlements WHERE customer_id = $1", cid)
            await conn.executemany(
                "INSERT INTO entitlements (customer_id, feature, valid_until, subscription_id, quantity)"
                " VALUES ($1, $2, $3, $4, $5)",
                [(cid, *r) for r in sorted(rows, key=lambda r: r.feature)],
            )
        if change.limit_rows_changed:
            await _write_limits(conn, cid, limits)
        message = None
        if change.publish:
            version += 1
            message = AccessChanged.build(
                customer_id=cid,
                user_id=access.user_id,
                before=change.before,
                after=change.after,
                version=version,
                reason=reason,
                livemode=facts.livemode,
                at=now,
                quantities=change.quantities_after,
                limits=change.limits_after,
            )
            await outbox.append(conn, message)
        await conn.execute(
            """
            UPDATE customer_sync SET version = $2, synced_at = now(), next_check_at = $3,
                last_reason = $4, stripe_features = $5
            WHERE customer_id = $1
            """,
            cid,
            version,
            ts(access.next_check + offset_s) if access.next_check is not None else None,
            reason,
            sorted(facts.stripe_features),
        )
        await record_events(conn, cid, events, outcome="changed" if change.publish else "unchanged")
        # The customer timeline's "what Stripe said" and "why" (GET /v1/customers/C/timeline).
        await history.record_sync(conn, facts=facts, access=access, offset_s=offset_s, reason=reason,
                                  event_ids=[e.id for e in events if e.id], changed=change.publish,
                                  version=version)
    return Written(changed=change.publish, version=version, message=message)


async def _write_limits(conn: asyncpg.Connection, cid: str, limits: Iterable[LimitRow]) -> None:
    """Replace the customer's `entitlement_limits` rows (the view `active_limits` reads them)."""
    await conn.execute("DELETE FROM entitlement_limits WHERE customer_id = $1", cid)
    await conn.executemany(
        "INSERT INTO entitlement_limits (customer_id, name, value, valid_until, source_id) VALUES ($1, $2, $3, $4, $5)",
        [(cid, *r) for r in sorted(limits, key=lambda r: r.name)],
    )


async def _write_customer(conn: asyncpg.Connection, facts: CustomerFacts, access: Access) -> None:
    customer = facts.customer
    await conn.execute(
        """
        INSERT INTO customers (customer_id, user_id, user_id_source, email, livemode, deleted, test_clock, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, now())
        ON CONFLICT (customer_id) DO UPDATE SET
            user_id = EXCLUDED.user_id, user_id_source = EXCLUDED.user_id_source,
            email = EXCLUDED.email, livemode = EXCLUDED.livemode, deleted = EXCLUDED.deleted,
            test_clock = EXCLUDED.test_clock, updated_at = now()
        """,
        facts.customer_id,
        access.user_id,
        access.user_id_source,
        customer.email if customer else None,
        facts.livemode,
        # a guest purchase (docs/contract.md §5.1) has no Stripe Customer and is not deleted
        customer.deleted if customer else not facts.is_guest,
        customer.test_clock if customer else None,
    )


async def _write_subscriptions(
    conn: asyncpg.Connection,
    cid: str,
    subs: Iterable[Subscription],
    past_due_since: Mapping[str, float],
) -> None:
    subs = list(subs)
    await conn.execute(
        "DELETE FROM subscriptions WHERE customer_id = $1 AND NOT (subscription_id = ANY($2::text[]))",
        cid,
        [s.id for s in subs],
    )
    if not subs:
        return
    await conn.executemany(
        """
        INSERT INTO subscriptions (subscription_id, customer_id, status, items, trial_end, cancel_at,
            cancel_at_period_end, paused_collection, current_period_end, past_due_since, test_clock, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
        ON CONFLICT (subscription_id) DO UPDATE SET
            customer_id = EXCLUDED.customer_id, status = EXCLUDED.status, items = EXCLUDED.items,
            trial_end = EXCLUDED.trial_end, cancel_at = EXCLUDED.cancel_at,
            cancel_at_period_end = EXCLUDED.cancel_at_period_end,
            paused_collection = EXCLUDED.paused_collection,
            current_period_end = EXCLUDED.current_period_end,
            past_due_since = EXCLUDED.past_due_since, test_clock = EXCLUDED.test_clock, updated_at = now()
        """,
        [
            (
                s.id,
                cid,
                s.status,
                _items_json(s),
                ts(s.trial_end),
                ts(s.cancel_at),
                s.cancel_at_period_end,
                s.collection_paused,
                ts(s.period_end),
                ts(past_due_since.get(s.id)),
                s.test_clock,
            )
            for s in subs
        ],
    )


async def record_events(
    conn: asyncpg.Connection | asyncpg.Pool,
    customer_id: str | None,
    events: Sequence[AcceptedEvent],
    *,
    outcome: str,
    error: str | None = None,
) -> None:
    """Upsert the ledger rows of these events with what became of them."""
    rows = [
        (e.id, e.type, customer_id, e.source, ts(e.received_at_ms / 1000) or datetime.now(UTC), outcome, error)
        for e in events
        if e.id
    ]
    if not rows:
        return
    await conn.executemany(
        """
        INSERT INTO event_ledger (event_id, type, customer_id, source, received_at, processed_at, outcome, attempts, error)
        VALUES ($1, $2, $3, $4, $5, now(), $6, 1, $7)
        ON CONFLICT (event_id) DO UPDATE SET
            customer_id = COALESCE(EXCLUDED.customer_id, event_ledger.customer_id),
            processed_at = now(), outcome = EXCLUDED.outcome,
            attempts = event_ledger.attempts + 1, error = EXCLUDED.error
        """,
        rows,
    )
