"""`FakeStripe`: build the aiohttp app, run it in this event loop or in a thread of its own.

async with FakeStripe().running(port=0) as fake:      # in-process, this event loop
    client = stripe.StripeClient("sk_test_fake", base_addresses={"api": fake.base_url},
                                 http_client=stripe.AIOHTTPClient())

handle = FakeStripe().start_in_thread(port=0)          # its own loop, for sync code
...; handle.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from . import (
    api_billing,
    api_catalog,
    api_customers,
    api_events,
    api_payments,
    control,
    control_payments,
)
from .api import FAKE, Fake, stripe_middleware
from .api_events import create_endpoint
from .client import FakeStripeControl
from .clock import Settings
from .core import Core
from .lifecycle import Lifecycle
from .shape_log import ShapeLog
from .webhooks import EndpointFaults, Webhooks, is_live_key

DEFAULT_API_KEY = "sk_test_fake"


@dataclass(frozen=True)
class WebhookEndpointInfo:
    id: str
    url: str
    secret: str


class FakeStripe:
    def __init__(
        self,
        *,
        api_keys: Sequence[str] = (DEFAULT_API_KEY,),
        settings: Settings | None = None,
        seed: int | None = None,
        tick_interval_s: float = 0.2,
        max_deliveries_in_flight: int = 32,
        check_shapes: bool = False,
    ) -> None:
        self.core = Core(settings, seed)
        # Every answer and webhook payload checked against stripe-python's classes (shape_log.py).
        self.core.shape_log = ShapeLog() if check_shapes else None
        self.lifecycle = Lifecycle(self.core)
        # Webhook retries follow the keys' mode: live only when every key is a live one.
        livemode = bool(api_keys) and all(is_live_key(k) for k in api_keys)
        self.webhooks = Webhooks(self.core, max_deliveries_in_flight, livemode=livemode)
        self.fake = Fake(self.core, self.lifecycle, self.webhooks, set(api_keys))
        self.tick_interval_s = tick_interval_s
        self.base_url = ""

    def add_webhook_endpoint(
        self,
        url: str,
        enabled_events: Sequence[str] = ("*",),
        *,
        secret: str | None = None,
        thin: bool = False,
        faults: EndpointFaults | None = None,
    ) -> WebhookEndpointInfo:
        """Register an endpoint directly (before start, or from the fake's own event loop)."""
        endpoint = create_endpoint(self.core, url, list(enabled_events))
        secret = self.webhooks.register(endpoint, secret)
        self.webhooks.endpoints[endpoint.id].thin = thin
        if faults is not None:
            self.webhooks.set_faults(endpoint.id, faults)
        return WebhookEndpointInfo(endpoint.id, url, secret)

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[stripe_middleware], client_max_size=4 * 1024 * 1024)
        app[FAKE] = self.fake
        for module in (api_customers, api_catalog, api_billing, api_payments, api_events, control, control_payments):
            app.router.add_routes(module.routes)
        app.cleanup_ctx.append(self._background)
        return app

    async def _background(self, _app: web.Application) -> AsyncIterator[None]:
        await self.webhooks.start()
        ticker = asyncio.get_running_loop().create_task(
            self.lifecycle.tick_forever(self.tick_interval_s)
        )
        yield
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        for task in list(self.fake.background):
            task.cancel()
        await self.webhooks.stop()

    @asynccontextmanager
    async def running(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[FakeStripe]:
        """Serve in the current event loop; `base_url` is set while inside."""
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        try:
            bound = runner.addresses[0][1] if runner.addresses else port
            self.base_url = f"http://{host}:{bound}"
            yield self
        finally:
            await runner.cleanup()
            self.base_url = ""

    def control(self) -> FakeStripeControl:
        return FakeStripeControl(self.base_url)

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> FakeStripeThread:
        """Serve from a new thread with its own event loop; returns once it accepts requests."""
        handle = FakeStripeThread(self)
        handle.start(host, port)
        return handle


class FakeStripeThread:
    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake
        self.base_url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, host: str, port: int) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(host, port), name="fakestripe", daemon=True
        )
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("fake Stripe failed to start") from self._error
        if not self.base_url:
            raise RuntimeError("fake Stripe did not start within 30 s")

    def _run(self, host: str, port: int) -> None:
        try:
            asyncio.run(self._serve(host, port))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self, host: str, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.fake.running(host, port) as fake:
            self.base_url = fake.base_url
            self._ready.set()
            await self._stop.wait()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> FakeStripeThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
