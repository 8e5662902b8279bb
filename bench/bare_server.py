"""The baseline of the receiver benchmark: a bare aiohttp handler that reads the body and says 200."""

from __future__ import annotations

import argparse

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"received": True})


async def check(_request: web.Request) -> web.Response:
    """The baseline of the API benchmark: what `GET /v1/check` answers, without looking anything up."""
    return web.json_response({"allowed": True, "valid_until": None, "quantity": 1})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/webhooks/stripe", handle)
    app.router.add_get("/v1/check", check)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
