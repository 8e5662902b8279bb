"""Verify an outbound webhook of entitled (docs/contract.md §10): Standard Webhooks signatures.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 under the base64
key after `whsec_`, sent as `v1,<base64>` (several, space-separated, while a secret rolls).
A timestamp more than `tolerance_s` away from now is refused, so a captured request cannot be
replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

TOLERANCE_S = 300


class WebhookError(ValueError):
    """The request is not a genuine, fresh webhook of this endpoint."""


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookError(f"missing {name} header")


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: int = TOLERANCE_S,
           now: float | None = None) -> dict[str, Any]:
    """The message of a webhook whose signature verifies under `secret`, or `WebhookError`."""
    if not secret.startswith("whsec_"):
        raise ValueError("an endpoint secret starts with whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    try:
        sent = int(stamp)
    except ValueError:
        raise WebhookError("webhook-timestamp is not a number") from None
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        raise WebhookError("webhook-timestamp is too far from now")
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{sent}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    offered = [part.partition(",") for part in _header(headers, "webhook-signature").split()]
    if not any(version == "v1" and hmac.compare_digest(sig, expected) for version, _, sig in offered):
        raise WebhookError("no signature matches")
    try:
        message = json.loads(body)
    except ValueError:
        raise WebhookError("the body is not JSON") from None
    if not isinstance(message, dict) or "customer_id" not in message or "version" not in message:
        raise WebhookError("the body is not an access-changed message")
    return message
