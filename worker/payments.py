"""When a sync reads one-time purchases, charges and disputes, and how (docs/contract.md §5.1).

These reads happen only for a customer that has purchases (or a payment under dispute), when a
purchase, charge or dispute event arrived, when the sweep found a purchase, or when the sync
lists the customer's Checkout Sessions anyway (for its user): a plain subscription customer's
sync costs no more requests than before. A guest purchase (a session without a Customer) is a
customer of its own, keyed by the session id (`cs_...`), read from its session alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from enum import Enum
from typing import Any

from shared.access import Charge, CustomerFacts, Known, Purchase, Subscription, is_purchase, ref_id
from shared.coordination import CHARGE_TYPES, Run, Unit, UnitKind, base_type
from shared.stripe_api import StripeReader
from shared.stripe_api import payments as reads

# Reasons a run is queued for that call for the payment reads: the operator's full resync, and
# a purchase or dispute found by resolving a session or charge, or by the sweep.
PAYMENT_REASONS = frozenset({"resync", "purchase"})


class Plan(Enum):
    NONE = "none"  # subscriptions only, as before
    SESSIONS = "sessions"  # the sessions are listed anyway: charges only if a purchase shows
    FULL = "full"  # sessions, charges (and disputes of disputed charges)


def is_guest(customer_id: str) -> bool:
    return customer_id.startswith("cs_")


def plan(run: Run, known: Known, *, sessions_wanted: bool) -> Plan:
    """What this sync of a real Customer reads beside its subscriptions."""
    if known.reads_payments or run.reason in PAYMENT_REASONS:
        return Plan.FULL
    for event in run.events:
        kind = base_type(event.type)
        if kind in CHARGE_TYPES or kind.startswith("checkout.session.async_payment_") or event.mode == "payment":
            return Plan.FULL
    return Plan.SESSIONS if sessions_wanted else Plan.NONE


def _user_from(sessions: list[dict[str, object]]) -> str | None:
    """client_reference_id of the newest completed session that has one (Stripe lists newest first)."""
    for session in sessions:
        ref = session.get("client_reference_id")
        if isinstance(ref, str) and ref.strip():
            return ref.strip()
    return None


async def read_customer(reader: StripeReader, cid: str, run: Run, known: Known, *, with_checkout: bool,
                        with_entitlements: bool) -> CustomerFacts:
    """A real Customer's facts, with its purchases and charges when the plan says so."""
    chosen = plan(run, known, sessions_wanted=with_checkout)
    facts = await reader.read_customer(cid, with_checkout=with_checkout and chosen is Plan.NONE,
                                       with_entitlements=with_entitlements)
    if chosen is Plan.NONE or facts.customer is None or facts.customer.deleted:
        return facts
    sessions = await reads.customer_sessions(reader, cid)
    if with_checkout:
        facts = replace(facts, checkout_user_id=_user_from(sessions))
    has_purchase = any(is_purchase(s) for s in sessions)
    if chosen is Plan.SESSIONS and not has_purchase:
        return facts
    charges = await reads.charges_of_customer(reader, cid)
    purchases = await reads.purchases_from(reader, sessions, charges)
    subscriptions = await _with_paid_intents(reader, facts.subscriptions, charges, purchases)
    return replace(facts, purchases=purchases, charges=charges, subscriptions=subscriptions, payments_read=True)


async def _with_paid_intents(
    reader: StripeReader, subs: tuple[Subscription, ...], charges: tuple[Charge, ...], purchases: tuple[Purchase, ...]
) -> tuple[Subscription, ...]:
    """Only when a charge that paid no purchase is under an open or lost dispute: the
    PaymentIntent of each subscription's latest invoice, when paid (`GET /v1/invoices/{id}`
    with its `payments`), so that the policy finds the subscription the dispute concerns."""
    bought = {p.payment_intent for p in purchases}
    if not any((c.open_dispute or c.lost_dispute) and c.payment_intent not in bought for c in charges):
        return subs
    out = []
    for sub in subs:
        invoice = sub.latest_invoice
        if invoice is not None and invoice.status == "paid":
            sub = replace(sub, paid_payment_intent=await reads.invoice_payment_intent(reader, invoice.id))
        out.append(sub)
    return tuple(out)


async def read_guest(reader: StripeReader, session_id: str) -> CustomerFacts:
    """A guest purchase: its session (the user is its `client_reference_id`), line items and the
    charges of its PaymentIntent. No subscriptions, no Customer."""
    session, purchases = await reads.guest_purchase(reader, session_id)
    user = _user_from([session]) if session is not None else None
    return CustomerFacts(session_id, None, (), user, frozenset(), purchases=purchases,
                         charges=tuple(p.charge for p in purchases if p.charge is not None), payments_read=True,
                         guest_livemode=bool(session and session.get("livemode")))


async def resolve(reader: StripeReader, unit: Unit) -> tuple[str | None, bool]:
    """The customer a Checkout Session or a charge belongs to, and whether it is a purchase's.

    A session: its Customer; a completed payment-mode session without one is the guest
    customer keyed by its id. A charge (a refund or dispute event that named no customer): its
    Customer, else the session that made its PaymentIntent, resolved as above; a subscription
    invoice's charge always has a Customer."""
    if unit.kind is UnitKind.CHECKOUT:
        return _session_owner(await reader.checkout_session(unit.id))
    charge = await reads.charge(reader, unit.id)
    if charge is None:
        return None, False
    customer = ref_id(charge.get("customer"))
    if customer is not None:
        return customer, True
    pi = ref_id(charge.get("payment_intent"))
    return _session_owner(await reads.session_of_intent(reader, pi) if pi else None)


def _session_owner(session: Mapping[str, Any] | None) -> tuple[str | None, bool]:
    if session is None:
        return None, False
    purchase = is_purchase(session)
    customer = ref_id(session.get("customer"))
    if customer is None and purchase:
        customer = ref_id(session.get("id"))
    return customer, purchase
