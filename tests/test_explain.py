"""The policy's why in words (contract: the policy, "Why"): each sentence names the
subscription, the item, the table's row and until when, from `decide` itself."""

from __future__ import annotations

from shared.access import Customer, CustomerFacts, Item, PolicyConfig, Subscription, decide, explain

DAY = 86_400
NOW = 1_800_000_000
CONFIG = PolicyConfig(renewal_grace_s=DAY, past_due_grace_s=7 * DAY)


def facts(*subs: Subscription) -> CustomerFacts:
    return CustomerFacts("cus_1", Customer("cus_1", metadata_user_id="u_1"), subs, None, frozenset())


def test_a_past_due_grant_says_since_when_and_until_when() -> None:
    sub = Subscription("sub_1", "cus_1", "past_due", (Item("si_1", "price_1", "prod_1", 1, NOW + 30 * DAY),),
                       created=1, past_due_since=NOW - DAY)
    access = decide(facts(sub), {"prod_1": frozenset({"pro"})}, NOW, CONFIG)
    lines = explain.sentences(access)
    assert lines[0] == (f"sub_1 is past_due: si_1 (prod_1) grants pro until {explain.when(NOW + 6 * DAY)} "
                        f"[past_due] (past_due since {explain.when(NOW - DAY)}, as given)")
    assert lines[-1] == "user u_1 (from customer_metadata)"


def test_a_status_that_grants_nothing_says_so_and_a_lapsed_period_says_it_passed() -> None:
    paused = Subscription("sub_p", "cus_1", "paused", (Item("si_p", "price_1", "prod_1", 1, NOW + DAY),), created=1)
    lapsed = Subscription("sub_a", "cus_1", "active", (Item("si_a", "price_2", "prod_2", 1, NOW - 2 * DAY),),
                          created=2)
    access = decide(facts(paused, lapsed), {"prod_1": frozenset({"pro"}), "prod_2": frozenset({"team"})},
                    NOW, CONFIG)
    lines = explain.sentences(access)
    assert lines[0].startswith("sub_p is paused: si_p (prod_1) grants nothing: status paused [paused, unpaid")
    assert lines[1] == (f"sub_a is active: si_a (prod_2) granted until {explain.when(NOW - DAY)}, "
                        "which has passed [active]")
    assert access.features == frozenset()


def test_a_customer_without_subscriptions() -> None:
    assert explain.sentences(decide(facts(), {}, NOW, CONFIG))[0] == "no subscriptions: nothing is granted"


def test_purchases_say_for_ever_and_why_they_grant_nothing() -> None:
    """docs/contract.md §5.1 and §5.3: a paid lifetime purchase grants for ever; a refunded one
    and a disputed one each name their row (the dispute by id)."""
    from shared.access import Charge, Dispute, LineItem, Purchase

    def bought(sid: str, charge: Charge) -> Purchase:
        return Purchase(sid, "paid", charge.payment_intent, NOW, (LineItem(f"li_{sid}", "price_1", "prod_1", 1, None),),
                        charge)

    paid = bought("cs_a", Charge("ch_a", "pi_a", NOW - DAY, True, False))
    refunded = bought("cs_b", Charge("ch_b", "pi_b", NOW - DAY, True, True))
    disputed = bought("cs_c", Charge("ch_c", "pi_c", NOW - DAY, True, False, (Dispute("dp_1", "needs_response"),)))
    purchases = CustomerFacts("cs_a", None, (), "u_9", frozenset(), purchases=(paid, refunded, disputed))
    lines = explain.sentences(decide(purchases, {"prod_1": frozenset({"lifetime"})}, NOW, CONFIG))
    assert lines[0] == (f"one-time purchase cs_a, paid {explain.when(NOW - DAY)}: li_cs_a (prod_1) grants lifetime "
                        "for ever [paid one-time purchase: for ever, or metadata.entitled_duration from payment]")
    assert lines[1] == f"one-time purchase cs_b grants nothing, paid {explain.when(NOW - DAY)}: fully refunded"
    assert lines[2].endswith("payment under an open dispute (DISPUTE_POLICY=revoke) (dp_1)")
    assert lines[-1] == "user u_9 (from checkout_session)"


def test_quantities_limits_and_refused_metadata_in_words() -> None:
    """docs/contract.md §5.2 and §5.3: a seat count, each limit with its parts, a quantity-0 item
    that grants nothing, and a product whose limits were refused."""
    from shared.access import parse_limits

    team = Subscription("sub_t", "cus_1", "active", (
        Item("si_t", "price_t", "prod_team", 1, NOW + 30 * DAY, quantity=8),
        Item("si_z", "price_z", "prod_extra", 1, NOW + 30 * DAY, quantity=0),
        Item("si_b", "price_b", "prod_bad", 1, NOW + 30 * DAY),
    ), created=1)
    limits = {"prod_team": parse_limits({"entitled_limits": "projects=5"}),
              "prod_bad": parse_limits({"entitled_limits": "projects=lots"})}
    access = decide(facts(team), {"prod_team": frozenset({"team"}), "prod_extra": frozenset({"extra"}),
                                  "prod_bad": frozenset({"bad"})}, NOW, CONFIG, limits_of=limits)
    lines = explain.sentences(access)
    until = explain.when(NOW + 31 * DAY)
    assert lines[0].startswith(f"sub_t is active: si_t (prod_team) x8 grants team until {until} [active]; "
                               "si_z (prod_extra) grants nothing: quantity 0 [active]; ")
    assert "team: quantity 8" in lines
    assert f"limit projects = 40 (5 x 8 from si_t (prod_team)) until {until}" in lines
    assert "prod_bad gives no limits: metadata.entitled_limits: projects='lots' is not a whole number " \
           "(0 to 15 digits)" in lines
