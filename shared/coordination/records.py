"""The accepted-event record: what ingest, the Events API poller and the CLI keep of an event.

An event is only a hint about which unit changed (the worker re-reads Stripe), so the record
holds no payload: its id, type and creation time, when and how it arrived. It is queued in the
unit's event list (JSON) and written to the ledger by the sync that handles it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, cast

import orjson

EventSource = Literal["webhook", "events_api", "replay"]
_SOURCES: frozenset[str] = frozenset({"webhook", "events_api", "replay"})


@dataclass(frozen=True)
class AcceptedEvent:
    id: str
    type: str
    received_at_ms: int
    source: EventSource
    # Stripe's `created` (Unix seconds); None for a thin event (an ISO time) or a replay
    created: int | None = None
    # a Checkout Session event's `client_reference_id` (routing.event_hints): "" when the session
    # has none, None when the event did not say (thin events, other types)
    client_reference_id: str | None = None
    # a Checkout Session event's `mode` when it is `payment` (routing.event_hints), else None
    mode: str | None = None
    # W3C traceparent of the span that accepted it (shared/tracing.py); None when tracing is off
    traceparent: str | None = None

    @classmethod
    def now(cls, event_id: str, event_type: str, source: EventSource, created: int | None = None,
            client_reference_id: str | None = None, mode: str | None = None) -> AcceptedEvent:
        return cls(event_id, event_type, int(time.time() * 1000), source, created, client_reference_id, mode)

    def to_json(self) -> bytes:
        # field names kept as the first release queued them, so queued work survives an upgrade
        data: dict[str, object] = {"id": self.id, "type": self.type, "created": self.created,
                                   "received_at": self.received_at_ms, "source": self.source}
        if self.client_reference_id is not None:
            data["client_reference_id"] = self.client_reference_id
        if self.mode is not None:
            data["mode"] = self.mode
        if self.traceparent is not None:
            data["traceparent"] = self.traceparent
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> AcceptedEvent:
        data = orjson.loads(raw)
        created = data.get("created")
        source = data.get("source")
        ref = data.get("client_reference_id")
        return cls(
            id=str(data["id"]),
            type=str(data.get("type") or ""),
            received_at_ms=int(data.get("received_at") or 0),
            source=cast(EventSource, source) if source in _SOURCES else "webhook",
            created=created if isinstance(created, int) and not isinstance(created, bool) else None,
            client_reference_id=ref if isinstance(ref, str) else None,
            mode=data["mode"] if isinstance(data.get("mode"), str) else None,
            traceparent=data["traceparent"] if isinstance(data.get("traceparent"), str) else None,
        )
