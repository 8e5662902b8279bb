"""One-time purchases as the policy sees them (docs/contract.md §5.1): frozen facts, parsed once.

A purchase is a Checkout Session in `mode=payment` with its line items, and the charge that paid
it with that charge's disputes. Tests build them from plain dicts shaped like Stripe's
(`parse_purchase(session, line_items, charges)`), never from SDK objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Dispute statuses (https://docs.stripe.com/api/disputes/object#dispute_object-status): the
# `warning_*` ones are inquiries, not disputes (docs/contract.md §5.1).
OPEN_DISPUTE = frozenset({"needs_response", "under_review"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _ref(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str) and value["id"]:
        return str(value["id"])
    return None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def duration_s(metadata: Any) -> int | None:
    """`metadata.entitled_duration` (`30d`, `365d`, `12h`) in seconds; None when absent or not a
    duration (a bad value grants for ever rather than nothing: the buyer paid)."""
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("entitled_duration"), str):
        return None
    found = _DURATION.match(metadata["entitled_duration"])
    if not found:
        return None
    seconds = int(float(found.group(1)) * _UNIT_S[found.group(2)])
    return seconds if seconds > 0 else None


@dataclass(frozen=True)
class Dispute:
    id: str
    status: str
    created: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_DISPUTE

    @property
    def lost(self) -> bool:
        return self.status == "lost"


@dataclass(frozen=True)
class Charge:
    id: str
    payment_intent: str | None
    created: int
    succeeded: bool
    refunded: bool  # fully refunded (Stripe's `refunded`); a partial refund leaves it false
    disputes: tuple[Dispute, ...] = ()

    @property
    def open_dispute(self) -> Dispute | None:
        return next((d for d in self.disputes if d.is_open), None)

    @property
    def lost_dispute(self) -> Dispute | None:
        return next((d for d in self.disputes if d.lost), None)


@dataclass(frozen=True)
class LineItem:
    id: str
    price_id: str
    product_id: str
    quantity: int | None
    # metadata.entitled_duration of the price, else of the product; None: for ever
    duration_s: int | None


@dataclass(frozen=True)
class Purchase:
    """A completed Checkout Session in payment mode."""

    session_id: str
    payment_status: str  # paid | unpaid | no_payment_required
    payment_intent: str | None
    created: int
    line_items: tuple[LineItem, ...]
    charge: Charge | None  # the successful charge of its PaymentIntent, if read
    client_reference_id: str | None = None

    @property
    def product_ids(self) -> frozenset[str]:
        return frozenset(i.product_id for i in self.line_items)


def parse_dispute(d: Mapping[str, Any]) -> Dispute:
    return Dispute(id=str(d.get("id", "")), status=str(d.get("status") or ""), created=_int(d.get("created")) or 0)


def parse_charge(d: Mapping[str, Any], disputes: Iterable[Mapping[str, Any]] = ()) -> Charge:
    return Charge(
        id=str(d.get("id", "")),
        payment_intent=_ref(d.get("payment_intent")),
        created=_int(d.get("created")) or 0,
        succeeded=d.get("status") == "succeeded" or (d.get("paid") is True and d.get("status") is None),
        refunded=bool(d.get("refunded")),
        disputes=tuple(parse_dispute(x) for x in disputes),
    )


def parse_line_item(d: Mapping[str, Any]) -> LineItem | None:
    """A line item (price expanded, its product expanded or an id); None without a product."""
    price = d.get("price")
    if not isinstance(price, Mapping):
        return None
    product = price.get("product")
    product_id, price_id = _ref(product), _ref(price)
    if not product_id or not price_id:
        return None
    duration = duration_s(price.get("metadata"))
    if duration is None and isinstance(product, Mapping):
        duration = duration_s(product.get("metadata"))
    return LineItem(str(d.get("id", "")), price_id, product_id, _int(d.get("quantity")), duration)


def is_purchase(session: Mapping[str, Any]) -> bool:
    """A completed payment-mode session: a one-time purchase (paid, or waiting for its money)."""
    return session.get("mode") == "payment" and session.get("status") == "complete"


def parse_purchase(
    session: Mapping[str, Any], line_items: Iterable[Mapping[str, Any]], charges: Iterable[Charge]
) -> Purchase:
    """The session, its line items, and the successful charge of its PaymentIntent among `charges`."""
    pi = _ref(session.get("payment_intent"))
    paid = [c for c in charges if c.payment_intent == pi and pi is not None and c.succeeded]
    ref = session.get("client_reference_id")
    return Purchase(
        session_id=str(session.get("id", "")),
        payment_status=str(session.get("payment_status") or ""),
        payment_intent=pi,
        created=_int(session.get("created")) or 0,
        line_items=tuple(i for i in (parse_line_item(x) for x in line_items) if i is not None),
        charge=min(paid, key=lambda c: c.created) if paid else None,
        client_reference_id=ref.strip() if isinstance(ref, str) and ref.strip() else None,
    )
