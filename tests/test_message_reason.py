"""A message's `reason` names the event that caused the change (docs/contract.md, messages):
the subscription, invoice, checkout or charge event, not Stripe's entitlement summary event
that follows it."""

from __future__ import annotations

from worker.sync import SUMMARY_EVENT, message_reason


def test_the_cause_wins_over_the_summary_event() -> None:
    assert message_reason(["customer.subscription.updated", SUMMARY_EVENT], None) == "customer.subscription.updated"
    assert message_reason([SUMMARY_EVENT, "invoice.paid"], None) == "invoice.paid"
    assert message_reason(["checkout.session.completed", SUMMARY_EVENT, "customer.updated"], None) == (
        "checkout.session.completed")
    assert message_reason(["v1.customer.subscription.paused", SUMMARY_EVENT], None) == (
        "v1.customer.subscription.paused")


def test_without_a_cause() -> None:
    assert message_reason(["customer.updated", SUMMARY_EVENT], None) == "customer.updated"
    assert message_reason([SUMMARY_EVENT], "resync") == SUMMARY_EVENT
    assert message_reason([], "resync") == "resync"
    assert message_reason([], None) == "sync"
