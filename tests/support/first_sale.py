"""A first sale on the fake through the SDK, and the wait for it in the view: the launcher's
tests (`entitled run`, with or without webhooks) both start from it."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import stripe


async def subscribe_user(client: stripe.StripeClient, user_id: str, feature: str) -> str:
    """A monthly subscription granting `feature` to a new customer of `user_id`; its id."""
    product = await client.v1.products.create_async({"name": "P", "metadata": {"features": feature}})
    price = await client.v1.prices.create_async(
        {"product": product.id, "unit_amount": 100, "currency": "usd", "recurring": {"interval": "month"}})
    customer = await client.v1.customers.create_async(
        {"metadata": {"user_id": user_id}, "payment_method": "pm_card_visa",
         "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    await client.v1.subscriptions.create_async({"customer": customer.id, "items": [{"price": price.id}]})
    return customer.id


async def granted(conn: asyncpg.Connection, timeout_s: float) -> list[tuple[str, str]]:
    """(user_id, feature) of the view once it holds any row, or [] after `timeout_s`. The view
    appears only once the worker migrated the database."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await conn.fetchval("SELECT to_regclass('active_entitlements') IS NOT NULL"):
            rows = await conn.fetch("SELECT user_id, feature FROM active_entitlements")
            if rows:
                return [(r["user_id"], r["feature"]) for r in rows]
        await asyncio.sleep(0.3)
    return []
