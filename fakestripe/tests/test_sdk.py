"""The official `stripe` SDK (StripeClient, async methods, AIOHTTPClient) works against the fake
for every endpoint docs/contract.md §8 lists, with Stripe's pagination, filters, `expand` and errors.
"""

from __future__ import annotations

import base64

import aiohttp
import pytest
import stripe
from fake_helpers import DAY, close_http, make_catalog

from fakestripe import FakeStripe, FakeStripeControl


async def test_every_read_endpoint_of_spec_section_8(
    client: stripe.StripeClient, ctl: FakeStripeControl
) -> None:
    """Each read the worker makes returns the object it asked for through the SDK."""
    catalog = await make_catalog(client, ("pro", "export"))
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": 1_900_000_000})
    session = await client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "line_items": [{"price": catalog.price.id, "quantity": 1}],
            "client_reference_id": "u_42",
            "success_url": "https://example.com/ok",
        }
    )
    done = await ctl.complete_checkout(
        session.id, payment_method="pm_card_visa", test_clock=clock.id
    )
    customer_id, sub_id = done["customer"], done["subscription"]

    customer = await client.v1.customers.retrieve_async(customer_id)
    assert customer.test_clock == clock.id
    customers = await client.v1.customers.list_async({"test_clock": clock.id})
    assert [c.id for c in customers.data] == [customer_id]
    subs = await client.v1.subscriptions.list_async({"customer": customer_id, "status": "all"})
    assert [s.id for s in subs.data] == [sub_id]
    sub = await client.v1.subscriptions.retrieve_async(sub_id)
    assert sub.status == "active"
    product = await client.v1.products.retrieve_async(catalog.product.id)
    assert product.name == "Pro"
    features = await client.v1.products.features.list_async(catalog.product.id)
    assert {f.entitlement_feature.lookup_key for f in features.data} == {"pro", "export"}
    products = await client.v1.products.list_async({"active": True})
    assert catalog.product.id in [p.id for p in products.data]
    sessions = await client.v1.checkout.sessions.list_async({"customer": customer_id})
    assert [s.client_reference_id for s in sessions.data] == ["u_42"]
    retrieved = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (retrieved.status, retrieved.subscription) == ("complete", sub_id)
    entitlements = await client.v1.entitlements.active_entitlements.list_async(
        {"customer": customer_id}
    )
    assert sorted(e.lookup_key for e in entitlements.data) == ["export", "pro"]
    got_clock = await client.v1.test_helpers.test_clocks.retrieve_async(clock.id)
    assert (got_clock.frozen_time, got_clock.status) == (1_900_000_000, "ready")
    events = await client.v1.events.list_async({"type": "checkout.session.completed"})
    assert events.data[0].data.object["client_reference_id"] == "u_42"


async def test_pagination_walks_every_page_newest_first(client: stripe.StripeClient) -> None:
    """`auto_paging_iter` with `async for` sees all 25 customers once, newest first, and
    `ending_before` pages back; `has_more` is right on each page."""
    created = [
        (await client.v1.customers.create_async({"email": f"p{i}@example.com"})).id
        for i in range(25)
    ]
    page = await client.v1.customers.list_async({"limit": 10})
    assert page.has_more is True
    assert [c.id for c in page.data] == created[::-1][:10]
    seen = [c.id async for c in page.auto_paging_iter()]
    assert seen == created[::-1]
    last = await client.v1.customers.list_async({"limit": 10, "starting_after": created[5]})
    assert [c.id for c in last.data] == created[:5][::-1]
    assert last.has_more is False
    back = await client.v1.customers.list_async({"limit": 3, "ending_before": created[5]})
    assert [c.id for c in back.data] == created[8:5:-1]
    assert back.has_more is True


async def test_list_filters(client: stripe.StripeClient) -> None:
    """Filters of the reads: customers by email/test_clock/created; subscriptions by status
    (default hides canceled), price and test_clock (hidden without it, like Stripe);
    products by active; sessions by status and payment_link; events by type wildcard and types[]."""
    cheap = await make_catalog(client, ("basic",), name="Basic", unit_amount=500)
    pro = await make_catalog(client, ("pro",))
    await client.v1.products.update_async(cheap.product.id, {"active": False})
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": 1_900_000_000})
    on_clock = await client.v1.customers.create_async(
        {"email": "clock@example.com", "test_clock": clock.id}
    )
    plain = await client.v1.customers.create_async(
        {
            "email": "plain@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    assert [
        c.id for c in (await client.v1.customers.list_async({"email": "plain@example.com"})).data
    ] == [plain.id]
    assert [c.id for c in (await client.v1.customers.list_async()).data] == [plain.id]
    assert [
        c.id
        for c in (await client.v1.customers.list_async({"created": {"gte": plain.created}})).data
    ] == [plain.id]

    trial = await client.v1.subscriptions.create_async(
        {"customer": on_clock.id, "items": [{"price": cheap.price.id}], "trial_period_days": 7}
    )
    kept = await client.v1.subscriptions.create_async(
        {"customer": plain.id, "items": [{"price": pro.price.id}]}
    )
    gone = await client.v1.subscriptions.create_async(
        {"customer": plain.id, "items": [{"price": cheap.price.id}]}
    )
    await client.v1.subscriptions.cancel_async(gone.id)

    default = await client.v1.subscriptions.list_async({"customer": plain.id})
    assert [s.id for s in default.data] == [kept.id]
    everything = await client.v1.subscriptions.list_async({"customer": plain.id, "status": "all"})
    assert [s.id for s in everything.data] == [gone.id, kept.id]
    assert [
        s.id for s in (await client.v1.subscriptions.list_async({"status": "canceled"})).data
    ] == [gone.id]
    assert [
        s.id for s in (await client.v1.subscriptions.list_async({"price": pro.price.id})).data
    ] == [kept.id]
    assert [s.id for s in (await client.v1.subscriptions.list_async()).data] == [kept.id]
    by_clock = await client.v1.subscriptions.list_async(
        {"test_clock": clock.id, "status": "trialing"}
    )
    assert [s.id for s in by_clock.data] == [trial.id]

    active = await client.v1.products.list_async({"active": True})
    assert [p.id for p in active.data] == [pro.product.id]

    link_session = await client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "line_items": [{"price": pro.price.id, "quantity": 1}],
            "payment_link": "plink_1",
        }  # type: ignore[arg-type]  # payment_link: a fake-only parameter
    )
    await client.v1.checkout.sessions.create_async(
        {"mode": "subscription", "line_items": [{"price": pro.price.id, "quantity": 1}]}
    )
    by_link = await client.v1.checkout.sessions.list_async({"payment_link": "plink_1"})
    assert [s.id for s in by_link.data] == [link_session.id]
    assert len((await client.v1.checkout.sessions.list_async({"status": "open"})).data) == 2

    wildcard = await client.v1.events.list_async({"type": "customer.subscription.*", "limit": 100})
    assert {e.type for e in wildcard.data} == {
        "customer.subscription.created",
        "customer.subscription.deleted",
    }
    exact = await client.v1.events.list_async(
        {"types": ["product.created", "product.updated"], "limit": 100}
    )
    assert sorted(e.type for e in exact.data) == [
        "product.created",
        "product.created",
        "product.updated",
    ]
    newest = exact.data[0]
    recent = await client.v1.events.list_async({"created": {"gte": newest.created}, "limit": 100})
    assert newest.id in [e.id for e in recent.data]
    assert all(e.created >= newest.created for e in recent.data)
    older = await client.v1.events.list_async({"created": {"lt": newest.created}, "limit": 100})
    assert newest.id not in [e.id for e in older.data]


async def test_expand_on_retrieve_and_list(
    client: stripe.StripeClient, ctl: FakeStripeControl
) -> None:
    """`expand[]` replaces ids with objects on lists (`data.customer`, `data.latest_invoice`,
    `data.test_clock`) and on retrieve (`items.data.price.product`, `customer`,
    `latest_invoice`, `test_clock`, a session's `customer` and `subscription`)."""
    catalog = await make_catalog(client)
    clock = await client.v1.test_helpers.test_clocks.create_async({"frozen_time": 1_900_000_000})
    customer = await client.v1.customers.create_async(
        {"email": "e@example.com", "test_clock": clock.id}
    )
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}], "trial_period_days": 3}
    )
    listed = await client.v1.subscriptions.list_async(
        {
            "customer": customer.id,
            "status": "all",
            "expand": ["data.customer", "data.latest_invoice", "data.test_clock"],
        }
    )
    first = listed.data[0]
    assert isinstance(first.customer, stripe.Customer)
    assert first.customer.email == "e@example.com"
    assert isinstance(first.latest_invoice, stripe.Invoice)
    assert first.latest_invoice.status == "paid"
    assert first.test_clock is not None
    assert not isinstance(first.test_clock, str)
    assert first.test_clock.id == clock.id
    one = await client.v1.subscriptions.retrieve_async(
        sub.id, {"expand": ["items.data.price.product", "customer", "latest_invoice", "test_clock"]}
    )
    product = one["items"].data[0].price.product
    assert isinstance(product, stripe.Product)
    assert product.name == "Pro"
    session = await client.v1.checkout.sessions.create_async(
        {
            "mode": "subscription",
            "line_items": [{"price": catalog.price.id, "quantity": 1}],
            "customer": customer.id,
        }
    )
    await ctl.complete_checkout(session.id, payment_method="pm_card_visa")
    expanded = await client.v1.checkout.sessions.retrieve_async(
        session.id, {"expand": ["customer", "subscription"]}
    )
    assert isinstance(expanded.customer, stripe.Customer)
    assert isinstance(expanded.subscription, stripe.Subscription)
    ents = await client.v1.entitlements.active_entitlements.list_async(
        {"customer": customer.id, "expand": ["data.feature"]}
    )
    assert ents.data[0].feature.lookup_key == "pro"  # type: ignore[union-attr]  # expanded


async def test_expand_limits_match_stripe(client: stripe.StripeClient) -> None:
    """Five levels (`data.items.data.price.product` on a list) are refused with
    `property_expansion_max_depth` as Stripe does; a non-expandable field is refused too."""
    catalog = await make_catalog(client)
    customer = await client.v1.customers.create_async({})
    await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}], "trial_period_days": 3}
    )
    with pytest.raises(stripe.InvalidRequestError) as too_deep:
        await client.v1.subscriptions.list_async({"expand": ["data.items.data.price.product"]})
    assert too_deep.value.code == "property_expansion_max_depth"
    assert too_deep.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        await client.v1.subscriptions.list_async({"expand": ["data.status"]})


async def test_errors_surface_as_the_sdks_exceptions(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    """404 -> InvalidRequestError `resource_missing`; unknown parameter -> `parameter_unknown`;
    missing `customer` on active entitlements -> `parameter_missing`; a wrong key ->
    AuthenticationError. Every answer, error or not, carries a `Request-Id`."""
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.customers.retrieve_async("cus_nope")
    assert (missing.value.code, missing.value.http_status, missing.value.param) == (
        "resource_missing",
        404,
        "id",
    )
    assert str(missing.value.request_id).startswith("req_")
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        await client.v1.customers.list_async({"colour": "red"})  # type: ignore[arg-type]  # an unknown parameter on purpose
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "colour")
    with pytest.raises(stripe.InvalidRequestError) as required:
        await client.v1.entitlements.active_entitlements.list_async({})  # type: ignore[typeddict-item]  # on purpose
    assert required.value.code == "parameter_missing"
    http = stripe.AIOHTTPClient()
    bad = stripe.StripeClient(
        "sk_test_wrong", base_addresses={"api": fake.base_url}, http_client=http
    )
    try:
        with pytest.raises(stripe.AuthenticationError):
            await bad.v1.customers.list_async()
    finally:
        await close_http(http)
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{fake.base_url}/v1/nowhere", headers={"Authorization": "Bearer sk_test_fake"}
        ) as resp:
            body = await resp.json()
            assert resp.status == 404
            assert resp.headers["Request-Id"].startswith("req_")
            assert body["error"]["type"] == "invalid_request_error"
            assert set(body["error"]) >= {"type", "code", "message", "param", "doc_url"}
        async with session.get(
            f"{fake.base_url}/v1/customers",
            headers={"Authorization": "Basic " + base64.b64encode(b"sk_test_fake:").decode()},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Request-Id"].startswith("req_")


async def test_idempotency_keys_replay_the_first_answer(client: stripe.StripeClient) -> None:
    """A POST repeated with the same `Idempotency-Key` creates nothing new and answers the
    same object; reusing the key with other parameters is an IdempotencyError."""
    first = await client.v1.customers.create_async(
        {"email": "same@example.com"}, {"idempotency_key": "k1"}
    )
    again = await client.v1.customers.create_async(
        {"email": "same@example.com"}, {"idempotency_key": "k1"}
    )
    assert first.id == again.id
    assert len((await client.v1.customers.list_async()).data) == 1
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.customers.create_async(
            {"email": "other@example.com"}, {"idempotency_key": "k1"}
        )


async def test_deleted_customer_reads_as_deleted_stub(client: stripe.StripeClient) -> None:
    """Retrieving a deleted customer answers 200 `{"deleted": true}`, as Stripe does, and its
    subscriptions were canceled."""
    catalog = await make_catalog(client)
    customer = await client.v1.customers.create_async(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}]}
    )
    await client.v1.customers.delete_async(customer.id)
    again = await client.v1.customers.retrieve_async(customer.id)
    assert again.to_dict() == {"id": customer.id, "object": "customer", "deleted": True}
    assert (await client.v1.subscriptions.retrieve_async(sub.id)).status == "canceled"


async def test_trial_period_days_sets_items_period(client: stripe.StripeClient) -> None:
    """A 7-day trial ends 7 days after creation and the items' period is the trial."""
    catalog = await make_catalog(client)
    customer = await client.v1.customers.create_async({})
    sub = await client.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": catalog.price.id}], "trial_period_days": 7}
    )
    assert sub.status == "trialing"
    assert sub.trial_end is not None
    assert sub.trial_start is not None
    assert sub.trial_end - sub.trial_start == 7 * DAY
    assert sub["items"].data[0].current_period_end == sub.trial_end
