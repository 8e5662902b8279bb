"""Build and sign Stripe-shaped webhook bodies the way Stripe does (for tests and benchmarks)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson

from fakestripe import signature_header

_counter = itertools.count(1)


def sign(body: bytes, secrets: list[str], timestamp: int | None = None) -> str:
    """`Stripe-Signature` with one `v1=` per secret (several during a secret roll), now by default."""
    return signature_header(body, secrets, int(time.time()) if timestamp is None else timestamp)


def event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None, livemode: bool = False,
          previous: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": event_id or f"evt_test_{next(_counter):08d}{int(time.time() * 1000) % 100000:05d}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def subscription(customer: str = "cus_Test1", sub_id: str = "sub_Test1", status: str = "active") -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "items": {"object": "list", "data": [], "has_more": False, "url": f"/v1/subscription_items?subscription={sub_id}"},
        "metadata": {},
        "livemode": False,
    }


def body_of(evt: dict[str, Any]) -> bytes:
    return orjson.dumps(evt)
