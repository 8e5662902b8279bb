"""The access decision (SPEC section 5): Stripe's facts, parsed, and the pure policy over them.

Everything here is pure: no I/O and no clock of its own. The worker loads the facts and carries
the decision out (`worker/sync.py`). Every rule of SPEC section 5 lives here:
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
from shared.access.purchase_policy import FOREVER, PurchaseRow, PurchaseVerdict, judge_purchase
from shared.access.purchases import (
    Charge,
    Dispute,
    LineItem,
    Purchase,
    is_purchase,
    parse_charge,
    parse_dispute,
    parse_purchase,
)

__all__ = [
    "FOREVER",
    "Access",
    "Charge",
    "Customer",
    "CustomerFacts",
    "Dispute",
    "Grant",
    "Invoice",
    "Item",
    "ItemVerdict",
    "Known",
    "LineItem",
    "ParseError",
    "PastDue",
    "PolicyConfig",
    "ProductFeatures",
    "Purchase",
    "PurchaseRow",
    "PurchaseVerdict",
    "Row",
    "Subscription",
    "Verdict",
    "access_until",
    "cancel_time",
    "decide",
    "entitlements",
    "explain",
    "grants_at",
    "is_purchase",
    "judge",
    "judge_purchase",
    "judged_at",
    "metadata_features",
    "next_check",
    "parse_charge",
    "parse_customer",
    "parse_dispute",
    "parse_invoice",
    "parse_item",
    "parse_purchase",
    "parse_subscription",
    "past_due_moment",
    "product_features",
    "ref_id",
    "user_of",
    "user_of_gone",
]
