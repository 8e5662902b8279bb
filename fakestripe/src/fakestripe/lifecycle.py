"""Clock-driven transitions: what is due, in what order, and running it up to a moment.

Nothing is scheduled ahead of time: what is due is read off the objects' state each time
(trial ends, period ends, `cancel_at`, draft invoices waiting to finalize, retries), so a
change made through the API (a new `cancel_at`, a card replaced) is simply seen at the next
step. `run_due(clock, until)` runs every transition of that clock due at or before `until`,
earliest first, each at the moment it was due.

Objects on the global clock are moved by `tick_forever` (a background task) as wall time and
the control API's offset advance; objects on a test clock move only when the clock is advanced
(`POST /v1/test_helpers/test_clocks/{id}/advance`), which answers at once with
`status: advancing` and turns `ready` after the transitions ran, as Stripe's does
(https://docs.stripe.com/billing/testing/test-clocks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from . import errors, shapes, transitions
from .clock import add_interval
from .core import Core
from .events import CURRENT_REQUEST
from .invoicing import attempt_payment, finalize_and_collect, overdue
from .store import Invoice, Subscription, TestClock

log = logging.getLogger("fakestripe.lifecycle")

# (due time, priority at equal times, creation order, action)
Due = tuple[int, int, int, Callable[[], None]]

MAX_STEPS = 100_000


class Lifecycle:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.advancing: set[str] = set()

    def _subscription_due(self, sub: Subscription) -> list[Due]:
        core = self.core
        out: list[Due] = []
        status = sub.status
        if status in ("canceled", "incomplete_expired"):
            return out
        if status == "incomplete":
            expires = sub.created + core.settings.incomplete_expiry_s
            out.append((expires, 4, sub.seq, lambda: transitions.expire_incomplete(core, sub)))
            return out
        if sub.cancel_at is not None:
            out.append((sub.cancel_at, 1, sub.seq, lambda: transitions.cancel_at_due(core, sub)))
        if status == "trialing" and sub.trial_end is not None:
            before_s = core.settings.trial_will_end_before_s
            trial_length = sub.trial_end - (sub.trial_start or sub.trial_end)
            if not sub.trial_will_end_sent and trial_length > before_s:
                out.append(
                    (
                        sub.trial_end - before_s,
                        0,
                        sub.seq,
                        lambda: transitions.trial_will_end(core, sub),
                    )
                )
            out.append((sub.trial_end, 2, sub.seq, lambda: transitions.end_trial(core, sub)))
        if status in ("active", "past_due"):
            end = transitions.period_end(sub)
            out.append((end, 3, sub.seq, lambda: transitions.renew(core, sub)))
        return out

    def _invoice_due(self, inv: Invoice) -> list[Due]:
        core = self.core
        if inv.status == "draft" and inv.auto_advance and inv.finalize_at is not None:
            return [(inv.finalize_at, 5, inv.seq, lambda: finalize_and_collect(core, inv))]
        if inv.status == "open" and inv.next_payment_attempt is not None:

            def retry() -> None:
                attempt_payment(core, inv)

            return [(inv.next_payment_attempt, 6, inv.seq, retry)]
        if inv.status == "open" and inv.due_date is not None and not inv.overdue:
            return [(inv.due_date, 7, inv.seq, lambda: overdue(core, inv))]
        return []

    def next_due(self, clock_id: str | None) -> Due | None:
        best: Due | None = None
        store = self.core.store
        candidates: list[Due] = []
        for sub in store.subscriptions.values():
            if sub.test_clock == clock_id:
                candidates.extend(self._subscription_due(sub))
        for inv in store.invoices.values():
            if inv.test_clock == clock_id:
                candidates.extend(self._invoice_due(inv))
        for due in candidates:
            if best is None or due[:3] < best[:3]:
                best = due
        return best

    def run_due(self, clock_id: str | None, until: int) -> int:
        """Run every transition of `clock_id` due at or before `until`; returns how many ran."""
        steps = 0
        clock = self.core.store.clocks.get(clock_id) if clock_id else None
        while steps < MAX_STEPS:
            due = self.next_due(clock_id)
            if due is None or due[0] > until:
                break
            at = due[0]
            if clock is not None:
                at = max(at, clock.now)
                clock.now = at
            with self.core.pinned(clock_id, at), self.core.operation():
                due[3]()
            steps += 1
        if steps >= MAX_STEPS:
            log.error("fakestripe.lifecycle.too_many_steps clock=%s", clock_id)
        return steps

    def run_global(self) -> int:
        token = CURRENT_REQUEST.set((None, None))
        try:
            return self.run_due(None, self.core.clock.now())
        finally:
            CURRENT_REQUEST.reset(token)

    async def tick_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.run_global()
            except Exception:
                log.exception("fakestripe.lifecycle.tick_failed")

    # Test clocks ------------------------------------------------------------------------

    def advance_limit(self, clock: TestClock) -> int | None:
        """Stripe refuses to advance more than two intervals of the shortest subscription."""
        limits = []
        for sub in self.core.store.subscriptions.values():
            if sub.test_clock != clock.id or sub.status in ("canceled", "incomplete_expired"):
                continue
            interval, count = transitions.interval_of(self.core, sub)
            limits.append(add_interval(clock.frozen_time, interval, count, 2))
        return min(limits) if limits else None

    def start_advance(self, clock: TestClock, target: int) -> None:
        if clock.status == "advancing":
            raise errors.invalid_request(
                "The test clock is already advancing; wait until it is ready.",
                code="test_clock_advancing",
            )
        if target <= clock.frozen_time:
            raise errors.invalid_value(
                "frozen_time",
                "The frozen_time must be after the current frozen_time of the test clock.",
            )
        limit = self.advance_limit(clock)
        if limit is not None and target > limit:
            raise errors.invalid_value(
                "frozen_time",
                "Cannot advance more than two intervals from the current frozen_time of the "
                f"shortest subscription on this test clock (at most to {limit}).",
            )
        clock.status = "advancing"
        self.advancing.add(clock.id)
        old = clock.frozen_time
        clock.frozen_time = target
        with self.core.pinned(clock.id, old):
            self.core.emit("test_helpers.test_clock.advancing", shapes.test_clock(clock), clock.id)

    def finish_advance(self, clock_id: str) -> None:
        token = CURRENT_REQUEST.set((None, None))
        try:
            clock = self.core.store.clocks.get(clock_id)
            if clock is None:
                return
            self.run_due(clock_id, clock.frozen_time)
            clock.now = clock.frozen_time
            clock.status = "ready"
            self.core.emit("test_helpers.test_clock.ready", shapes.test_clock(clock), clock_id)
        finally:
            self.advancing.discard(clock_id)
            CURRENT_REQUEST.reset(token)

    async def advance_later(self, clock_id: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        try:
            self.finish_advance(clock_id)
        except Exception:
            log.exception("fakestripe.lifecycle.advance_failed clock=%s", clock_id)
            self.advancing.discard(clock_id)
