"""Which wrongful grants the service could not have known about: "silent" intervals.

The service learns that a customer changed from a webhook, from the Events API poller, or from
its own re-checks. A change it cannot learn of: every event of the customer's change was lost
(a dropped webhook), *and* the events are dated so far in the past that the poller, which reads
`GET /v1/events` by `created` from a cursor near the current time, never lists them. That
happens to customers on a Stripe test clock frozen behind the wall clock (not advanced for a
while): their events carry the clock's time. Such a change is found by the next event of the
customer, the sweep or `entitled resync --all`; the fault run reports those intervals apart
and does not hold them to the bound (the final comparison, after `resync --all`, still does).

Everything here is read from the fake Stripe's own records: which deliveries succeeded, which
events were dropped, and how each was dated.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from bench.fault_truth import Interval
from fakestripe import FakeStripe

# An event dated more than this before it happened is out of the poller's reach: its cursor
# overlap (60 s), one poll interval and a slow poll.
UNREACHABLE_S = 120.0
# The change that opened an interval happened at most this long before it was first sampled.
LEAD_S = 10.0
# A delivery is attempted at most this long after its event (delay and shuffle).
DELIVERY_S = 5.0


@dataclass
class Signals:
    """Per customer: when one of its events was sent (or dropped within the poller's reach),
    and when one was dropped out of the poller's reach."""

    heard: dict[str, list[float]]
    lost: dict[str, list[float]]

    def silent(self, interval: Interval) -> bool:
        """A change of this customer was lost for good, and nothing else was sent about it."""
        cid, start, end = interval.customer_id, interval.started - LEAD_S, interval.ended
        if any(start <= t <= end + DELIVERY_S for t in self.heard.get(cid, [])):
            return False
        return any(start <= t <= end for t in self.lost.get(cid, []))


def _customer_of(obj: dict[str, object]) -> str | None:
    customer = obj.get("customer")
    if isinstance(customer, str):
        return customer
    if isinstance(customer, dict) and isinstance(customer.get("id"), str):
        return str(customer["id"])
    if obj.get("object") == "customer" and isinstance(obj.get("id"), str):
        return str(obj["id"])
    return None


def signals(fake: FakeStripe) -> Signals:
    events = fake.core.events.by_id
    heard: dict[str, list[float]] = defaultdict(list)
    lost: dict[str, list[float]] = defaultdict(list)
    for record in fake.webhooks.records:
        event = events.get(record["event_id"])
        if event is not None and record["attempt"] == 1 and (cid := _customer_of(event.object)) is not None:
            heard[cid].append(float(record["sent_at"]))
    for drop in fake.webhooks.dropped:
        event = events.get(drop["event_id"])
        if event is None or (cid := _customer_of(event.object)) is None:
            continue
        (lost if event.created < drop["at"] - UNREACHABLE_S else heard)[cid].append(float(drop["at"]))
    return Signals(dict(heard), dict(lost))


def split(intervals: Iterable[Interval], sig: Signals) -> tuple[list[Interval], list[Interval]]:
    """(intervals the service could have known about, silent ones)."""
    known: list[Interval] = []
    silent: list[Interval] = []
    for interval in intervals:
        (silent if sig.silent(interval) else known).append(interval)
    return known, silent
