"""The fake checked against stripe-python 16.1.0's own definitions (`fakestripe.grounding`)."""

from __future__ import annotations

import stripe
from fakestripe.events import SNAPSHOT_TYPES, THIN_ONLY_TYPES

from fakestripe import grounding


def test_every_event_type_the_fake_emits_is_one_the_sdk_knows() -> None:
    """Snapshot types are in the SDK's webhook `enabled_events` list; the `v1.` thin type of
    each, and every thin-only type, is some `stripe.events` class's `LOOKUP_TYPE`."""
    thin = {"v1." + t for t in SNAPSHOT_TYPES} | set(THIN_ONLY_TYPES)
    problems = grounding.event_type_problems(SNAPSHOT_TYPES, thin)
    assert problems == [], "\n".join(problems)


def test_thin_only_subscription_types_exist() -> None:
    """The fake can send `v1.customer.subscription.past_due`, a type with no snapshot event."""
    assert "v1.customer.subscription.past_due" in THIN_ONLY_TYPES
    assert "customer.subscription.past_due" not in grounding.snapshot_event_types()


def test_object_check_finds_extra_and_missing_keys() -> None:
    """The shape check reports keys the SDK class does not declare and required ones absent."""
    problems = grounding.object_problems({"object": "subscription", "id": "sub_1", "bogus": 1})
    assert any("does not declare ['bogus']" in p for p in problems), problems
    assert any("non-optional" in p and "'customer'" in p for p in problems), problems
    assert grounding.declared(stripe.Subscription)[0] >= {"items", "billing_mode"}
