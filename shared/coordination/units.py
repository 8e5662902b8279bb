"""Units of work: what one run of the sync job is about, as a type.

A unit is a customer, a subscription or Checkout Session whose customer the worker still has
to find, or one of the two internal units (the Events API poll, the catalog). Its kind is
decided once, where the unit is made (routing, a cron job, the CLI), and travels with it:
the wire form below is decoded in one place (`Unit.decode`), never by id prefixes.

Wire form (Redis hash names, lease members, arq job arguments):
- a customer: its bare id (`cus_...`), so re-check and lease entries read as customer ids;
- any other kind: `<kind>:<id>`, for example `subscription:sub_...` or `internal:events`.

Every id taken from a payload must have Stripe's id shape (`is_stripe_id`: a lowercase prefix,
`_`, then letters and digits), which has no `:`. So no payload can name an internal unit, or
any unit of another kind than the one routing gave it (docs/contract.md §4: no payload id names an internal unit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

# Stripe ids: "cus_NffrFeUfNV2Hib", "sub_1MowQVLkdIwHu7ixeRlqHVzs", "cs_test_a1b2...", "prod_...",
# "feat_test_...". Their documented form is a prefix and random alphanumerics
# (https://docs.stripe.com/api/customers/object#customer_object-id); Stripe's own ids stay
# well under 255 characters, and ours are stored in Postgres `text` columns (no NUL).
_STRIPE_ID = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*_[A-Za-z0-9]+")
MAX_ID_LENGTH = 255


def is_stripe_id(value: object, *, prefix: str | None = None) -> bool:
    """True for a string of Stripe's id shape (optionally with `prefix`, e.g. "cus_")."""
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH or not _STRIPE_ID.fullmatch(value):
        return False
    return prefix is None or value.startswith(prefix)


class UnitKind(StrEnum):
    CUSTOMER = "customer"
    # a subscription or Checkout Session that named no customer: resolve it, then hand over
    SUBSCRIPTION = "subscription"
    CHECKOUT = "checkout"
    # a charge (a refund or a dispute on it) that named no customer: a guest purchase's, or one
    # whose dispute event names only the charge (docs/contract.md §5.1)
    CHARGE = "charge"
    # internal units: their wire form has a `:` no Stripe id can have
    EVENTS = "events"
    CATALOG = "catalog"


_INTERNAL_TAG = "internal"


@dataclass(frozen=True, order=True)
class Unit:
    kind: UnitKind
    id: str

    @classmethod
    def customer(cls, customer_id: str) -> Unit:
        return cls(UnitKind.CUSTOMER, customer_id)

    @property
    def wire(self) -> str:
        if self.kind is UnitKind.CUSTOMER:
            return self.id
        if self.kind in (UnitKind.EVENTS, UnitKind.CATALOG):
            return f"{_INTERNAL_TAG}:{self.kind.value}"
        return f"{self.kind.value}:{self.id}"

    @classmethod
    def decode(cls, wire: str) -> Unit:
        """The unit a wire name stands for; ValueError for a name no unit has."""
        tag, sep, rest = wire.partition(":")
        if not sep:
            return cls.customer(wire)
        if tag == _INTERNAL_TAG and rest in (UnitKind.EVENTS.value, UnitKind.CATALOG.value):
            return INTERNAL[UnitKind(rest)]
        if tag in (UnitKind.SUBSCRIPTION.value, UnitKind.CHECKOUT.value, UnitKind.CHARGE.value) and rest:
            return cls(UnitKind(tag), rest)
        raise ValueError(f"not a unit: {wire!r}")

    def __str__(self) -> str:
        return self.wire


EVENTS_POLL = Unit(UnitKind.EVENTS, "")
CATALOG = Unit(UnitKind.CATALOG, "")
INTERNAL = {UnitKind.EVENTS: EVENTS_POLL, UnitKind.CATALOG: CATALOG}
