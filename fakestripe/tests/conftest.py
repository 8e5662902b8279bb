"""Fixtures for the fake Stripe's tests: a running fake, the official SDK pointed at it, the
control client, and a webhook receiver (a tiny aiohttp app that records what it gets)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import stripe
from fake_helpers import Receiver, close_http

from fakestripe import FakeStripe, FakeStripeControl


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    async with FakeStripe(seed=7, tick_interval_s=0.05).running() as running:
        yield running


@pytest.fixture
async def client(fake: FakeStripe) -> AsyncIterator[stripe.StripeClient]:
    http = stripe.AIOHTTPClient()
    yield stripe.StripeClient(
        "sk_test_fake", base_addresses={"api": fake.base_url}, http_client=http
    )
    await close_http(http)


@pytest.fixture
async def ctl(fake: FakeStripe) -> AsyncIterator[FakeStripeControl]:
    async with FakeStripeControl(fake.base_url) as control:
        yield control


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver().running() as running:
        yield running
