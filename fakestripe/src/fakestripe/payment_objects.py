"""The in-memory objects of one-time payments: PaymentIntents, Charges, Refunds, Disputes and
Payment Links (`shapes_payments.py` renders them as Stripe JSON, `payments.py` moves them).

Kept apart from `store.py` so that the subscription objects and these can change independently;
`Store.payments` holds one `PaymentObjects`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Prefix and length of the random part, modelled on ids Stripe returns in test mode.
PAYMENT_ID_FORMATS: dict[str, tuple[str, int]] = {
    "charge": ("ch_3", 23),
    "refund": ("re_3", 23),
    "dispute": ("dp_1", 23),
    "payment_link": ("plink_1", 23),
    "checkout_line_item": ("li_1", 23),
}


@dataclass
class PaymentIntent:
    id: str
    created: int
    seq: int
    amount: int
    currency: str
    customer: str | None
    payment_method: str | None
    # requires_payment_method | processing | succeeded | canceled (and requires_action, unused)
    status: str = "requires_payment_method"
    latest_charge: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    payment_method_types: tuple[str, ...] = ("card",)
    clock: str | None = None
    last_payment_error: dict[str, str] | None = None
    # a bank debit's outcome once it settles (test payment method)
    settles_ok: bool = True


@dataclass
class Charge:
    id: str
    created: int
    seq: int
    amount: int
    currency: str
    customer: str | None
    payment_intent: str
    payment_method: str | None
    # succeeded | pending | failed
    status: str
    payment_method_type: str = "card"
    amount_refunded: int = 0
    disputed: bool = False
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    refunds: list[str] = field(default_factory=list)
    failure_code: str | None = None
    failure_message: str | None = None
    clock: str | None = None
    receipt_email: str | None = None

    @property
    def refunded(self) -> bool:
        """Stripe: "Whether the charge has been fully refunded"."""
        return self.amount_refunded >= self.amount

    @property
    def captured_amount(self) -> int:
        return self.amount if self.status == "succeeded" else 0


@dataclass
class OnCharge:
    """What a refund and a dispute share: an amount taken back from one charge."""

    id: str
    created: int
    seq: int
    amount: int
    currency: str
    charge: str
    payment_intent: str


@dataclass
class Refund(OnCharge):
    reason: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    status: str = "succeeded"


@dataclass
class Dispute(OnCharge):
    reason: str
    # warning_needs_response | warning_under_review | warning_closed | needs_response |
    # under_review | won | lost
    status: str
    evidence_text: str | None = None
    submitted: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    due_by: int = 0

    @property
    def is_inquiry(self) -> bool:
        return self.status.startswith("warning_")


@dataclass
class PaymentLink:
    id: str
    created: int
    seq: int
    line_items: list[tuple[str, int]]
    mode: str
    customer_creation: str
    active: bool = True
    metadata: dict[str, str] = field(default_factory=dict)
    after_completion_url: str | None = None


@dataclass
class PaymentObjects:
    payment_intents: dict[str, PaymentIntent] = field(default_factory=dict)
    charges: dict[str, Charge] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    disputes: dict[str, Dispute] = field(default_factory=dict)
    payment_links: dict[str, PaymentLink] = field(default_factory=dict)
    # checkout session id -> ids of its line items, in order (stable across reads)
    line_item_ids: dict[str, list[str]] = field(default_factory=dict)

    def disputes_of_charge(self, charge_id: str) -> list[Dispute]:
        return [d for d in self.disputes.values() if d.charge == charge_id]
