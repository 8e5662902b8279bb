"""The console's session cookie and CSRF tokens (docs/contract.md §11). Pure: no I/O.

A session is `<payload>.<mac>`: the payload names the token that signed in, when the session
ends and a random session id; the MAC is HMAC-SHA256 under a key derived from that token's own
secret. So a session dies with its token (remove it from `API_TOKENS` and every session it
opened stops verifying), and no key needs storing or sharing between `api` processes.

Every form that changes something carries `csrf`, the HMAC of the session id under the same
key: a page of another site can make the browser send the cookie (not with SameSite=Strict,
but belt and braces), it cannot read the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

# How long a sign-in lasts; after it the cookie is refused (and the browser drops it too).
SESSION_TTL_S = 8 * 3600
_CONTEXT = b"entitled console session v1"


@dataclass(frozen=True)
class Session:
    token_name: str
    expires_at: float
    session_id: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks sessions for the tokens of `API_TOKENS` (name → secret)."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._keys = {name: hmac.new(secret.encode(), _CONTEXT, hashlib.sha256).digest()
                      for name, secret in tokens.items()}

    def issue(self, token_name: str, now: float, ttl_s: float = SESSION_TTL_S) -> tuple[str, Session]:
        """A new session for a token that just signed in, and its cookie value."""
        session = Session(token_name, now + ttl_s, secrets.token_urlsafe(16))
        payload = _b64(orjson.dumps({"n": session.token_name, "e": session.expires_at, "s": session.session_id}))
        return f"{payload}.{_b64(self._mac(token_name, payload.encode()))}", session

    def verify(self, cookie: str | None, now: float) -> Session | None:
        """The session of a cookie that is genuine and not expired, else None."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        try:
            fields = orjson.loads(_unb64(payload))
            name, expires, sid = fields["n"], float(fields["e"]), fields["s"]
            given = _unb64(mac)
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
            return None
        if not (isinstance(name, str) and isinstance(sid, str)) or name not in self._keys:
            return None
        if not hmac.compare_digest(given, self._mac(name, payload.encode())) or expires <= now:
            return None
        return Session(name, expires, sid)

    def csrf(self, session: Session) -> str:
        return _b64(self._mac(session.token_name, b"csrf:" + session.session_id.encode()))

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf(session).encode())

    def _mac(self, name: str, data: bytes) -> bytes:
        return hmac.new(self._keys[name], data, hashlib.sha256).digest()
