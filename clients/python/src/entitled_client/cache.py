"""The in-memory cache of access per user: what the client answers `check` from.

Pure bookkeeping, no I/O: entries are built from a `GET /v1/access` body, and `access-changed`
messages (docs/contract.md §6) drop the entries they make stale. Times are `time.monotonic()`
seconds; a `valid_until` (wall clock) is turned into monotonic time once, when the entry is made.

Why an entry has one end of life: every grant in an entry is valid at least until the entry's
`expires_at` (the earliest `valid_until`, or the entry's maximum age), so while the entry lives
"is the feature in the set" is the whole answer — the fast path is one dict lookup, one clock read
and one set lookup. After that the entry is fetched again (a renewal moves `valid_until` without
any message, so the API is the one to ask).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Ids of messages already applied, kept to drop redeliveries (delivery is at least once).
REMEMBER_IDS = 10_000


@dataclass(frozen=True)
class Entry:
    """One user's access as the API answered it, and until when it may be believed."""

    user_id: str
    features: frozenset[str]
    quantities: Mapping[str, int]
    limits: Mapping[str, int]
    versions: Mapping[str, int]  # customer id -> version the answer reflects
    expires_at: float  # monotonic seconds

    def alive(self, now: float) -> bool:
        return now < self.expires_at


def parse_time(value: str | None) -> float | None:
    """Wall-clock seconds of an ISO 8601 time; None (a grant for ever) stays None."""
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def entry_from_access(user_id: str, body: Mapping[str, Any] | None, *, max_age_s: float,
                      now: float, wall_now: float) -> Entry:
    """An entry from a `GET /v1/access` body (None: the API does not know the user, no access)."""
    ends = [now + max_age_s]
    if body is None:
        return Entry(user_id, frozenset(), {}, {}, {}, ends[0])
    quantities: dict[str, int] = {}
    for grant in body.get("grants", []):
        quantities[grant["feature"]] = quantities.get(grant["feature"], 0) + int(grant["quantity"])
        until = parse_time(grant.get("valid_until"))
        if until is not None:
            ends.append(now + (until - wall_now))
    for limit in body.get("limit_grants", []):
        until = parse_time(limit.get("valid_until"))
        if until is not None:
            ends.append(now + (until - wall_now))
    return Entry(
        user_id=user_id,
        features=frozenset(body.get("features", [])),
        quantities=quantities,
        limits={str(k): int(v) for k, v in body.get("limits", {}).items()},
        versions={str(k): int(v) for k, v in body.get("versions", {}).items()},
        expires_at=min(ends),
    )


@dataclass
class Cache:
    """Entries per user, plus what is needed to keep them honest under concurrent fetches."""

    entries: dict[str, Entry] = field(default_factory=dict)
    # customer id -> users whose entry includes that customer
    users_of: dict[str, set[str]] = field(default_factory=dict)
    # users being fetched -> whether a message about them arrived meanwhile: such a fetch may
    # carry the state from before the change, so `finish` does not keep it.
    fetching: dict[str, bool] = field(default_factory=dict)
    seen_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    applied: int = 0
    skipped: int = 0

    def get(self, user_id: str, now: float | None = None) -> Entry | None:
        entry = self.entries.get(user_id)
        if entry is None or not entry.alive(time.monotonic() if now is None else now):
            return None
        return entry

    def begin(self, user_id: str) -> None:
        """A fetch of `user_id` starts (the client runs one at a time per user)."""
        self.fetching[user_id] = False

    def finish(self, entry: Entry) -> bool:
        """Keep `entry` unless a message about its user arrived while it was being fetched."""
        if self.fetching.pop(entry.user_id, False):
            return False
        self.store(entry)
        return True

    def abandon(self, user_id: str) -> None:
        self.fetching.pop(user_id, None)

    def store(self, entry: Entry) -> None:
        self.drop(entry.user_id)
        self.entries[entry.user_id] = entry
        for customer_id in entry.versions:
            self.users_of.setdefault(customer_id, set()).add(entry.user_id)

    def drop(self, user_id: str) -> None:
        entry = self.entries.pop(user_id, None)
        if entry is None:
            return
        for customer_id in entry.versions:
            users = self.users_of.get(customer_id)
            if users is not None:
                users.discard(user_id)
                if not users:
                    del self.users_of[customer_id]

    def clear(self) -> None:
        """Forget everything (messages may have been missed); fetches under way are not kept."""
        for user_id in self.fetching:
            self.fetching[user_id] = True
        self.entries.clear()
        self.users_of.clear()

    def apply(self, message: Mapping[str, Any]) -> set[str]:
        """Drop the entries an `access-changed` message makes stale; return those users.

        A message already seen (its `id`), or one whose `version` the entry already reflects, changes
        nothing. The users concerned are the message's `user_id` and every user whose entry holds
        the customer (a customer can move from one user to another)."""
        message_id = str(message.get("id", ""))
        if message_id in self.seen_ids:
            self.skipped += 1
            return set()
        self.seen_ids[message_id] = None
        if len(self.seen_ids) > REMEMBER_IDS:
            self.seen_ids.popitem(last=False)
        customer_id = str(message["customer_id"])
        version = int(message["version"])
        users = set(self.users_of.get(customer_id, ()))
        if message.get("user_id"):
            users.add(str(message["user_id"]))
        stale: set[str] = set()
        for user_id in users:
            entry = self.entries.get(user_id)
            if entry is not None and entry.versions.get(customer_id, -1) >= version:
                continue  # the entry was fetched after this change
            if user_id in self.fetching:
                self.fetching[user_id] = True
            if entry is not None:
                self.drop(user_id)
                stale.add(user_id)
        self.applied += 1
        return stale
