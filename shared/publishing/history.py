"""What each sync saw and decided, for the customer timeline (`GET /v1/customers/C/timeline`).

`record_sync` runs inside the sync's write transaction (worker/store.py) and stores one compact
`sync_log` row: what Stripe said (the customer and its subscriptions, as the policy read them)
and the decision with its why (which subscription grants which feature until when, and why the
others grant nothing). Rows are kept `KEEP_DAYS` (pruned by the delivery housekeeping).
`stripe_summary` and `decision_summary` are pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.access import Access, CustomerFacts, Subscription, explain

KEEP_DAYS = 7


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return None  # a grant for ever


def _subscription(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "status": sub.status,
        "products": sorted(sub.product_ids),
        "period_end": iso(sub.period_end),
        "trial_end": iso(sub.trial_end),
        "cancel_at": iso(sub.cancel_at),
        "cancel_at_period_end": sub.cancel_at_period_end,
        "collection_paused": sub.collection_paused,
        "past_due_since": iso(sub.past_due_since),
    }


def stripe_summary(facts: CustomerFacts) -> dict[str, Any]:
    """What Stripe said at this sync, compactly (no e-mail addresses, no payloads)."""
    customer = facts.customer
    return {
        "customer": None if customer is None else {
            "deleted": customer.deleted, "metadata_user_id": customer.metadata_user_id,
            "test_clock": customer.test_clock, "livemode": customer.livemode,
        },
        "subscriptions": [_subscription(s) for s in facts.subscriptions],
        "checkout_user_id": facts.checkout_user_id,
        "clock_now": iso(facts.clock_now),
    }


def decision_summary(access: Access, offset_s: float) -> dict[str, Any]:
    """The decision with its why; times on the wall clock, like the view's."""
    return {
        "features": {f: {"valid_until": iso(g.valid_until + offset_s), "subscription_id": g.subscription_id,
                         "row": None if g.row is None else g.row.value, "item_id": g.item_id}
                     for f, g in sorted(access.grants.items())},
        "user_id": access.user_id,
        "user_id_source": access.user_id_source,
        # docs/contract.md §5.2: feature -> quantity, and each limit with until when and from what
        "quantities": access.quantities,
        "limits": {n: {"value": g.value, "valid_until": iso(g.valid_until + offset_s), "source_id": g.source_id}
                   for n, g in sorted(access.limits.items())},
        "next_check": iso(None if access.next_check is None else access.next_check + offset_s),
        "why": explain.sentences(access, offset_s),
    }


async def record_sync(conn: asyncpg.Connection, *, facts: CustomerFacts, access: Access, offset_s: float,
                      reason: str, event_ids: Sequence[str], changed: bool, version: int) -> None:
    """Store this sync's summary; call inside the sync's write transaction."""
    await conn.execute(
        "INSERT INTO sync_log (customer_id, reason, event_ids, changed, version, stripe, decision)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)",
        facts.customer_id, reason, list(event_ids), changed, version,
        stripe_summary(facts), decision_summary(access, offset_s),
    )


async def prune(pool: asyncpg.Pool) -> None:
    await pool.execute(f"DELETE FROM sync_log WHERE synced_at < now() - interval '{KEEP_DAYS} days'")
