"""Reads from Stripe: the endpoints of SPEC section 8, and nothing else.

Each method makes the fewest requests it can (`expand` instead of follow-up calls, 100 per
page) and returns plain dicts or parsed models; parsing stays in `shared/access/facts.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import stripe
from stripe.params import EventListParams

from shared.access import CustomerFacts, parse_customer, parse_subscription

# One list call brings each subscription with its customer, its clock and its latest invoice
# (for when it became past_due): no call per subscription.
SUBSCRIPTION_EXPAND = ["data.customer", "data.test_clock", "data.latest_invoice"]
PAGE = 100


def _missing(exc: stripe.InvalidRequestError) -> bool:
    return exc.http_status == 404 or exc.code == "resource_missing"


class StripeReader:
    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    async def subscriptions_of(self, customer_id: str) -> list[dict[str, Any]]:
        page = await self.client.v1.subscriptions.list_async(
            {"customer": customer_id, "status": "all", "limit": PAGE, "expand": SUBSCRIPTION_EXPAND}
        )
        return [s.to_dict() async for s in page.auto_paging_iter()]

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        try:
            obj = await self.client.v1.customers.retrieve_async(customer_id, {"expand": ["test_clock"]})
        except stripe.InvalidRequestError as exc:
            if _missing(exc):
                return None
            raise
        return obj.to_dict()

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        try:
            obj = await self.client.v1.subscriptions.retrieve_async(subscription_id)
        except stripe.InvalidRequestError as exc:
            if _missing(exc):
                return None
            raise
        return obj.to_dict()

    async def checkout_session(self, session_id: str) -> dict[str, Any] | None:
        try:
            obj = await self.client.v1.checkout.sessions.retrieve_async(session_id)
        except stripe.InvalidRequestError as exc:
            if _missing(exc):
                return None
            raise
        return obj.to_dict()

    async def checkout_user_id(self, customer_id: str) -> str | None:
        """client_reference_id of the customer's newest completed Checkout Session that has one."""
        page = await self.client.v1.checkout.sessions.list_async(
            {"customer": customer_id, "status": "complete", "limit": PAGE}
        )
        async for session in page.auto_paging_iter():
            ref = session.client_reference_id
            if isinstance(ref, str) and ref.strip():
                return ref.strip()
        return None

    async def active_entitlements(self, customer_id: str) -> frozenset[str]:
        page = await self.client.v1.entitlements.active_entitlements.list_async(
            {"customer": customer_id, "limit": PAGE}
        )
        return frozenset([e.lookup_key async for e in page.auto_paging_iter()])

    async def clock_time(self, clock_id: str) -> int | None:
        try:
            clock = await self.client.v1.test_helpers.test_clocks.retrieve_async(clock_id)
        except stripe.InvalidRequestError as exc:
            if _missing(exc):
                return None
            raise
        return int(clock.frozen_time)

    async def product(self, product_id: str) -> dict[str, Any] | None:
        try:
            obj = await self.client.v1.products.retrieve_async(product_id)
        except stripe.InvalidRequestError as exc:
            if _missing(exc):
                return None
            raise
        return obj.to_dict()

    async def product_features(self, product_id: str) -> list[dict[str, Any]]:
        """The product's attached features: `[{"id": "feat_...", "lookup_key": ..., "active": ...}]`."""
        page = await self.client.v1.products.features.list_async(product_id, {"limit": PAGE})
        found = []
        async for pf in page.auto_paging_iter():
            found.append(pf.entitlement_feature.to_dict())
        return found

    async def products(self) -> AsyncIterator[dict[str, Any]]:
        page = await self.client.v1.products.list_async({"limit": PAGE})
        async for product in page.auto_paging_iter():
            yield product.to_dict()

    async def _list_raw(self, path: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every object of a list endpoint, page after page, as the plain dicts Stripe sent.

        For the sweep's lists of every subscription and every customer: `raw_request_async`
        goes through the same transport, rate limit and retries, and raises the same errors,
        but skips building an SDK object for each of 10,000 objects only to turn it back into a
        dict, which was most of the sweep's CPU (docs/benchmarks.md, "Reconciliation sweep")."""
        after: str | None = None
        while True:
            page_params = {**params, "limit": PAGE}
            if after is not None:
                page_params["starting_after"] = after
            response = await self.client.raw_request_async("get", path, **page_params)
            page = response.data
            objects = page.get("data") or []
            for obj in objects:
                yield obj
            if not page.get("has_more") or not objects:
                return
            after = str(objects[-1]["id"])

    async def all_subscriptions(self, test_clock: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every subscription of the account, any status (the sweep). Stripe leaves out those on
        test clocks unless asked for one clock at a time."""
        params: dict[str, Any] = {"status": "all"}
        if test_clock is not None:
            params["test_clock"] = test_clock
        async for sub in self._list_raw("/v1/subscriptions", params):
            yield sub

    async def all_customers(self, test_clock: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every customer (those on a test clock only when asked for that clock, as Stripe does)."""
        params: dict[str, Any] = {}
        if test_clock is not None:
            params["test_clock"] = test_clock
        async for customer in self._list_raw("/v1/customers", params):
            yield customer

    async def events_since(self, created_gte: int, types: Sequence[str]) -> list[dict[str, Any]]:
        """Events created at or after `created_gte`, oldest first (Stripe lists newest first)."""
        params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": PAGE}
        if types:
            params["types"] = list(types)
        page = await self.client.v1.events.list_async(cast(EventListParams, params))
        found = [e.to_dict() async for e in page.auto_paging_iter()]
        found.reverse()
        return found

    async def read_customer(self, customer_id: str, *, with_checkout: bool) -> CustomerFacts:
        """Everything a sync needs about one customer, in 2-4 requests."""
        raw_subs = await self.subscriptions_of(customer_id)
        subscriptions = tuple(parse_subscription(s) for s in raw_subs)
        raw_customer = next((s["customer"] for s in raw_subs if isinstance(s.get("customer"), dict)), None)
        clock_now: int | None = None
        for s in raw_subs:
            clock = s.get("test_clock")
            if isinstance(clock, dict) and isinstance(clock.get("frozen_time"), int):
                clock_now = int(clock["frozen_time"])
        if raw_customer is None:
            raw_customer = await self.customer(customer_id)
            if raw_customer is not None:
                clock = raw_customer.get("test_clock")
                if isinstance(clock, dict) and isinstance(clock.get("frozen_time"), int):
                    clock_now = int(clock["frozen_time"])
        customer = parse_customer(raw_customer) if raw_customer is not None else None
        if customer is not None and customer.test_clock and clock_now is None:
            clock_now = await self.clock_time(customer.test_clock)
        exists = customer is not None and not customer.deleted
        checkout_user: str | None = None
        stripe_features: frozenset[str] = frozenset()
        if exists and with_checkout:
            # Independent reads, side by side: the sync waits for one round trip, not two.
            checkout_user, stripe_features = await asyncio.gather(
                self.checkout_user_id(customer_id), self.active_entitlements(customer_id)
            )
        elif exists:
            stripe_features = await self.active_entitlements(customer_id)
        return CustomerFacts(
            customer_id=customer_id,
            customer=customer,
            subscriptions=subscriptions,
            checkout_user_id=checkout_user,
            stripe_features=stripe_features,
            clock_now=clock_now,
        )
