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
