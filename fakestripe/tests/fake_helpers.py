"""Helpers shared by the fake Stripe's tests: a recording webhook receiver and catalog setup."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import stripe
from aiohttp import web

from fakestripe import FakeStripeControl

DAY = 86400


@dataclass
class Received:
    body: bytes
    signature: str
    at: float

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """Records every POST; answers with the queued statuses first, then `default_status`."""

    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(
            Received(body, request.headers.get("Stripe-Signature", ""), time.time())
        )
        status = self.statuses.pop(0) if self.statuses else self.default_status
        return web.json_response({"received": True}, status=status)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        app = web.Application()
        app.router.add_post("/webhooks/stripe", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/stripe"
        try:
            yield self
        finally:
            await runner.cleanup()

    def events(self) -> list[dict[str, Any]]:
        return [r.event for r in self.received]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]

    def ids(self) -> list[str]:
        return [e["id"] for e in self.events()]


async def close_http(http: stripe.AIOHTTPClient) -> None:
    await http.close_async()  # type: ignore[no-untyped-call]  # stripe-python leaves it unannotated


@dataclass
class Catalog:
    product: stripe.Product
    price: stripe.Price
    features: list[stripe.entitlements.Feature]


async def make_catalog(
    client: stripe.StripeClient,
    lookup_keys: tuple[str, ...] = ("pro",),
    *,
    name: str = "Pro",
    interval: str = "month",
    unit_amount: int = 2000,
) -> Catalog:
    product = await client.v1.products.create_async({"name": name})
    price = await client.v1.prices.create_async(
        {
            "product": product.id,
            "unit_amount": unit_amount,
            "currency": "usd",
            "recurring": {"interval": interval},
        }
    )
    features = []
    for key in lookup_keys:
        existing = await client.v1.entitlements.features.list_async({"lookup_key": key})
        feature = (
            existing.data[0]
            if existing.data
            else await client.v1.entitlements.features.create_async(
                {"name": key.title(), "lookup_key": key}
            )
        )
        await client.v1.products.features.create_async(
            product.id, {"entitlement_feature": feature.id}
        )
        features.append(feature)
    return Catalog(product, price, features)


async def advance(
    client: stripe.StripeClient, ctl: FakeStripeControl, clock_id: str, to: int
) -> None:
    """Advance a test clock like a test against Stripe would, then wait for it and deliveries."""
    await client.v1.test_helpers.test_clocks.advance_async(clock_id, {"frozen_time": to})
    await ctl.wait_idle(timeout_s=10)
    clock = await client.v1.test_helpers.test_clocks.retrieve_async(clock_id)
    assert clock.status == "ready"


async def event_types(client: stripe.StripeClient, **filters: Any) -> list[str]:
    """Every retained event's type, oldest first (as emitted)."""
    types: list[str] = []
    params: dict[str, Any] = {"limit": 100, **filters}
    async for event in (await client.v1.events.list_async(params)).auto_paging_iter():  # type: ignore[arg-type]  # plain dict of list params
        types.append(event.type)
    return types[::-1]


# Lifecycle tests -------------------------------------------------------------------------

START = 1_900_000_000  # a test clock's frozen time: 2030-03-17T17:46:40Z
HOUR = 3600
SUMMARY = "entitlements.active_entitlement_summary.updated"
ADVANCING, READY = "test_helpers.test_clock.advancing", "test_helpers.test_clock.ready"


def clocked(*types: str) -> list[str]:
    """What a `*` endpoint gets while a test clock advances through `types`."""
    return [ADVANCING, *types, READY]


async def listen(client: stripe.StripeClient, receiver: Receiver) -> str:
    """Register the receiver for every event type; returns the signing secret."""
    endpoint = await client.v1.webhook_endpoints.create_async(
        {"url": receiver.url, "enabled_events": ["*"]}
    )
    assert endpoint.secret is not None
    return endpoint.secret


async def card_customer(
    client: stripe.StripeClient, clock_id: str, card: str = "pm_card_visa"
) -> stripe.Customer:
    return await client.v1.customers.create_async(
        {
            "email": "c@example.com",
            "test_clock": clock_id,
            "payment_method": card,
            "invoice_settings": {"default_payment_method": card},
        }
    )


def since(receiver: Receiver, count: int) -> list[str]:
    return receiver.types()[count:]
