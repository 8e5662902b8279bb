"""Which work refund, dispute and payment-mode Checkout events call for (docs/contract.md §4, §5.1)."""

from __future__ import annotations

from typing import Any

from shared.coordination import Unit, UnitKind, event_hints, route


def snapshot(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": "evt_1", "object": "event", "type": event_type, "created": 1, "livemode": False,
            "data": {"object": obj}}


def test_a_refund_is_its_customers_work_or_its_charges() -> None:
    with_customer = snapshot("charge.refunded", {"id": "ch_1", "object": "charge", "customer": "cus_1"})
    assert route(with_customer).unit == Unit.customer("cus_1")
    guest = snapshot("charge.refunded", {"id": "ch_1", "object": "charge", "customer": None})
    assert route(guest).unit == Unit(UnitKind.CHARGE, "ch_1")


def test_dispute_events_name_their_charge() -> None:
    for kind in ("charge.dispute.created", "charge.dispute.closed", "charge.dispute.funds_reinstated"):
        got = route(snapshot(kind, {"id": "dp_1", "object": "dispute", "charge": "ch_9", "payment_intent": "pi_9"}))
        assert got.unit == Unit(UnitKind.CHARGE, "ch_9")
    # evidence added: nothing §5.1 reads changes
    assert route(snapshot("charge.dispute.updated", {"id": "dp_1", "charge": "ch_9"})).ignored


def test_a_guest_purchase_is_a_customer_keyed_by_its_session() -> None:
    session = {"id": "cs_test_1", "object": "checkout.session", "mode": "payment", "customer": None,
               "status": "complete", "client_reference_id": "u_1"}
    assert route(snapshot("checkout.session.completed", session)).unit == Unit.customer("cs_test_1")
    assert event_hints(snapshot("checkout.session.completed", session)) == {"client_reference_id": "u_1",
                                                                             "mode": "payment"}
    subscription_mode = {**session, "mode": "subscription"}
    assert route(snapshot("checkout.session.completed", subscription_mode)).ignored
    assert event_hints(snapshot("checkout.session.completed", subscription_mode)) == {"client_reference_id": "u_1"}


def test_a_charge_unit_survives_the_wire() -> None:
    unit = Unit(UnitKind.CHARGE, "ch_1")
    assert Unit.decode(unit.wire) == unit
