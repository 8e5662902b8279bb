"""The access decision (SPEC section 5): Stripe's facts, parsed, and the pure policy over them.

Everything here is pure: no I/O and no clock of its own. The worker loads the facts and carries
the decision out (`worker/sync.py`).
"""

from shared.access.facts import (
    Customer,
    CustomerFacts,
    Item,
    ParseError,
    Subscription,
    parse_customer,
    parse_item,
    parse_subscription,
    ref_id,
)
from shared.access.policy import (
    Access,
    Grant,
    PolicyConfig,
    access_until,
    cancel_time,
    decide,
    entitlements,
    grants_at,
    next_check,
    user_of,
)

__all__ = [
    "Access",
    "Customer",
    "CustomerFacts",
    "Grant",
    "Item",
    "ParseError",
    "PolicyConfig",
    "Subscription",
    "access_until",
    "cancel_time",
    "decide",
    "entitlements",
    "grants_at",
    "next_check",
    "parse_customer",
    "parse_item",
    "parse_subscription",
    "ref_id",
    "user_of",
]
