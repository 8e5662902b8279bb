"""Time: the global clock (wall time plus an offset the tests control), the account settings
that say how long things take, and calendar arithmetic for billing periods.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

DAY_S = 86400
API_VERSION = "2026-10-28.endive"


class GlobalClock:
    """Wall time shifted by `offset_s`; `advance` only ever moves it forward."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset_s = offset_s

    def now(self) -> int:
        return int(time.time() + self.offset_s)

    def advance(self, seconds: float) -> int:
        if seconds < 0:
            raise ValueError("the global clock only moves forward")
        self.offset_s += seconds
        return self.now()


RETRY_EXHAUSTED_ACTIONS = ("cancel", "unpaid", "past_due")


@dataclass
class Settings:
    """The account's Billing settings, and the delays the fake models (all changeable at run time).

    `invoice_finalize_delay_s`: Stripe creates a renewal invoice as a draft at the period boundary
    and finalizes it, then attempts payment, "approximately 1 hour later" (docs:
    https://docs.stripe.com/billing/subscriptions/trials and
    https://docs.stripe.com/billing/subscriptions/overview#invoice-lifecycle), which leaves an
    hour in which the subscription shows the new period but no payment has been confirmed.

    `retry_schedule_days`: when failed renewals are retried, in days after the first failure.
    Stripe's Smart Retries choose the times themselves within a configured window (the
    recommended default is 8 tries within 2 weeks); a custom schedule retries "up to 4 times"
    at fixed days (https://docs.stripe.com/billing/revenue-recovery/smart-retries). The default
    here is such a custom schedule: 3, 5 and 7 days after the first failure.

    `retry_exhausted_action`: what the subscription becomes once the last retry failed:
    `cancel` (status `canceled`), `unpaid`, or `past_due` (left as it is), as in Stripe's
    "Manage failed payments" settings.
    """

    invoice_finalize_delay_s: int = 3600
    retry_schedule_days: list[float] = field(default_factory=lambda: [3.0, 5.0, 7.0])
    retry_exhausted_action: str = "cancel"
    incomplete_expiry_s: int = 23 * 3600
    trial_will_end_before_s: int = 3 * DAY_S
    event_retention_s: int = 30 * DAY_S
    # A test clock answers `advancing` at once and becomes `ready` this long afterwards at least.
    clock_advance_delay_s: float = 0.02

    def to_json(self) -> dict[str, object]:
        return {
            "invoice_finalize_delay_s": self.invoice_finalize_delay_s,
            "retry_schedule_days": list(self.retry_schedule_days),
            "retry_exhausted_action": self.retry_exhausted_action,
            "incomplete_expiry_s": self.incomplete_expiry_s,
            "trial_will_end_before_s": self.trial_will_end_before_s,
            "event_retention_s": self.event_retention_s,
            "clock_advance_delay_s": self.clock_advance_delay_s,
        }


def add_interval(ts: int, interval: str, count: int, times: int = 1) -> int:
    """`ts` moved forward by `times` x `count` intervals, months clamped to the month's end."""
    n = count * times
    if interval == "day":
        return ts + n * DAY_S
    if interval == "week":
        return ts + n * 7 * DAY_S
    moment = datetime.fromtimestamp(ts, UTC)
    months = n if interval == "month" else n * 12
    total = moment.month - 1 + months
    year, month = moment.year + total // 12, total % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def next_period_end(anchor: int, interval: str, count: int, after: int) -> int:
    """The first period boundary counted from `anchor` that lies after `after`."""
    k = 1
    while True:
        end = add_interval(anchor, interval, count, k)
        if end > after:
            return end
        k += 1


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
