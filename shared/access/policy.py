"""The access policy (SPEC section 5): pure functions, no I/O, no clock of their own.

`decide(facts, features_of, now, config)` is the functional core of a sync: given what Stripe
says about a customer, the product -> features catalog and the moment to judge at, it returns
which features the customer may use, until when, and when to look again. The worker loads the
facts and carries the decision out; the property tests in `tests/test_policy.py` hold these
functions to the SPEC's table.

All times are Unix seconds in the customer's clock (a test clock's `frozen_time` when the
customer is on one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.access.facts import CustomerFacts, Subscription

# Statuses that never grant access, whatever else the subscription says.
NO_ACCESS = frozenset({"paused", "unpaid", "canceled", "incomplete", "incomplete_expired"})

# A re-check never comes sooner than this after a sync, so that a customer whose access ends in
# a second is not re-synced in a hot loop.
MIN_RECHECK_GAP_S = 1
# How long after a boundary (trial end, cancel time, valid_until) the re-check runs: Stripe
# moves the subscription at the boundary, and we want to read it after it did.
AFTER_BOUNDARY_S = 1


@dataclass(frozen=True)
class PolicyConfig:
    renewal_grace_s: int
    past_due_grace_s: int

    @property
    def recheck_lead_s(self) -> int:
        """How long before `valid_until` the re-check starts (SPEC section 5: no flicker).

        Half the renewal grace, at most an hour: Stripe confirms a renewal within about an hour
        of the period end, so by then the renewed period is visible and access simply extends.
        """
        return max(MIN_RECHECK_GAP_S, min(self.renewal_grace_s // 2, 3600))


@dataclass(frozen=True)
class Grant:
    feature: str
    valid_until: int
    subscription_id: str


@dataclass(frozen=True)
class Access:
    """The decision for one customer."""

    grants: Mapping[str, Grant]
    user_id: str | None
    user_id_source: str | None
    # when to sync again even if no webhook comes (customer clock), or None
    next_check: int | None

    @property
    def features(self) -> frozenset[str]:
        return frozenset(self.grants)


def cancel_time(sub: Subscription) -> int | None:
    """When the subscription is set to end: `cancel_at`, or the period end under
    `cancel_at_period_end` (current API versions set both)."""
    if sub.cancel_at is not None:
        return sub.cancel_at
    if sub.cancel_at_period_end:
        return sub.period_end
    return None


def access_until(sub: Subscription, config: PolicyConfig) -> int | None:
    """How long the subscription grants access, judged by its status: the SPEC section 5 table.

    None when its status never grants. The result may lie in the past: the subscription then
    grants nothing *now* (see `grants_at`).
    """
    status = sub.status
    if status in NO_ACCESS:
        return None
    cancel = cancel_time(sub)
    if status == "trialing":
        end = sub.trial_end if sub.trial_end is not None else sub.period_end
        until = None if end is None else end + config.renewal_grace_s
    elif status == "active":
        # pause_collection leaves the status active and, per Stripe, the customer keeps access.
        end = sub.period_end
        until = None if end is None else end + config.renewal_grace_s
    elif status == "past_due":
        until = None if sub.past_due_since is None else sub.past_due_since + config.past_due_grace_s
    else:
        # A status this code does not know grants nothing: fail closed, and the worker logs it.
        return None
    if cancel is not None:
        # A set end needs no grace: the customer asked to stop then. It never extends access
        # beyond what the status grants (a cancel time after an unconfirmed renewal).
        until = cancel if until is None else min(until, cancel)
    return until


def grants_at(sub: Subscription, now: int, config: PolicyConfig) -> int | None:
    """`access_until` when it is still in the future, else None."""
    until = access_until(sub, config)
    return until if until is not None and until > now else None


def entitlements(
    subscriptions: Iterable[Subscription],
    features_of: Mapping[str, frozenset[str]],
    now: int,
    config: PolicyConfig,
) -> dict[str, Grant]:
    """The union of the features of every item of every subscription that grants now.

    When several subscriptions grant one feature, the one granting longest is recorded.
    """
    grants: dict[str, Grant] = {}
    for sub in subscriptions:
        until = grants_at(sub, now, config)
        if until is None:
            continue
        for item in sub.items:
            for feature in features_of.get(item.product_id, frozenset()):
                held = grants.get(feature)
                if held is None or until > held.valid_until or (
                    until == held.valid_until and sub.id < held.subscription_id
                ):
                    grants[feature] = Grant(feature, until, sub.id)
    return grants


def user_of(facts: CustomerFacts, subscriptions: Iterable[Subscription]) -> tuple[str | None, str | None]:
    """SPEC section 5: the Checkout Session's client_reference_id, else the customer's
    metadata.user_id, else a subscription's (the newest that has one)."""
    if facts.checkout_user_id:
        return facts.checkout_user_id, "checkout_session"
    if facts.customer and facts.customer.metadata_user_id:
        return facts.customer.metadata_user_id, "customer_metadata"
    for sub in sorted(subscriptions, key=lambda s: (s.created, s.id), reverse=True):
        if sub.metadata_user_id:
            return sub.metadata_user_id, "subscription_metadata"
    return None, None


def next_check(
    subscriptions: Iterable[Subscription], grants: Mapping[str, Grant], now: int, config: PolicyConfig
) -> int | None:
    """When to sync this customer again if no webhook comes.

    - shortly before each `valid_until` (the lead), so that a renewal Stripe has confirmed is
      found while access still runs: access never flickers off;
    - just after each `valid_until` whose lead already passed, to end access and tell everyone;
    - just after a trial end or a cancel time, when Stripe moves the subscription.
    """
    lead = config.recheck_lead_s
    candidates: list[int] = []
    for until in {g.valid_until for g in grants.values()}:
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
) -> Access:
    """The whole decision for one customer at `now` (in the customer's clock)."""
    subs = facts.subscriptions
    user_id, source = user_of(facts, subs)
    if facts.customer is None or facts.customer.deleted:
        # A deleted customer keeps nothing, whatever its subscriptions said; its user id stays
        # so that consumers learn whose access ended.
        return Access(grants={}, user_id=user_id, user_id_source=source, next_check=None)
    grants = entitlements(subs, features_of, now, config)
    return Access(grants=grants, user_id=user_id, user_id_source=source,
                  next_check=next_check(subs, grants, now, config))
