"""docs/contract.md §9 scenario 10 and §5.1 end to end: one-time purchases through Payment Links
and Checkout, refunds and disputes. The fake Stripe sends its real events to the real ingest;
real worker processes sync from its API; assertions on the view, the stream and the API's rows.
"""

from __future__ import annotations

from typing import Any, cast

from stripe.params import PaymentLinkCreateParams
from stripe.params.checkout import SessionCreateParams

from api.access import access
from tests.support.stack import Stack


async def lifetime_price(stack: Stack, features: list[str], metadata: dict[str, str] | None = None) -> str:
    """A product with these Product Features and a one-time price (no `recurring`)."""
    product = await stack.stripe.v1.products.create_async({"name": "Lifetime"})
    for key in features:
        await stack.stripe.v1.products.features.create_async(product.id, {"entitlement_feature": await stack.feature(key)})
    price = await stack.stripe.v1.prices.create_async(
        {"product": product.id, "unit_amount": 19900, "currency": "usd", "metadata": metadata or {}}
    )
    return price.id


async def pay_link(stack: Stack, price: str, user: str, **link: Any) -> dict[str, Any]:
    """A Payment Link bought by a card: the completed session."""
    params = {"line_items": [{"price": price, "quantity": 1}], **link}
    created = await stack.stripe.v1.payment_links.create_async(cast(PaymentLinkCreateParams, params))
    session = await stack.ctl.open_payment_link(created.id, client_reference_id=user)
    return await stack.ctl.complete_checkout(session["id"], payment_method="pm_card_visa")


async def charge_of(stack: Stack, session: dict[str, Any]) -> str:
    pi = await stack.stripe.v1.payment_intents.retrieve_async(session["payment_intent"])
    assert isinstance(pi.latest_charge, str)
    return pi.latest_charge


def changes(messages: list[Any]) -> list[tuple[int, tuple[str, ...], tuple[str, ...]]]:
    return [(m.version, m.added, m.removed) for m in messages]


async def test_scenario_10_lifetime_purchase_without_a_customer(stack_factory: Any) -> None:
    """A lifetime deal through a Payment Link, no Customer: the buyer's user gets the features for
    ever (customer_id = the session id, valid_until infinity); a dispute ends them, a dispute won
    restores them, a full refund ends them. One message each time."""
    async with stack_factory(workers=2) as stack:
        price = await lifetime_price(stack, ["lifetime"])
        session = await pay_link(stack, price, "u_life")
        assert session["customer"] is None
        guest = session["id"]
        await stack.wait_features(guest, {"lifetime"})
        assert await stack.user_of(guest) == "u_life"
        assert (await stack.view(guest))["lifetime"].year == 9999  # Postgres `infinity`
        assert await stack.pool.fetchval(
            "SELECT count(*) FROM active_entitlements WHERE user_id = 'u_life' AND valid_until = 'infinity'") == 1
        # the same user with a real Customer too: both rows side by side, the API gives the union
        _, monthly = await stack.product("Pro", ["pro"])
        cus = await stack.customer(metadata={"user_id": "u_life"})
        await stack.subscribe(cus, monthly)
        await stack.wait_features(cus, {"pro"})
        found = await access(stack.pool, user_id="u_life", customer_id=None, timeout_s=5)
        assert found is not None
        assert found["customer_ids"] == sorted([guest, cus])
        assert found["features"] == ["lifetime", "pro"]
        lifetime = next(g for g in found["grants"] if g["feature"] == "lifetime")
        assert (lifetime["valid_until"], lifetime["customer_id"], lifetime["source"]) == (None, guest, guest)

        charge = await charge_of(stack, session)
        dispute = await stack.ctl.dispute_charge(charge)
        await stack.wait_features(guest, set())
        await stack.ctl.resolve_dispute(dispute["id"], "won")
        await stack.wait_features(guest, {"lifetime"})
        await stack.stripe.v1.refunds.create_async({"charge": charge})
        await stack.wait_features(guest, set())
        await stack.settle()
        messages = await stack.messages(guest)
        assert changes(messages) == [(1, ("lifetime",), ()), (2, (), ("lifetime",)),
                                     (3, ("lifetime",), ()), (4, (), ("lifetime",))]
        assert {m.user_id for m in messages} == {"u_life"}
        assert messages[1].reason.startswith("charge.dispute.")
        assert messages[3].reason == "charge.refunded"


async def test_a_partial_refund_changes_nothing_and_a_lost_dispute_ends_a_customer_purchase(
    stack_factory: Any,
) -> None:
    """`customer_creation=always`: the purchase is the Customer's, beside its subscriptions; a
    30-day pass (`entitled_duration` on the price) lasts 30 days from payment; a partial refund
    publishes nothing; a dispute lost ends it."""
    async with stack_factory(workers=1) as stack:
        price = await lifetime_price(stack, ["pass"], {"entitled_duration": "30d"})
        session = await pay_link(stack, price, "u_pass", customer_creation="always")
        cus = session["customer"]
        assert isinstance(cus, str)
        assert cus.startswith("cus_")
        await stack.wait_features(cus, {"pass"})
        charge = await charge_of(stack, session)
        paid_at = (await stack.stripe.v1.charges.retrieve_async(charge)).created
        assert int((await stack.view(cus))["pass"].timestamp()) == paid_at + 30 * 86400

        await stack.stripe.v1.refunds.create_async({"charge": charge, "amount": 500})
        await stack.settle()
        assert await stack.features(cus) == {"pass"}
        dispute = await stack.ctl.dispute_charge(charge)
        await stack.wait_features(cus, set())
        await stack.ctl.resolve_dispute(dispute["id"], "lost")
        await stack.settle()
        assert await stack.features(cus) == set()
        assert changes(await stack.messages(cus)) == [(1, ("pass",), ()), (2, (), ("pass",))]


async def test_async_payment_grants_when_it_succeeds_and_not_when_it_fails(stack_factory: Any) -> None:
    """A bank debit completes the session `unpaid` (nothing granted); `async_payment_succeeded`
    grants; `async_payment_failed` never does."""
    async with stack_factory(workers=1) as stack:
        price = await lifetime_price(stack, ["lifetime"])
        sessions = []
        for user, method in (("u_ok", "pm_usBankAccount_success"), ("u_ko", "pm_usBankAccount_failure")):
            params = {"mode": "payment", "line_items": [{"price": price, "quantity": 1}],
                      "success_url": "https://example.com/ok", "client_reference_id": user}
            created = await stack.stripe.v1.checkout.sessions.create_async(cast(SessionCreateParams, params))
            done = await stack.ctl.complete_checkout(created.id, payment_method=method)
            assert done["payment_status"] == "unpaid"
            sessions.append(done["id"])
        await stack.settle()
        assert await stack.features(sessions[0]) == set()
        for sid in sessions:
            await stack.ctl.settle_checkout(sid)
        await stack.wait_features(sessions[0], {"lifetime"})
        await stack.settle()
        assert await stack.features(sessions[1]) == set()
        assert {m.features for m in await stack.messages(sessions[1])} <= {()}  # its user, never a feature


async def test_a_disputed_renewal_suspends_the_subscription_until_won(stack_factory: Any) -> None:
    """DISPUTE_POLICY=revoke: the subscription whose latest paid invoice's charge is disputed
    grants nothing until the dispute closes won."""
    async with stack_factory(workers=1) as stack:
        _, price = await stack.product("Pro", ["pro"])
        cus = await stack.customer(metadata={"user_id": "u_sub"})
        sub = await stack.subscribe(cus, price)
        await stack.wait_features(cus, {"pro"})
        raw = await stack.stripe.v1.subscriptions.retrieve_async(sub)
        invoice = await stack.stripe.v1.invoices.retrieve_async(str(raw.latest_invoice), {"expand": ["payments"]})
        pi = invoice.to_dict()["payments"]["data"][0]["payment"]["payment_intent"]
        charge = (await stack.stripe.v1.payment_intents.retrieve_async(pi)).latest_charge
        assert isinstance(charge, str)
        dispute = await stack.ctl.dispute_charge(charge)
        await stack.wait_features(cus, set())
        await stack.ctl.resolve_dispute(dispute["id"], "won")
        await stack.wait_features(cus, {"pro"})


async def test_dispute_policy_keep_changes_nothing(stack_factory: Any) -> None:
    """DISPUTE_POLICY=keep: a dispute on a guest purchase leaves its features alone."""
    async with stack_factory(workers=1, worker_env={"DISPUTE_POLICY": "keep"}) as stack:
        price = await lifetime_price(stack, ["lifetime"])
        session = await pay_link(stack, price, "u_keep")
        await stack.wait_features(session["id"], {"lifetime"})
        await stack.ctl.dispute_charge(await charge_of(stack, session))
        await stack.settle()
        assert await stack.features(session["id"]) == {"lifetime"}
        assert len(await stack.messages(session["id"])) == 1




async def test_the_sweep_finds_purchases_and_disputes_without_any_webhook(stack_factory: Any) -> None:
    """docs/contract.md §12: with every webhook lost and the Events API poller off, the sweep
    finds a paid guest purchase, then an open dispute on it, then the dispute won."""
    env = {"RECONCILE_EVENTS_EVERY": "1d", "RECONCILE_SWEEP_EVERY": "3s"}
    async with stack_factory(workers=1, worker_env=env) as stack:
        price = await lifetime_price(stack, ["lifetime"])
        await stack.settle()
        await stack.set_faults(drop_rate=1.0)
        session = await pay_link(stack, price, "u_swept")
        guest = session["id"]
        await stack.wait_features(guest, {"lifetime"}, timeout_s=60)
        assert await stack.user_of(guest) == "u_swept"
        dispute = await stack.ctl.dispute_charge(await charge_of(stack, session))
        await stack.wait_features(guest, set(), timeout_s=60)
        await stack.ctl.resolve_dispute(dispute["id"], "won")
        await stack.wait_features(guest, {"lifetime"}, timeout_s=60)
        assert {m.reason for m in await stack.messages(guest)} == {"purchase"}


async def test_success_page_sync_of_a_guest_purchase(stack_factory: Any) -> None:
    """docs/contract.md §9 scenario 12 for a Payment Link without a Customer: POST /v1/sync with
    the session id, webhooks held back, answers the purchase's access under its `cs_...`
    customer; the webhooks that follow publish nothing more."""
    from tests.test_api_sync import api_client, post_sync

    async with stack_factory(workers=1) as stack:
        price = await lifetime_price(stack, ["lifetime"])
        await stack.set_faults(delay_s=(4.0, 4.5))
        async with api_client(stack.database_url, stack.redis_url) as client:
            session = await pay_link(stack, price, "u_page")
            status, body = await post_sync(client, {"checkout_session_id": session["id"]})
            assert status == 200, body
            assert (body["customer_ids"], body["user_id"], body["features"]) == ([session["id"]], "u_page", ["lifetime"])
            assert body["grants"][0]["valid_until"] is None
            await stack.settle()
            assert changes(await stack.messages(session["id"])) == [(1, ("lifetime",), ())]


async def test_a_purchase_carries_its_quantity_and_limits(stack_factory: Any) -> None:
    """docs/contract.md §5.1 with §5.2: 3 seats bought once give the feature quantity 3 and the
    product's `entitled_limits` times 3, for ever, in the view, `active_limits` and the message."""
    async with stack_factory(workers=1) as stack:
        product = await stack.stripe.v1.products.create_async(
            {"name": "Team lifetime", "metadata": {"entitled_limits": "projects=5"}})
        await stack.stripe.v1.products.features.create_async(product.id, {"entitlement_feature": await stack.feature("team")})
        price = await stack.stripe.v1.prices.create_async({"product": product.id, "unit_amount": 9900, "currency": "usd"})
        params = {"mode": "payment", "line_items": [{"price": price.id, "quantity": 3}],
                  "success_url": "https://example.com/ok", "client_reference_id": "u_team"}
        created = await stack.stripe.v1.checkout.sessions.create_async(cast(SessionCreateParams, params))
        await stack.ctl.complete_checkout(created.id, payment_method="pm_card_visa")
        await stack.wait_features(created.id, {"team"})
        row = await stack.pool.fetchrow("SELECT quantity FROM active_entitlements WHERE customer_id = $1", created.id)
        assert row["quantity"] == 3
        limit = await stack.pool.fetchrow("SELECT value, valid_until FROM active_limits WHERE customer_id = $1",
                                          created.id)
        assert (limit["value"], limit["valid_until"].year) == (15, 9999)
        await stack.settle()
        (message,) = await stack.messages(created.id)
        assert (message.quantities, message.limits) == ({"team": 3}, {"projects": 15})


async def test_the_operator_resyncs_and_shows_a_guest_purchase(stack_factory: Any) -> None:
    """`entitled resync --customer cs_...` takes a guest purchase's customer id, and the show
    that follows says why it grants: the purchase, for ever."""
    from tests.test_cli import entitled

    async with stack_factory(workers=1) as stack:
        price = await lifetime_price(stack, ["lifetime"])
        session = await pay_link(stack, price, "u_cli")
        await stack.wait_features(session["id"], {"lifetime"})
        code, out, err = await entitled(stack, "resync", "--customer", session["id"])
        assert code == 0, err
        assert "lifetime" in out
        assert "u_cli" in out
