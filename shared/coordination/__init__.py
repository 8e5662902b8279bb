"""Per-customer queueing in Redis: which unit an event concerns, and one run at a time per unit.

`coordinator.py` explains the promises; `keys.py` names every Redis key; `lua/` holds the
atomic scripts; `routing.py` maps a Stripe event to its unit.
"""

from shared.coordination.coordinator import (
    SYNC_FUNCTION,
    AcceptResult,
    Coordinator,
    FinishResult,
    Run,
)
from shared.coordination.keys import ACCESS_CHANGED, CATALOG, DEDUPE_TTL_S, Keys
from shared.coordination.routing import (
    CHECKOUT_UNIT_PREFIX,
    EVENTS_POLL_UNIT,
    QUEUED_TYPE_PATTERNS,
    SUBSCRIPTION_UNIT_PREFIX,
    BadEventError,
    Route,
    route,
    route_snapshot,
    route_thin,
    wants_work,
)
from shared.coordination.waiter import RunDone, RunWaiter

__all__ = [
    "ACCESS_CHANGED",
    "CATALOG",
    "CHECKOUT_UNIT_PREFIX",
    "DEDUPE_TTL_S",
    "EVENTS_POLL_UNIT",
    "QUEUED_TYPE_PATTERNS",
    "SUBSCRIPTION_UNIT_PREFIX",
    "SYNC_FUNCTION",
    "AcceptResult",
    "BadEventError",
    "Coordinator",
    "FinishResult",
    "Keys",
    "Route",
    "Run",
    "RunDone",
    "RunWaiter",
    "route",
    "route_snapshot",
    "route_thin",
    "wants_work",
]
