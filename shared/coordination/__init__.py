"""Per-customer queueing in Redis: which unit an event concerns, and one run at a time per unit.

`coordinator.py` explains the promises; `units.py` says what a unit is; `records.py` is the
accepted-event record; `keys.py` names every Redis key; `lua/` holds the atomic scripts (they
get every name from `keys.py`); `routing.py` maps a Stripe event to its unit.
"""

from shared.coordination.coordinator import (
    PARK_AFTER_FATAL,
    SYNC_FUNCTION,
    AcceptResult,
    Coordinator,
    FinishResult,
    Outcome,
    ParkedUnit,
    Run,
    in_progress_timeout_s,
)
from shared.coordination.keys import ACCESS_CHANGED, DEDUPE_TTL_S, Keys
from shared.coordination.records import AcceptedEvent, EventSource
from shared.coordination.routing import (
    CHARGE_TYPES,
    QUEUED_TYPE_PATTERNS,
    BadEventError,
    Route,
    base_type,
    created_of,
    event_hints,
    route,
    route_snapshot,
    route_thin,
    wants_work,
)
from shared.coordination.units import CATALOG, EVENTS_POLL, Unit, UnitKind, is_stripe_id
from shared.coordination.waiter import RunDone, RunWaiter

__all__ = [
    "ACCESS_CHANGED",
    "CATALOG",
    "CHARGE_TYPES",
    "DEDUPE_TTL_S",
    "EVENTS_POLL",
    "PARK_AFTER_FATAL",
    "QUEUED_TYPE_PATTERNS",
    "SYNC_FUNCTION",
    "AcceptResult",
    "AcceptedEvent",
    "BadEventError",
    "Coordinator",
    "EventSource",
    "FinishResult",
    "Keys",
    "Outcome",
    "ParkedUnit",
    "Route",
    "Run",
    "RunDone",
    "RunWaiter",
    "Unit",
    "UnitKind",
    "base_type",
    "created_of",
    "event_hints",
    "in_progress_timeout_s",
    "is_stripe_id",
    "route",
    "route_snapshot",
    "route_thin",
    "wants_work",
]
