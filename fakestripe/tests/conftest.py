"""Fixtures for the fake Stripe's tests: a running fake, the official SDK pointed at it, the
control client, and a webhook receiver (a tiny aiohttp app that records what it gets).

Every `fake` checks each object it answers or sends against stripe-python 16.1.0's resource
classes (`fakestripe.shape_log`); `objects_match_the_sdk` fails the run at its end, as an error,
if any test's fake served a key the SDK does not declare or left out a non-optional one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import stripe
from fake_helpers import Receiver, close_http

from fakestripe import FakeStripe, FakeStripeControl

# Problems found by every test's fake, for the session-end check.
SHAPE_PROBLEMS: dict[str, str] = {}


@pytest.fixture(scope="session", autouse=True)
def objects_match_the_sdk() -> Iterator[None]:
    yield
    assert not SHAPE_PROBLEMS, "objects the SDK does not describe:\n" + "\n".join(
        sorted(SHAPE_PROBLEMS.values())
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripe]:
    async with FakeStripe(seed=7, tick_interval_s=0.05, check_shapes=True).running() as running:
        yield running
    assert running.core.shape_log is not None
    SHAPE_PROBLEMS.update(running.core.shape_log.problems)


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
