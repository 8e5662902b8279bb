"""Reads from Stripe: the endpoints of docs/contract.md §8, and nothing else.

Each method makes the fewest requests it can (`expand` instead of follow-up calls, 100 per
page) and returns plain dicts or parsed models; parsing stays in `shared/access/facts.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from typing import Any, cast

import stripe
from stripe.params import EventListParams, SubscriptionItemListParams

from shared.access import CustomerFacts, parse_customer, parse_subscription

# One list call brings each subscription with its customer, its clock and its latest invoice
# (for when it became past_due): no call per subscription.
SUBSCRIPTION_EXPAND = ["data.customer", "data.test_clock", "data.latest_invoice"]
PAGE = 100


def _missing(exc: stripe.InvalidRequestError) -> bool:
    return exc.http_status == 404 or exc.code == "resource_missing"


async def retrieved(fetch: Awaitable[stripe.StripeObject]) -> dict[str, Any] | None:
    """A retrieve's object as a dict; None when Stripe says there is no such object."""
    try:
        obj = await fetch
    except stripe.InvalidRequestError as exc:
        if _missing(exc):
            return None
        raise
    return obj.to_dict()


class StripeReader:
    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

    async def subscriptions_of(self, customer_id: str) -> list[dict[str, Any]] | None:
        """Every subscription of the customer, each with all its items; None when Stripe says
        the customer does not exist (`resource_missing`: deleted, or its test clock was)."""
        try:
            page = await self.client.v1.subscriptions.list_async(
                {"customer": customer_id, "status": "all", "limit": PAGE, "expand": SUBSCRIPTION_EXPAND}
            )
            subs = [s.to_dict() async for s in page.auto_paging_iter()]
        except stripe.InvalidRequestError as exc:
            if _missing(exc):
                return None
            raise
        for sub in subs:
            await self._complete_items(sub)
        return subs

    async def _complete_items(self, sub: dict[str, Any]) -> None:
        """Stripe embeds only the first page of a subscription's items (`has_more`); the rest
        come from `GET /v1/subscription_items?subscription=` (docs/contract.md §5), in place."""
        items = sub.get("items")
        if not isinstance(items, dict) or not items.get("has_more"):
            return
        data = list(items.get("data") or [])
        params: dict[str, Any] = {"subscription": sub["id"], "limit": PAGE}
        if data:
            params["starting_after"] = data[-1]["id"]
        page = await self.client.v1.subscription_items.list_async(cast(SubscriptionItemListParams, params))
        seen = {i["id"] for i in data}
        data.extend([i.to_dict() async for i in page.auto_paging_iter() if i.id not in seen])
        sub["items"] = {**items, "data": data, "has_more": False}

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        return await retrieved(self.client.v1.customers.retrieve_async(customer_id, {"expand": ["test_clock"]}))

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        return await retrieved(self.client.v1.subscriptions.retrieve_async(subscription_id))

    async def checkout_session(self, session_id: str) -> dict[str, Any] | None:
        return await retrieved(self.client.v1.checkout.sessions.retrieve_async(session_id))

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
        clock = await retrieved(self.client.v1.test_helpers.test_clocks.retrieve_async(clock_id))
        return None if clock is None else int(clock["frozen_time"])

    async def product(self, product_id: str) -> dict[str, Any] | None:
        return await retrieved(self.client.v1.products.retrieve_async(product_id))

    async def product_features(self, product_id: str) -> list[dict[str, Any]]:
        """The product's attached features: `[{"id": "feat_...", "lookup_key": ..., "active": ...}]`
        (none for a product Stripe no longer has)."""
        try:
            page = await self.client.v1.products.features.list_async(product_id, {"limit": PAGE})
            return [pf.entitlement_feature.to_dict() async for pf in page.auto_paging_iter()]
        except stripe.InvalidRequestError as exc:
            if _missing(exc):
                return []
            raise

    async def products(self) -> AsyncIterator[dict[str, Any]]:
        """Every product, active or not, 100 a page (plain dicts, as the sweep's lists)."""
        async for product in self._list_raw("/v1/products", {}):
            yield product

    async def prices(self, product_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every price, active or not (of one product when given), 100 a page."""
        params: dict[str, Any] = {} if product_id is None else {"product": product_id}
        async for price in self._list_raw("/v1/prices", params):
            yield price

    async def _list_raw(self, path: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every object of a list endpoint, page after page, as the plain dicts Stripe sent.

        For the sweep's lists of every subscription and every customer: `raw_request_async`
        goes through the same transport, rate limit and retries, and raises the same errors,
        but skips building an SDK object for each of 10,000 objects only to turn it back into a
        dict, which was most of the sweep's CPU (docs/benchmarks.md, "Reconciliation sweep")."""
        after: str | None = None
        while True:
            page_params = dict(params)
            if after is not None:
                page_params["starting_after"] = after
            page = await self.page(path, page_params)
            objects = page.get("data") or []
            for obj in objects:
                yield obj
            if not page.get("has_more") or not objects:
                return
            after = str(objects[-1]["id"])

    def list_all(self, path: str, params: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Every object of a list endpoint, cursor-paged (plain dicts)."""
        return self._list_raw(path, dict(params))

    async def page(self, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One page (100 objects) of a list endpoint, as the plain dict Stripe sent: `data`, `has_more`."""
        response = await self.client.raw_request_async("get", path, **{**params, "limit": PAGE})
        page: dict[str, Any] = response.data
        return page

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

    async def read_customer(self, customer_id: str, *, with_checkout: bool, with_entitlements: bool = True) -> CustomerFacts:
        """Everything a sync needs about one customer: one request when nothing else is asked
        for (the subscriptions list brings the customer and its clock). `with_checkout` reads the
        user id from its Checkout Sessions, `with_entitlements` Stripe's own active
        entitlements (an audit; left empty when not read)."""
        raw_subs = await self.subscriptions_of(customer_id)
        gone = raw_subs is None
        raw_subs = raw_subs or []
        subscriptions = tuple(parse_subscription(s) for s in raw_subs)
        raw_customer = next((s["customer"] for s in raw_subs if isinstance(s.get("customer"), dict)), None)
        clock_now = _frozen_time(s.get("test_clock") for s in raw_subs)
        if raw_customer is None and not gone:
            raw_customer = await self.customer(customer_id)
            if raw_customer is not None:
                clock_now = _frozen_time([raw_customer.get("test_clock")])
        customer = parse_customer(raw_customer) if raw_customer is not None else None
        if customer is not None and customer.test_clock and clock_now is None:
            clock_now = await self.clock_time(customer.test_clock)
        exists = customer is not None and not customer.deleted
        wanted: list[Awaitable[Any]] = []
        if exists and with_checkout:
            wanted.append(self.checkout_user_id(customer_id))
        if exists and with_entitlements:
            wanted.append(self.active_entitlements(customer_id))
        # Independent reads, side by side: the sync waits for one round trip, not two.
        got = list(await asyncio.gather(*wanted))
        checkout_user: str | None = got.pop(0) if exists and with_checkout else None
        stripe_features: frozenset[str] = got.pop(0) if exists and with_entitlements else frozenset()
        return CustomerFacts(
            customer_id=customer_id,
            customer=customer,
            subscriptions=subscriptions,
            checkout_user_id=checkout_user,
            stripe_features=stripe_features,
            clock_now=clock_now,
        )


def _frozen_time(clocks: Iterable[Any]) -> int | None:
    """The `frozen_time` of the last expanded test clock among these, if any."""
    found: int | None = None
    for clock in clocks:
        if isinstance(clock, dict) and isinstance(clock.get("frozen_time"), int):
            found = int(clock["frozen_time"])
    return found
