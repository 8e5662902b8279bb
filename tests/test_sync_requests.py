"""Where a sync takes the Checkout Session's user from (worker/sync.py `checkout_user_plan`,
docs/contract.md §8): a request only when no signed event of the burst already names it."""

from __future__ import annotations

from shared.access import Access, Grant, Known
from shared.coordination import AcceptedEvent, Run, Unit
from worker.payments import Plan, plan
from worker.sync import audited, checkout_user_plan

NEW = Known()
KNOWN = Known(user_id="u_1", user_id_source="checkout_session")


def run(*events: AcceptedEvent, reason: str = "customer.subscription.created") -> Run:
    return Run(Unit.customer("cus_1"), "job", "token", 1, False, 0, reason, tuple(events))


def checkout(ref: str | None) -> AcceptedEvent:
    return AcceptedEvent.now("evt_c", "checkout.session.completed", "webhook", 1, client_reference_id=ref)


SUB = AcceptedEvent.now("evt_s", "customer.subscription.created", "webhook", 1)


def test_a_first_purchase_burst_naming_its_user_reads_no_session() -> None:
    assert checkout_user_plan(run(SUB, checkout("u_9")), NEW) == ("u_9", False)


def test_the_sessions_are_read_when_nothing_names_the_user() -> None:
    assert checkout_user_plan(run(SUB), NEW) == (None, True)  # the checkout webhook may be lost
    assert checkout_user_plan(run(SUB, checkout("")), NEW) == (None, True)
    assert checkout_user_plan(run(SUB, checkout(None)), KNOWN) == (None, True)  # a thin event
    assert checkout_user_plan(run(checkout("u_9"), reason="api.sync"), NEW) == (None, True)


def test_a_steady_state_sync_reads_no_session() -> None:
    assert checkout_user_plan(run(SUB), KNOWN) == ("u_1", False)


# --- docs/contract.md §5.1: when a sync reads purchases, charges and disputes (worker/payments.py)
def test_a_plain_subscription_sync_reads_no_payments() -> None:
    assert plan(run(SUB), KNOWN, sessions_wanted=False) is Plan.NONE
    assert plan(run(SUB, checkout("u_9")), NEW, sessions_wanted=False) is Plan.NONE
    # the sessions are listed anyway: what they show decides (no extra request when no purchase)
    assert plan(run(SUB), NEW, sessions_wanted=True) is Plan.SESSIONS


def test_purchases_disputes_and_refunds_read_payments() -> None:
    bought = AcceptedEvent.now("evt_p", "checkout.session.completed", "webhook", 1, client_reference_id="u",
                               mode="payment")
    assert plan(run(bought), KNOWN, sessions_wanted=False) is Plan.FULL
    for kind in ("charge.refunded", "charge.dispute.created", "v1.charge.dispute.closed",
                 "checkout.session.async_payment_succeeded"):
        assert plan(run(AcceptedEvent.now("evt_x", kind, "webhook", 1)), KNOWN, sessions_wanted=False) is Plan.FULL
    assert plan(run(SUB), Known(reads_payments=True), sessions_wanted=False) is Plan.FULL
    assert plan(run(reason="purchase"), KNOWN, sessions_wanted=False) is Plan.FULL


def test_the_entitlements_audit_leaves_purchases_out() -> None:
    """Stripe's own entitlements cover subscriptions only: a purchase's feature is no mismatch."""
    grants = {"pro": Grant("pro", 10, "sub_1"), "lifetime": Grant("lifetime", 10, "cs_test_1")}
    assert audited(Access(grants=grants, user_id=None, user_id_source=None, next_check=None)) == {"pro"}
