"""The policy's "why" in sentences a support person can read (contract: the policy, "Why").

Pure: it only words what `decide` returned (its `Verdict`s and `Grant`s). Times are shifted by
`offset_s` to the wall clock, as the view stores them (a test-clock customer is judged at the
clock's time).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from shared.access.policy import Access, LimitGrant, Row, Verdict
from shared.access.purchase_policy import FOREVER, PurchaseRow, PurchaseVerdict

_PAST_DUE_FROM = {
    "invoice_due_date": "the unpaid invoice's due date",
    "invoice_finalized": "the unpaid invoice's finalization",
    "recorded": "as first recorded",
    "first_seen": "first seen past_due",
    "given": "as given",
}


def when(seconds: float | None) -> str:
    """`2026-12-08 14:00 UTC`, or `for ever` for a grant without end."""
    if seconds is None or seconds >= FOREVER:
        return "for ever"
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return "for ever"


def _verdict(v: Verdict, features_by_item: Mapping[str, list[str]], offset_s: float) -> str:
    parts: list[str] = []
    for item in v.items:
        features = ", ".join(sorted(features_by_item.get(item.item_id, [])))
        if item.quantity == 0 and item.row not in (Row.NO_ACCESS, Row.UNKNOWN_STATUS):
            # docs/contract.md §5.2: an item of quantity 0 grants nothing, whatever its status.
            parts.append(f"{item.item_id} ({item.product_id}) grants nothing: quantity 0 [{item.row.value}]")
        elif item.grants_now:
            # A feature two items grant is credited to the one granting longer.
            what = features or "nothing more (its features come longer from another item, or it has none)"
            qty = f" x{item.quantity}" if item.quantity != 1 else ""
            parts.append(f"{item.item_id} ({item.product_id}){qty} grants {what} until "
                         f"{when(None if item.until is None else item.until + offset_s)} [{item.row.value}]")
        elif item.row in (Row.NO_ACCESS, Row.UNKNOWN_STATUS):
            parts.append(f"{item.item_id} ({item.product_id}) grants nothing: status {v.status} [{item.row.value}]")
        else:
            ended = when(None if item.until is None else item.until + offset_s)
            parts.append(f"{item.item_id} ({item.product_id}) granted until {ended}, which has passed "
                         f"[{item.row.value}]")
    line = f"{v.subscription_id} is {v.status}: " + ("; ".join(parts) if parts else "no items")
    if v.dispute_id is not None:
        line += f" (suspended: {v.dispute_id} is open or lost)"
    if v.past_due is not None:
        line += (f" (past_due since {when(v.past_due.at + offset_s)}, "
                 f"{_PAST_DUE_FROM.get(v.past_due.source, v.past_due.source)})")
    return line


def _purchase(p: PurchaseVerdict, features_by_item: Mapping[str, list[str]], offset_s: float) -> str:
    """One purchase: what it grants and until when, or why it grants nothing (its §5.1 row)."""
    paid = "" if p.paid_at is None else f", paid {when(p.paid_at + offset_s)}"
    if p.row is not PurchaseRow.PAID:
        why = f" ({p.dispute_id})" if p.dispute_id else ""
        return f"one-time purchase {p.session_id} grants nothing{paid}: {p.row.value}{why}"
    parts = []
    for item in p.items:
        features = ", ".join(sorted(features_by_item.get(item.item_id, []))) or "nothing more"
        until = None if item.until is None or item.until >= FOREVER else item.until + offset_s
        state = "grants" if item.grants_now else "granted, which has passed,"
        end = "for ever" if until is None else f"until {when(until)}"
        parts.append(f"{item.item_id} ({item.product_id}) {state} {features} {end}")
    return f"one-time purchase {p.session_id}{paid}: " + ("; ".join(parts) or "no line items") + f" [{p.row.value}]"


def quantity_sentences(access: Access) -> list[str]:
    """docs/contract.md §5.2 in words: each feature's quantity when it is not simply 1."""
    return [f"{f}: quantity {g.quantity}" for f, g in sorted(access.grants.items()) if g.quantity != 1]


def _limit(limit: LimitGrant, offset_s: float) -> str:
    shares = " + ".join(
        f"{p.per_unit} x {p.quantity} from {p.item_id} ({p.product_id})" for p in limit.parts
    )
    return f"limit {limit.name} = {limit.value} ({shares}) until {when(limit.valid_until + offset_s)}"


def limit_sentences(access: Access, offset_s: float = 0.0) -> list[str]:
    """docs/contract.md §5.2 in words: each limit in force, its parts, and refused metadata."""
    lines = [_limit(access.limits[name], offset_s) for name in sorted(access.limits)]
    lines += [f"{product} gives no limits: {problem}" for product, problem in sorted(access.limit_problems.items())]
    return lines


def sentences(access: Access, offset_s: float = 0.0) -> list[str]:
    """One sentence per subscription the decision weighed, then the quantities and limits,
    then one for the user."""
    features_by_item: dict[str, list[str]] = {}
    for grant in access.grants.values():
        if grant.item_id is not None:
            features_by_item.setdefault(grant.item_id, []).append(grant.feature)
    lines = [_verdict(v, features_by_item, offset_s) for v in access.verdicts]
    lines += [_purchase(p, features_by_item, offset_s) for p in access.purchases]
    if access.customer_gone:
        lines.append("Stripe no longer knows the customer (deleted): nothing is granted")
    elif not access.verdicts and not access.purchases:
        lines.append("no subscriptions: nothing is granted")
    lines += quantity_sentences(access) + limit_sentences(access, offset_s)
    lines.append(f"user {access.user_id} (from {access.user_id_source})" if access.user_id else "no user id known")
    return lines
