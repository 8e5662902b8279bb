"""The access policy held to docs/contract.md §5, by property tests (hypothesis).

The oracle below (`Oracle`) restates section 5's table and text, sentence by sentence, without
importing anything from shared/access/policy.py: where the two disagree, one of them misread
the contract. The policy is called only through its public entry (`decide`, `judged_at`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.access import (
    Charge,
    Customer,
    CustomerFacts,
    Dispute,
    Invoice,
    Item,
    Known,
    ParseError,
    PastDue,
    PolicyConfig,
    ProductLimits,
    Purchase,
    PurchaseRow,
    Row,
    Subscription,
    decide,
    judged_at,
    metadata_features,
    next_check,
    parse_charge,
    parse_item,
    parse_limits,
    parse_purchase,
    parse_subscription,
    product_features,
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
CFG = PolicyConfig(renewal_grace_s=DAY, past_due_grace_s=7 * DAY)

times = st.integers(min_value=NOW - 40 * DAY, max_value=NOW + 40 * DAY)
maybe_time = st.none() | times
configs = st.builds(
    PolicyConfig,
    renewal_grace_s=st.sampled_from([0, 90, 3600, DAY]),
    past_due_grace_s=st.sampled_from([0, 3600, 7 * DAY]),
)

# What the strategies may generate. Each case of the contract the policy covers is turned on here.
MIXED_PERIODS = True  # items of one subscription with different periods (flexible billing)
SEND_INVOICE = True  # collection_method=send_invoice, with the invoice's due_date
PAUSED_PAST_DUE = True  # pause_collection on a past_due subscription
QUANTITIES = True  # item quantities: none (metered), 0, or more (docs/contract.md §5.2)

# docs/contract.md §5.2: `metadata.entitled_limits` of the products above, as a merchant writes it.
LIMIT_TEXT = {
    "prod_basic": "projects=5",
    "prod_pro": "projects=50, api_calls=10000",
    "prod_addon": "api_calls=2500,",
}
quantities = st.none() | st.integers(0, 9) if QUANTITIES else st.none()


@st.composite
def invoices(draw: st.DrawFn, send_invoice: bool) -> Invoice | None:
    status = draw(st.sampled_from(["open", "uncollectible", "paid", "draft", "void"]))
    if draw(st.booleans()):
        return None
    created = draw(times)
    finalized = None if status == "draft" else created + draw(st.integers(0, 3600))
    due = created + draw(st.sampled_from([0, 7, 30])) * DAY if send_invoice else None
    return Invoice(id="in_1", status=status, created=created, finalized_at=finalized, due_date=due)


@st.composite
def subscriptions(draw: st.DrawFn, sub_id: str | None = None) -> Subscription:
    status = draw(st.sampled_from(STATUSES))
    n_items = draw(st.integers(1, 3))
    shared_end = draw(times)
    items = tuple(
        Item(id=f"si_{i}", price_id=f"price_{i}", product_id=draw(st.sampled_from(sorted(PRODUCTS))),
             current_period_start=None, current_period_end=draw(times) if MIXED_PERIODS else shared_end,
             quantity=draw(quantities))
        for i in range(n_items)
    )
    send_invoice = SEND_INVOICE and draw(st.booleans())
    paused = draw(st.booleans()) and (PAUSED_PAST_DUE or status != "past_due")
    return Subscription(
        id=sub_id or f"sub_{draw(st.integers(0, 10**6))}",
        customer_id="cus_1",
        status=status,
        items=items,
        created=draw(times),
        trial_end=draw(times) if status == "trialing" else draw(maybe_time),
        cancel_at=draw(maybe_time),
        cancel_at_period_end=draw(st.booleans()),
        collection_paused=paused,
        collection_method="send_invoice" if send_invoice else "charge_automatically",
        latest_invoice=draw(invoices(send_invoice)),
    )


@dataclass(frozen=True)
class Oracle:
    """docs/contract.md §5, restated as plainly as it reads."""

    cfg: PolicyConfig

    def became_past_due(self, sub: Subscription, recorded: float | None, now: int) -> int:
        """'for collection_method=send_invoice, the unpaid invoice's due_date; otherwise when
        that invoice was finalized; failing both, when entitled first saw it past_due. A
        past_due subscription that renews while still past_due keeps its first moment.'"""
        inv = sub.latest_invoice
        stripe_says = None
        if inv is not None and inv.status in ("open", "uncollectible"):
            if sub.collection_method == "send_invoice" and inv.due_date is not None:
                stripe_says = inv.due_date
            else:
                stripe_says = inv.finalized_at
        known = [t for t in (stripe_says, None if recorded is None else int(recorded)) if t is not None]
        return min(known) if known else now

    def cancel_time(self, sub: Subscription) -> int | None:
        """'The cancel time is cancel_at; when only cancel_at_period_end is set, it is the
        earliest item's current_period_end.'"""
        if sub.cancel_at is not None:
            return sub.cancel_at
        if sub.cancel_at_period_end:
            ends = [i.current_period_end for i in sub.items if i.current_period_end is not None]
            return min(ends) if ends else None
        return None

    def until(self, sub: Subscription, item: Item, recorded: float | None, now: int) -> int | None:
        """The table's `until` for one item of one subscription; None when its row grants nothing.
        'each item's features last as long as that item's period'."""
        grace = self.cfg.renewal_grace_s
        item_end = item.current_period_end
        paused = sub.collection_paused
        if sub.status == "trialing":
            end = sub.trial_end if sub.trial_end is not None else item_end
            until = None if end is None else end + grace
        elif sub.status == "active" or (sub.status == "past_due" and paused):
            until = None if item_end is None else item_end + grace  # "as active"
        elif sub.status == "past_due":
            until = self.became_past_due(sub, recorded, now) + self.cfg.past_due_grace_s
        else:  # paused, unpaid, canceled, incomplete, incomplete_expired: no
            return None
        cancel = self.cancel_time(sub)
        if cancel is not None:
            # "the cancel time, no grace" (never beyond what the status itself grants)
            until = cancel if until is None else min(until, cancel)
        return until

    def granting(self, subs: list[Subscription], known: Known, now: int) -> list[tuple[Item, int, int]]:
        """The items that grant now, with until when and their quantity: 'an item with
        quantity: 0 grants nothing; an item without a quantity, as with metered prices, counts
        as 1' (section 5.2)."""
        out = []
        for sub in subs:
            for item in sub.items:
                until = self.until(sub, item, known.past_due_since.get(sub.id), now)
                quantity = 1 if item.quantity is None else item.quantity
                if until is not None and until > now and quantity != 0:
                    out.append((item, until, quantity))
        return out

    def features(self, subs: list[Subscription], known: Known, now: int) -> dict[str, int]:
        """'A customer's features = the union over the items of every subscription that grants
        now', each until its longest grant."""
        out: dict[str, int] = {}
        for item, until, _ in self.granting(subs, known, now):
            for feature in PRODUCTS[item.product_id]:
                out[feature] = max(out.get(feature, until), until)
        return out

    def quantities(self, subs: list[Subscription], known: Known, now: int) -> dict[str, int]:
        """'Each granted feature carries a quantity: the sum of the quantity of the items that
        grant it'."""
        out: dict[str, int] = {}
        for item, _, quantity in self.granting(subs, known, now):
            for feature in PRODUCTS[item.product_id]:
                out[feature] = out.get(feature, 0) + quantity
        return out

    def limits(self, subs: list[Subscription], known: Known, now: int) -> dict[str, tuple[int, int]]:
        """'each limit's value is its number times the item's quantity, summed over every item
        that grants now. Limits last as long as the item that grants them (several items: the
        latest).' name -> (value, valid_until)."""
        out: dict[str, tuple[int, int]] = {}
        for item, until, quantity in self.granting(subs, known, now):
            for part in LIMIT_TEXT.get(item.product_id, "").split(","):
                if not part.strip():
                    continue
                name, number = (x.strip() for x in part.split("="))
                value, latest = out.get(name, (0, until))
                out[name] = (value + int(number) * quantity, max(latest, until))
        return out


def facts_of(subs: list[Subscription], *, deleted: bool = False, clock_now: int | None = None,
             checkout: str | None = None, customer_user: str | None = None) -> CustomerFacts:
    return CustomerFacts("cus_1", Customer("cus_1", deleted=deleted, metadata_user_id=customer_user),
                         tuple(subs), checkout, frozenset(), clock_now=clock_now)


def numbered(subs: list[Subscription]) -> list[Subscription]:
    return [replace(s, id=f"sub_{n}") for n, s in enumerate(subs)]


@st.composite
def recorded_for(draw: st.DrawFn, subs: list[Subscription]) -> Known:
    """What an earlier sync may have recorded: when past_due subscriptions became past_due."""
    return Known(past_due_since={s.id: t for s in subs if (t := draw(maybe_time)) is not None})


@given(subs=st.lists(subscriptions(), max_size=4).map(numbered), cfg=configs, now=times, data=st.data())
def test_features_and_valid_until_follow_the_table(
    subs: list[Subscription], cfg: PolicyConfig, now: int, data: st.DataObject
) -> None:
    """Every status, cancel_at / cancel_at_period_end, pause_collection, past_due grace, trial,
    renewal grace: the features granted and each one's valid_until are the oracle's."""
    known = data.draw(recorded_for(subs))
    access = decide(facts_of(subs), PRODUCTS, now, cfg, known=known)
    assert {f: g.valid_until for f, g in access.grants.items()} == Oracle(cfg).features(subs, known, now)


@given(subs=st.lists(subscriptions(), min_size=1, max_size=4).map(numbered), cfg=configs, now=times, data=st.data())
def test_each_grant_says_why(subs: list[Subscription], cfg: PolicyConfig, now: int, data: st.DataObject) -> None:
    """docs/contract.md §5.3: each grant names a subscription and item that grant the feature until exactly
    then, and the table's row that says so."""
    known = data.draw(recorded_for(subs))
    oracle = Oracle(cfg)
    access = decide(facts_of(subs), PRODUCTS, now, cfg, known=known)
    for feature, grant in access.grants.items():
        sub = next(s for s in subs if s.id == grant.subscription_id)
        item = next(i for i in sub.items if i.id == grant.item_id)
        assert feature in PRODUCTS[item.product_id]
        assert oracle.until(sub, item, known.past_due_since.get(sub.id), now) == grant.valid_until
        expected_row = {"trialing": Row.TRIALING, "active": Row.ACTIVE, "past_due": Row.PAST_DUE}[sub.status]
        if sub.collection_paused and sub.status in ("active", "past_due"):
            expected_row = Row.PAUSE_COLLECTION
        cancel = oracle.cancel_time(sub)
        if cancel is not None and cancel == grant.valid_until:
            assert grant.row in (Row.CANCELLING, expected_row)  # the status's own end may equal it
        else:
            assert grant.row == expected_row


@given(sub=subscriptions(sub_id="sub_1"), cfg=configs, now=times)
def test_statuses_without_access_never_grant(sub: Subscription, cfg: PolicyConfig, now: int) -> None:
    """paused, unpaid, canceled, incomplete, incomplete_expired grant nothing, whatever the dates;
    the verdict names the row."""
    for status in ("paused", "unpaid", "canceled", "incomplete", "incomplete_expired"):
        access = decide(facts_of([replace(sub, status=status)]), PRODUCTS, now, cfg)
        assert access.grants == {}
        assert {i.row for v in access.verdicts for i in v.items} == {Row.NO_ACCESS}


@given(sub=subscriptions(sub_id="sub_1"), cfg=configs, now=times)
def test_pause_collection_keeps_access_as_active(sub: Subscription, cfg: PolicyConfig, now: int) -> None:
    """pause_collection keeps an active subscription's access exactly as without it."""
    sub = replace(sub, status="active")
    paused = decide(facts_of([replace(sub, collection_paused=True)]), PRODUCTS, now, cfg)
    unpaused = decide(facts_of([replace(sub, collection_paused=False)]), PRODUCTS, now, cfg)
    assert {f: g.valid_until for f, g in paused.grants.items()} == {
        f: g.valid_until for f, g in unpaused.grants.items()}


@given(sub=subscriptions(sub_id="sub_1"), cfg=configs, now=times, first=times, later=times)
def test_a_past_due_renewal_keeps_the_first_moment(
    sub: Subscription, cfg: PolicyConfig, now: int, first: int, later: int
) -> None:
    """A subscription that stays past_due across a renewal (a new, later invoice) keeps the
    moment recorded first: no second PAST_DUE_GRACE."""
    first, later = min(first, later), max(first, later)
    renewed = replace(sub, status="past_due", collection_paused=False, cancel_at=None, cancel_at_period_end=False,
                      latest_invoice=Invoice("in_2", "open", created=later, finalized_at=later))
    access = decide(facts_of([renewed]), PRODUCTS, now, cfg, known=Known(past_due_since={"sub_1": first}))
    assert access.past_due_since == {"sub_1": first}
    assert [v.past_due.at for v in access.verdicts if v.past_due] == [first]


@given(sub=subscriptions(sub_id="sub_1"), cfg=configs, now=times)
def test_past_due_without_any_moment_starts_its_grace_when_first_seen(
    sub: Subscription, cfg: PolicyConfig, now: int
) -> None:
    """'failing both, when entitled first saw it past_due': now, and recorded as such."""
    sub = replace(sub, status="past_due", collection_paused=False, latest_invoice=None, cancel_at=None,
                  cancel_at_period_end=False)
    access = decide(facts_of([sub]), PRODUCTS, now, cfg)
    assert access.past_due_since == {"sub_1": now}
    expected = {f for i in sub.items if i.quantity != 0 for f in PRODUCTS[i.product_id]} \
        if cfg.past_due_grace_s > 0 else set()
    assert access.features == expected


@given(subs=st.lists(subscriptions(), max_size=3).map(numbered), cfg=configs, clock=st.none() | times,
       wall=st.floats(min_value=NOW - DAY, max_value=NOW + DAY))
def test_a_test_clock_customer_is_judged_at_frozen_time(
    subs: list[Subscription], cfg: PolicyConfig, clock: int | None, wall: float
) -> None:
    """'A customer on a Stripe test clock is judged at the clock's frozen_time, not the wall
    clock'; stored times shift by the difference."""
    facts = facts_of(subs, clock_now=clock)
    now, offset = judged_at(facts, wall)
    assert now == (clock if clock is not None else int(wall))
    assert offset == (wall - clock if clock is not None else 0.0)
    access = decide(facts, PRODUCTS, now, cfg)
    assert {f: g.valid_until for f, g in access.grants.items()} == Oracle(cfg).features(subs, Known(), now)


@given(subs=st.lists(subscriptions(), min_size=1, max_size=3).map(numbered), extra=subscriptions(sub_id="sub_extra"),
       cfg=configs, now=times)
def test_cancelling_one_subscription_keeps_the_others_features(
    subs: list[Subscription], extra: Subscription, cfg: PolicyConfig, now: int
) -> None:
    """Scenario 7: adding a subscription never removes a feature, and cancelling it returns exactly
    to what the others grant."""
    alone = decide(facts_of(subs), PRODUCTS, now, cfg).features
    both = decide(facts_of([*subs, extra]), PRODUCTS, now, cfg).features
    assert alone <= both
    cancelled = replace(extra, status="canceled")
    assert decide(facts_of([*subs, cancelled]), PRODUCTS, now, cfg).features == alone


@given(subs=st.lists(subscriptions(), max_size=4).map(numbered), cfg=configs, now=times)
def test_recheck_comes_before_access_ends(subs: list[Subscription], cfg: PolicyConfig, now: int) -> None:
    """The re-check is never after the earliest valid_until (+1 s to observe the end), and when
    there is room it runs the lead time before it, so a confirmed renewal is found while access
    still runs (no flicker)."""
    access = decide(facts_of(subs), PRODUCTS, now, cfg)
    grants = access.grants
    assert access.next_check == next_check(subs, grants, now, cfg)
    if not grants:
        return
    check = access.next_check
    assert check is not None
    assert check > now
    earliest = min(g.valid_until for g in grants.values())
    assert check <= max(earliest + 1, now + 1)
    if earliest - cfg.recheck_lead_s > now + 1:
        assert check <= earliest - cfg.recheck_lead_s


@given(subs=st.lists(subscriptions(), max_size=3).map(numbered), cfg=configs, now=times,
       before=st.none() | st.sampled_from(["u_before"]), source=st.sampled_from(["checkout_session", "customer_metadata"]))
def test_a_deleted_customer_has_nothing_and_keeps_its_user(
    subs: list[Subscription], cfg: PolicyConfig, now: int, before: str | None, source: str
) -> None:
    """A deleted customer keeps no features; its user is the one Stripe still shows, else the
    one recorded before (Stripe no longer shows its metadata), with that one's source."""
    access = decide(facts_of(subs, deleted=True), PRODUCTS, now, cfg,
                    known=Known(user_id=before, user_id_source=source if before else None))
    assert access.grants == {}
    assert access.customer_gone
    assert access.next_check is None
    shown, shown_source = user_of(facts_of(subs), subs)
    if shown is not None:
        assert (access.user_id, access.user_id_source) == (shown, shown_source)
    else:
        assert (access.user_id, access.user_id_source) == (before, source if before else None)


def test_a_live_customer_does_not_inherit_a_recorded_user() -> None:
    """The recorded user is kept only for a deleted customer: a live one whose metadata lost the
    user has none."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="active", created=NOW,
                       items=(Item("si", "price", "prod_pro", NOW, NOW + DAY),))
    access = decide(facts_of([sub]), PRODUCTS, NOW, CFG, known=Known(user_id="u_old", user_id_source="checkout_session"))
    assert (access.user_id, access.user_id_source) == (None, None)


def test_trial_paused_at_trial_end_loses_access() -> None:
    """Scenario 1: the subscription Stripe paused at trial end grants nothing, even though its
    trial end plus grace is still ahead and Stripe's own entitlements would keep it."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="paused", created=NOW - DAY,
                       items=(Item("si", "price", "prod_pro", NOW - DAY, NOW),), trial_end=NOW - 60)
    facts = CustomerFacts("cus_1", Customer("cus_1"), (sub,), None, frozenset({"pro"}))
    assert decide(facts, PRODUCTS, NOW, CFG).grants == {}


def test_past_due_keeps_access_through_the_grace() -> None:
    """Scenario 2: past_due grants until it became past_due (the invoice's finalization) +
    PAST_DUE_GRACE, then not."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="past_due", created=NOW - 40 * DAY,
                       items=(Item("si", "price", "prod_basic", NOW - DAY, NOW + 29 * DAY),),
                       latest_invoice=Invoice("in_1", "open", created=NOW - DAY, finalized_at=NOW - DAY))
    access = decide(facts_of([sub]), PRODUCTS, NOW, CFG)
    assert access.grants["basic"].valid_until == NOW + 6 * DAY
    assert access.grants["basic"].row is Row.PAST_DUE
    assert decide(facts_of([sub]), PRODUCTS, NOW + 6 * DAY, CFG).grants == {}


def test_renewal_grace_keeps_access_past_the_period_end() -> None:
    """active: until current_period_end + RENEWAL_GRACE, so a late renewal never cuts access."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="active", created=NOW - 40 * DAY,
                       items=(Item("si", "price", "prod_basic", NOW - 30 * DAY, NOW - 60),))
    assert decide(facts_of([sub]), PRODUCTS, NOW, CFG).grants["basic"].valid_until == NOW - 60 + DAY
    assert decide(facts_of([sub]), PRODUCTS, NOW - 60 + DAY, CFG).grants == {}


@settings(max_examples=50)
@given(checkout=st.none() | st.just("u_checkout"), customer_meta=st.none() | st.just("u_customer"),
       sub_meta=st.none() | st.just("u_sub"))
def test_user_id_precedence(checkout: str | None, customer_meta: str | None, sub_meta: str | None) -> None:
    """client_reference_id of the Checkout Session, else the customer's metadata.user_id, else a
    subscription's; None until one is known. The source says which."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="active", created=NOW, items=(),
                       metadata_user_id=sub_meta)
    facts = facts_of([sub], checkout=checkout, customer_user=customer_meta)
    access = decide(facts, PRODUCTS, NOW, CFG)
    expected: tuple[str | None, str | None] = (
        (checkout, "checkout_session") if checkout else (customer_meta, "customer_metadata") if customer_meta
        else (sub_meta, "subscription_metadata") if sub_meta else (None, None)
    )
    assert (access.user_id, access.user_id_source) == expected


@given(attached=st.frozensets(st.sampled_from(["a", "b"])), listed=st.sampled_from(["", "x", "x, y", " ,x,,"]))
def test_product_features_else_metadata_features(attached: frozenset[str], listed: str) -> None:
    """'Features come from Stripe Product Features and, for accounts that do not use them, from
    the product's metadata.features (comma-separated lookup keys)'."""
    got = product_features(attached, metadata_features({"features": listed}))
    from_metadata = {p.strip() for p in listed.split(",") if p.strip()}
    assert got.features == (attached or from_metadata)
    assert got.source == ("product_features" if attached else "metadata.features" if from_metadata else None)


def test_parses_stripe_subscription_fixture_shape() -> None:
    """A subscription shaped like Stripe's own example object (basil: periods on the items) parses,
    and the policy reads when it became past_due from its expanded latest invoice."""
    raw = {
        "id": "sub_1", "object": "subscription", "customer": {"id": "cus_1", "object": "customer"},
        "status": "past_due", "created": NOW - 40 * DAY, "trial_end": None, "cancel_at": None,
        "cancel_at_period_end": False, "pause_collection": None, "metadata": {"user_id": "u_9"},
        "collection_method": "charge_automatically",
        "test_clock": {"id": "clock_1", "object": "test_helpers.test_clock", "frozen_time": NOW},
        "latest_invoice": {"id": "in_1", "object": "invoice", "status": "open", "created": NOW - 3 * DAY,
                           "due_date": None, "status_transitions": {"finalized_at": NOW - 2 * DAY}},
        "items": {"object": "list", "data": [
            {"id": "si_1", "object": "subscription_item", "current_period_start": NOW - 2 * DAY,
             "current_period_end": NOW + 28 * DAY,
             "price": {"id": "price_1", "object": "price", "product": "prod_pro"}},
        ]},
    }
    sub = parse_subscription(raw)
    assert sub.customer_id == "cus_1"
    assert sub.period_end == NOW + 28 * DAY
    assert sub.latest_invoice == Invoice("in_1", "open", created=NOW - 3 * DAY, finalized_at=NOW - 2 * DAY)
    assert sub.collection_method == "charge_automatically"
    assert sub.metadata_user_id == "u_9"
    assert sub.test_clock == "clock_1"
    assert sub.product_ids == {"prod_pro"}
    access = decide(facts_of([sub]), PRODUCTS, NOW, CFG)
    assert access.past_due_since == {"sub_1": NOW - 2 * DAY}


# Stripe as it really is (send_invoice, per-item periods, flexible billing): each of these failed on the policy before them (the commit that added them says how).
def test_send_invoice_past_due_counts_from_the_due_date() -> None:
    """collection_method=send_invoice (net 7): past_due from the invoice's due_date, not its
    finalization, so the customer gets the whole PAST_DUE_GRACE after the due date."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="past_due", created=NOW - 40 * DAY,
                       items=(Item("si", "price", "prod_basic", NOW - 8 * DAY, NOW + 22 * DAY),),
                       collection_method="send_invoice",
                       latest_invoice=Invoice("in_1", "open", created=NOW - 8 * DAY, finalized_at=NOW - 8 * DAY,
                                              due_date=NOW - DAY))
    access = decide(facts_of([sub]), PRODUCTS, NOW, CFG)
    assert access.grants["basic"].valid_until == NOW - DAY + 7 * DAY
    assert access.past_due_since == {"sub_1": NOW - DAY}
    assert access.verdicts[0].past_due == PastDue(NOW - DAY, "invoice_due_date")


def test_send_invoice_renewing_while_past_due_keeps_the_first_due_date() -> None:
    """The next period's invoice, due later, does not restart the grace."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="past_due", created=NOW - 70 * DAY,
                       items=(Item("si", "price", "prod_basic", NOW - DAY, NOW + 29 * DAY),),
                       collection_method="send_invoice",
                       latest_invoice=Invoice("in_2", "open", created=NOW - DAY, finalized_at=NOW - DAY,
                                              due_date=NOW + 6 * DAY))
    access = decide(facts_of([sub]), PRODUCTS, NOW, CFG, known=Known(past_due_since={"sub_1": NOW - 5 * DAY}))
    assert access.grants["basic"].valid_until == NOW + 2 * DAY


def test_each_item_lasts_its_own_period() -> None:
    """Flexible billing: a monthly item and a yearly add-on; each item's features last as long
    as that item's current_period_end + RENEWAL_GRACE."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="active", created=NOW - 20 * DAY,
                       items=(Item("si_m", "price_m", "prod_basic", NOW - 20 * DAY, NOW + 10 * DAY),
                              Item("si_y", "price_y", "prod_addon", NOW - 20 * DAY, NOW + 345 * DAY)))
    access = decide(facts_of([sub]), PRODUCTS, NOW, CFG)
    assert {f: (g.valid_until, g.item_id) for f, g in access.grants.items()} == {
        "basic": (NOW + 11 * DAY, "si_m"), "addon": (NOW + 346 * DAY, "si_y")}
    assert decide(facts_of([sub]), PRODUCTS, NOW + 11 * DAY, CFG).features == {"addon"}


def test_cancel_at_period_end_alone_is_the_earliest_item_end_and_cancel_at_wins() -> None:
    """'when only cancel_at_period_end is set, it is the earliest item's current_period_end';
    `cancel_at` wins over it."""
    items = (Item("si_m", "price_m", "prod_basic", NOW - 20 * DAY, NOW + 10 * DAY),
             Item("si_y", "price_y", "prod_addon", NOW - 20 * DAY, NOW + 345 * DAY))
    sub = Subscription(id="sub_1", customer_id="cus_1", status="active", created=NOW - 20 * DAY, items=items,
                       cancel_at_period_end=True)
    access = decide(facts_of([sub]), PRODUCTS, NOW, CFG)
    assert {f: g.valid_until for f, g in access.grants.items()} == {"basic": NOW + 10 * DAY, "addon": NOW + 10 * DAY}
    assert {g.row for g in access.grants.values()} == {Row.CANCELLING}
    with_cancel_at = decide(facts_of([replace(sub, cancel_at=NOW + 100 * DAY)]), PRODUCTS, NOW, CFG)
    assert {f: g.valid_until for f, g in with_cancel_at.grants.items()} == {
        "basic": NOW + 11 * DAY, "addon": NOW + 100 * DAY}


def test_pause_collection_on_past_due_keeps_access_as_active() -> None:
    """Stripe: with payment collection paused 'your customer retains access': a past_due
    subscription with pause_collection grants as active, past PAST_DUE_GRACE."""
    sub = Subscription(id="sub_1", customer_id="cus_1", status="past_due", created=NOW - 40 * DAY,
                       items=(Item("si", "price", "prod_basic", NOW - 10 * DAY, NOW + 20 * DAY),),
                       collection_paused=True,
                       latest_invoice=Invoice("in_1", "open", created=NOW - 10 * DAY, finalized_at=NOW - 10 * DAY))
    access = decide(facts_of([sub]), PRODUCTS, NOW, CFG)
    assert access.grants["basic"].valid_until == NOW + 21 * DAY
    assert access.grants["basic"].row is Row.PAUSE_COLLECTION


# --- One-time purchases, refunds and disputes (docs/contract.md §5.1) -------------------------
DISPUTE_STATUSES = ["warning_needs_response", "warning_under_review", "warning_closed",
                    "needs_response", "under_review", "won", "lost"]
DURATIONS = [None, "30d", "365d", "12h", "bogus"]
FOREVER_UNTIL = 253402300799  # docs/contract.md §7: `infinity`


@st.composite
def raw_purchases(draw: st.DrawFn, n: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """A payment-mode session, its line items (price expanded with its product) and charges,
    shaped as Stripe sends them."""
    pi = f"pi_{n}"
    session = {"id": f"cs_test_{n}", "object": "checkout.session", "mode": "payment", "status": "complete",
               "payment_status": draw(st.sampled_from(["paid", "paid", "unpaid", "no_payment_required"])),
               "payment_intent": pi, "created": draw(times), "client_reference_id": f"u_{n}"}
    items = []
    for i in range(draw(st.integers(1, 2))):
        price_d, product_d = draw(st.sampled_from(DURATIONS)), draw(st.sampled_from(DURATIONS))
        product = {"id": draw(st.sampled_from(sorted(PRODUCTS))), "object": "product",
                   "metadata": {} if product_d is None else {"entitled_duration": product_d}}
        items.append({"id": f"li_{n}_{i}", "object": "item", "quantity": draw(st.sampled_from([None, 0, 1, 5])),
                      "price": {"id": f"price_{n}_{i}", "object": "price", "product": product,
                                "metadata": {} if price_d is None else {"entitled_duration": price_d}}})
    charges = []
    if draw(st.booleans()) or session["payment_status"] == "paid":
        charges.append({"id": f"ch_{n}", "object": "charge", "payment_intent": pi, "status": "succeeded",
                        "created": draw(times), "refunded": draw(st.booleans()), "amount_refunded": 0,
                        "disputes": [{"id": f"dp_{n}_{k}", "object": "dispute", "status": s}
                                     for k, s in enumerate(draw(st.lists(st.sampled_from(DISPUTE_STATUSES),
                                                                         max_size=2)))]})
    return session, items, charges


def _purchase(raw: tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]) -> Purchase:
    session, items, charges = raw
    return parse_purchase(session, items, [parse_charge(c, c["disputes"]) for c in charges])


@dataclass(frozen=True)
class PurchaseOracle:
    """docs/contract.md §5.1, restated from its sentences over the raw Stripe shapes."""

    revoke: bool

    @staticmethod
    def duration(metadata: dict[str, Any]) -> int | None:
        value = metadata.get("entitled_duration")
        units = {"d": DAY, "h": 3600}
        if isinstance(value, str) and value[:-1].isdigit() and value[-1] in units:
            return int(value[:-1]) * units[value[-1]]
        return None

    def features(self, raws: list[Any], now: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for session, items, charges in raws:
            # "whose payment_status is paid ... grants the features of the products in its line items"
            if session["payment_status"] != "paid":
                continue
            charge = next((c for c in charges if c["status"] == "succeeded"), None)
            # "stops granting when its payment is fully refunded (the charge's refunded)"
            if charge is not None and charge["refunded"]:
                continue
            # "under DISPUTE_POLICY=revoke, while a dispute on it is open ... lost ends it;
            # an inquiry, warning_*, is not a dispute"
            statuses = {d["status"] for d in charge["disputes"]} if charge else set()
            if self.revoke and statuses & {"needs_response", "under_review", "lost"}:
                continue
            # "The moment it was paid is the successful charge's created"
            paid_at = charge["created"] if charge else session["created"]
            for item in items:
                if item["quantity"] == 0:  # docs/contract.md §5.2: quantity 0 grants nothing
                    continue
                price = item["price"]
                # "the duration set by metadata.entitled_duration on the price, else on the product"
                d = self.duration(price["metadata"])
                d = self.duration(price["product"]["metadata"]) if d is None else d
                until = FOREVER_UNTIL if d is None else paid_at + d
                if until <= now:
                    continue
                for feature in PRODUCTS[price["product"]["id"]]:
                    out[feature] = max(out.get(feature, until), until)
        return out


def guest_facts(purchases: list[Purchase], subs: list[Subscription] = (), charges: tuple[Charge, ...] = (),  # type: ignore[assignment]
                customer: str = "cus_1") -> CustomerFacts:
    real = None if customer.startswith("cs_") else Customer(customer)
    return CustomerFacts(customer, real, tuple(subs), None, frozenset(), purchases=tuple(purchases),
                         charges=charges)


@given(data=st.data(), revoke=st.booleans(), now=times, guest=st.booleans())
def test_purchases_grant_as_the_contract_says(data: st.DataObject, revoke: bool, now: int, guest: bool) -> None:
    """Paid, refunded (full or partial), disputed (open, won, lost, inquiries), durations on the
    price or the product, for ever: the features and valid_until are the oracle's, for a guest
    (`cs_...`) as for a customer."""
    raws = [data.draw(raw_purchases(n)) for n in range(data.draw(st.integers(1, 3)))]
    cfg = replace(CFG, revoke_disputed=revoke)
    facts = guest_facts([_purchase(r) for r in raws], customer="cs_test_0" if guest else "cus_1")
    access = decide(facts, PRODUCTS, now, cfg)
    assert not access.customer_gone
    assert {f: g.valid_until for f, g in access.grants.items()} == PurchaseOracle(revoke).features(raws, now)
    for grant in access.grants.values():
        assert grant.row is PurchaseRow.PAID
        assert grant.subscription_id.startswith("cs_test_")
    if all(g.valid_until == FOREVER_UNTIL for g in access.grants.values()):
        assert access.next_check is None or access.next_check < FOREVER_UNTIL - DAY


@given(data=st.data(), now=times)
def test_each_purchase_verdict_names_its_row(data: st.DataObject, now: int) -> None:
    """docs/contract.md §5.3: a purchase that grants nothing says which §5.1 row withholds it."""
    raw = data.draw(raw_purchases(0))
    verdict = decide(guest_facts([_purchase(raw)], customer="cs_test_0"), PRODUCTS, now, CFG).purchases[0]
    session, _, charges = raw
    charge = charges[0] if charges else None
    statuses = {d["status"] for d in charge["disputes"]} if charge else set()
    expected = (PurchaseRow.UNPAID if session["payment_status"] != "paid"
                else PurchaseRow.REFUNDED if charge and charge["refunded"]
                else PurchaseRow.DISPUTE_LOST if "lost" in statuses
                else PurchaseRow.DISPUTED if statuses & {"needs_response", "under_review"}
                else PurchaseRow.PAID)
    assert verdict.row is expected


@given(subs=st.lists(subscriptions(), min_size=1, max_size=3).map(numbered), cfg=configs, now=times,
       revoke=st.booleans(), status=st.sampled_from(DISPUTE_STATUSES), data=st.data())
def test_a_disputed_subscription_invoice_suspends_the_subscription(
    subs: list[Subscription], cfg: PolicyConfig, now: int, revoke: bool, status: str, data: st.DataObject
) -> None:
    """'Under DISPUTE_POLICY=revoke a subscription whose latest paid invoice's charge is under an
    open dispute grants nothing until the dispute closes won'; keep changes nothing."""
    cfg = replace(cfg, revoke_disputed=revoke)
    disputed = data.draw(st.sampled_from([s.id for s in subs]))
    subs = [replace(s, paid_payment_intent=f"pi_{s.id}") for s in subs]
    charge = Charge(f"ch_{disputed}", f"pi_{disputed}", NOW, True, False, (Dispute("dp_1", status),))
    access = decide(guest_facts([], subs, (charge,)), PRODUCTS, now, cfg)
    suspends = revoke and status in ("needs_response", "under_review", "lost")
    others = [s for s in subs if s.id != disputed or not suspends]
    assert {f: g.valid_until for f, g in access.grants.items()} == Oracle(cfg).features(others, Known(), now)


def test_a_partial_refund_changes_nothing_and_a_full_one_ends_the_grant() -> None:
    """docs/contract.md §5.1: only the charge's `refunded` (the whole amount) ends a purchase."""
    session = {"id": "cs_test_1", "mode": "payment", "status": "complete", "payment_status": "paid",
               "payment_intent": "pi_1", "created": NOW}
    items = [{"id": "li_1", "quantity": 1, "price": {"id": "price_1", "product": "prod_pro", "metadata": {}}}]
    partial = parse_charge({"id": "ch_1", "payment_intent": "pi_1", "status": "succeeded", "created": NOW,
                            "refunded": False, "amount_refunded": 500})
    full = replace(partial, refunded=True)
    kept = decide(guest_facts([parse_purchase(session, items, [partial])], customer="cs_test_1"), PRODUCTS, NOW, CFG)
    assert kept.features == {"basic", "pro", "export"}
    assert kept.grants["pro"].valid_until == FOREVER_UNTIL
    gone = decide(guest_facts([parse_purchase(session, items, [full])], customer="cs_test_1"), PRODUCTS, NOW, CFG)
    assert gone.grants == {}
    assert gone.purchases[0].row is PurchaseRow.REFUNDED


@given(subs=st.lists(subscriptions(), max_size=3).map(numbered), cfg=configs, now=times, revoke=st.booleans(),
       data=st.data())
def test_subscriptions_and_purchases_make_one_union(
    subs: list[Subscription], cfg: PolicyConfig, now: int, revoke: bool, data: st.DataObject
) -> None:
    """A customer with subscriptions and purchases: each feature granted by either, until the
    later of the two (a purchase for ever outlasts any period)."""
    cfg = replace(cfg, revoke_disputed=revoke)
    raws = [data.draw(raw_purchases(n)) for n in range(data.draw(st.integers(0, 2)))]
    access = decide(guest_facts([_purchase(r) for r in raws], subs), PRODUCTS, now, cfg)
    expected = Oracle(cfg).features(subs, Known(), now)
    for feature, until in PurchaseOracle(revoke).features(raws, now).items():
        expected[feature] = max(expected.get(feature, until), until)
    assert {f: g.valid_until for f, g in access.grants.items()} == expected


# docs/contract.md §5.2: quantities and limits.
LIMITS_OF = {pid: parse_limits({"entitled_limits": text}) for pid, text in LIMIT_TEXT.items()}


@given(subs=st.lists(subscriptions(), max_size=4).map(numbered), cfg=configs, now=times, data=st.data())
def test_each_feature_carries_the_summed_quantity_of_its_items(
    subs: list[Subscription], cfg: PolicyConfig, now: int, data: st.DataObject
) -> None:
    """Quantities are the oracle's: summed over the items granting the feature now, none counts
    as 1, an item of quantity 0 grants nothing (its feature is absent unless another grants it)."""
    known = data.draw(recorded_for(subs))
    access = decide(facts_of(subs), PRODUCTS, now, cfg, known=known, limits_of=LIMITS_OF)
    assert access.quantities == Oracle(cfg).quantities(subs, known, now)
    assert all(q > 0 for q in access.quantities.values())


@given(subs=st.lists(subscriptions(), max_size=4).map(numbered), cfg=configs, now=times, data=st.data())
def test_limits_are_number_times_quantity_summed_until_the_latest(
    subs: list[Subscription], cfg: PolicyConfig, now: int, data: st.DataObject
) -> None:
    """Each limit is the oracle's: per-unit number x quantity, summed over the granting items, in
    force until the latest of them; the parts the why lists add up to it."""
    known = data.draw(recorded_for(subs))
    access = decide(facts_of(subs), PRODUCTS, now, cfg, known=known, limits_of=LIMITS_OF)
    assert {n: (g.value, g.valid_until) for n, g in access.limits.items()} == Oracle(cfg).limits(subs, known, now)
    for limit in access.limits.values():
        assert limit.value == sum(p.per_unit * p.quantity for p in limit.parts)
        assert limit.valid_until == max(p.until for p in limit.parts)
        assert limit.source_id in {p.source_id for p in limit.parts}
    # without any product's limits, there are none
    assert decide(facts_of(subs), PRODUCTS, now, cfg, known=known).limits == {}


@given(sub=subscriptions(sub_id="sub_1"), cfg=configs, now=times)
def test_a_limit_ending_brings_the_recheck_forward(sub: Subscription, cfg: PolicyConfig, now: int) -> None:
    """A product with limits but no features still ends on time: its limits' valid_until gets a
    re-check like a feature's."""
    bare = {pid: frozenset[str]() for pid in PRODUCTS}
    access = decide(facts_of([sub]), bare, now, cfg, limits_of=LIMITS_OF)
    if not access.limits:
        return
    earliest = min(g.valid_until for g in access.limits.values())
    assert access.next_check is not None
    assert now < access.next_check <= max(earliest + 1, now + 1)


def test_team_plan_5_then_8_seats_scales_its_limits() -> None:
    """Scenario 11: a Team plan for 5 seats raised to 8; quantity and limits follow."""
    def seats(n: int) -> Subscription:
        return Subscription(id="sub_1", customer_id="cus_1", status="active", created=NOW,
                            items=(Item("si_1", "price_team", "prod_team", NOW, NOW + 30 * DAY, quantity=n),))
    team = {"prod_team": frozenset({"team"})}
    limits = {"prod_team": parse_limits({"entitled_limits": "projects=5,api_calls=10000"})}
    five = decide(facts_of([seats(5)]), team, NOW, CFG, limits_of=limits)
    eight = decide(facts_of([seats(8)]), team, NOW, CFG, limits_of=limits)
    assert (five.quantities, five.limit_values) == ({"team": 5}, {"projects": 25, "api_calls": 50_000})
    assert (eight.quantities, eight.limit_values) == ({"team": 8}, {"projects": 40, "api_calls": 80_000})
    none = decide(facts_of([seats(0)]), team, NOW, CFG, limits_of=limits)
    assert (none.features, none.limit_values) == (frozenset(), {})
    assert none.verdicts[0].items[0].quantity == 0
    assert not none.verdicts[0].grants_now


@given(values=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_.:-]{0,10}", fullmatch=True),
                              st.integers(0, 10**15 - 1), max_size=4),
       spaces=st.sampled_from(["", " ", "  "]))
def test_entitled_limits_round_trips(values: dict[str, int], spaces: str) -> None:
    """Whatever a merchant writes as `name=number` pairs, comma-separated (blanks allowed), reads back."""
    text = ",".join(f"{spaces}{n}{spaces}={spaces}{v}{spaces}" for n, v in values.items())
    assert parse_limits({"entitled_limits": text}) == ProductLimits(values)


@pytest.mark.parametrize("text", [
    "projects", "projects=", "=5", "projects=five", "projects=-1", "projects=1.5", "projects=1e3",
    "projects=5,projects=6", "two words=1", "projects=5;api=1", "projects=٣", "x=" + "9" * 16,
])
def test_malformed_entitled_limits_give_no_limits_and_say_why(text: str) -> None:
    """Parsing is strict: one bad part and the product gives no limits, with a problem the why
    shows; the product's features are untouched, and nothing raises."""
    parsed = parse_limits({"entitled_limits": text})
    assert parsed.values == {}
    assert parsed.problem is not None
    assert "entitled_limits" in parsed.problem
    sub = Subscription(id="sub_1", customer_id="cus_1", status="active", created=NOW,
                       items=(Item("si_1", "price_1", "prod_pro", NOW, NOW + DAY, quantity=2),))
    access = decide(facts_of([sub]), PRODUCTS, NOW, CFG, limits_of={"prod_pro": parsed})
    assert access.features == PRODUCTS["prod_pro"]
    assert access.limits == {}
    assert access.limit_problems == {"prod_pro": parsed.problem}


def test_entitled_limits_absent_or_not_text() -> None:
    assert parse_limits({}) == ProductLimits({}) == parse_limits(None) == parse_limits({"entitled_limits": " , "})
    assert parse_limits({"entitled_limits": 5}).problem is not None


@pytest.mark.parametrize(("raw", "expected"), [(None, None), (0, 0), (8, 8)])
def test_item_quantity_parses(raw: int | None, expected: int | None) -> None:
    item = {"id": "si_1", "price": {"id": "price_1", "product": "prod_1"}, "quantity": raw}
    assert parse_item(item).quantity == expected
    assert parse_item(item).units == (1 if expected is None else expected)


@pytest.mark.parametrize("raw", [-1, 1.5, "3", True])
def test_an_item_quantity_that_is_not_stripes_is_refused(raw: object) -> None:
    with pytest.raises(ParseError):
        parse_item({"id": "si_1", "price": {"id": "price_1", "product": "prod_1"}, "quantity": raw})
