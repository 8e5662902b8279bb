"""A small app that sells a "pro" feature through Stripe Checkout, and asks entitled about access.

It talks to entitled's app-facing API (docs/contract.md, section 10) with plain HTTP, as any
app in any language would:

- `GET /reports/export?user=U`: a page behind the `export` feature; it calls
  `GET /v1/check?user_id=U&feature=export` and answers 200 or 403.
- `GET /checkout/success?session_id=cs_...`: Stripe Checkout's `success_url`
  (`https://your-app/checkout/success?session_id={CHECKOUT_SESSION_ID}`). The webhooks of the
  purchase may still be on their way, so it calls `POST /v1/sync` with the session id: the
  answer already holds the new access (scenario 12). A `202` means the sync did not finish
  within 10 s: the page says access is on its way (the webhooks will grant it).

Run it next to `entitled run` (which prints the API's URL and a token):

    ENTITLED_API_URL=http://127.0.0.1:8081 ENTITLED_API_TOKEN=... python examples/app.py

Only the standard library and aiohttp (already a dependency of entitled).
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
from aiohttp import web

API_URL = web.AppKey("api_url", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def ask(request: web.Request, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """One call to entitled's API: its status and JSON body."""
    session = request.app[SESSION]
    async with session.request(method, request.app[API_URL] + path, **kwargs) as resp:
        return resp.status, await resp.json()


async def export(request: web.Request) -> web.Response:
    user = request.query.get("user", "")
    status, body = await ask(request, "GET", "/v1/check", params={"user_id": user, "feature": "export"})
    if status != 200:
        # The API is down or refused us: this app chooses to deny (fail closed).
        return web.Response(status=503, text="cannot check access right now\n")
    if not body["allowed"]:
        return web.Response(status=403, text=f"{user} may not export: buy Pro\n")
    until = body["valid_until"] or "for ever"
    return web.Response(text=f"export for {user} (access until {until})\n")


async def checkout_success(request: web.Request) -> web.Response:
    session_id = request.query.get("session_id", "")
    status, body = await ask(request, "POST", "/v1/sync", json={"checkout_session_id": session_id})
    if status == 200:
        features = ", ".join(body["features"]) or "nothing yet"
        return web.Response(text=f"thank you, {body['user_id']}: you now have {features}\n")
    if status == 202:
        return web.Response(text="thank you: your access is on its way\n")
    return web.Response(status=502, text=f"entitled answered {status}: {body.get('error')}\n")


async def _client(app: web.Application) -> Any:
    token = os.environ["ENTITLED_API_TOKEN"]
    app[SESSION] = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                         timeout=aiohttp.ClientTimeout(total=15))
    yield
    await app[SESSION].close()


def create_app(api_url: str) -> web.Application:
    app = web.Application()
    app[API_URL] = api_url.rstrip("/")
    app.cleanup_ctx.append(_client)
    app.router.add_get("/reports/export", export)
    app.router.add_get("/checkout/success", checkout_success)
    return app


if __name__ == "__main__":
    web.run_app(create_app(os.environ.get("ENTITLED_API_URL", "http://127.0.0.1:8081")),
                host="127.0.0.1", port=int(os.environ.get("APP_PORT", "8000")))
