"""PaymentIntents and Charges, Refunds and Disputes: what happens to a payment after it is made.

- A payment is a PaymentIntent with one Charge (https://docs.stripe.com/payments/paymentintents/lifecycle).
  A card succeeds at once; a bank debit (`pm_usBankAccount_*`, see `ASYNC_METHODS`) stays
  `processing` (charge `pending`) until it settles, which the fake does on a control call
  (https://docs.stripe.com/payments/payment-methods#payment-notification: "delayed notification").
- Refunds (`POST /v1/refunds`, https://docs.stripe.com/refunds, https://docs.stripe.com/api/refunds/create):
  full or partial, the charge's `amount_refunded` grows and `refunded` turns true once it equals
  `amount`. Events: `charge.refunded` (the charge), `refund.created` (the refund). A charge under
  an open chargeback cannot be refunded (400 `charge_disputed`).
- Disputes (https://docs.stripe.com/disputes/how-disputes-work, https://docs.stripe.com/disputes/api):
  a chargeback opens `needs_response` (`charge.dispute.created`, `charge.dispute.funds_withdrawn`);
  evidence submitted with `POST /v1/disputes/{id}` moves it to `under_review`
  (`charge.dispute.updated`); `POST /v1/disputes/{id}/close` accepts it: `lost`
  (`charge.dispute.closed`). Stripe's test mode decides a submitted dispute by its evidence text:
  `winning_evidence` wins (`charge.dispute.closed`, `charge.dispute.funds_reinstated`),
  `losing_evidence` loses (`charge.dispute.closed`) (https://docs.stripe.com/testing#disputes).
  An inquiry (`warning_needs_response`) is not a chargeback: it closes `warning_closed`.
  Test cards `pm_card_createDispute` (fraudulent) and `pm_card_createDisputeInquiry` open a
  dispute right after the charge succeeds, as on Stripe (https://docs.stripe.com/testing#disputes).
- Subscription invoices paid by card get a PaymentIntent and a Charge too (no `charge.*` or
  `payment_intent.*` events for them: see "assumptions" in docs/fakestripe.md), listed in the
  invoice's `payments` (`expand[]=payments`, https://docs.stripe.com/api/invoice-payment), so
  that a dispute on a renewal's charge can be modelled.
"""

from __future__ import annotations

from typing import Any

from . import errors, invoicing, shapes_payments
from .clock import DAY_S
from .core import Core
from .payment_objects import Charge, Dispute, PaymentIntent, Refund
from .store import Invoice

JSON = dict[str, Any]

# Bank debits that settle later: test id -> (settles successfully, payment method type).
ASYNC_METHODS: dict[str, tuple[bool, str]] = {
    "pm_usBankAccount_success": (True, "us_bank_account"),
    "pm_usBankAccount_failure": (False, "us_bank_account"),
}
# Cards whose charges succeed and are then disputed: test id -> (reason, is an inquiry).
DISPUTE_CARDS: dict[str, tuple[str, bool]] = {
    "pm_card_createDispute": ("fraudulent", False),
    "pm_card_createDisputeInquiry": ("fraudulent", True),
}
OPEN_DISPUTE = frozenset({"needs_response", "under_review"})
RESPONSE_WINDOW_S = 7 * DAY_S


def is_known_method(ref: str) -> bool:
    return ref in invoicing.TEST_CARDS or ref in ASYNC_METHODS or ref in DISPUTE_CARDS


def charge_json(core: Core, ch: Charge) -> JSON:
    return shapes_payments.charge(core.store, ch)


def pi_json(pi: PaymentIntent) -> JSON:
    return shapes_payments.payment_intent(pi)


def new_payment(
    core: Core,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    payment_method: str | None,
    method_type: str,
    clock: str | None,
    email: str | None = None,
    description: str | None = None,
) -> tuple[PaymentIntent, Charge]:
    """A PaymentIntent and its first Charge, neither announced yet."""
    store = core.store
    now = core.now(clock)
    pi = PaymentIntent(
        id=store.new_id("payment_intent"), created=now, seq=store.next_seq(), amount=amount,
        currency=currency, customer=customer, payment_method=payment_method,
        description=description, payment_method_types=(method_type,), clock=clock,
    )  # fmt: skip
    ch = Charge(
        id=store.new_id("charge"), created=now, seq=store.next_seq(), amount=amount,
        currency=currency, customer=customer, payment_intent=pi.id, payment_method=payment_method,
        status="pending", payment_method_type=method_type, description=description, clock=clock,
        receipt_email=email,
    )  # fmt: skip
    pi.latest_charge = ch.id
    store.payments.payment_intents[pi.id] = pi
    store.payments.charges[ch.id] = ch
    return pi, ch


def succeed(core: Core, pi: PaymentIntent, *, emit: bool = True) -> Charge:
    ch = core.store.payments.charges[pi.latest_charge or ""]
    ch.status, pi.status = "succeeded", "succeeded"
    if emit:
        core.emit("charge.succeeded", charge_json(core, ch), ch.clock)
        core.emit("payment_intent.succeeded", pi_json(pi), pi.clock)
    return ch


def process(core: Core, pi: PaymentIntent) -> None:
    """A bank debit was submitted: `processing` until it settles."""
    ch = core.store.payments.charges[pi.latest_charge or ""]
    ch.status, pi.status = "pending", "processing"
    core.emit("charge.pending", charge_json(core, ch), ch.clock)
    core.emit("payment_intent.processing", pi_json(pi), pi.clock)


def fail(core: Core, pi: PaymentIntent) -> None:
    ch = core.store.payments.charges[pi.latest_charge or ""]
    ch.status, pi.status = "failed", "requires_payment_method"
    ch.failure_code, ch.failure_message = "insufficient_funds", "Your account has insufficient funds."
    pi.last_payment_error = {"code": "insufficient_funds", "type": "card_error"}
    core.emit("charge.failed", charge_json(core, ch), ch.clock)
    core.emit("payment_intent.payment_failed", pi_json(pi), pi.clock)


def charge_for_invoice(core: Core, inv: Invoice, payment_method: str | None) -> None:
    """Record the PaymentIntent and Charge that paid an invoice (see the module docstring)."""
    if inv.amount_due <= 0 or inv.payment_intent is not None:
        return
    pi, _ = new_payment(
        core, amount=inv.amount_due, currency=inv.currency, customer=inv.customer,
        payment_method=payment_method, method_type="card", clock=inv.test_clock,
        description="Subscription update" if inv.billing_reason == "subscription_update"
        else "Subscription creation" if inv.billing_reason == "subscription_create"
        else "Subscription cycle",
    )  # fmt: skip
    succeed(core, pi, emit=False)
    inv.payment_intent = pi.id


def invoice_payments(core: Core, inv: Invoice) -> JSON:
    """The invoice's `payments` list (InvoicePayment objects), for `expand[]=payments`."""
    data = []
    if inv.payment_intent is not None:
        pi = core.store.payments.payment_intents.get(inv.payment_intent)
        data.append({
            "id": "inpay_" + inv.payment_intent.removeprefix("pi_"),
            "object": "invoice_payment",
            "amount_paid": inv.amount_paid if inv.status == "paid" else None,
            "amount_requested": inv.amount_due,
            "created": pi.created if pi else inv.created,
            "currency": inv.currency,
            "invoice": inv.id,
            "is_default": True,
            "livemode": False,
            "payment": {"payment_intent": inv.payment_intent, "type": "payment_intent"},
            "status": "paid" if inv.status == "paid" else "open",
            "status_transitions": {"canceled_at": None, "paid_at": inv.paid_at},
        })  # fmt: skip
    return {"object": "list", "data": data, "has_more": False,
            "url": f"/v1/invoice_payments?invoice={inv.id}"}  # fmt: skip


def include(core: Core, obj: JSON, paths: list[str]) -> None:
    """Add the includable `payments` list to invoices when an `expand` path names it."""
    wanted = [p for p in paths if p == "payments" or p.endswith(".payments")]
    if not wanted:
        return
    for path in wanted:
        _include_at(core, obj, path.split(".")[:-1])


def _include_at(core: Core, node: Any, prefix: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _include_at(core, item, prefix)
        return
    if not isinstance(node, dict):
        return
    if prefix:
        _include_at(core, node.get(prefix[0]), prefix[1:])
        return
    if node.get("object") == "invoice" and isinstance(node.get("id"), str):
        inv = core.store.invoices.get(node["id"])
        if inv is not None:
            node["payments"] = invoice_payments(core, inv)


# Refunds -----------------------------------------------------------------------------------


def refund(core: Core, ch: Charge, amount: int | None, reason: str | None, metadata: dict[str, str]) -> Refund:
    if ch.status != "succeeded":
        raise errors.invalid_request(f"Charge {ch.id} has not succeeded; it cannot be refunded.")
    if any(d.status in OPEN_DISPUTE for d in core.store.payments.disputes_of_charge(ch.id)):
        raise errors.invalid_request(
            f"Charge {ch.id} has been charged back; cannot issue a refund.", code="charge_disputed"
        )
    left = ch.amount - ch.amount_refunded
    if left <= 0:
        raise errors.invalid_request(
            f"Charge {ch.id} has already been refunded.", code="charge_already_refunded"
        )
    value = left if amount is None else amount
    if value > left:
        raise errors.invalid_request(
            f"Refund amount ({value}) is greater than unrefunded amount on charge ({left})",
            param="amount",
        )
    store = core.store
    re = Refund(
        id=store.new_id("refund"), created=core.now(ch.clock), seq=store.next_seq(), amount=value,
        currency=ch.currency, charge=ch.id, payment_intent=ch.payment_intent, reason=reason,
        metadata=dict(metadata),
    )  # fmt: skip
    store.payments.refunds[re.id] = re
    before = charge_json(core, ch)
    ch.amount_refunded += value
    ch.refunds.append(re.id)
    after = charge_json(core, ch)
    previous = {k: before[k] for k in ("amount_refunded", "refunded") if before[k] != after[k]}
    core.emit("charge.refunded", after, ch.clock, previous)
    core.emit("refund.created", shapes_payments.refund(store, re), ch.clock)
    return re


# Disputes ----------------------------------------------------------------------------------


def dispute_json(core: Core, dp: Dispute) -> JSON:
    return shapes_payments.dispute(core.store, dp)


def open_dispute(core: Core, ch: Charge, *, reason: str = "fraudulent", inquiry: bool = False) -> Dispute:
    if ch.status != "succeeded":
        raise errors.invalid_request(f"Charge {ch.id} has not succeeded; it cannot be disputed.")
    if any(not d.status.endswith(("won", "lost", "closed")) for d in core.store.payments.disputes_of_charge(ch.id)):
        raise errors.invalid_request(f"Charge {ch.id} already has an open dispute.")
    store = core.store
    now = core.now(ch.clock)
    dp = Dispute(
        id=store.new_id("dispute"), created=now, seq=store.next_seq(),
        amount=ch.amount - ch.amount_refunded, currency=ch.currency, charge=ch.id,
        payment_intent=ch.payment_intent, reason=reason,
        status="warning_needs_response" if inquiry else "needs_response",
        due_by=now + RESPONSE_WINDOW_S,
    )  # fmt: skip
    store.payments.disputes[dp.id] = dp
    ch.disputed = True
    core.emit("charge.dispute.created", dispute_json(core, dp), ch.clock)
    if not inquiry:
        core.emit("charge.dispute.funds_withdrawn", dispute_json(core, dp), ch.clock)
    return dp


def _close(core: Core, dp: Dispute, outcome: str, clock: str | None) -> None:
    """Close a dispute: `won`, `lost` or (an inquiry) `warning_closed`."""
    dp.status = "warning_closed" if dp.is_inquiry else outcome
    core.emit("charge.dispute.closed", dispute_json(core, dp), clock)
    if dp.status == "won":
        core.emit("charge.dispute.funds_reinstated", dispute_json(core, dp), clock)


def _require_open(dp: Dispute) -> None:
    if dp.status in ("won", "lost", "warning_closed"):
        raise errors.invalid_request(
            f"This dispute is already closed ({dp.status}).", code="charge_dispute_closed"
        )


def update_dispute(core: Core, dp: Dispute, evidence_text: str | None, submit: bool, metadata: dict[str, str]) -> Dispute:
    """`POST /v1/disputes/{id}`: evidence and metadata; `submit` (default true) sends it."""
    _require_open(dp)
    clock = core.store.payments.charges[dp.charge].clock
    before = dispute_json(core, dp)
    dp.metadata.update(metadata)
    if evidence_text is not None:
        dp.evidence_text = evidence_text
    if submit:
        dp.submitted = True
        dp.status = "warning_under_review" if dp.is_inquiry else "under_review"
    after = dispute_json(core, dp)
    previous = {k: before[k] for k in after if before[k] != after[k]}
    core.emit("charge.dispute.updated", after, clock, previous)
    text = dp.evidence_text or ""
    if submit and "winning_evidence" in text:
        _close(core, dp, "won", clock)
    elif submit and "losing_evidence" in text:
        _close(core, dp, "lost", clock)
    return dp


def close_dispute(core: Core, dp: Dispute) -> Dispute:
    """`POST /v1/disputes/{id}/close`: the merchant accepts the dispute; it is lost."""
    _require_open(dp)
    _close(core, dp, "lost", core.store.payments.charges[dp.charge].clock)
    return dp


def resolve_dispute(core: Core, dp: Dispute, outcome: str) -> Dispute:
    """The control API's shortcut: what submitting `winning_evidence` / `losing_evidence` does."""
    if outcome not in ("won", "lost"):
        raise errors.invalid_request("outcome must be won or lost")
    return update_dispute(core, dp, f"{'winning' if outcome == 'won' else 'losing'}_evidence", True, {})
