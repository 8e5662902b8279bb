"""Stripe requests per sync for the four kinds of customer (docs/contract.md §5.1, §8): measured
on the fake's request log around one sync each, in this process (real Postgres and Redis).

- subscription only: no more than before purchases existed (one request);
- purchase only (a guest, `cs_...`); both; and a subscription customer after a dispute event.

docs/benchmarks.md ("Requests per sync") quotes these numbers; the test holds them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import stripe
from stripe.params.checkout import SessionCreateParams

from fakestripe import FakeStripe, FakeStripeControl
from shared.bootstrap import Services, bootstrap
from shared.coordination import AcceptedEvent, Keys, Run, Unit
from shared.settings import Duration, Settings
from tests.support.stripe_requests import RECORDED, SERVICE_KEY
from worker.sync import sync_customer

DRIVER_KEY = "sk_test_driver"


@pytest.fixture
async def fake() -> AsyncIterator[Any]:
    async with FakeStripe(api_keys=(SERVICE_KEY, DRIVER_KEY), tick_interval_s=0.1).running() as running:
        yield running
        # the session's check holds these requests to docs/contract.md §8 (tests/conftest.py)
        RECORDED.extend(running.fake.requests.to_json())


@pytest.fixture
async def deps(settings: Settings, fake: Any) -> AsyncIterator[Services]:
    tuned = settings.model_copy(update={"stripe_api_base": fake.base_url, "coalesce_window": Duration(0.05),
                                        "stripe_entitlements_audit": 0.0, "stripe_api_key": SERVICE_KEY})
    async with bootstrap(tuned, postgres=True, stripe_client=True, keys=Keys(prefix=tuned.redis_prefix)) as services:
        yield services


@pytest.fixture
async def client(fake: Any) -> AsyncIterator[stripe.StripeClient]:
    http = stripe.AIOHTTPClient()
    yield stripe.StripeClient(DRIVER_KEY, base_addresses={"api": fake.base_url}, http_client=http)
    await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped


def served(fake: Any) -> int:
    """Requests the service's key made so far."""
    return sum(e["count"] for e in fake.fake.requests.to_json() if e["key"] == SERVICE_KEY)


async def measured(deps: Services, fake: Any, cid: str, reason: str, *events: AcceptedEvent) -> int:
    before = served(fake)
    await sync_customer(deps, Run(Unit.customer(cid), "job", "token", 1, False, 0, reason, tuple(events)))
    return served(fake) - before


def event(kind: str, **hints: Any) -> AcceptedEvent:
    return AcceptedEvent.now(f"evt_{kind}", kind, "webhook", 1, **hints)


async def pay(client: stripe.StripeClient, ctl: FakeStripeControl, price: str, **extra: Any) -> dict[str, Any]:
    params = {"mode": "payment", "line_items": [{"price": price, "quantity": 1}],
              "success_url": "https://example.com/ok", "client_reference_id": "u_buyer", **extra}
    created = await client.v1.checkout.sessions.create_async(cast(SessionCreateParams, params))
    return await ctl.complete_checkout(created.id, payment_method="pm_card_visa")


async def test_requests_per_sync_by_kind_of_customer(deps: Services, fake: Any, client: stripe.StripeClient) -> None:
    product = await client.v1.products.create_async({"name": "Pro", "metadata": {"features": "pro"}})
    monthly = await client.v1.prices.create_async(
        {"product": product.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": "month"}})
    once = await client.v1.prices.create_async({"product": product.id, "unit_amount": 9900, "currency": "usd"})

    async def subscriber() -> str:
        customer = await client.v1.customers.create_async(
            {"metadata": {"user_id": "u_sub"}, "payment_method": "pm_card_visa",
             "invoice_settings": {"default_payment_method": "pm_card_visa"}})
        await client.v1.subscriptions.create_async({"customer": customer.id, "items": [{"price": monthly.id}]})
        return customer.id

    async with FakeStripeControl(fake.base_url) as ctl:
        sub_only = await subscriber()
        guest = (await pay(client, ctl, once.id))["id"]
        both = await subscriber()
        await pay(client, ctl, once.id, customer=both)
        disputed = await subscriber()

        # First syncs: as the webhooks that announce each would run them.
        await measured(deps, fake, sub_only, "customer.subscription.created", event("customer.subscription.created"))
        await measured(deps, fake, guest, "checkout.session.completed",
                       event("checkout.session.completed", client_reference_id="u_buyer", mode="payment"))
        await measured(deps, fake, both, "checkout.session.completed",
                       event("checkout.session.completed", client_reference_id="u_buyer", mode="payment"))
        await measured(deps, fake, disputed, "customer.subscription.created", event("customer.subscription.created"))

        # A later sync of each (the re-check's), and one after a dispute event.
        counts = {
            "subscription only": await measured(deps, fake, sub_only, "recheck"),
            "purchase only": await measured(deps, fake, guest, "recheck"),
            "both": await measured(deps, fake, both, "recheck"),
        }
        invoice = (await client.v1.subscriptions.list_async({"customer": disputed})).data[0].latest_invoice
        paid = (await client.v1.invoices.retrieve_async(str(invoice), {"expand": ["payments"]})).to_dict()
        pi = paid["payments"]["data"][0]["payment"]["payment_intent"]
        charge = (await client.v1.payment_intents.retrieve_async(pi)).latest_charge
        await ctl.dispute_charge(str(charge))
        counts["after a dispute event"] = await measured(deps, fake, disputed, "charge.dispute.created",
                                                         event("charge.dispute.created"))
        counts["after a dispute event, next sync"] = await measured(deps, fake, disputed, "recheck")
    print("requests per sync:", counts)
    assert counts == {
        "subscription only": 1,  # the subscriptions list, as before purchases existed
        "purchase only": 3,  # the session, its line items, its PaymentIntent's charges
        "both": 4,  # subscriptions, sessions, charges, the purchase's line items
        # subscriptions, sessions, charges, the disputed charge's disputes, the latest invoice
        "after a dispute event": 5,
        "after a dispute event, next sync": 5,  # while the dispute is open the reads go on
    }
    rows = await deps.pool.fetch("SELECT feature FROM active_entitlements WHERE customer_id = $1", disputed)
    assert rows == []  # the dispute suspended the subscription (DISPUTE_POLICY=revoke)
