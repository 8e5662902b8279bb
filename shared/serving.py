"""What every HTTP process of ours (ingest, api, a worker's metrics) says about itself, and how
it is served (docs/contract.md §4).

- `json_errors`: a middleware that turns aiohttp's own HTTP errors (404, 405, 413...) into our
  JSON error body, and any unexpected exception into a JSON 500, logged with its traceback.
- `no_banner`: drops the `Server: Python/3.x aiohttp/x` header from every response of the app.
- `Runner`: aiohttp's `AppRunner` whose connections (`_Connection`) answer the HTTP parser's
  own errors (bad framing, a `Content-Encoding` aiohttp cannot decode such as `br`, oversized
  headers) with the JSON error body, never echoing request bytes, logged at info with a reason;
  and close a connection that has not sent a request's headers within `HEADER_TIMEOUT_S`
  (slowloris). aiohttp itself never times out a request's head: its keep-alive timer only runs
  between requests, and defaults to an hour.
- `serve(app, host=..., port=...)`: `web.run_app` with that runner; `main(...)`: the whole
  start-up of `python -m ingest` and `python -m api` (settings, logs, serve).
- `metrics_view`: `GET /metrics` with the optional `METRICS_TOKEN` bearer check.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import logs
from shared.settings import Settings, SettingsError, load

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A client (Stripe, a proxy) sends a request's head at once; a few seconds is generous.
HEADER_TIMEOUT_S = 5.0
# Idle keep-alive connections: longer than a proxy's usual upstream keep-alive (nginx: 60 s),
# so the proxy, not us, closes an idle connection (no race on a request sent as we close).
KEEPALIVE_TIMEOUT_S = 75.0
# Pending connections the kernel queues for accept(): the 2,000-connection case needs room.
BACKLOG = 4096

# Headers a parser error may keep (none echo input).
_KEPT_HEADERS = ("allow", "retry-after", "www-authenticate")


def error_body(reason: str, message: str) -> bytes:
    return orjson.dumps({"error": {"reason": reason, "message": message}})


def json_error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=error_body(reason, message), status=status, content_type="application/json",
                        headers=headers)


def http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's 4xx/5xx exception as our JSON body; its text (which may quote input) is dropped."""
    keep = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS}
    return json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, keep)


def internal_error(exc: BaseException, **fields: Any) -> web.Response:
    """A JSON 500 for an unexpected exception, logged at error level with its traceback."""
    log.error("http.failed", error=type(exc).__name__, exc_info=exc, **fields)
    return json_error(500, "internal_error", "the server failed to answer; see its logs")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like, raised on purpose
        return http_error(exc)
    except Exception as exc:
        return internal_error(exc, path=request.path)


async def no_banner(_request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: runs after aiohttp has set its headers, before they are sent."""
    response.headers.popall("Server", None)


def harden(app: web.Application) -> web.Application:
    """Add `no_banner` to an app (the middleware is given at construction: `middlewares=`)."""
    app.on_response_prepare.append(no_banner)
    return app


async def metrics_view(request: web.Request, token: str | None) -> web.Response:
    """Prometheus metrics; with `token` set, only for `Authorization: Bearer <token>`."""
    if token is not None and not hmac.compare_digest(
        request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()
    ):
        return json_error(401, "unauthorized", "metrics need the bearer token")
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def parser_reason(exc: BaseException | None) -> str:
    """A stable word for what aiohttp's HTTP parser refused."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return "header_too_large"
    if isinstance(exc, http_exceptions.ContentEncodingError):
        return "unsupported_content_encoding"
    if isinstance(exc, http_exceptions.PayloadEncodingError):
        return "bad_body_framing"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "bad_method"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "bad_header"
    return "bad_http_request"


class _BareResponse(web.Response):
    """A response without the `Server` header (parser errors never reach an app's signals)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Server", None)


class _Connection(RequestHandler):
    """aiohttp's connection handler, with JSON parser errors and a deadline for each request's head."""

    def __init__(self, *args: Any, header_timeout_s: float = HEADER_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        reading_head = self._payload_parser is None and not self._upgraded
        super().data_received(data)
        if self._request_count != before:
            self._disarm()  # a whole head arrived (or the parser refused one): no deadline now
        elif reading_head and data and self._head_deadline is None:
            self._arm()  # the first bytes of a next request on a kept-alive connection

    def _arm(self) -> None:
        self._head_deadline = self._loop.call_later(self._header_timeout_s, self._head_overdue)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_overdue(self) -> None:
        self._head_deadline = None
        # Only an idle connection (waiting for a head) is closed, never one with a request in hand.
        if self._waiter is not None and not self._waiter.done():
            log.info("http.rejected", reason="header_timeout", status=None,
                     detail=f"no request head within {self._header_timeout_s:g}s; connection closed")
            self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp calls this for the parser's errors (400) and for exceptions no middleware
        caught (500). `message` (which quotes request bytes) is neither sent nor logged."""
        del message
        if status >= 500:
            log.error("http.failed", error=type(exc).__name__, exc_info=exc)
            body = error_body("internal_error", "the server failed to answer; see its logs")
        else:
            reason = parser_reason(exc)
            log.info("http.rejected", reason=reason, status=status, error=type(exc).__name__)
            body = error_body(reason, "the request is not valid HTTP this server accepts")
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun; no error can be sent")
        response = _BareResponse(status=status, body=body, content_type="application/json")
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, header_timeout_s=self._header_timeout_s, **self._kwargs)


class Runner(web.AppRunner):
    """`web.AppRunner` serving with `_Connection`. Tests use it through `TestServer` as well."""

    def __init__(self, app: web.Application, *, header_timeout_s: float = HEADER_TIMEOUT_S, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT_S)
        super().__init__(app, **kwargs)
        self._header_timeout_s = header_timeout_s

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app; aiohttp's own Server
        kwargs = {k: v for k, v in self._kwargs.items() if k != "handler_cancellation"}
        return _Server(plain.request_handler, request_factory=plain.request_factory,
                       handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                       header_timeout_s=self._header_timeout_s, **kwargs)


async def _serve(app: web.Application, host: str, port: int, shutdown_timeout_s: float) -> None:
    runner = Runner(app, access_log=None, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port, backlog=BACKLOG).start()
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        # stops listening, lets requests in flight finish (shutdown_timeout), runs cleanup_ctx
        await runner.cleanup()


def serve(app: web.Application, *, host: str, port: int, shutdown_timeout_s: float) -> None:
    """Serve `app` until SIGINT/SIGTERM, then shut down gracefully (the `__main__`s' one call)."""
    asyncio.run(_serve(app, host, port, shutdown_timeout_s))


def main(name: str, build: Callable[[Settings], web.Application], *, port: Callable[[Settings], int],
         shutdown_timeout_s: float, **need: bool) -> None:
    """The start-up of an HTTP process: settings (one line and exit 2 when bad), logs, serve."""
    try:
        settings = load(**need)
    except SettingsError as exc:
        print(f"entitled {name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.configure(settings.log_format, settings.log_level)
    serve(build(settings), host=settings.host, port=port(settings), shutdown_timeout_s=shutdown_timeout_s)
