"""The truth the fault run holds the service to: what the fake Stripe says each customer may use.

`Oracle.judge` builds each customer's `CustomerFacts` the way docs/contract.md §5 describes them,
from the JSON the fake's API answers (rendered by the fake's own shape functions, in this
process, without the API faults), parsed with `shared.models`, and runs `shared.policy.decide`
at the customer's clock time: the test clock's `frozen_time`, or the wall clock. It is
synchronous, so one call sees one consistent state of the fake.

One fact is not taken from the payload: *when a subscription became past_due*. docs/contract.md §5
grants past_due access until "when it became past_due + PAST_DUE_GRACE"; a payload only shows
the latest invoice, which for a subscription that stays past_due across a renewal is the new
invoice, not the one whose failure made it past_due. The fake records the moment itself
(`Subscription.past_due_since`), and the oracle uses that, so that it does not inherit the
service's reading of the payload.

`GrantWatch` turns samples (truth vs. the `active_entitlements` view, every second) into
intervals during which a customer held a feature the truth did not grant ("wrongful grants"),
and intervals during which the truth granted a feature the view lacked ("late grants").
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from fakestripe.store import Store
from fakestripe.store import Subscription as FakeSubscription

from bench.fault_purchases import purchases_of
from fakestripe import FakeStripe, shapes, shapes_billing
from shared.access import (
    Access,
    CustomerFacts,
    PolicyConfig,
    ProductLimits,
    Subscription,
    decide,
    parse_customer,
    parse_limits,
    parse_subscription,
    user_of,
)


@dataclass(frozen=True)
class Truth:
    """The policy's decision for one customer at one moment."""

    access: Access
    on_clock: bool
    judged_at: int
    # For a deleted customer: the user it had before (the service keeps it, so that the
    # message ending its access says whose access ended).
    known_user: str | None = None

    @property
    def features(self) -> frozenset[str]:
        return self.access.features

    def user_ok(self, user_id: str | None) -> bool:
        """Whether the service's user id for this customer is right."""
        if user_id == self.access.user_id:
            return True
        return self.known_user is not None and user_id == self.known_user


def product_features(store: Store) -> dict[str, frozenset[str]]:
    """product -> features as docs/contract.md §5 says: attached active Product Features, else
    `metadata.features` (what `worker/catalog.py` caches)."""
    out: dict[str, frozenset[str]] = {}
    for pid, product in store.products.items():
        attached = frozenset(f.lookup_key for f in store.features_of_product(pid) if f.active)
        if attached:
            out[pid] = attached
            continue
        raw = product.metadata.get("features", "")
        out[pid] = frozenset(p.strip() for p in raw.split(",") if p.strip())
    return out


def _checkout_user(store: Store, customer_id: str) -> str | None:
    sessions = [s for s in store.sessions.values() if s.customer == customer_id and s.status == "complete"]
    for session in sorted(sessions, key=lambda s: (s.created, s.seq), reverse=True):
        ref = (session.client_reference_id or "").strip()
        if ref:
            return ref
    return None


def _subscription(store: Store, sub: FakeSubscription) -> Subscription:
    data = shapes_billing.subscription(store, sub)
    if sub.latest_invoice is not None and sub.latest_invoice in store.invoices:
        data["latest_invoice"] = shapes_billing.invoice(store, store.invoices[sub.latest_invoice])
    parsed = parse_subscription(data)
    if parsed.status == "past_due":
        # when it became past_due, as the fake recorded it (see the module docstring)
        parsed = replace(parsed, past_due_since=sub.past_due_since)
    return parsed


class Oracle:
    def __init__(self, fake: FakeStripe, policy: PolicyConfig) -> None:
        self.fake = fake
        self.policy = policy

    def judge(self, customers: Iterable[str], wall_now: float | None = None) -> dict[str, Truth | None]:
        """Each customer's truth now; None for a customer whose test clock is advancing (its
        objects are between two states)."""
        store = self.fake.core.store  # read each time: a reset replaces it
        wall = int(time.time() if wall_now is None else wall_now)
        features_of = product_features(store)
        limits_of = {pid: parse_limits(p.metadata) for pid, p in store.products.items()}
        subs_of: dict[str, list[FakeSubscription]] = {}
        for sub in store.subscriptions.values():
            subs_of.setdefault(sub.customer, []).append(sub)
        out: dict[str, Truth | None] = {}
        for cid in customers:
            out[cid] = self._judge_one(store, cid, subs_of.get(cid, []), features_of, wall, limits_of)
        return out

    def _judge_one(self, store: Store, cid: str, subs: list[FakeSubscription],
                   features_of: Mapping[str, frozenset[str]], wall: int,
                   limits_of: Mapping[str, ProductLimits] | None = None) -> Truth | None:
        raw = store.customers.get(cid)
        clock_now: int | None = None
        if raw is not None and raw.test_clock is not None:
            clock = store.clocks.get(raw.test_clock)
            if clock is None or clock.status == "advancing":
                return None
            clock_now = clock.frozen_time
        customer = parse_customer(shapes.customer(raw)) if raw is not None else None
        purchases, charges = purchases_of(store, cid)
        guest = store.sessions.get(cid) if cid.startswith("cs_") else None
        facts = CustomerFacts(
            customer_id=cid,
            customer=customer,
            subscriptions=tuple(_subscription(store, s) for s in subs),
            checkout_user_id=(guest.client_reference_id if guest is not None else _checkout_user(store, cid)),
            stripe_features=frozenset(),
            clock_now=clock_now,
            purchases=purchases,
            charges=charges,
            payments_read=True,
        )
        now = clock_now if clock_now is not None else wall
        known_user = None
        if raw is not None and raw.deleted and customer is not None:
            undeleted = replace(customer, deleted=False, metadata_user_id=raw.metadata.get("user_id"))
            known_user = user_of(replace(facts, customer=undeleted), facts.subscriptions)[0]
        access = decide(facts, features_of, now, self.policy, limits_of=limits_of)
        return Truth(access, clock_now is not None, now, known_user)


@dataclass
class Interval:
    customer_id: str
    feature: str
    started: float
    ended: float

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class GrantWatch:
    """Intervals of disagreement between the truth and the view, from periodic samples.

    A disagreement first seen at sample t0 and gone at sample t1 counts t1 - t0: at most one
    sampling interval more than it really lasted, at most one less.
    """

    wrongful: list[Interval] = field(default_factory=list)
    late: list[Interval] = field(default_factory=list)
    samples: int = 0
    # customer -> feature -> when the disagreement was first seen
    _open_wrong: dict[str, dict[str, float]] = field(default_factory=dict)
    _open_late: dict[str, dict[str, float]] = field(default_factory=dict)

    def observe(self, at: float, truth: Mapping[str, Truth | None], view: Mapping[str, set[str]]) -> None:
        self.samples += 1
        for cid, judged in truth.items():
            if judged is None:
                continue  # its clock is advancing: keep whatever is open as it is
            held = view.get(cid, set())
            self._track(self._open_wrong, self.wrongful, cid, held - judged.features, at)
            self._track(self._open_late, self.late, cid, judged.features - held, at)

    @staticmethod
    def _track(open_: dict[str, dict[str, float]], done: list[Interval], cid: str,
               now_wrong: Iterable[str], at: float) -> None:
        current = set(now_wrong)
        held = open_.get(cid)
        if held is None:
            if not current:
                return
            held = open_[cid] = {}
        for feature in current:
            held.setdefault(feature, at)
        for feature in [f for f in held if f not in current]:
            done.append(Interval(cid, feature, held.pop(feature), at))
        if not held:
            del open_[cid]

    def close(self, at: float) -> None:
        """End of the run: whatever is still open is counted up to now."""
        for open_, done in ((self._open_wrong, self.wrongful), (self._open_late, self.late)):
            for cid, held in open_.items():
                done.extend(Interval(cid, feature, started, at) for feature, started in held.items())
            open_.clear()

    def still_wrong(self) -> list[tuple[str, str]]:
        return sorted((cid, f) for cid, held in self._open_wrong.items() for f in held)


def longest(intervals: Iterable[Interval]) -> Interval | None:
    return max(intervals, key=lambda i: i.seconds, default=None)
