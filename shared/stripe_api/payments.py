"""Reads for one-time purchases, refunds and disputes (docs/contract.md §5.1, §8's 2026-12 list).

Kept beside `reader.py` (whose methods a subscription sync uses) so that a plain subscription
customer's sync never reaches these: `worker/payments.py` decides when they run. Each returns
parsed facts (`shared.access.purchases`) or plain dicts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, cast

from stripe.params import InvoiceRetrieveParams
from stripe.params.checkout import SessionLineItemListParams

from shared.access import Charge, Purchase, is_purchase, parse_charge, parse_purchase
from shared.stripe_api.reader import PAGE, StripeReader, retrieved


async def _list(reader: StripeReader, path: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [obj async for obj in reader.list_all(path, params)]


async def line_items(reader: StripeReader, session_id: str) -> list[dict[str, Any]]:
    """A session's line items, each price with its product (for `metadata.entitled_duration`:
    the price first, then the product): `GET /v1/checkout/sessions/{id}/line_items`."""
    params = cast(SessionLineItemListParams, {"limit": PAGE, "expand": ["data.price.product"]})
    page = await reader.client.v1.checkout.sessions.line_items.list_async(session_id, params)
    return [i.to_dict() async for i in page.auto_paging_iter()]


async def with_disputes(reader: StripeReader, raw: Iterable[dict[str, Any]]) -> tuple[Charge, ...]:
    """Charges with their disputes: `GET /v1/disputes?charge=` only for a charge Stripe marks
    `disputed` (https://docs.stripe.com/api/charges/object#charge_object-disputed)."""
    charges = list(raw)

    async def one(ch: dict[str, Any]) -> Charge:
        disputes = await _list(reader, "/v1/disputes", {"charge": ch["id"]}) if ch.get("disputed") else []
        return parse_charge(ch, disputes)

    return tuple(await asyncio.gather(*(one(c) for c in charges)))


async def charges_of_customer(reader: StripeReader, customer_id: str) -> tuple[Charge, ...]:
    return await with_disputes(reader, await _list(reader, "/v1/charges", {"customer": customer_id}))


async def charges_of_intent(reader: StripeReader, payment_intent: str) -> tuple[Charge, ...]:
    return await with_disputes(reader, await _list(reader, "/v1/charges", {"payment_intent": payment_intent}))


async def purchases_from(
    reader: StripeReader, sessions: Iterable[Mapping[str, Any]], charges: Iterable[Charge]
) -> tuple[Purchase, ...]:
    """The completed payment-mode sessions among `sessions`, with their line items, side by side."""
    found = [s for s in sessions if is_purchase(s)]
    items = await asyncio.gather(*(line_items(reader, str(s["id"])) for s in found))
    paid = tuple(charges)
    return tuple(parse_purchase(s, i, paid) for s, i in zip(found, items, strict=True))


async def customer_sessions(reader: StripeReader, customer_id: str) -> list[dict[str, Any]]:
    """The customer's completed Checkout Sessions, newest first."""
    return await _list(reader, "/v1/checkout/sessions", {"customer": customer_id, "status": "complete"})


async def guest_purchase(reader: StripeReader, session_id: str) -> tuple[dict[str, Any] | None, tuple[Purchase, ...]]:
    """A session without a Customer (docs/contract.md §5.1): the session, and itself as a
    purchase with its line items and its PaymentIntent's charges (none while unpaid)."""
    session = await reader.checkout_session(session_id)
    if session is None or not is_purchase(session):
        return session, ()
    pi = session.get("payment_intent")
    pi_id = pi.get("id") if isinstance(pi, Mapping) else pi
    charges_task = charges_of_intent(reader, str(pi_id)) if isinstance(pi_id, str) and pi_id else None
    items, charges = await asyncio.gather(
        line_items(reader, session_id), charges_task if charges_task is not None else _none()
    )
    return session, (parse_purchase(session, items, charges),)


async def _none() -> tuple[Charge, ...]:
    return ()


async def charge(reader: StripeReader, charge_id: str) -> dict[str, Any] | None:
    return await retrieved(reader.client.v1.charges.retrieve_async(charge_id))


async def session_of_intent(reader: StripeReader, payment_intent: str) -> dict[str, Any] | None:
    """The Checkout Session that made a PaymentIntent (`GET /v1/checkout/sessions?payment_intent=`)."""
    page = await reader.page("/v1/checkout/sessions", {"payment_intent": payment_intent})
    data = page.get("data") or []
    return data[0] if data else None


async def invoice_payment_intent(reader: StripeReader, invoice_id: str) -> str | None:
    """The PaymentIntent that paid an invoice: its `payments` (includable,
    https://docs.stripe.com/api/invoice-payment); None when it is not paid by one."""
    raw = await retrieved(reader.client.v1.invoices.retrieve_async(
        invoice_id, cast(InvoiceRetrieveParams, {"expand": ["payments"]})))
    if raw is None:
        return None
    payments = raw.get("payments")
    for entry in payments.get("data", []) if isinstance(payments, Mapping) else []:
        payment = entry.get("payment") if isinstance(entry, Mapping) else None
        if isinstance(payment, Mapping) and entry.get("status") == "paid":
            pi = payment.get("payment_intent")
            pi_id = pi.get("id") if isinstance(pi, Mapping) else pi
            if isinstance(pi_id, str):
                return pi_id
    return None
