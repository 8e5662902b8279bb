"""The access policy held to SPEC section 5's table, by property tests (hypothesis).

The oracle below restates the table row by row, independently of shared/access/policy.py.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.access import (
    Customer,
    CustomerFacts,
    Item,
    PolicyConfig,
    Subscription,
    decide,
    entitlements,
    grants_at,
    next_check,
    parse_subscription,
    user_of,
)

NOW = 1_800_000_000
DAY = 86_400
PRODUCTS = {
    "prod_basic": frozenset({"basic"}),
    "prod_pro": frozenset({"basic", "pro", "export"}),
    "prod_addon": frozenset({"addon"}),
    "prod_none": frozenset(),
}
STATUSES = ["trialing", "active", "past_due", "paused", "unpaid", "canceled", "incomplete", "incomplete_expired"]

times = st.integers(min_value=NOW - 40 * DAY, max_value=NOW + 40 * DAY)
maybe_time = st.none() | times
configs = st.builds(
    PolicyConfig,
    renewal_grace_s=st.sampled_from([0, 90, 3600, DAY]),
    past_due_grace_s=st.sampled_from([0, 3600, 7 * DAY]),
)


@st.composite
def subscriptions(draw: st.DrawFn, sub_id: str | None = None) -> Subscription:
    n_items = draw(st.integers(1, 3))
    items = tuple(
        Item(id=f"si_{i}", price_id=f"price_{i}", product_id=draw(st.sampled_from(sorted(PRODUCTS))),
             current_period_start=None, current_period_end=draw(maybe_time))
        for i in range(n_items)
    )
    return Subscription(
        id=sub_id or f"sub_{draw(st.integers(0, 10**6))}",
        customer_id="cus_1",
        status=draw(st.sampled_from(STATUSES)),
        items=items,
        created=draw(times),
        trial_end=draw(maybe_time),
        cancel_at=draw(maybe_time),
        cancel_at_period_end=draw(st.booleans()),
        collection_paused=draw(st.booleans()),
        past_due_since=draw(maybe_time),
    )


def oracle_until(sub: Subscription, cfg: PolicyConfig) -> int | None:
    """SPEC section 5, row by row."""
    period_end = max((i.current_period_end for i in sub.items if i.current_period_end is not None), default=None)
    cancel = sub.cancel_at if sub.cancel_at is not None else (period_end if sub.cancel_at_period_end else None)
    if sub.status == "trialing":
        end = sub.trial_end if sub.trial_end is not None else period_end
        until = None if end is None else end + cfg.renewal_grace_s
    elif sub.status == "active":  # with or without pause_collection: "as active"
        until = None if period_end is None else period_end + cfg.renewal_grace_s
    elif sub.status == "past_due":
        until = None if sub.past_due_since is None else sub.past_due_since + cfg.past_due_grace_s
    else:  # paused, unpaid, canceled, incomplete, incomplete_expired: no
        return None
    if cancel is not None:
        # "the cancel time, no grace" (never beyond what the status itself grants)
        until = cancel if until is None else min(until, cancel)
    return until


@given(sub=subscriptions(), cfg=configs, now=times)
def test_each_subscription_follows_the_table(sub: Subscription, cfg: PolicyConfig, now: int) -> None:
    """Whether a subscription grants, and until when, is exactly the table's row for its status."""
    until = oracle_until(sub, cfg)
    expected = until if until is not None and until > now else None
    assert grants_at(sub, now, cfg) == expected


@given(sub=subscriptions(), cfg=configs, now=times)
def test_statuses_without_access_never_grant(sub: Subscription, cfg: PolicyConfig, now: int) -> None:
    """paused, unpaid, canceled, incomplete, incomplete_expired grant nothing, whatever the dates."""
    for status in ("paused", "unpaid", "canceled", "incomplete", "incomplete_expired"):
        assert entitlements([replace(sub, status=status)], PRODUCTS, now, cfg) == {}


@given(sub=subscriptions(), cfg=configs, now=times)
def test_cancel_at_period_end_ends_at_the_period_end_without_grace(sub: Subscription, cfg: PolicyConfig, now: int) -> None:
    """An active subscription set to cancel at the period end keeps access exactly until then."""
    sub = replace(sub, status="active", cancel_at=None, cancel_at_period_end=True)
    period_end = sub.period_end
    got = grants_at(sub, now, cfg)
    if period_end is None or period_end <= now:
        assert got is None
    else:
        assert got == period_end


@given(sub=subscriptions(), cfg=configs, now=times)
def test_pause_collection_changes_nothing(sub: Subscription, cfg: PolicyConfig, now: int) -> None:
    """pause_collection keeps the subscription active and, per Stripe, the customer keeps access."""
    assert grants_at(replace(sub, collection_paused=True), now, cfg) == grants_at(
        replace(sub, collection_paused=False), now, cfg
    )


@given(subs=st.lists(subscriptions(), max_size=4), cfg=configs, now=times)
def test_features_are_the_union_over_granting_subscriptions(subs: list[Subscription], cfg: PolicyConfig, now: int) -> None:
    """A customer's features are the union of the features of every item of every subscription that grants now,
    each valid until the longest grant."""
    subs = [replace(s, id=f"sub_{n}") for n, s in enumerate(subs)]
    expected: dict[str, int] = {}
    for sub in subs:
        until = oracle_until(sub, cfg)
        if until is None or until <= now:
            continue
        for item in sub.items:
            for feature in PRODUCTS[item.product_id]:
                expected[feature] = max(expected.get(feature, until), until)
    got = entitlements(subs, PRODUCTS, now, cfg)
    assert {f: g.valid_until for f, g in got.items()} == expected
    for grant in got.values():
        granting = next(s for s in subs if s.id == grant.subscription_id)
        assert grant.feature in {f for i in granting.items for f in PRODUCTS[i.product_id]}


@given(subs=st.lists(subscriptions(), min_size=1, max_size=3), extra=subscriptions(sub_id="sub_extra"),
       cfg=configs, now=times)
def test_cancelling_one_subscription_keeps_the_others_features(
    subs: list[Subscription], extra: Subscription, cfg: PolicyConfig, now: int
) -> None:
    """Scenario 7: adding a subscription never removes a feature, and cancelling it returns exactly
    to what the others grant."""
    subs = [replace(s, id=f"sub_{n}") for n, s in enumerate(subs)]
    alone = set(entitlements(subs, PRODUCTS, now, cfg))
    both = set(entitlements([*subs, extra], PRODUCTS, now, cfg))
    assert alone <= both
    cancelled = replace(extra, status="canceled")
    assert set(entitlements([*subs, cancelled], PRODUCTS, now, cfg)) == alone


@given(subs=st.lists(subscriptions(), max_size=4), cfg=configs, now=times)
def test_recheck_comes_before_access_ends(subs: list[Subscription], cfg: PolicyConfig, now: int) -> None:
    """The re-check is never after the earliest valid_until (+1 s to observe the end), and when
    there is room it runs the lead time before it, so a confirmed renewal is found while access
    still runs (no flicker)."""
    subs = [replace(s, id=f"sub_{n}") for n, s in enumerate(subs)]
    grants = entitlements(subs, PRODUCTS, now, cfg)
    check = next_check(subs, grants, now, cfg)
    if not grants:
        return
    assert check is not None
    assert check > now
    earliest = min(g.valid_until for g in grants.values())
    assert check <= max(earliest + 1, now + 1)
    if earliest - cfg.recheck_lead_s > now + 1:
        assert check <= earliest - cfg.recheck_lead_s


def test_trial_paused_at_trial_end_loses_access() -> None:
    """Scenario 1: the subscription Stripe paused at trial end grants nothing, even though its
    trial end plus grace is still ahead and Stripe's own entitlements would keep it."""
    cfg = PolicyConfig(renewal_grace_s=DAY, past_due_grace_s=7 * DAY)
    sub = Subscription(id="sub_1", customer_id="cus_1", status="paused", created=NOW - DAY,
                       items=(Item("si", "price", "prod_pro", NOW - DAY, NOW),), trial_end=NOW - 60)
    facts = CustomerFacts("cus_1", Customer("cus_1"), (sub,), None, frozenset({"pro"}))
    assert decide(facts, PRODUCTS, NOW, cfg).grants == {}


def test_past_due_keeps_access_through_the_grace() -> None:
    """Scenario 2: past_due grants until it became past_due + PAST_DUE_GRACE, then not."""
    cfg = PolicyConfig(renewal_grace_s=DAY, past_due_grace_s=7 * DAY)
    sub = Subscription(id="sub_1", customer_id="cus_1", status="past_due", created=NOW - 40 * DAY,
                       items=(Item("si", "price", "prod_basic", NOW - DAY, NOW + 29 * DAY),),
                       past_due_since=NOW - DAY)
    assert grants_at(sub, NOW, cfg) == NOW + 6 * DAY
    assert grants_at(sub, NOW + 6 * DAY, cfg) is None


def test_deleted_customer_has_nothing() -> None:
    """A deleted customer keeps no features, but its user id stays known."""
    cfg = PolicyConfig(renewal_grace_s=DAY, past_due_grace_s=7 * DAY)
    sub = Subscription(id="sub_1", customer_id="cus_1", status="active", created=NOW,
                       items=(Item("si", "price", "prod_pro", NOW, NOW + DAY),), metadata_user_id="u_1")
    facts = CustomerFacts("cus_1", Customer("cus_1", deleted=True), (sub,), None, frozenset())
    decision = decide(facts, PRODUCTS, NOW, cfg)
    assert decision.grants == {}
    assert decision.user_id == "u_1"


@settings(max_examples=50)
@given(checkout=st.none() | st.just("u_checkout"), customer_meta=st.none() | st.just("u_customer"),
       sub_meta=st.none() | st.just("u_sub"))
def test_user_id_precedence(checkout: str | None, customer_meta: str | None, sub_meta: str | None) -> None:
    """client_reference_id of the Checkout Session, else the customer's metadata.user_id, else a
    subscription's; None until one is known."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="active", created=NOW, items=(),
                       metadata_user_id=sub_meta)
    facts = CustomerFacts("cus_1", Customer("cus_1", metadata_user_id=customer_meta), (sub,), checkout, frozenset())
    user, _source = user_of(facts, facts.subscriptions)
    assert user == (checkout or customer_meta or sub_meta)


def test_parses_stripe_subscription_fixture_shape() -> None:
    """A subscription shaped like Stripe's own example object (basil: periods on the items) parses."""
    raw = {
        "id": "sub_1", "object": "subscription", "customer": {"id": "cus_1", "object": "customer"},
        "status": "past_due", "created": NOW - 40 * DAY, "trial_end": None, "cancel_at": None,
        "cancel_at_period_end": False, "pause_collection": None, "metadata": {"user_id": "u_9"},
        "test_clock": {"id": "clock_1", "object": "test_helpers.test_clock", "frozen_time": NOW},
        "latest_invoice": {"id": "in_1", "object": "invoice", "status": "open", "created": NOW - 3 * DAY,
                           "status_transitions": {"finalized_at": NOW - 2 * DAY}},
        "items": {"object": "list", "data": [
            {"id": "si_1", "object": "subscription_item", "current_period_start": NOW - 2 * DAY,
             "current_period_end": NOW + 28 * DAY,
             "price": {"id": "price_1", "object": "price", "product": "prod_pro"}},
        ]},
    }
    sub = parse_subscription(raw)
    assert sub.customer_id == "cus_1"
    assert sub.period_end == NOW + 28 * DAY
    assert sub.past_due_since == NOW - 2 * DAY
    assert sub.metadata_user_id == "u_9"
    assert sub.test_clock == "clock_1"
    assert sub.product_ids == {"prod_pro"}
