"""What a buyer does on a subscription Checkout page, against the fake: the app creates the
session through the official SDK, the buyer completes it (the fake's control API). Used by the
tests, the benchmarks, the fault run and the demo alike."""

from __future__ import annotations

from typing import Any, cast

import stripe
from stripe.params.checkout import SessionCreateParams

from .client import FakeStripeControl


async def buy(
    client: stripe.StripeClient,
    control: FakeStripeControl,
    price: str,
    *,
    user: str,
    card: str | None,
    clock: str | None = None,
    trial_days: int | None = None,
    trial_end: int | None = None,
    missing_payment_method: str | None = None,
    payment_link: str | None = None,
) -> dict[str, Any]:
    """A subscription Checkout Session for `price`, completed with `card` (None: no card, which
    needs a trial); returns the completed session (its `customer` and `subscription`)."""
    params: dict[str, Any] = {
        "mode": "subscription",
        "line_items": [{"price": price, "quantity": 1}],
        "client_reference_id": user,
        "success_url": "https://example.com/ok",
    }
    subscription_data: dict[str, Any] = {}
    if trial_days is not None:
        subscription_data["trial_period_days"] = trial_days
    if trial_end is not None:
        subscription_data["trial_end"] = trial_end
    if missing_payment_method is not None:
        subscription_data["trial_settings"] = {"end_behavior": {"missing_payment_method": missing_payment_method}}
    if subscription_data:
        params["subscription_data"] = subscription_data
    if card is None:
        params["payment_method_collection"] = "if_required"
    if payment_link is not None:
        params["payment_link"] = payment_link
    session = await client.v1.checkout.sessions.create_async(cast(SessionCreateParams, params))
    completed: dict[str, Any] = await control.complete_checkout(session.id, payment_method=card, test_clock=clock)
    return completed
