"""`FakeStripeControl`: an async Python client for the fake's `/_fake/*` control API.

async with FakeStripeControl("http://127.0.0.1:12111") as ctl:
    endpoint = await ctl.add_webhook_endpoint("http://127.0.0.1:8080/webhooks/stripe")
    await ctl.complete_checkout("cs_test_...", payment_method="pm_card_visa")
    await ctl.wait_idle()
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import aiohttp

JSON = dict[str, Any]


class FakeStripeControlError(Exception):
    """The control API answered with an error (status and JSON body attached)."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        super().__init__(f"{status}: {message or body}")
        self.status = status
        self.body = body


class FakeStripeControl:
    def __init__(self, base_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> FakeStripeControl:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        query: dict[str, str] | None = None,
        ok: Sequence[int] = (200,),
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(
            method, self.base_url + path, json=body, params=query
        ) as response:
            data = await response.json(content_type=None)
            if response.status not in ok:
                raise FakeStripeControlError(response.status, data)
            return data

    # General -------------------------------------------------------------------------------

    async def health(self) -> JSON:
        result: JSON = await self._call("GET", "/_fake/health")
        return result

    async def reset(self) -> None:
        """Forget every object, event, endpoint, fault and count; default settings again."""
        await self._call("POST", "/_fake/reset")

    # Clock and settings --------------------------------------------------------------------

    async def clock(self) -> JSON:
        """`{"now", "offset_s", "test_clocks": [{"id", "frozen_time", "status"}]}`."""
        result: JSON = await self._call("GET", "/_fake/clock")
        return result

    async def advance_clock(self, seconds: float) -> JSON:
        """Move the global clock forward and run every transition now due on it."""
        result: JSON = await self._call("POST", "/_fake/clock/advance", {"seconds": seconds})
        return result

    async def settings(self) -> JSON:
        result: JSON = await self._call("GET", "/_fake/settings")
        return result

    async def update_settings(self, **settings: Any) -> JSON:
        """E.g. `retry_exhausted_action="unpaid"`, `retry_schedule_days=[1, 2]`,
        `invoice_finalize_delay_s=3600`."""
        result: JSON = await self._call("POST", "/_fake/settings", settings)
        return result

    # Checkout ------------------------------------------------------------------------------

    async def complete_checkout(
        self,
        session_id: str,
        *,
        payment_method: str | None = None,
        test_clock: str | None = None,
        email: str | None = None,
        name: str | None = None,
    ) -> JSON:
        """The buyer pays: `payment_method=None` means no card (needs `if_required` and a trial)."""
        body = {
            "payment_method": payment_method,
            "test_clock": test_clock,
            "email": email,
            "name": name,
        }
        result: JSON = await self._call(
            "POST",
            f"/_fake/checkout/sessions/{session_id}/complete",
            {k: v for k, v in body.items() if v is not None},
        )
        return result

    # Seeding -----------------------------------------------------------------------------

    async def seed_subscribers(
        self, price: str, count: int, *, per_second: float = 100.0, start: int | None = None,
        email_prefix: str = "seed",
    ) -> JSON:
        """`count` customers with an active subscription to `price`, made in-process
        (`POST /_fake/seed/subscribers`), dated from `start` at `per_second` a second."""
        body: JSON = {"price": price, "count": count, "per_second": per_second, "email_prefix": email_prefix}
        if start is not None:
            body["start"] = start
        result: JSON = await self._call("POST", "/_fake/seed/subscribers", body)
        return result

    # Webhooks ------------------------------------------------------------------------------

    async def add_webhook_endpoint(
        self,
        url: str,
        enabled_events: Sequence[str] = ("*",),
        *,
        secret: str | None = None,
        thin: bool = False,
        faults: JSON | None = None,
    ) -> JSON:
        """Register an endpoint; the answer has `id` and `secret` (`whsec_...`)."""
        body: JSON = {"url": url, "enabled_events": list(enabled_events), "thin": thin}
        if secret is not None:
            body["secret"] = secret
        if faults is not None:
            body["faults"] = faults
        result: JSON = await self._call("POST", "/_fake/webhook_endpoints", body)
        return result

    async def webhook_endpoints(self) -> list[JSON]:
        result: JSON = await self._call("GET", "/_fake/webhook_endpoints")
        return list(result["data"])

    async def roll_secret(self, endpoint_id: str, expires_in_s: float = 86400.0) -> JSON:
        """A new secret; the old one stays valid (and signed with) for `expires_in_s`."""
        result: JSON = await self._call(
            "POST",
            f"/_fake/webhook_endpoints/{endpoint_id}/roll_secret",
            {"expires_in_s": expires_in_s},
        )
        return result

    async def set_webhook_faults(self, endpoint_id: str, **faults: Any) -> JSON:
        """Replace the endpoint's faults (unset options go back to their defaults)."""
        result: JSON = await self._call(
            "POST", f"/_fake/webhook_endpoints/{endpoint_id}/faults", faults
        )
        return result

    async def set_webhook_options(self, endpoint_id: str, *, thin: bool) -> JSON:
        result: JSON = await self._call(
            "POST", f"/_fake/webhook_endpoints/{endpoint_id}/options", {"thin": thin}
        )
        return result

    async def deliveries(
        self,
        *,
        endpoint_id: str | None = None,
        event_id: str | None = None,
        type: str | None = None,
    ) -> JSON:
        """`{"deliveries": [...], "dropped": [...], "pending": n}`."""
        query = {"endpoint_id": endpoint_id, "event_id": event_id, "type": type}
        result: JSON = await self._call(
            "GET", "/_fake/deliveries", query={k: v for k, v in query.items() if v is not None}
        )
        return result

    async def wait_idle(self, timeout_s: float = 10.0, *, include_retries: bool = True) -> JSON:
        """Wait until no delivery is queued or in flight and no test clock is advancing.

        Raises `TimeoutError` if that does not happen within `timeout_s`."""
        result: JSON = await self._call(
            "POST",
            "/_fake/deliveries/wait_idle",
            {"timeout_s": timeout_s, "include_retries": include_retries},
            ok=(200, 408),
        )
        if not result["idle"]:
            raise TimeoutError(f"fake Stripe not idle after {timeout_s}s: {result}")
        return result

    # API faults and stats ------------------------------------------------------------------

    async def set_api_faults(self, **faults: Any) -> JSON:
        """E.g. `latency_ms=[5, 50]`, `rate_429=0.1`, `rate_500=0.05`, `rate_reset=0.01`,
        `rps_limit=25`, `methods=["GET"]`, `seed=1`."""
        result: JSON = await self._call("POST", "/_fake/api_faults", faults)
        return result

    async def clear_api_faults(self) -> None:
        await self._call("DELETE", "/_fake/api_faults")

    async def stats(self) -> JSON:
        """`{"total", "max_rps", "statuses": {...}, "routes": {"GET /v1/customers/{id}": {...}}}`."""
        result: JSON = await self._call("GET", "/_fake/stats")
        return result

    async def requests(self) -> list[JSON]:
        """Every API request so far, by shape: `[{"key", "method", "route", "params", "expand",
        "example", "count"}]` (`route` is the template, `GET /v1/customers/{id}`)."""
        result: JSON = await self._call("GET", "/_fake/requests")
        out: list[JSON] = result["requests"]
        return out

    async def shapes(self) -> JSON:
        """With `check_shapes` on: `{"enabled", "checked", "types", "problems"}`, every object
        answered or sent so far checked against stripe-python's resource classes."""
        result: JSON = await self._call("GET", "/_fake/shapes")
        return result

    async def reset_stats(self) -> None:
        await self._call("POST", "/_fake/stats/reset")

    # One-time payments (control_payments.py) -----------------------------------------------

    async def open_payment_link(self, link_id: str, *, client_reference_id: str | None = None) -> JSON:
        """A buyer opens a Payment Link: the new Checkout Session (complete it as any other)."""
        body = {} if client_reference_id is None else {"client_reference_id": client_reference_id}
        result: JSON = await self._call("POST", f"/_fake/payment_links/{link_id}/checkout", body)
        return result

    async def settle_checkout(self, session_id: str, *, succeeded: bool | None = None) -> JSON:
        """A bank debit of a payment-mode session settles (default: its test method's outcome)."""
        body = {} if succeeded is None else {"succeeded": succeeded}
        result: JSON = await self._call("POST", f"/_fake/checkout/sessions/{session_id}/settle", body)
        return result

    async def dispute_charge(self, charge_id: str, *, reason: str = "fraudulent", inquiry: bool = False) -> JSON:
        """The card holder disputes the charge: the new Dispute."""
        result: JSON = await self._call(
            "POST", f"/_fake/charges/{charge_id}/dispute", {"reason": reason, "inquiry": inquiry}
        )
        return result

    async def resolve_dispute(self, dispute_id: str, outcome: str) -> JSON:
        """Close a dispute `won` or `lost`, as submitting Stripe's test evidence does."""
        result: JSON = await self._call("POST", f"/_fake/disputes/{dispute_id}/resolve", {"outcome": outcome})
        return result
