"""Stripe-shaped JSON for PaymentIntents, Charges, Refunds, Disputes, Checkout line items and
Payment Links.

Top-level keys are the ones stripe-python 16.1.0's resource classes declare (`stripe.Charge`,
`stripe.Dispute`, `stripe.PaymentIntent`, `stripe.Refund`, `stripe.LineItem`,
`stripe.PaymentLink`): every non-optional one, plus the optional ones Stripe's example objects
(openapi fixtures3.json) show. `charge.refunds` is left out: since API version 2022-11-15 it is
only returned when expanded (https://docs.stripe.com/upgrades#2022-11-15).
"""

from __future__ import annotations

from typing import Any

from . import shapes
from .payment_objects import Charge, Dispute, PaymentIntent, PaymentLink, Refund
from .store import CheckoutSession, Store

JSON = dict[str, Any]

EVIDENCE_KEYS = (
    "access_activity_log", "billing_address", "cancellation_policy",
    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
    "uncategorized_file", "uncategorized_text",
)  # fmt: skip


def _card_details(store: Store, pm_id: str | None) -> JSON:
    pm = store.payment_methods.get(pm_id or "")
    return {
        "brand": pm.brand if pm else "visa",
        "country": "US",
        "exp_month": 12,
        "exp_year": 2034,
        "funding": "credit",
        "last4": pm.last4 if pm else "4242",
        "network": pm.brand if pm else "visa",
    }


def _method_details(store: Store, charge: Charge) -> JSON:
    if charge.payment_method_type == "card":
        return {"card": _card_details(store, charge.payment_method), "type": "card"}
    return {charge.payment_method_type: {}, "type": charge.payment_method_type}


def payment_intent(pi: PaymentIntent) -> JSON:
    received = pi.amount if pi.status == "succeeded" else 0
    return {
        "id": pi.id,
        "object": "payment_intent",
        "amount": pi.amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": received,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{pi.id}_secret_fake",
        "confirmation_method": "automatic",
        "created": pi.created,
        "currency": pi.currency,
        "customer": pi.customer,
        "customer_account": None,
        "description": pi.description,
        "excluded_payment_method_types": None,
        "last_payment_error": dict(pi.last_payment_error) if pi.last_payment_error else None,
        "latest_charge": pi.latest_charge,
        "livemode": False,
        "managed_payments": None,
        "metadata": dict(pi.metadata),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": pi.payment_method,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": list(pi.payment_method_types),
        "payment_record": None,
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": pi.status,
        "transfer_data": None,
        "transfer_group": None,
    }


def charge(store: Store, ch: Charge) -> JSON:
    failed = ch.status == "failed"
    return {
        "id": ch.id,
        "object": "charge",
        "amount": ch.amount,
        "amount_captured": ch.captured_amount,
        "amount_refunded": ch.amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": {
            "address": {
                "city": None, "country": None, "line1": None, "line2": None,
                "postal_code": None, "state": None,
            },
            "email": ch.receipt_email,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "calculated_statement_descriptor": "FAKESTRIPE",
        "captured": ch.status == "succeeded",
        "created": ch.created,
        "currency": ch.currency,
        "customer": ch.customer,
        "description": ch.description,
        "disputed": ch.disputed,
        "failure_balance_transaction": None,
        "failure_code": ch.failure_code,
        "failure_message": ch.failure_message,
        "fraud_details": {},
        "livemode": False,
        "metadata": dict(ch.metadata),
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "declined_by_network" if failed else "approved_by_network",
            "reason": "generic_decline" if failed else None,
            "risk_level": "normal",
            "seller_message": "The bank did not return any further details with this decline."
            if failed
            else "Payment complete.",
            "type": "issuer_declined" if failed else "authorized",
        },
        "paid": ch.status == "succeeded",
        "payment_intent": ch.payment_intent,
        "payment_method": ch.payment_method,
        "payment_method_details": _method_details(store, ch),
        "receipt_email": ch.receipt_email,
        "receipt_number": None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/{ch.id}",
        "refunded": ch.refunded,
        "review": None,
        "shipping": None,
        "source": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": ch.status,
        "transfer": None,
        "transfer_data": None,
        "transfer_group": None,
    }


def refund(store: Store, re: Refund) -> JSON:
    ch = store.payments.charges.get(re.charge)
    return {
        "id": re.id,
        "object": "refund",
        "amount": re.amount,
        "balance_transaction": None,
        "charge": re.charge,
        "created": re.created,
        "currency": re.currency,
        "customer": ch.customer if ch else None,
        "customer_account": None,
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "failure_balance_transaction": None,
        "metadata": dict(re.metadata),
        "payment_intent": re.payment_intent,
        "payment_method": ch.payment_method if ch else None,
        "pending_reason": None,
        "reason": re.reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": re.status,
        "transfer_reversal": None,
    }


def dispute(store: Store, dp: Dispute) -> JSON:
    evidence: JSON = dict.fromkeys(EVIDENCE_KEYS)
    evidence["uncategorized_text"] = dp.evidence_text
    evidence["enhanced_evidence"] = {}
    ch = store.payments.charges.get(dp.charge)
    return {
        "id": dp.id,
        "object": "dispute",
        "amount": dp.amount,
        "balance_transactions": [],
        "charge": dp.charge,
        "created": dp.created,
        "currency": dp.currency,
        "enhanced_eligibility_types": [],
        "evidence": evidence,
        "evidence_details": {
            "due_by": dp.due_by,
            "enhanced_eligibility": {},
            "has_evidence": dp.evidence_text is not None,
            "past_due": False,
            "submission_count": 1 if dp.submitted else 0,
            "submission_method": "manual" if dp.submitted else None,
        },
        "is_charge_refundable": not dp.is_inquiry and dp.status not in ("won", "lost"),
        "livemode": False,
        "metadata": dict(dp.metadata),
        "payment_intent": dp.payment_intent,
        "payment_method_details": {
            "card": {
                "brand": _card_details(store, ch.payment_method if ch else None)["brand"],
                "case_type": "inquiry" if dp.is_inquiry else "chargeback",
                "network": _card_details(store, ch.payment_method if ch else None)["network"],
                "network_reason_code": "10.4",
            },
            "type": "card",
        },
        "reason": dp.reason,
        "status": dp.status,
    }


def checkout_line_item(store: Store, item_id: str, price_id: str, quantity: int) -> JSON:
    """A Checkout Session's line item (`object: "item"`); its `price` is always the whole
    Price object (https://docs.stripe.com/api/checkout/sessions/line_items)."""
    price = store.prices[price_id]
    product = store.products.get(price.product)
    amount = price.unit_amount * quantity
    return {
        "id": item_id,
        "object": "item",
        "adjustable_quantity": None,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price.currency,
        "description": product.name if product else price.product,
        "metadata": {},
        "price": shapes.price(price),
        "quantity": quantity,
    }


def session_line_items(store: Store, session: CheckoutSession) -> list[JSON]:
    ids = store.payments.line_item_ids.setdefault(session.id, [])
    while len(ids) < len(session.line_items):
        ids.append(store.new_id("checkout_line_item"))
    return [
        checkout_line_item(store, item_id, price_id, quantity)
        for item_id, (price_id, quantity) in zip(ids, session.line_items, strict=False)
    ]


def payment_link(link: PaymentLink) -> JSON:
    return {
        "id": link.id,
        "object": "payment_link",
        "active": link.active,
        "after_completion": {
            "hosted_confirmation": {"custom_message": None},
            "type": "hosted_confirmation",
        }
        if link.after_completion_url is None
        else {"redirect": {"url": link.after_completion_url}, "type": "redirect"},
        "allow_promotion_codes": False,
        "application": None,
        "application_fee_amount": None,
        "application_fee_percent": None,
        "automatic_tax": {"enabled": False, "liability": None},
        "billing_address_collection": "auto",
        "consent_collection": None,
        "currency": "usd",
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer_creation": link.customer_creation,
        "inactive_message": None,
        "invoice_creation": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": dict(link.metadata),
        "on_behalf_of": None,
        "payment_intent_data": None,
        "payment_method_collection": "always",
        "payment_method_options": None,
        "payment_method_types": None,
        "phone_number_collection": {"enabled": False},
        "restrictions": None,
        "shipping_address_collection": None,
        "shipping_options": [],
        "submit_type": "auto",
        "subscription_data": None,
        "tax_id_collection": {"enabled": False, "required": "never"},
        "transfer_data": None,
        "url": f"https://buy.stripe.com/test_{link.id.removeprefix('plink_')}",
    }


def resolve(store: Store, object_id: str) -> JSON | None:
    """The object an id names, for `expand[]`, or None."""
    found = store.payments
    if object_id.startswith("ch_") and object_id in found.charges:
        return charge(store, found.charges[object_id])
    if object_id.startswith("pi_") and object_id in found.payment_intents:
        return payment_intent(found.payment_intents[object_id])
    if object_id.startswith("dp_") and object_id in found.disputes:
        return dispute(store, found.disputes[object_id])
    if object_id.startswith("re_") and object_id in found.refunds:
        return refund(store, found.refunds[object_id])
    if object_id.startswith("plink_") and object_id in found.payment_links:
        return payment_link(found.payment_links[object_id])
    return None
