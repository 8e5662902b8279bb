"""Bearer tokens of `API_TOKENS` (docs/contract.md §10): which token, by name, a request carries.

Every secret is compared, in constant time, whatever matched earlier, so the time an answer
takes says nothing about how much of a secret was right or which token it was close to. Only
the token's *name* ever leaves this module (logs, metrics); the secret never does.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

BEARER = "bearer "


class Tokens:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        if not tokens:
            raise ValueError("at least one token is needed")
        self._pairs = [(name, secret.encode()) for name, secret in tokens.items()]

    def match(self, secret: str | bytes) -> str | None:
        """The name of the token whose secret this is, or None."""
        given = secret.encode("utf-8", "surrogateescape") if isinstance(secret, str) else secret
        found: str | None = None
        for name, expected in self._pairs:
            # compare_digest is constant-time for equal lengths; unequal lengths only reveal
            # the length, and we never stop early.
            if hmac.compare_digest(given, expected) and found is None:
                found = name
        return found

    def from_header(self, header: str | None) -> str | None:
        """The token name for an `Authorization: Bearer <secret>` header value, or None."""
        if not header or len(header) <= len(BEARER) or header[: len(BEARER)].lower() != BEARER:
            return None
        return self.match(header[len(BEARER) :].strip())
