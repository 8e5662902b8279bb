"""Webhook signature and freshness checks on the raw body, before anything is parsed.

The signature check is the stripe SDK's (`WebhookSignature.verify_header`) restated on bytes,
tried against every configured secret: during a secret roll Stripe signs with each and sends
several `v1=`. `signature_matches` parses the header by the SDK's rules and compares the same
HMAC-SHA256 of `"<t>.<body>"`; `tests/test_verify.py` checks that the two agree. The SDK's own
call decodes the body to text, re-encodes it and builds an `hmac` object per secret: at the
receiver's rate that was a tenth of its CPU; one-shot `hmac.digest` on the received bytes is not
(profile in docs/benchmarks.md, "Receiver profile"). `Webhook.construct_event` is skipped too:
it builds SDK objects from the whole payload (0.2-4 ms per event).

The SDK rejects old timestamps but lets far-future ones through; we reject both beyond the
tolerance, so a captured delivery cannot be replayed and a forged clock gains nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

TOLERANCE_S = 300


class RejectedError(Exception):
    """The request is refused; `reason` is a stable machine-readable word for metrics and clients."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


def signature_timestamp(header: str) -> int:
    """The `t=` of a `Stripe-Signature` header."""
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise RejectedError("malformed_signature", "Stripe-Signature header has no valid t= timestamp")


def parse_header(header: str) -> tuple[int, list[str]] | None:
    """The header's first `t=` (as `int()` reads it) and every `v1=`, split as the SDK splits
    them; None when the SDK would find no timestamp."""
    items = [item.split("=", 2) for item in header.split(",")]
    try:
        # every `t` is read (a bare `t` fails), then the first is taken: the SDK's order
        timestamp = int([i[1] for i in items if i[0] == "t"][0])  # noqa: RUF015
        signatures = [i[1] for i in items if i[0] == "v1"]
    except (IndexError, ValueError):
        return None
    return timestamp, signatures


def _signed_by(body: bytes, parsed: tuple[int, list[str]], secret: str) -> bool:
    if not secret.strip(" \t\r\n\f\v"):
        return False
    timestamp, signatures = parsed
    expected = hmac.digest(secret.encode(), b"%d.%b" % (timestamp, body), "sha256").hex().encode()
    # bytes, so a header of any characters compares (and never raises) in constant time
    return any(hmac.compare_digest(expected, s.encode("utf-8", "surrogatepass")) for s in signatures)


def signature_matches(body: bytes, header: str, secret: str) -> bool:
    """`stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)` without raising."""
    parsed = parse_header(header)
    return parsed is not None and _signed_by(body, parsed, secret)


def verify(body: bytes, header: str | None, secrets: Sequence[str], now: float,
           tolerance_s: int = TOLERANCE_S) -> None:
    """Raise `RejectedError` unless `header` signs `body` with one of `secrets`, at a fresh time."""
    if not header:
        raise RejectedError("missing_signature", "Stripe-Signature header is missing")
    timestamp = signature_timestamp(header)
    if "v1=" not in header:
        raise RejectedError("malformed_signature", "Stripe-Signature header has no v1= signature")
    if not body.isascii():  # Stripe's bodies are ASCII JSON (\u escapes): the slow check is rare
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            # Stripe signs UTF-8 JSON; these bytes cannot be what it signed.
            raise RejectedError("invalid_signature", "body is not UTF-8, so it cannot carry a valid signature") from None
    # no tolerance in the match: the freshness check below covers both directions.
    # the header is parsed once for every secret (a roll configures several)
    parsed = parse_header(header)
    if parsed is None or not any(_signed_by(body, parsed, secret) for secret in secrets):
        raise RejectedError("invalid_signature", "no signature matches any configured webhook secret")
    if timestamp < now - tolerance_s:
        raise RejectedError("stale_timestamp", f"signature timestamp is more than {tolerance_s}s old")
    if timestamp > now + tolerance_s:
        raise RejectedError("future_timestamp", f"signature timestamp is more than {tolerance_s}s in the future")
