"""An app's webhook endpoint for tests: a real aiohttp server on a port of its own that verifies
each request with the `standardwebhooks` package (as an app would) and answers as told."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    message_id: str
    customer_id: str
    version: int
    status: int
    verified: bool
    body: str


@dataclass
class Receiver:
    """`answer(body) -> status` decides each answer (200 by default); `gate`, when set, holds
    every request until it is set (a slow endpoint)."""

    answer: Callable[[dict[str, Any]], int] = lambda _body: 200
    gate: asyncio.Event | None = None
    secret: str | None = None
    received: list[Received] = field(default_factory=list)
    in_flight: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def delivered(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    def versions(self, customer_id: str) -> list[int]:
        """The versions answered 2xx for the customer, in the order they arrived."""
        return [r.version for r in self.delivered() if r.customer_id == customer_id]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = orjson.loads(raw)
        mid = request.headers.get("webhook-id", "")
        self.in_flight[mid] = self.in_flight.get(mid, 0) + 1
        if self.in_flight[mid] > 1:
            self.overlaps.append(mid)
        try:
            if self.gate is not None:
                await self.gate.wait()
            verified = False
            if self.secret is not None:
                # Raises on a bad signature or a stale timestamp, as in an app.
                Webhook(self.secret).verify(raw, dict(request.headers))
                verified = True
            status = self.answer(body)
            self.received.append(Received(mid, body["customer_id"], body["version"], status, verified,
                                          raw.decode()))
            return web.Response(status=status, text="ok")
        finally:
            self.in_flight[mid] -= 1

    async def start(self, routes: Callable[[web.Application], Awaitable[None] | None] | None = None) -> Receiver:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        if routes is not None:
            maybe = routes(app)
            if maybe is not None:
                await maybe
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
