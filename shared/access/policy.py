"""The access policy (docs/contract.md §5): pure functions, no I/O, no clock of their own.

`decide(facts, features_of, now, config, known=...)` is the functional core of a sync: given what
Stripe says about a customer, the product -> features catalog, what entitled itself recorded
before (`Known`) and the moment to judge at, it returns which features the customer may use,
until when, why (`Verdict`, `Grant.row`), and when to look again. The worker loads the facts and
carries the decision out; the property tests in `tests/test_policy.py` hold these functions to
an independent restatement of the contract's table.

All times are Unix seconds in the customer's clock (`judged_at`: a test clock's `frozen_time`
when the customer is on one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

from shared.access.facts import CustomerFacts, Item, Subscription
from shared.access.features import ProductLimits
from shared.access.purchase_policy import (
    FOREVER,
    PurchaseRow,
    PurchaseVerdict,
    judge_purchase,
    subscription_dispute,
)
from shared.access.purchases import Charge

# Statuses that never grant access, whatever else the subscription says.
NO_ACCESS = frozenset({"paused", "unpaid", "canceled", "incomplete", "incomplete_expired"})

# A re-check never comes sooner than this after a sync, so that a customer whose access ends in
# a second is not re-synced in a hot loop.
MIN_RECHECK_GAP_S = 1
# How long after a boundary (trial end, cancel time, valid_until) the re-check runs: Stripe
# moves the subscription at the boundary, and we want to read it after it did.
AFTER_BOUNDARY_S = 1


class Row(StrEnum):
    """The rows of docs/contract.md §5's table, named as the table names them."""

    TRIALING = "trialing"
    ACTIVE = "active"
    CANCELLING = "active with cancel_at_period_end or cancel_at"
    PAUSE_COLLECTION = "active or past_due with pause_collection"
    PAST_DUE = "past_due"
    NO_ACCESS = "paused, unpaid, canceled, incomplete, incomplete_expired"
    # Not in the table: a status Stripe may add later. It grants nothing (fail closed).
    UNKNOWN_STATUS = "unknown status"
    # docs/contract.md §5.1: its latest paid invoice's charge is under an open (or lost) dispute
    DISPUTED = "latest paid invoice under dispute (DISPUTE_POLICY=revoke)"


PastDueSource = Literal["given", "invoice_due_date", "invoice_finalized", "recorded", "first_seen"]


@dataclass(frozen=True)
class PolicyConfig:
    renewal_grace_s: int
    past_due_grace_s: int
    # DISPUTE_POLICY=revoke (docs/contract.md §5.1): an open dispute suspends what it concerns
    revoke_disputed: bool = True

    @property
    def recheck_lead_s(self) -> int:
        """How long before `valid_until` the re-check starts (docs/contract.md §5: no flicker).

        Half the renewal grace, at most an hour: Stripe confirms a renewal within about an hour
        of the period end, so by then the renewed period is visible and access simply extends.
        """
        return max(MIN_RECHECK_GAP_S, min(self.renewal_grace_s // 2, 3600))


@dataclass(frozen=True)
class Known:
    """What entitled recorded for the customer at its previous sync (plain data)."""

    user_id: str | None = None
    user_id_source: str | None = None
    # subscription id -> when it became past_due (customer clock), while it stayed past_due
    past_due_since: Mapping[str, float] = field(default_factory=dict)
    # the customer has one-time purchases or a payment under dispute: its syncs read them
    reads_payments: bool = False


@dataclass(frozen=True)
class PastDue:
    """When a subscription became past_due, and what said so."""

    at: int
    source: PastDueSource


@dataclass(frozen=True)
class ItemVerdict:
    item_id: str
    product_id: str
    row: Row
    until: int | None  # valid_until by the table; may lie in the past
    grants_now: bool
    # the item's quantity as counted (docs/contract.md §5.2: none counts 1); 0 grants nothing
    quantity: int = 1


@dataclass(frozen=True)
class Verdict:
    """Why one subscription grants what it does (docs/contract.md §5.3): its row, item by item."""

    subscription_id: str
    status: str
    items: tuple[ItemVerdict, ...]
    past_due: PastDue | None = None
    dispute_id: str | None = None  # the dispute that suspends it (Row.DISPUTED)

    @property
    def until(self) -> int | None:
        """The latest `until` of its items."""
        ends = [i.until for i in self.items if i.until is not None]
        return max(ends) if ends else None

    @property
    def grants_now(self) -> bool:
        return any(i.grants_now for i in self.items)


@dataclass(frozen=True)
class Grant:
    feature: str
    valid_until: int
    subscription_id: str  # or the Checkout Session of a one-time purchase
    # why: the table's row and the item that grants it (None when built by hand, as in tests)
    row: Row | PurchaseRow | None = None
    item_id: str | None = None
    # docs/contract.md §5.2: the summed quantity of every item granting the feature now
    quantity: int = 1


@dataclass(frozen=True)
class GrantingItem:
    """One item that grants now, whatever sells it: a subscription's item, or a purchase's line
    item (docs/contract.md §5.1). Features, their quantities and limits are summed over these."""

    source_id: str  # sub_... (or the purchase's id)
    item_id: str
    product_id: str
    quantity: int  # > 0: an item of quantity 0 grants nothing and is no GrantingItem
    until: int
    row: Row | PurchaseRow | None = None


@dataclass(frozen=True)
class LimitPart:
    """One item's share of a limit: `per_unit` (the product's number) times `quantity`."""

    source_id: str
    item_id: str
    product_id: str
    per_unit: int
    quantity: int
    until: int


@dataclass(frozen=True)
class LimitGrant:
    """A named limit in force (docs/contract.md §5.2): the sum of its parts, until the latest."""

    name: str
    value: int
    valid_until: int
    source_id: str  # the item granting it longest (on a tie, the smaller source id)
    parts: tuple[LimitPart, ...] = ()


@dataclass(frozen=True)
class Access:
    """The decision for one customer."""

    grants: Mapping[str, Grant]
    user_id: str | None
    user_id_source: str | None
    # when to sync again even if no webhook comes (customer clock), or None
    next_check: int | None
    verdicts: tuple[Verdict, ...] = ()
    # subscription id -> when it became past_due, for the record (customer clock)
    past_due_since: Mapping[str, int] = field(default_factory=dict)
    # Stripe no longer knows the customer, or deleted it: nothing is granted
    customer_gone: bool = False
    purchases: tuple[PurchaseVerdict, ...] = ()
    # docs/contract.md §5.2: limit name -> its value now
    limits: Mapping[str, LimitGrant] = field(default_factory=dict)
    # products granting now whose `metadata.entitled_limits` was refused, and why
    limit_problems: Mapping[str, str] = field(default_factory=dict)

    @property
    def quantities(self) -> dict[str, int]:
        return {f: g.quantity for f, g in self.grants.items()}

    @property
    def limit_values(self) -> dict[str, int]:
        return {n: g.value for n, g in self.limits.items()}

    @property
    def features(self) -> frozenset[str]:
        return frozenset(self.grants)

    @property
    def granting_products(self) -> frozenset[str]:
        """Products of the items that grant now, whether or not the catalog gives them features."""
        subs = {i.product_id for v in self.verdicts for i in v.items if i.grants_now}
        return frozenset(subs | {i.product_id for p in self.purchases for i in p.items if i.grants_now})


def judged_at(facts: CustomerFacts, wall_now: float) -> tuple[int, float]:
    """The moment to judge the customer at, and the offset of the wall clock from it.

    A customer on a Stripe test clock is judged at the clock's `frozen_time` (docs/contract.md §5);
    what is stored is shifted by the offset to the wall clock, so that the view and the re-check
    keep the remaining time the clock shows.
    """
    if facts.clock_now is None:
        return int(wall_now), 0.0
    return facts.clock_now, wall_now - facts.clock_now


def cancel_time(sub: Subscription) -> int | None:
    """When the subscription is set to end: `cancel_at`, which wins; when only
    `cancel_at_period_end` is set, the earliest item's `current_period_end` (docs/contract.md §5:
    with flexible billing the items' periods may differ, and Stripe cancels at the first end)."""
    if sub.cancel_at is not None:
        return sub.cancel_at
    if sub.cancel_at_period_end:
        return sub.earliest_period_end
    return None


def _invoice_moment(sub: Subscription) -> PastDue | None:
    """When Stripe shows the subscription became past_due (docs/contract.md §5): for
    `collection_method=send_invoice`, the unpaid invoice's `due_date` (Stripe: such a
    subscription becomes past_due when its invoice is not paid by the due date,
    the Subscription object's `status`,
    https://docs.stripe.com/api/subscriptions/object#subscription_object-status); otherwise when that
    invoice was finalized (its creation when Stripe left `finalized_at` out)."""
    if sub.past_due_since is not None:
        return PastDue(sub.past_due_since, "given")
    invoice = sub.latest_invoice
    if invoice is None or not invoice.unpaid:
        return None
    if sub.collection_method == "send_invoice" and invoice.due_date is not None:
        return PastDue(invoice.due_date, "invoice_due_date")
    at = invoice.finalized_at or invoice.created
    return None if at is None else PastDue(at, "invoice_finalized")


def past_due_moment(sub: Subscription, recorded: float | None, now: int) -> PastDue:
    """When a past_due subscription became past_due (docs/contract.md §5).

    A subscription that stays past_due across a renewal gets a new latest invoice, and taking
    its time would grant another PAST_DUE_GRACE every period: so the earliest of Stripe's time
    and the one recorded while it stayed past_due; the first sighting (`now`) when neither is
    known.
    """
    candidates = [m for m in (_invoice_moment(sub),) if m is not None]
    if recorded is not None:
        candidates.append(PastDue(int(recorded), "recorded"))
    if not candidates:
        return PastDue(now, "first_seen")
    return min(candidates, key=lambda m: m.at)


def _status_until(
    sub: Subscription, item: Item, past_due: PastDue | None, config: PolicyConfig
) -> tuple[int | None, Row]:
    """The row the status selects and the time it grants one item until, before any cancel time.

    Periods are per item (flexible billing: items of one subscription may renew at different
    times), so an item's features last as long as that item's `current_period_end` (the
    subscription's latest when Stripe shows the item none).
    """
    status = sub.status
    item_end = item.current_period_end if item.current_period_end is not None else sub.period_end
    if status in NO_ACCESS:
        return None, Row.NO_ACCESS
    if status == "trialing":
        end = sub.trial_end if sub.trial_end is not None else item_end
        return (None if end is None else end + config.renewal_grace_s), Row.TRIALING
    if status == "active" or (status == "past_due" and sub.collection_paused):
        # pause_collection, on an active or a past_due subscription: Stripe says the customer
        # retains access (https://docs.stripe.com/billing/subscriptions/pause-payment): as active.
        row = Row.PAUSE_COLLECTION if sub.collection_paused else Row.ACTIVE
        return (None if item_end is None else item_end + config.renewal_grace_s), row
    if status == "past_due" and past_due is not None:
        return past_due.at + config.past_due_grace_s, Row.PAST_DUE
    return None, Row.UNKNOWN_STATUS


def judge(sub: Subscription, now: int, config: PolicyConfig, recorded_past_due: float | None = None) -> Verdict:
    """One subscription against docs/contract.md §5's table, item by item."""
    past_due = past_due_moment(sub, recorded_past_due, now) if sub.status == "past_due" else None
    cancel = cancel_time(sub)
    verdicts = []
    for item in sub.items:
        until, row = _status_until(sub, item, past_due, config)
        if cancel is not None and row not in (Row.NO_ACCESS, Row.UNKNOWN_STATUS) and (until is None or cancel < until):
            # A set end needs no grace: the customer asked to stop then. It never extends access
            # beyond what the status grants (a cancel time after an unconfirmed renewal).
            until, row = cancel, Row.CANCELLING
        # docs/contract.md §5.2: an item of quantity 0 grants nothing, whatever its row says.
        grants = until is not None and until > now and item.units > 0
        verdicts.append(ItemVerdict(item.id, item.product_id, row, until, grants, item.units))
    return Verdict(sub.id, sub.status, tuple(verdicts), past_due)


def access_until(sub: Subscription, config: PolicyConfig, now: int = 0) -> int | None:
    """How long the subscription grants access (its latest item), judged by its status; None
    when its status never grants. May lie in the past (see `grants_at`). `now` is only the
    first sighting of a past_due subscription of which nothing else is known."""
    return judge(sub, now, config).until


def grants_at(sub: Subscription, now: int, config: PolicyConfig) -> int | None:
    """`access_until` when it is still in the future, else None."""
    until = access_until(sub, config, now)
    return until if until is not None and until > now else None


def granting_items(verdicts: Iterable[Verdict]) -> list[GrantingItem]:
    """The subscription items that grant now (their row grants until later, quantity > 0)."""
    return [
        GrantingItem(v.subscription_id, i.item_id, i.product_id, i.quantity, i.until, i.row)
        for v in verdicts
        for i in v.items
        if i.grants_now and i.until is not None and i.quantity > 0
    ]


def _grants(verdicts: Iterable[Verdict], features_of: Mapping[str, frozenset[str]]) -> dict[str, Grant]:
    return grants_of(granting_items(verdicts), features_of)


def _longer(until: int, source_id: str, held_until: int, held_source: str) -> bool:
    """Whether a grant until `until` from `source_id` is the one recorded over the held one:
    the one granting longest, on a tie the smaller source id (stable across syncs)."""
    return until > held_until or (until == held_until and source_id < held_source)


def grants_of(items: Iterable[GrantingItem], features_of: Mapping[str, frozenset[str]]) -> dict[str, Grant]:
    """The union of the features of every item that grants now. When several grant one
    feature, the one granting longest is recorded (on a tie, the smaller source id), and the
    feature's quantity is the sum of theirs (docs/contract.md §5.2)."""
    grants: dict[str, Grant] = {}
    summed: dict[str, int] = {}
    for item in items:
        for feature in features_of.get(item.product_id, frozenset()):
            summed[feature] = summed.get(feature, 0) + item.quantity
            held = grants.get(feature)
            if held is None or _longer(item.until, item.source_id, held.valid_until, held.subscription_id):
                grants[feature] = Grant(feature, item.until, item.source_id, item.row, item.item_id)
    return {f: replace(g, quantity=summed[f]) for f, g in grants.items()}


# Postgres' bigint: a limit is stored there, and a sum beyond it is not a limit anyone meant.
MAX_LIMIT = 2**63 - 1


def limits_of_items(
    items: Iterable[GrantingItem], limits_of: Mapping[str, ProductLimits]
) -> tuple[dict[str, LimitGrant], dict[str, str]]:
    """docs/contract.md §5.2: each limit's value is its number times the item's quantity, summed
    over every item that grants now; it lasts as long as the latest of them. Also the products
    granting now whose limits were refused, and why (a product without limits gives none)."""
    parts: dict[str, list[LimitPart]] = {}
    problems: dict[str, str] = {}
    for item in items:
        product = limits_of.get(item.product_id)
        if product is None:
            continue
        if product.problem is not None:
            problems[item.product_id] = product.problem
        for name, per_unit in product.values.items():
            parts.setdefault(name, []).append(
                LimitPart(item.source_id, item.item_id, item.product_id, per_unit, item.quantity, item.until))
    limits: dict[str, LimitGrant] = {}
    for name, shares in parts.items():
        best = shares[0]
        for part in shares[1:]:
            if _longer(part.until, part.source_id, best.until, best.source_id):
                best = part
        value = min(sum(p.per_unit * p.quantity for p in shares), MAX_LIMIT)
        limits[name] = LimitGrant(name, value, best.until, best.source_id, tuple(shares))
    return limits, problems


def entitlements(
    subscriptions: Iterable[Subscription],
    features_of: Mapping[str, frozenset[str]],
    now: int,
    config: PolicyConfig,
) -> dict[str, Grant]:
    """The union of the features of every item of every subscription that grants now."""
    return _grants((judge(s, now, config) for s in subscriptions), features_of)


def user_of(facts: CustomerFacts, subscriptions: Iterable[Subscription]) -> tuple[str | None, str | None]:
    """docs/contract.md §5: the Checkout Session's client_reference_id, else the customer's
    metadata.user_id, else a subscription's (the newest that has one)."""
    if facts.checkout_user_id:
        return facts.checkout_user_id, "checkout_session"
    if facts.customer and facts.customer.metadata_user_id:
        return facts.customer.metadata_user_id, "customer_metadata"
    for sub in sorted(subscriptions, key=lambda s: (s.created, s.id), reverse=True):
        if sub.metadata_user_id:
            return sub.metadata_user_id, "subscription_metadata"
    return None, None


def user_of_gone(facts: CustomerFacts, known: Known) -> tuple[str | None, str | None]:
    """A deleted customer's user: Stripe no longer shows its metadata, so the user recorded
    before is kept, and the message that ends its access says whose access ended."""
    user_id, source = user_of(facts, facts.subscriptions)
    if user_id is None and known.user_id:
        return known.user_id, known.user_id_source
    return user_id, source


def next_check(
    subscriptions: Iterable[Subscription],
    grants: Mapping[str, Grant],
    now: int,
    config: PolicyConfig,
    limits: Mapping[str, LimitGrant] | None = None,
) -> int | None:
    """When to sync this customer again if no webhook comes.

    - shortly before each `valid_until` (the lead), so that a renewal Stripe has confirmed is
      found while access still runs: access never flickers off;
    - just after each `valid_until` whose lead already passed, to end access and tell everyone;
    - just after a trial end or a cancel time, when Stripe moves the subscription.
    """
    lead = config.recheck_lead_s
    candidates: list[int] = []
    ends = {g.valid_until for g in grants.values()} | {g.valid_until for g in (limits or {}).values()}
    for until in ends - {FOREVER}:
        early = until - lead
        candidates.append(early if early > now + MIN_RECHECK_GAP_S else until + AFTER_BOUNDARY_S)
    for sub in subscriptions:
        if sub.status in NO_ACCESS:
            continue
        for boundary in (sub.trial_end if sub.status == "trialing" else None, cancel_time(sub)):
            if boundary is not None and boundary + AFTER_BOUNDARY_S > now:
                candidates.append(boundary + AFTER_BOUNDARY_S)
    if not candidates:
        return None
    return max(min(candidates), now + MIN_RECHECK_GAP_S)


def decide(
    facts: CustomerFacts,
    features_of: Mapping[str, frozenset[str]],
    now: int,
    config: PolicyConfig,
    *,
    known: Known | None = None,
    limits_of: Mapping[str, ProductLimits] | None = None,
) -> Access:
    """The whole decision for one customer at `now` (in the customer's clock, `judged_at`).

    `limits_of`: product -> its `metadata.entitled_limits` (docs/contract.md §5.2); none: no limits."""
    known = known or Known()
    subs = facts.subscriptions
    verdicts = tuple(
        suspend_disputed(judge(s, now, config, known.past_due_since.get(s.id)), s, facts.charges, config)
        for s in subs
    )
    purchases = tuple(judge_purchase(p, now, config.revoke_disputed) for p in facts.purchases)
    past_due_since = {v.subscription_id: v.past_due.at for v in verdicts if v.past_due is not None}
    if (facts.customer is None and not facts.is_guest) or (facts.customer is not None and facts.customer.deleted):
        # A deleted customer keeps nothing, whatever its subscriptions said.
        user_id, source = user_of_gone(facts, known)
        return Access(grants={}, user_id=user_id, user_id_source=source, next_check=None,
                      verdicts=verdicts, past_due_since=past_due_since, customer_gone=True,
                      purchases=purchases)
    user_id, source = user_of(facts, subs)
    items = granting_items(verdicts) + purchase_items(purchases)
    grants = grants_of(items, features_of)
    limits, problems = limits_of_items(items, limits_of or {})
    return Access(grants=grants, user_id=user_id, user_id_source=source,
                  next_check=next_check(subs, grants, now, config, limits),
                  verdicts=verdicts, past_due_since=past_due_since, limits=limits, limit_problems=problems,
                  purchases=purchases)


def purchase_items(purchases: Iterable[PurchaseVerdict]) -> list[GrantingItem]:
    """The purchases' line items that grant now (docs/contract.md §5.1), as granting items: their
    features and limits are summed with the subscriptions' (§5.2: no quantity counts as 1)."""
    return [
        GrantingItem(p.session_id, i.item_id, i.product_id, 1 if i.quantity is None else i.quantity, i.until,
                     PurchaseRow.PAID)
        for p in purchases
        for i in p.items
        if i.grants_now and i.until is not None and (i.quantity is None or i.quantity > 0)
    ]


def suspend_disputed(verdict: Verdict, sub: Subscription, charges: tuple[Charge, ...], config: PolicyConfig) -> Verdict:
    """docs/contract.md §5.1: under DISPUTE_POLICY=revoke a subscription whose latest paid
    invoice's charge is under an open dispute grants nothing until the dispute closes won."""
    dispute = subscription_dispute(sub.paid_payment_intent, charges, config.revoke_disputed)
    if dispute is None or not verdict.grants_now:
        return verdict
    items = tuple(ItemVerdict(i.item_id, i.product_id, Row.DISPUTED, i.until, False) for i in verdict.items)
    return Verdict(verdict.subscription_id, verdict.status, items, verdict.past_due, dispute.id)
