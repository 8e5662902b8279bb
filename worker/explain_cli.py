"""`entitled explain --customer ID | --user ID`: a customer's access and its why, in sentences a
support person can read (docs/contract.md §5.3).

What it prints is honest about its sources: the access *now* comes from the public views
(`active_entitlements`, `active_limits`), exactly what the app sees; the *why* is the decision the
last sync recorded (`sync_log`, kept 7 days), word for word as the policy gave it then, with the
moment and reason of that sync. It does not re-judge from stored facts: entitled stores only part
of what Stripe said (no invoices), so a re-judgement could disagree with the decision that was
actually carried out. A grant whose `valid_until` passed since that sync is shown as ended.
`lines` is pure; `explain` only reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

KEEP_NOTE = "no decision recorded in the last 7 days (sync_log); `entitled resync --customer {cid}` records one"


def _when(value: datetime | None) -> str:
    if value is None or value.year >= 9999:
        return "for ever"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def lines(customer_id: str, user_id: str | None, grants: Sequence[Mapping[str, Any]],
          limits: Sequence[Mapping[str, Any]], decision: Mapping[str, Any] | None,
          synced_at: datetime | None, reason: str | None) -> list[str]:
    """The explanation of one customer: its access now (the views), then the last recorded why."""
    out = [f"customer {customer_id}" + (f" (user {user_id})" if user_id else " (no user id known)")]
    shown = set()
    decided = dict(decision.get("features", {})) if decision else {}
    for g in grants:
        qty = f", quantity {g['quantity']}" if g["quantity"] != 1 else ""
        # the table's row the last sync granted it by (docs/contract.md §5), when it recorded one
        row = (decided.get(g["feature"]) or {}).get("row")
        out.append(f"  {g['feature']}: granted until {_when(g['valid_until'])} by {g['source']}{qty}"
                   + (f" [{row}]" if row else ""))
        shown.add(g["feature"])
    for feature in sorted(set(decided) - shown):
        out.append(f"  {feature}: no longer granted (the last sync granted it until "
                   f"{decided[feature].get('valid_until') or 'for ever'}, which has passed)")
    if not grants and not decided:
        out.append("  no features granted")
    for lim in limits:
        out.append(f"  limit {lim['name']} = {lim['value']} until {_when(lim['valid_until'])} by {lim['source']}")
    if decision is None:
        out.append("  why: " + KEEP_NOTE.format(cid=customer_id))
        return out
    out.append(f"  why, as decided by the sync at {_when(synced_at)} ({reason}):")
    out += [f"    {sentence}" for sentence in decision.get("why", [])]
    return out


async def explain(pool: asyncpg.Pool, *, customer: str | None = None, user: str | None = None) -> list[str]:
    """The explanation of a customer, or of every customer of a user; [] when none is known."""
    if user is not None:
        rows = await pool.fetch("SELECT customer_id, user_id FROM customers WHERE user_id = $1 ORDER BY customer_id",
                                user)
    else:
        rows = await pool.fetch("SELECT customer_id, user_id FROM customers WHERE customer_id = $1", customer)
    out: list[str] = []
    for row in rows:
        cid = row["customer_id"]
        grants = await pool.fetch(
            "SELECT a.feature, a.valid_until, a.quantity, e.subscription_id AS source FROM active_entitlements a"
            " JOIN entitlements e USING (customer_id, feature) WHERE a.customer_id = $1 ORDER BY a.feature", cid)
        limits = await pool.fetch(
            "SELECT a.name, a.value, a.valid_until, l.source_id AS source FROM active_limits a"
            " JOIN entitlement_limits l USING (customer_id, name) WHERE a.customer_id = $1 ORDER BY a.name", cid)
        last = await pool.fetchrow(
            "SELECT decision, synced_at, reason FROM sync_log WHERE customer_id = $1"
            " ORDER BY synced_at DESC, id DESC LIMIT 1", cid)
        out += lines(cid, row["user_id"], grants, limits, last["decision"] if last else None,
                     last["synced_at"] if last else None, last["reason"] if last else None)
    return out
