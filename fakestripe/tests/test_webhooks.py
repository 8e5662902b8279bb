"""Webhooks are delivered signed exactly as Stripe signs them
(https://docs.stripe.com/webhooks#verify-events), to the endpoints whose `enabled_events`
match, as full snapshot events or as thin `v2.core.event` notifications.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import stripe
from fake_helpers import Receiver, make_catalog

from fakestripe import FakeStripe, FakeStripeControl


async def buy(client: stripe.StripeClient, ctl: FakeStripeControl) -> str:
    catalog = await make_catalog(client)
    session = await client.v1.checkout.sessions.create_async(
        {"mode": "subscription", "line_items": [{"price": catalog.price.id, "quantity": 1}]}
    )
    done = await ctl.complete_checkout(session.id, payment_method="pm_card_visa")
    return str(done["customer"])


async def test_every_delivery_verifies_with_construct_event(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """Each delivered body verifies with `stripe.Webhook.construct_event(body, header, secret)`
    and, without faults, the endpoint gets every event once, in the order they happened."""
    endpoint = await client.v1.webhook_endpoints.create_async(
        {"url": receiver.url, "enabled_events": ["*"]}
    )
    assert endpoint.secret is not None
    assert endpoint.secret.startswith("whsec_")
    await buy(client, ctl)
    await ctl.wait_idle()
    assert len(receiver.received) >= 10
    for got in receiver.received:
        event = stripe.Webhook.construct_event(got.body, got.signature, endpoint.secret)
        assert event.api_version == "2026-10-28.endive"
        assert got.signature.count("v1=") == 1
    listed = [
        e.id async for e in (await client.v1.events.list_async({"limit": 100})).auto_paging_iter()
    ]
    assert receiver.ids() == listed[::-1]
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            receiver.received[0].body, receiver.received[0].signature, "whsec_wrong"
        )


async def test_rolled_secret_sends_one_signature_per_valid_secret(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """During a secret roll each delivery carries two `v1=` values; each verifies with its own
    secret alone. Once the old secret expires, only the new one signs."""
    endpoint = await ctl.add_webhook_endpoint(receiver.url, ["customer.created"])
    old_secret = endpoint["secret"]
    rolled = await ctl.roll_secret(endpoint["id"], expires_in_s=0.5)
    new_secret = rolled["secret"]
    assert new_secret != old_secret
    await client.v1.customers.create_async({"email": "roll@example.com"})
    await ctl.wait_idle()
    got = receiver.received[-1]
    assert got.signature.count("v1=") == 2
    stripe.Webhook.construct_event(got.body, got.signature, old_secret)
    stripe.Webhook.construct_event(got.body, got.signature, new_secret)
    await asyncio.sleep(0.6)
    await client.v1.customers.create_async({"email": "after@example.com"})
    await ctl.wait_idle()
    later = receiver.received[-1]
    assert later.signature.count("v1=") == 1
    stripe.Webhook.construct_event(later.body, later.signature, new_secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(later.body, later.signature, old_secret)


async def test_enabled_events_and_disabled_endpoints(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """An endpoint only receives the types it enabled; a disabled endpoint receives nothing."""
    only = await client.v1.webhook_endpoints.create_async(
        {"url": receiver.url, "enabled_events": ["checkout.session.completed"]}
    )
    await buy(client, ctl)
    await ctl.wait_idle()
    assert receiver.types() == ["checkout.session.completed"]
    await client.v1.webhook_endpoints.update_async(only.id, {"disabled": True})
    await buy(client, ctl)
    await ctl.wait_idle()
    assert receiver.types() == ["checkout.session.completed"]


async def test_thin_events(
    fake: FakeStripe, client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """A thin endpoint gets `v2.core.event` notifications (type `v1.<type>`, RFC 3339
    `created`, `related_object`) that `StripeClient.parse_event_notification` accepts, and
    `GET /v2/core/events/{id}` points at the full v1 snapshot event."""
    endpoint = await ctl.add_webhook_endpoint(receiver.url, ["customer.created"], thin=True)
    customer = await client.v1.customers.create_async({"email": "thin@example.com"})
    await ctl.wait_idle()
    got = receiver.received[0]
    body = got.event
    assert body["object"] == "v2.core.event"
    assert body["type"] == "v1.customer.created"
    assert body["created"].endswith("Z")
    assert "T" in body["created"]
    assert body["related_object"] == {
        "id": customer.id,
        "type": "customer",
        "url": f"/v1/customers/{customer.id}",
    }
    notification = client.parse_event_notification(got.body, got.signature, endpoint["secret"])
    assert notification.id == body["id"]
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Bearer sk_test_fake"}) as session,
        session.get(f"{fake.base_url}/v2/core/events/{body['id']}") as resp,
    ):
        v2 = await resp.json()
    snapshot = await client.v1.events.retrieve_async(v2["snapshot_event"])
    assert snapshot.data.object["id"] == customer.id
    await ctl.set_webhook_options(endpoint["id"], thin=False)
    await client.v1.customers.create_async({"email": "full@example.com"})
    await ctl.wait_idle()
    assert receiver.received[-1].event["object"] == "event"


async def test_command_line_style_endpoint_with_fixed_secret(
    client: stripe.StripeClient, ctl: FakeStripeControl, receiver: Receiver
) -> None:
    """An endpoint registered through the control API can be given its secret in advance
    (as the command's `--webhook-secret` does), so a receiver can be configured first."""
    await ctl.add_webhook_endpoint(receiver.url, secret="whsec_fixed_for_tests")
    await client.v1.customers.create_async({})
    await ctl.wait_idle()
    got = receiver.received[0]
    stripe.Webhook.construct_event(got.body, got.signature, "whsec_fixed_for_tests")
