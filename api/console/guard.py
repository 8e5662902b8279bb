"""Sign-in, sign-out and the guard every other console page goes through (docs/contract.md §11).

- `GET /console/sign-in` shows the form; `POST` takes a secret of `API_TOKENS`. The form has a
  CSRF token of its own (double submit: the same random value in a cookie and the form). At most
  `SIGN_IN_LIMIT` attempts per client address per `SIGN_IN_WINDOW_S` (a Redis counter: every
  `api` process shares it), each logged with the token's *name* (never the secret), or `-`.
- The session cookie is HttpOnly, SameSite=Strict, `Path=/console`, and ends after
  `session.SESSION_TTL_S` (the signed payload says so; the browser's Max-Age agrees).
- `guarded(handler)`: a page without a valid session redirects to the sign-in page (GET) or is
  refused with 403 (anything else); every POST needs the session's CSRF token in the form.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp_jinja2
import structlog
from aiohttp import web

from api.console.session import SESSION_TTL_S, Session, Signer
from api.context import TOKENS, services

log = structlog.get_logger(__name__)

COOKIE = "entitled_console"
PRE_COOKIE = "entitled_console_sign_in"  # the sign-in form's own CSRF token (double submit)
SIGN_IN_FORM_TTL_S = 3600
SIGNER = web.AppKey("console_signer", Signer)
SESSION = web.RequestKey("console_session", Session)
SIGN_IN_LIMIT = 10
SIGN_IN_WINDOW_S = 60
REDIS_TIMEOUT_S = 2.0
ROOT = "/console"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def render(request: web.Request, name: str, context: dict[str, Any], status: int = 200) -> web.Response:
    """A template, with who is signed in and the CSRF token every changing form carries."""
    session = request.get(SESSION)
    extra = {"signed_in": None, "csrf": ""} if session is None else {
        "signed_in": session.token_name, "csrf": request.app[SIGNER].csrf(session)}
    response = aiohttp_jinja2.render_template(name, request, {**context, **extra, "root": ROOT}, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def refuse(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", {"status": status, "message": message}, status)


def _safe_next(value: str | None) -> str:
    # Only our own pages: no `//host` or scheme, so the form cannot send anyone elsewhere.
    if value and value.startswith(ROOT + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return ROOT + "/"


async def _too_many(request: web.Request) -> bool:
    deps = services(request)
    key = deps.keys.console_sign_in(request.remote or "unknown")
    async with asyncio.timeout(REDIS_TIMEOUT_S):
        count = int(await deps.redis.incr(key))
        if count == 1:
            await deps.redis.expire(key, SIGN_IN_WINDOW_S)
    return count > SIGN_IN_LIMIT


def _sign_in_page(request: web.Request, target: str, error: str | None, status: int = 200) -> web.Response:
    """The form, with a fresh double-submit token: the same random value in a cookie and in the
    form, so that no other site can sign a browser in (with a session of its choosing)."""
    token = secrets.token_urlsafe(16)
    response = render(request, "sign_in.html", {"next": target, "error": error, "sign_in_csrf": token}, status)
    response.set_cookie(PRE_COOKIE, token, max_age=SIGN_IN_FORM_TTL_S, path=ROOT, httponly=True,
                        samesite="Strict", secure=request.secure)
    return response


async def sign_in_form(request: web.Request) -> web.Response:
    return _sign_in_page(request, _safe_next(request.query.get("next")), None)


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    target = _safe_next(str(form.get("next", "")))
    if await _too_many(request):
        log.warning("console.sign_in", outcome="rate_limited", token="-", client=request.remote)
        refused = refuse(request, 429, "Too many sign-in attempts from here; wait a minute.")
        refused.headers["Retry-After"] = str(SIGN_IN_WINDOW_S)
        return refused
    given, expected = str(form.get("csrf", "")), request.cookies.get(PRE_COOKIE, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("console.sign_in", outcome="csrf_refused", token="-", client=request.remote)
        return refuse(request, 403, "This sign-in form is stale or was not sent by the console (CSRF token): "
                                    "open the sign-in page again.")
    name = request.app[TOKENS].match(str(form.get("secret", "")))
    if name is None:
        log.warning("console.sign_in", outcome="refused", token="-", client=request.remote)
        return _sign_in_page(request, target, "That is not a secret of API_TOKENS.", 401)
    cookie, _session = request.app[SIGNER].issue(name, time.time())
    log.info("console.sign_in", outcome="signed_in", token=name, client=request.remote)
    response = web.HTTPSeeOther(target)
    response.del_cookie(PRE_COOKIE, path=ROOT)
    response.set_cookie(COOKIE, cookie, max_age=SESSION_TTL_S, path=ROOT, httponly=True, samesite="Strict",
                        secure=request.secure)
    raise response


def guarded(handler: Handler) -> Handler:
    async def guard(request: web.Request) -> web.StreamResponse:
        session = request.app[SIGNER].verify(request.cookies.get(COOKIE), time.time())
        if session is None:
            if request.method in ("GET", "HEAD"):
                raise web.HTTPSeeOther(f"{ROOT}/sign-in?next={request.rel_url.path_qs}")
            return refuse(request, 403, "Not signed in, or the session has expired: sign in again.")
        if request.method == "POST":
            form = await request.post()
            if not request.app[SIGNER].csrf_ok(session, str(form.get("csrf", ""))):
                log.warning("console.csrf_refused", token=session.token_name, path=request.path)
                return refuse(request, 403, "This form is stale or was not sent by the console (CSRF token).")
        request[SESSION] = session
        return await handler(request)

    guard.__name__ = handler.__name__
    return guard


@guarded
async def sign_out(request: web.Request) -> web.StreamResponse:
    log.info("console.sign_out", token=request[SESSION].token_name)
    response = web.HTTPSeeOther(f"{ROOT}/sign-in")
    response.del_cookie(COOKIE, path=ROOT)
    raise response

