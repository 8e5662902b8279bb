"""The access decision (docs/contract.md §5): Stripe's facts, parsed, and the pure policy over them.

Everything here is pure: no I/O and no clock of its own. The worker loads the facts and carries
the decision out (`worker/sync.py`). Every rule of docs/contract.md §5 lives here:
`policy.py` (the table, when a subscription became past_due, the user, a deleted customer, the
test clock's time, the re-check), `features.py` (Product Features, else `metadata.features`).
"""

from shared.access import explain
from shared.access.facts import (
    Customer,
    CustomerFacts,
    Invoice,
    Item,
    ParseError,
    Subscription,
    parse_customer,
    parse_invoice,
    parse_item,
    parse_subscription,
    ref_id,
)
from shared.access.features import ProductFeatures, metadata_features, product_features
from shared.access.policy import (
    Access,
    Grant,
    ItemVerdict,
    Known,
    PastDue,
    PolicyConfig,
    Row,
    Verdict,
    access_until,
    cancel_time,
    decide,
    entitlements,
    grants_at,
    judge,
    judged_at,
    next_check,
    past_due_moment,
    user_of,
    user_of_gone,
)

__all__ = [
    "Access",
    "Customer",
    "CustomerFacts",
    "Grant",
    "Invoice",
    "Item",
    "ItemVerdict",
    "Known",
    "ParseError",
    "PastDue",
    "PolicyConfig",
    "ProductFeatures",
    "Row",
    "Subscription",
    "Verdict",
    "access_until",
    "cancel_time",
    "decide",
    "entitlements",
    "explain",
    "grants_at",
    "judge",
    "judged_at",
    "metadata_features",
    "next_check",
    "parse_customer",
    "parse_invoice",
    "parse_item",
    "parse_subscription",
    "past_due_moment",
    "product_features",
    "ref_id",
    "user_of",
    "user_of_gone",
]
