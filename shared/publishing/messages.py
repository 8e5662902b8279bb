"""The `access-changed` message (docs/contract.md §6), as built by the worker and read by subscribers.

The JSON Schema in `docs/access-changed.schema.json` describes the same shape for consumers in
other languages; `tests/test_messages.py` checks every message we build against it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


class MessageError(ValueError):
    """A stream entry or channel message is not an access-changed message."""


@dataclass(frozen=True)
class AccessChanged:
    id: str
    customer_id: str
    user_id: str | None
    features: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    version: int
    reason: str
    livemode: bool
    occurred_at: str
    # docs/contract.md §6 (2026-12): feature -> quantity and limit name -> value, in every message
    quantities: Mapping[str, int] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        customer_id: str,
        user_id: str | None,
        before: frozenset[str],
        after: frozenset[str],
        version: int,
        reason: str,
        livemode: bool,
        at: datetime | None = None,
        quantities: Mapping[str, int] | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> AccessChanged:
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        return cls(
            id=str(uuid.uuid4()),
            customer_id=customer_id,
            user_id=user_id,
            features=tuple(sorted(after)),
            added=tuple(sorted(after - before)),
            removed=tuple(sorted(before - after)),
            version=version,
            reason=reason,
            livemode=livemode,
            occurred_at=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            quantities=dict(sorted((quantities or {}).items())),
            limits=dict(sorted((limits or {}).items())),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "user_id": self.user_id,
            "features": list(self.features),
            "added": list(self.added),
            "removed": list(self.removed),
            "version": self.version,
            "reason": self.reason,
            "livemode": self.livemode,
            "occurred_at": self.occurred_at,
            "quantities": dict(self.quantities),
            "limits": dict(self.limits),
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_json(cls, data: str | bytes) -> AccessChanged:
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MessageError(f"not JSON: {exc}") from None
        if not isinstance(raw, Mapping):
            raise MessageError("not a JSON object")
        try:
            return cls(
                id=str(raw["id"]),
                customer_id=str(raw["customer_id"]),
                user_id=None if raw["user_id"] is None else str(raw["user_id"]),
                features=tuple(raw["features"]),
                added=tuple(raw["added"]),
                removed=tuple(raw["removed"]),
                version=int(raw["version"]),
                reason=str(raw["reason"]),
                livemode=bool(raw["livemode"]),
                occurred_at=str(raw["occurred_at"]),
                # absent from messages written before 2026-12 (still in an outbox or a stream)
                quantities=_amounts(raw.get("quantities")),
                limits=_amounts(raw.get("limits")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"missing or malformed field: {exc}") from None


def _amounts(value: Any) -> dict[str, int]:
    """A `quantities` or `limits` object: names to whole numbers; absent is `{}`."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError("quantities and limits must be objects")
    out: dict[str, int] = {}
    for name, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"{name!r} is not a whole number")
        out[str(name)] = number
    return out
