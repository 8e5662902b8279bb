"""The fake's state in one place: objects, clocks, settings, events and entitlement summaries.

`Core.now(clock_id)` is the time an object lives in: its test clock's time if it is on one,
else the global clock. While a clock-driven transition runs, `now` is pinned to the moment the
transition was due, so the events it emits carry that moment as `created`.

Work is done inside `Core.operation()`: at the end of the outermost one, every customer whose
subscriptions changed gets an `entitlements.active_entitlement_summary.updated` if its computed
set of features changed, after the other events of that operation (as Stripe sends it last).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .clock import GlobalClock, Settings
from .entitlements import EntitlementTracker
from .events import Event, EventLog
from .shape_log import ShapeLog
from .store import Store

JSON = dict[str, Any]


class Core:
    def __init__(self, settings: Settings | None = None, seed: int | None = None) -> None:
        self.seed = seed
        self.clock = GlobalClock()
        self.settings = settings or Settings()
        self.store = Store(seed)
        self.events = EventLog(self.store.new_id, self.store.next_seq)
        self.entitlements = EntitlementTracker()
        self._pinned: dict[str | None, int] = {}
        self._depth = 0
        # Set by `FakeStripe(check_shapes=True)`: every answer and payload checked (shape_log.py).
        self.shape_log: ShapeLog | None = None

    def reset(self) -> None:
        """Forget every object and event; keep listeners, restore default settings and clock."""
        listeners = self.events.listeners
        self.clock = GlobalClock()
        self.settings = Settings()
        self.store = Store(self.seed)
        self.events = EventLog(self.store.new_id, self.store.next_seq)
        self.events.listeners = listeners
        self.entitlements = EntitlementTracker()
        self._pinned.clear()

    def now(self, clock_id: str | None) -> int:
        if clock_id in self._pinned:
            return self._pinned[clock_id]
        if clock_id is not None:
            clock = self.store.clocks.get(clock_id)
            if clock is not None:
                return clock.now
        return self.clock.now()

    @contextmanager
    def pinned(self, clock_id: str | None, ts: int) -> Iterator[None]:
        previous = self._pinned.get(clock_id)
        self._pinned[clock_id] = ts
        try:
            yield
        finally:
            if previous is None:
                self._pinned.pop(clock_id, None)
            else:
                self._pinned[clock_id] = previous

    @contextmanager
    def operation(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.entitlements.flush(self.store, self.emit)

    def emit(
        self, type_: str, obj: JSON, clock_id: str | None, previous: JSON | None = None
    ) -> Event:
        return self.events.emit(type_, obj, self.now(clock_id), clock_id, previous)

    def emit_thin(self, type_: str, obj: JSON, clock_id: str | None) -> Event:
        """A thin-only event (no snapshot), such as `v1.customer.subscription.past_due`."""
        return self.events.emit(type_, obj, self.now(clock_id), clock_id, thin_only=True)
