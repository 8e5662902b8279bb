"""The api's answer cache of `GET /v1/check` (docs/contract.md §10): pure, no I/O, no clock.

Postgres tells the api what may have changed (migration 0012: one `entitled_access`
notification per customer written, naming its user ids before and after); `api/check_feed.py`
is the thin shell that listens and calls `apply`. This module decides:

- **What an answer depends on** (its tags): a check by user depends on that user id (a new
  customer of the user, or one whose user id moves to or from it, is named by its user id) and
  on every customer its grants came from; a check by customer on that customer id. A
  notification drops every entry carrying one of its tags; `*` drops everything. An unknown
  user's answer (no customer) carries its user tag only: the insert of its first customer names
  it.
- **How long an answer lives** (`entry_life_s`): at most the cap (`API_CHECK_CACHE_TTL`; each
  answer a random part of its second half, so answers filled together do not expire together), and
  never past the earliest `valid_until` of the grants it counts: past it the view stops counting
  that grant, so the quantity, or the answer, changes without any write. Time alone never adds
  a grant (the view only loses rows as `now()` moves), so a refusal lives the whole cap.
- **When a fill may be kept** (`generation`): a check reads Postgres with the generation it saw
  before asking; any notification, or the feed going down or up, bumps it, and `put` keeps the
  answer only if nothing moved meanwhile. A notification is sent at commit, after the commit's
  snapshot is visible: either it arrives before the answer is kept (which is then refused) or
  after (and drops it). So a kept answer is at most one commit's notification behind Postgres.
- **When the cache is used at all** (`usable`): only between `open` (the LISTEN is in place)
  and `close` (the connection is lost); both empty it.

Entries are bounded (least recently used first out) so that a scan of many users cannot grow
the process without limit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

# ("user" | "customer", id, feature)
Key = tuple[str, str, str]
BY_USER, BY_CUSTOMER = "user", "customer"
# The notification that means "anything may have changed" (TRUNCATE, a huge statement).
EVERYTHING_PAYLOAD = "*"


def key(user_id: str | None, customer_id: str | None, feature: str) -> Key:
    if user_id is not None:
        return (BY_USER, user_id, feature)
    assert customer_id is not None
    return (BY_CUSTOMER, customer_id, feature)


def user_tag(user_id: str) -> str:
    return f"u:{user_id}"


def customer_tag(customer_id: str) -> str:
    return f"c:{customer_id}"


def tags_of(k: Key, customers: Iterable[str]) -> frozenset[str]:
    """What an answer depends on: its subject, and the customers its grants came from."""
    kind, subject, _feature = k
    own = user_tag(subject) if kind == BY_USER else customer_tag(subject)
    return frozenset({own, *(customer_tag(c) for c in customers)})


@dataclass(frozen=True, slots=True)
class Change:
    """What one notification (or `POST /v1/sync`) says may have changed."""

    everything: bool = False
    customer_id: str | None = None
    user_ids: frozenset[str] = frozenset()

    @property
    def tags(self) -> frozenset[str]:
        found = {user_tag(u) for u in self.user_ids}
        if self.customer_id is not None:
            found.add(customer_tag(self.customer_id))
        return frozenset(found)


EVERYTHING = Change(everything=True)


def parse_change(payload: str) -> Change:
    """An `entitled_access` payload (`{"c": customer_id, "u": [user ids]}` or `*`). Anything
    else drops everything: a payload we cannot read must not leave an answer standing."""
    if payload == EVERYTHING_PAYLOAD:
        return EVERYTHING
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return EVERYTHING
    if not isinstance(data, dict):
        return EVERYTHING
    customer, users = data.get("c"), data.get("u", [])
    if not isinstance(customer, str) or not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        return EVERYTHING
    return Change(customer_id=customer, user_ids=frozenset(users))


# A cap's share each answer may lose at random: answers filled together (a cold start, a burst
# of new users) then expire spread over the second half of the cap, not in one wave of misses.
CAP_SPREAD = 0.5


def entry_life_s(ttl_s: float, ends_in_s: float | None, spread: float = 0.0) -> float:
    """How long an answer may be served: the cap less `spread` (in [0, 1), the caller's random
    draw) times CAP_SPREAD of it, never past the earliest `valid_until` of the grants it counts
    (`ends_in_s` from now; None: it counts none, or only grants for ever). Never over the cap."""
    cap = max(0.0, ttl_s) * (1.0 - CAP_SPREAD * min(max(spread, 0.0), 1.0))
    if ends_in_s is None:
        return cap
    return max(0.0, min(cap, ends_in_s))


@dataclass(slots=True)
class _Entry:
    body: bytes
    expires_at: float
    tags: frozenset[str]


@dataclass(slots=True)
class CheckCache:
    """Answers (the response body) by `Key`. Times are of one monotonic clock, given by the caller."""

    max_entries: int
    _entries: OrderedDict[Key, _Entry] = field(default_factory=OrderedDict)
    _by_tag: dict[str, set[Key]] = field(default_factory=dict)
    _generation: int = 0
    _usable: bool = False

    @property
    def usable(self) -> bool:
        return self._usable

    @property
    def generation(self) -> int:
        """Take it before reading Postgres; give it back to `put`."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, k: Key, now: float) -> bytes | None:
        entry = self._entries.get(k)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._drop(k)
            return None
        self._entries.move_to_end(k)
        return entry.body

    def put(self, k: Key, body: bytes, *, customers: Iterable[str], life_s: float, now: float,
            generation: int) -> bool:
        """Keep an answer read at `generation`; refused when the cache is not usable, when
        anything was dropped since, or when it has no life left."""
        if not self._usable or generation != self._generation or life_s <= 0 or self.max_entries <= 0:
            return False
        if k in self._entries:
            self._drop(k)
        while len(self._entries) >= self.max_entries:
            self._drop(next(iter(self._entries)))
        entry = _Entry(body, now + life_s, tags_of(k, customers))
        self._entries[k] = entry
        for tag in entry.tags:
            self._by_tag.setdefault(tag, set()).add(k)
        return True

    def apply(self, change: Change) -> int:
        """Drop what the change may have made wrong; every fill under way is refused too."""
        self._generation += 1
        if change.everything:
            dropped = len(self._entries)
            self._clear()
            return dropped
        doomed: set[Key] = set()
        for tag in change.tags:
            doomed |= self._by_tag.get(tag, set())
        for k in doomed:
            self._drop(k)
        return len(doomed)

    def open(self) -> None:
        """The LISTEN is in place: start empty (what changed before it was not heard)."""
        self._clear()
        self._generation += 1
        self._usable = True

    def close(self) -> None:
        """The LISTEN is lost: nothing may be served or kept until `open`."""
        self._usable = False
        self._generation += 1
        self._clear()

    def _clear(self) -> None:
        self._entries.clear()
        self._by_tag.clear()

    def _drop(self, k: Key) -> None:
        entry = self._entries.pop(k)
        for tag in entry.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(k)
                if not keys:
                    del self._by_tag[tag]
