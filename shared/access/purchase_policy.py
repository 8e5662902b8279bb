"""One-time purchases, refunds and disputes (docs/contract.md §5.1): pure, no I/O, no clock.

Kept apart from the subscription table (`policy.py`), which calls in here: `judge_purchase`
gives each purchase its row and how long each line item grants (`policy.purchase_items` makes
them granting items beside the subscriptions'); `subscription_dispute` says which dispute, if any, suspends a
subscription (its latest paid invoice's charge) under `DISPUTE_POLICY=revoke`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from shared.access.purchases import Charge, Dispute, Purchase

# A grant for ever (docs/contract.md §7: `valid_until` is `infinity`): 9999-12-31 23:59:59 UTC,
# the latest moment a timestamp column can hold short of infinity; the store writes `infinity`.
FOREVER = 253402300799


class PurchaseRow(StrEnum):
    """The rows of docs/contract.md §5.1, one per way a purchase stands."""

    PAID = "paid one-time purchase: for ever, or metadata.entitled_duration from payment"
    UNPAID = "payment-mode session not paid (waiting for a bank debit, or it failed)"
    REFUNDED = "fully refunded"
    DISPUTED = "payment under an open dispute (DISPUTE_POLICY=revoke)"
    DISPUTE_LOST = "dispute lost (DISPUTE_POLICY=revoke)"


@dataclass(frozen=True)
class LineVerdict:
    item_id: str
    product_id: str
    until: int | None  # FOREVER for ever; None when it grants nothing; may lie in the past
    grants_now: bool
    quantity: int | None = None


@dataclass(frozen=True)
class PurchaseVerdict:
    """Why one purchase grants what it does (docs/contract.md §5.3)."""

    session_id: str
    row: PurchaseRow
    paid_at: int | None
    items: tuple[LineVerdict, ...]
    dispute_id: str | None = None

    @property
    def grants_now(self) -> bool:
        return any(i.grants_now for i in self.items)


def purchase_row(p: Purchase, revoke_disputed: bool) -> tuple[PurchaseRow, Dispute | None]:
    """Which row of §5.1 the purchase is in: a full refund ends it whatever the policy; under
    revoke an open dispute suspends it and a lost one ends it; a partial refund changes nothing
    (only Stripe's `refunded`, set when the whole amount is refunded, counts)."""
    if p.payment_status != "paid":
        return PurchaseRow.UNPAID, None
    charge = p.charge
    if charge is not None and charge.refunded:
        return PurchaseRow.REFUNDED, None
    if revoke_disputed and charge is not None:
        if (lost := charge.lost_dispute) is not None:
            return PurchaseRow.DISPUTE_LOST, lost
        if (open_ := charge.open_dispute) is not None:
            return PurchaseRow.DISPUTED, open_
    return PurchaseRow.PAID, None


def judge_purchase(p: Purchase, now: int, revoke_disputed: bool) -> PurchaseVerdict:
    """One purchase: its row, and each line item's end (`FOREVER`, or paid_at + its duration).
    The moment it was paid is the successful charge's `created` (the session's when the charge
    was not read)."""
    row, dispute = purchase_row(p, revoke_disputed)
    paid_at = (p.charge.created if p.charge is not None else p.created) if p.payment_status == "paid" else None
    items = []
    for item in p.line_items:
        if row is not PurchaseRow.PAID or paid_at is None or item.quantity == 0:
            items.append(LineVerdict(item.id, item.product_id, None, False, item.quantity))
            continue
        until = FOREVER if item.duration_s is None else paid_at + item.duration_s
        items.append(LineVerdict(item.id, item.product_id, until, until > now, item.quantity))
    return PurchaseVerdict(p.session_id, row, paid_at, tuple(items), dispute.id if dispute else None)


def subscription_dispute(
    paid_payment_intent: str | None, charges: Iterable[Charge], revoke_disputed: bool
) -> Dispute | None:
    """The dispute that suspends a subscription: an open (or lost) one on the charge of its
    latest paid invoice, under revoke (docs/contract.md §5.1: it grants nothing until the
    dispute closes won)."""
    if not revoke_disputed or paid_payment_intent is None:
        return None
    for charge in charges:
        if charge.payment_intent == paid_payment_intent:
            found = charge.open_dispute or charge.lost_dispute
            if found is not None:
                return found
    return None
