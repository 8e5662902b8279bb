"""One-time purchases in the fault run (docs/contract.md §5.1): the scripts' steps, and the
truth's purchase facts, built from the fake's store the way §5.1 describes them.

Scripts: a guest purchase (a Checkout Session without a Customer, the customer keyed by the
session id) or a Customer's (`customer_creation=always`), a lifetime deal or a 30-day pass; then
a full or partial refund, a dispute won or lost, or nothing.
"""

from __future__ import annotations

from typing import Any, cast

from fakestripe.store import Store
from stripe.params import RefundCreateParams
from stripe.params.checkout import SessionCreateParams

from bench.fault_customers import CARD, Script
from fakestripe import shapes, shapes_payments
from shared.access import Charge, Purchase, parse_charge, parse_purchase


async def purchase(s: Script, *, guest: bool) -> None:
    """A payment-mode Checkout paid by card; then what happens to the payment."""
    price = s.rng.choice([s.catalog.lifetime, s.catalog.pass30])
    params: dict[str, Any] = {"mode": "payment", "line_items": [{"price": price, "quantity": 1}],
                              "success_url": "https://example.com/ok", "client_reference_id": s.user}
    if not guest:
        params["customer"] = await s.customer(card=CARD)
    created = await s.client.v1.checkout.sessions.create_async(cast(SessionCreateParams, params))
    done = await s.d.ctl.complete_checkout(created.id, payment_method=CARD)
    s.c.id = str(done["customer"] or done["id"])
    s.act("purchase_guest" if guest else "purchase_customer")
    await s.pause()
    pi = await s.client.v1.payment_intents.retrieve_async(str(done["payment_intent"]))
    charge = str(pi.latest_charge)
    fate = s.rng.choice(["full_refund", "partial_refund", "dispute_won", "dispute_lost", "kept"])
    if fate.endswith("refund"):
        refund: dict[str, Any] = {"charge": charge}
        if fate == "partial_refund":
            refund["amount"] = 100
        await s.client.v1.refunds.create_async(cast(RefundCreateParams, refund))
    elif fate.startswith("dispute"):
        dispute = await s.d.ctl.dispute_charge(charge)
        await s.pause()
        await s.d.ctl.resolve_dispute(str(dispute["id"]), fate.removeprefix("dispute_"))
    s.act(fate)


async def guest_purchase(s: Script) -> None:
    await purchase(s, guest=True)


async def customer_purchase(s: Script) -> None:
    await purchase(s, guest=False)


def _line_items(store: Store, session_id: str) -> list[dict[str, Any]]:
    session = store.sessions[session_id]
    items = shapes_payments.session_line_items(store, session)
    for item in items:
        product = store.products.get(item["price"]["product"])
        if product is not None:  # expanded, as the service asks for it
            item["price"]["product"] = shapes.product(product)
    return items


def _charges(store: Store, payment_intent: str | None) -> list[Charge]:
    found = []
    for ch in store.payments.charges.values():
        if payment_intent is not None and ch.payment_intent == payment_intent:
            disputes = [shapes_payments.dispute(store, d) for d in store.payments.disputes.values() if d.charge == ch.id]
            found.append(parse_charge(shapes_payments.charge(store, ch), disputes))
    return found


def purchases_of(store: Store, customer_id: str) -> tuple[tuple[Purchase, ...], tuple[Charge, ...]]:
    """The completed payment-mode sessions of a customer (a guest: the session itself), each
    with its line items and its PaymentIntent's charges."""
    sessions = [s for s in store.sessions.values() if s.mode == "payment" and s.status == "complete"
                and (s.id == customer_id if customer_id.startswith("cs_") else s.customer == customer_id)]
    purchases, charges = [], []
    for session in sessions:
        paid = _charges(store, session.payment_intent)
        charges += paid
        raw = {"id": session.id, "mode": session.mode, "status": session.status, "created": session.created,
               "payment_status": session.payment_status, "payment_intent": session.payment_intent,
               "client_reference_id": session.client_reference_id}
        purchases.append(parse_purchase(raw, _line_items(store, session.id), paid))
    return tuple(purchases), tuple(charges)
