"""Postgres side of one-time purchases (docs/contract.md §5.1): `purchases` and the per-customer
`reads_payments` flag (migration 0009), written inside the sync's own transaction."""

from __future__ import annotations

import asyncpg

from shared.access import Access, CustomerFacts


def reads_payments_after(facts: CustomerFacts, access: Access) -> bool:
    """Whether the next syncs must read purchases and charges: the customer has purchases, or a
    payment of it is under an open or lost dispute. Only those facts, read this sync, say so: a
    sync that did not read them keeps the flag as it was (`write`)."""
    del access
    return bool(facts.purchases) or any(c.open_dispute or c.lost_dispute for c in facts.charges)


async def reads_payments(conn: asyncpg.Connection, customer_id: str) -> bool:
    found = await conn.fetchval("SELECT reads_payments FROM customer_sync WHERE customer_id = $1", customer_id)
    return bool(found)


async def write(conn: asyncpg.Connection, facts: CustomerFacts, access: Access) -> None:
    """Record the purchases this sync read, with their rows; nothing when it read none (a plain
    subscription sync leaves what an earlier one recorded)."""
    if not facts.payments_read:
        return
    cid = facts.customer_id
    await conn.execute("UPDATE customer_sync SET reads_payments = $2 WHERE customer_id = $1", cid,
                       reads_payments_after(facts, access))
    rows = {v.session_id: v for v in access.purchases}
    await conn.execute(
        "DELETE FROM purchases WHERE customer_id = $1 AND NOT (session_id = ANY($2::text[]))", cid, list(rows)
    )
    if not facts.purchases:
        return
    await conn.executemany(
        """
        INSERT INTO purchases (session_id, customer_id, row, products, payment_intent, charge_id, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, now())
        ON CONFLICT (session_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, row = EXCLUDED.row,
            products = EXCLUDED.products, payment_intent = EXCLUDED.payment_intent,
            charge_id = EXCLUDED.charge_id, updated_at = now()
        """,
        [
            (p.session_id, cid, rows[p.session_id].row.name if p.session_id in rows else "UNPAID",
             sorted(p.product_ids), p.payment_intent, p.charge.id if p.charge else None)
            for p in facts.purchases
        ],
    )
