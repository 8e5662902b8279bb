"""A message's `reason` names the event that caused the change (docs/contract.md, messages):
the subscription, invoice, checkout or charge event, not Stripe's entitlement summary event
that follows it."""

from __future__ import annotations

from worker.sync import SUMMARY_EVENT, message_reason


def types(*names: str) -> list[tuple[str, int | None]]:
    """Events in arrival order, each created a second after the one before."""
    return [(name, 1_700_000_000 + i) for i, name in enumerate(names)]


def test_the_cause_wins_over_the_summary_event() -> None:
    assert message_reason(types("customer.subscription.updated", SUMMARY_EVENT), None) == "customer.subscription.updated"
    assert message_reason(types(SUMMARY_EVENT, "invoice.paid"), None) == "invoice.paid"
    assert message_reason(types("checkout.session.completed", SUMMARY_EVENT, "customer.updated"), None) == (
        "checkout.session.completed")
    assert message_reason(types("v1.customer.subscription.paused", SUMMARY_EVENT), None) == (
        "v1.customer.subscription.paused")


def test_the_latest_cause_by_stripes_clock_not_by_arrival() -> None:
    """The thin `v1.customer.subscription.paused` came first; the Events API poller then brought
    the purchase's day-old `checkout.session.completed` into the same run."""
    events: list[tuple[str, int | None]] = [("v1.customer.subscription.paused", 1_700_090_000),
                                            ("checkout.session.completed", 1_700_000_000)]
    assert message_reason(events, None) == "v1.customer.subscription.paused"
    # a replay's event has no `created`: it counts as the oldest
    assert message_reason([("invoice.paid", 1_700_000_000), ("customer.subscription.updated", None)],
                          None) == "invoice.paid"


def test_without_a_cause() -> None:
    assert message_reason(types("customer.updated", SUMMARY_EVENT), None) == "customer.updated"
    assert message_reason(types(SUMMARY_EVENT), "resync") == SUMMARY_EVENT
    assert message_reason([], "resync") == "resync"
    assert message_reason([], None) == "sync"
