"""Stripe-shaped JSON for subscriptions, subscription items, invoices and Checkout Sessions.

As of API version basil the billing period lives on subscription items
(`items.data[].current_period_start/end`), not on the subscription, and an invoice names its
subscription at `parent.subscription_details.subscription` (`parent.type =
"subscription_details"`). The top-level invoice key `subscription` is gone: stripe-python
16.1.0's `Invoice` no longer declares it (https://docs.stripe.com/changelog/basil), so it is
not rendered; read `parent` instead.
"""

from __future__ import annotations

from typing import Any

from . import shapes
from .store import CheckoutSession, Invoice, InvoiceLine, Store, Subscription, SubscriptionItem

JSON = dict[str, Any]

# A subscription embeds the first page of its items, 10 like a list's default `limit`
# (https://docs.stripe.com/api/pagination); the rest come from `GET /v1/subscription_items`
# (assumption on the embedded size: docs/fakestripe.md).
EMBEDDED_ITEMS = 10


def subscription_item(store: Store, sub: Subscription, item: SubscriptionItem) -> JSON:
    price = store.prices[item.price]
    return {
        "id": item.id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": item.created,
        "current_period_end": item.current_period_end,
        "current_period_start": item.current_period_start,
        "discounts": [],
        "metadata": dict(item.metadata),
        "plan": shapes.plan(price),
        "price": shapes.price(price),
        "quantity": item.quantity,
        "subscription": sub.id,
        "tax_rates": [],
    }


def _status_details(sub: Subscription) -> JSON | None:
    if sub.status != "paused" or sub.paused_at is None:
        return None
    return {
        "paused": {
            "subscription": {"type": sub.paused_reason or "pause_requested"},
            "transitioned_at": sub.paused_at,
            "type": "subscription",
        }
    }


def billing_mode(sub: Subscription) -> JSON:
    """`flexible` (the default since 2025-09-30.clover) or `classic`
    (https://docs.stripe.com/billing/subscriptions/billing-mode)."""
    if sub.billing_mode == "flexible":
        return {"flexible": {"proration_discounts": "included"}, "type": "flexible", "updated_at": sub.created}
    return {"flexible": None, "type": "classic", "updated_at": None}


def subscription(store: Store, sub: Subscription) -> JSON:
    pause = None
    if sub.pause_behavior is not None:
        pause = {"behavior": sub.pause_behavior, "resumes_at": sub.pause_resumes_at}
    return {
        "id": sub.id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": sub.billing_cycle_anchor,
        "billing_cycle_anchor_config": None,
        "billing_mode": billing_mode(sub),
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": sub.cancel_at,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "canceled_at": sub.canceled_at,
        "cancellation_details": {
            "comment": None,
            "feedback": None,
            "reason": sub.cancellation_reason,
        },
        "collection_method": sub.collection_method,
        "created": sub.created,
        "currency": sub.currency,
        "customer": sub.customer,
        "customer_account": None,
        "days_until_due": sub.days_until_due,
        "default_payment_method": sub.default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": sub.description,
        "discounts": [],
        "ended_at": sub.ended_at,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": shapes.list_object(
            [subscription_item(store, sub, item) for item in sub.items[:EMBEDDED_ITEMS]],
            f"/v1/subscription_items?subscription={sub.id}",
            len(sub.items) > EMBEDDED_ITEMS,
        ),
        "latest_invoice": sub.latest_invoice,
        "livemode": False,
        "managed_payments": {"enabled": False},
        "metadata": dict(sub.metadata),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": pause,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": sub.start_date,
        "status": sub.status,
        "status_details": _status_details(sub),
        "test_clock": sub.test_clock,
        "transfer_data": None,
        "trial_end": sub.trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": sub.trial_end_behavior}},
        "trial_start": sub.trial_start,
    }


def invoice_line(store: Store, inv: Invoice, line: InvoiceLine) -> JSON:
    price = store.prices[line.price]
    return {
        "id": line.id,
        "object": "line_item",
        "amount": line.amount,
        "currency": inv.currency,
        "description": line.description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": inv.id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": inv.subscription,
                "subscription_item": line.subscription_item,
            },
            "type": "subscription_item_details",
        },
        "period": {"end": line.period_end, "start": line.period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price.id, "product": price.product},
            "type": "price_details",
            "unit_amount_decimal": str(price.unit_amount),
        },
        "quantity": line.quantity,
        "quantity_decimal": str(line.quantity),
        "subscription": inv.subscription,
        "subtotal": line.amount,
        "taxes": [],
    }


def invoice(store: Store, inv: Invoice) -> JSON:
    cust = store.customers.get(inv.customer)
    due = inv.amount_due
    remaining = 0 if inv.status in ("paid", "void") else due - inv.amount_paid
    parent = None
    if inv.subscription is not None:
        parent = {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(inv.subscription_metadata),
                "subscription": inv.subscription,
            },
            "type": "subscription_details",
        }
    return {
        "id": inv.id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Fake Stripe account",
        "account_tax_ids": None,
        "amount_due": due,
        "amount_overpaid": 0,
        "amount_paid": inv.amount_paid,
        "amount_remaining": remaining,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": inv.attempt_count,
        "attempted": inv.attempted,
        "auto_advance": inv.auto_advance,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": inv.finalize_at if inv.status == "draft" else None,
        "billing_reason": inv.billing_reason,
        "collection_method": inv.collection_method,
        "created": inv.created,
        "currency": inv.currency,
        "custom_fields": None,
        "customer": inv.customer,
        "customer_account": None,
        "customer_address": None,
        "customer_email": cust.email if cust else None,
        "customer_name": cust.name if cust else None,
        "customer_phone": cust.phone if cust else None,
        "customer_shipping": None,
        "customer_tax_exempt": "none",
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "due_date": inv.due_date,
        "effective_at": inv.finalized_at,
        "ending_balance": 0 if inv.finalized_at is not None else None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None
        if inv.status == "draft"
        else f"https://invoice.stripe.com/i/fake/{inv.id}",
        "invoice_pdf": None
        if inv.status == "draft"
        else f"https://pay.stripe.com/invoice/fake/{inv.id}/pdf",
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": shapes.list_object(
            [invoice_line(store, inv, line) for line in inv.lines], f"/v1/invoices/{inv.id}/lines"
        ),
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": inv.next_payment_attempt,
        "number": inv.number,
        "on_behalf_of": None,
        "parent": parent,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": inv.period_end,
        "period_start": inv.period_start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": inv.status,
        "status_transitions": {
            "finalized_at": inv.finalized_at,
            "marked_uncollectible_at": inv.marked_uncollectible_at,
            "paid_at": inv.paid_at,
            "voided_at": inv.voided_at,
        },
        "subtotal": due,
        "subtotal_excluding_tax": due,
        "test_clock": inv.test_clock,
        "total": due,
        "total_discount_amounts": [],
        "total_excluding_tax": due,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": inv.created,
    }


def checkout_session(store: Store, s: CheckoutSession) -> JSON:
    amount = sum(store.prices[p].unit_amount * q for p, q in s.line_items if p in store.prices)
    due_now = 0 if (s.trial_period_days or s.trial_end) else amount
    return {
        "id": s.id,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": due_now,
        "amount_total": due_now,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": None,
        "cancel_url": s.cancel_url,
        "client_reference_id": s.client_reference_id,
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": s.created,
        "currency": "usd",
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": s.customer,
        "customer_account": None,
        "customer_creation": s.customer_creation if s.mode == "payment"
        else "always" if s.customer is None and s.status == "open" else None,
        "customer_details": s.customer_details,
        "customer_email": s.customer_email,
        "discounts": [],
        "expires_at": s.expires_at,
        "integration_identifier": None,
        "invoice": s.invoice,
        "invoice_creation": None,
        "livemode": False,
        "locale": None,
        "managed_payments": None,
        "metadata": dict(s.metadata),
        "mode": s.mode,
        "origin_context": None,
        "payment_intent": s.payment_intent,
        "payment_link": s.payment_link,
        "payment_method_collection": s.payment_method_collection,
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": s.payment_status,
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": s.status,
        "submit_type": None,
        "subscription": s.subscription,
        "success_url": s.success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted",
        "url": f"https://checkout.stripe.com/c/pay/{s.id}" if s.status == "open" else None,
        "wallet_options": None,
    }
