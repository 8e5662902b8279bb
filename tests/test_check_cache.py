"""The check cache's decisions (`api/check_cache.py`): pure, so tested on plain values.

The property: whatever the order of fills, notifications, reads and time, a read never gives an
answer that a later notification (by any of its tags), the end of its life, the feed going down,
or a notification heard while it was being read should have removed; with room enough, it
gives every answer that nothing removed; and the cache never holds more than its bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.check_cache import (
    BY_CUSTOMER,
    BY_USER,
    EVERYTHING,
    Change,
    CheckCache,
    Key,
    entry_life_s,
    key,
    parse_change,
    tags_of,
)

USERS = ["u_1", "u_2", "u_3"]
CUSTOMERS = ["cus_1", "cus_2", "cus_3"]
FEATURES = ["pro", "team"]

keys = st.one_of(
    st.tuples(st.just(BY_USER), st.sampled_from(USERS), st.sampled_from(FEATURES)),
    st.tuples(st.just(BY_CUSTOMER), st.sampled_from(CUSTOMERS), st.sampled_from(FEATURES)),
)
changes = st.one_of(
    st.just(EVERYTHING),
    st.builds(Change, customer_id=st.sampled_from(CUSTOMERS),
              user_ids=st.frozensets(st.sampled_from(USERS), max_size=2)),
)


@dataclass(frozen=True)
class Fill:
    """A check that reads Postgres: it takes the generation, and is kept `delay` steps later."""

    key: Key
    customers: frozenset[str]
    life_s: float


@dataclass(frozen=True)
class Heard:
    change: Change


@dataclass(frozen=True)
class Tick:
    s: float


@dataclass(frozen=True)
class Down:
    up_again: bool


fills = st.builds(Fill, key=keys, customers=st.frozensets(st.sampled_from(CUSTOMERS), max_size=2),
                  life_s=st.sampled_from([0.0, 1.0, 5.0, 30.0]))
steps = st.lists(st.one_of(fills, fills, st.builds(Heard, changes), st.builds(Tick, st.sampled_from([0.5, 2.0, 10.0])),
                           st.builds(Down, st.booleans())), max_size=40)


@dataclass
class Play:
    """A cache and, beside it, a model of what it may serve; a fill is read at its step and
    kept `lag` steps later (a query in flight)."""

    cap: int
    lag: int
    now: float = 0.0

    def __post_init__(self) -> None:
        self.cache = CheckCache(max_entries=self.cap)
        self.cache.open()
        self.model: dict[Key, tuple[bytes, float, frozenset[str]]] = {}
        # (due step, fill, generation, body, nothing heard since it was read)
        self.in_flight: list[tuple[int, Fill, int, bytes, bool]] = []

    def keep_due(self, n: int) -> None:
        due = [f for f in self.in_flight if f[0] <= n]
        self.in_flight = [f for f in self.in_flight if f[0] > n]
        for _, fill, generation, body, valid in due:
            kept = self.cache.put(fill.key, body, customers=fill.customers, life_s=fill.life_s, now=self.now,
                                  generation=generation)
            assert kept == (valid and fill.life_s > 0 and self.cache.usable)
            if kept:
                self.model[fill.key] = (body, self.now + fill.life_s, tags_of(fill.key, fill.customers))

    def spoil_in_flight(self) -> None:
        self.in_flight = [(d, f, g, b, False) for d, f, g, b, _ in self.in_flight]

    def step(self, n: int, step: object) -> None:
        if isinstance(step, Fill):
            self.in_flight.append((n + self.lag, step, self.cache.generation, f"{n}".encode(), self.cache.usable))
        elif isinstance(step, Heard):
            self.cache.apply(step.change)
            self.spoil_in_flight()
            self.model = {k: v for k, v in self.model.items()
                          if not step.change.everything and not v[2] & step.change.tags}
        elif isinstance(step, Tick):
            self.now += step.s
        elif isinstance(step, Down):
            self.cache.close()
            self.model = {}
            self.spoil_in_flight()
            if step.up_again:
                self.cache.open()

    def compare(self, keys: set[Key]) -> None:
        assert len(self.cache) <= self.cap
        self.model = {k: v for k, v in self.model.items() if v[1] > self.now}
        for k in keys:
            got = self.cache.get(k, self.now)
            if got is not None:
                assert k in self.model, k  # never a removed answer...
                assert got == self.model[k][0], k  # ...nor another one
            elif self.cap >= 100:
                assert k not in self.model, k  # with room, nothing live is lost


def run(plan: list[object], cap: int, lag: int) -> None:
    play = Play(cap, lag)
    keys = {f.key for f in plan if isinstance(f, Fill)}
    for n, step in enumerate([*plan, *[Tick(0.0)] * lag]):
        play.keep_due(n)
        play.step(n, step)
        play.compare(keys)


@given(plan=steps, lag=st.integers(0, 3))
def test_a_read_never_gives_a_removed_answer_and_with_room_gives_every_live_one(plan: list[object], lag: int) -> None:
    run(plan, cap=100, lag=lag)


@given(plan=steps, cap=st.integers(1, 3))
def test_the_bound_holds_and_evicting_never_gives_a_removed_answer(plan: list[object], cap: int) -> None:
    run(plan, cap=cap, lag=1)


def test_least_recently_read_goes_first() -> None:
    cache = CheckCache(max_entries=2)
    cache.open()
    a, b, c = key("u_1", None, "pro"), key("u_2", None, "pro"), key(None, "cus_3", "pro")
    for k in (a, b):
        assert cache.put(k, b"x", customers=(), life_s=10, now=0, generation=cache.generation)
    assert cache.get(a, 1) == b"x"  # a read: b is now the oldest
    assert cache.put(c, b"y", customers=(), life_s=10, now=1, generation=cache.generation)
    assert (cache.get(a, 1), cache.get(b, 1), cache.get(c, 1)) == (b"x", None, b"y")


def test_a_users_answer_goes_with_its_user_and_with_each_customer_it_counts() -> None:
    """By user: dropped by its user id (a new customer of the user) and by any customer its
    grants came from; by customer: by that customer. Other subjects stay."""
    cache = CheckCache(max_entries=10)
    cache.open()
    mine, other, by_customer = key("u_1", None, "pro"), key("u_2", None, "pro"), key(None, "cus_2", "pro")
    cache.put(mine, b"1", customers=("cus_1", "cs_guest"), life_s=10, now=0, generation=cache.generation)
    cache.put(other, b"2", customers=("cus_2",), life_s=10, now=0, generation=cache.generation)
    cache.put(by_customer, b"3", customers=("cus_2",), life_s=10, now=0, generation=cache.generation)
    assert cache.apply(Change(customer_id="cs_guest")) == 1
    assert cache.get(mine, 0) is None
    assert cache.get(other, 0) == b"2"
    assert cache.apply(Change(customer_id="cus_9", user_ids=frozenset({"u_2"}))) == 1
    assert (cache.get(other, 0), cache.get(by_customer, 0)) == (None, b"3")
    assert cache.apply(Change(customer_id="cus_2")) == 1
    assert len(cache) == 0


def test_an_unknown_users_refusal_goes_when_a_customer_names_the_user() -> None:
    cache = CheckCache(max_entries=10)
    cache.open()
    k = key("u_new", None, "pro")
    cache.put(k, b"no", customers=(), life_s=30, now=0, generation=cache.generation)
    cache.apply(Change(customer_id="cus_new", user_ids=frozenset({"u_new"})))
    assert cache.get(k, 0) is None


def test_nothing_is_kept_or_served_while_the_feed_is_down() -> None:
    cache = CheckCache(max_entries=10)
    k = key("u_1", None, "pro")
    assert not cache.put(k, b"x", customers=(), life_s=10, now=0, generation=cache.generation)
    cache.open()
    before_down = cache.generation
    cache.put(k, b"x", customers=(), life_s=10, now=0, generation=before_down)
    cache.close()
    assert (cache.usable, cache.get(k, 0), len(cache)) == (False, None, 0)
    cache.open()
    assert not cache.put(k, b"x", customers=(), life_s=10, now=0, generation=before_down)  # read before the LISTEN
    assert cache.get(k, 0) is None


def test_entry_life_is_the_cap_and_never_past_the_earliest_grant_end() -> None:
    assert entry_life_s(30, None) == 30
    assert entry_life_s(30, 4.5) == 4.5
    assert entry_life_s(30, 90) == 30
    assert entry_life_s(30, -1) == 0
    assert entry_life_s(0, None) == 0
    # the spread shortens the cap, by at most half, and never lengthens it
    assert entry_life_s(30, None, spread=0.999999) == pytest.approx(15, abs=1e-3)
    assert entry_life_s(30, None, spread=0.5) == 22.5
    assert entry_life_s(30, 4.5, spread=0.9) == 4.5
    assert entry_life_s(30, None, spread=7) == 15


def test_payloads() -> None:
    """Migration 0012's payloads; anything unreadable drops everything."""
    assert parse_change('{"c": "cus_1", "u": ["u_1", "u_9"]}') == Change(customer_id="cus_1",
                                                                         user_ids=frozenset({"u_1", "u_9"}))
    assert parse_change('{"c": "cus_1", "u": []}') == Change(customer_id="cus_1")
    for bad in ("*", "", "nope", "[]", '{"u": ["u_1"]}', '{"c": 1}', '{"c": "cus_1", "u": [1]}', '{"c": "c", "u": "u"}'):
        assert parse_change(bad) == EVERYTHING, bad
    assert Change(customer_id="cus_1", user_ids=frozenset({"u_1"})).tags == tags_of(key("u_1", None, "f"), ["cus_1"])
