"""What the fault run checks at the end: the view against the truth, and the stream.

- `compare`: every customer's `active_entitlements` features (and its `user_id`) against the
  oracle's truth (bench/fault_truth.py).
- `check_stream`: every change was published: for each customer, the versions found in the
  `access-changed` stream are exactly 1..n (n = its `customer_sync.version`), duplicates
  allowed (delivery is at least once) but never two different messages with one version, and
  the message of version n lists the features the service last decided.
- `settle`: until nothing is queued, running or waiting in the outbox.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio

from bench.fault_truth import Oracle
from shared.access import Access
from shared.coordination import Keys
from shared.publishing import AccessChanged


@dataclass(frozen=True)
class Mismatch:
    customer_id: str
    view: tuple[str, ...]
    truth: tuple[str, ...]
    user_view: str | None
    user_truth: str | None
    # docs/contract.md §5.2: (feature or limit name, amount) pairs, when they differ
    amounts_view: tuple[tuple[str, int], ...] = ()
    amounts_truth: tuple[tuple[str, int], ...] = ()

    def __str__(self) -> str:
        text = f"{self.customer_id}: view {list(self.view)} truth {list(self.truth)}"
        if self.amounts_view != self.amounts_truth:
            text += f" amounts {list(self.amounts_view)} vs {list(self.amounts_truth)}"
        if self.user_view != self.user_truth:
            text += f" user {self.user_view!r} vs {self.user_truth!r}"
        return text


async def view_features(pool: asyncpg.Pool | asyncpg.Connection, timeout_s: float | None = None) -> dict[str, set[str]]:
    rows = await pool.fetch("SELECT customer_id, feature FROM active_entitlements", timeout=timeout_s)
    out: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        out[r["customer_id"]].add(r["feature"])
    return out


async def view_amounts(pool: asyncpg.Pool) -> dict[str, set[tuple[str, int]]]:
    """Each customer's quantities (`feature`) and limits (`limit:name`) in the public views."""
    out: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for r in await pool.fetch("SELECT customer_id, feature, quantity FROM active_entitlements"):
        out[r["customer_id"]].add((r["feature"], int(r["quantity"])))
    for r in await pool.fetch("SELECT customer_id, name, value FROM active_limits"):
        out[r["customer_id"]].add((f"limit:{r['name']}", int(r["value"])))
    return out


def truth_amounts(access: Access) -> set[tuple[str, int]]:
    return {*access.quantities.items(), *((f"limit:{n}", v) for n, v in access.limit_values.items())}


async def compare(pool: asyncpg.Pool, oracle: Oracle, customers: list[str]) -> list[Mismatch]:
    """Customers whose view (features, quantities, limits) or user id differs from the truth now."""
    truth = oracle.judge(customers)
    view = await view_features(pool)
    amounts = await view_amounts(pool)
    users = {r["customer_id"]: r["user_id"] for r in await pool.fetch("SELECT customer_id, user_id FROM customers")}
    found = []
    for cid in customers:
        judged = truth[cid]
        if judged is None:
            raise RuntimeError(f"{cid}'s test clock is still advancing at the end of the run")
        held = view.get(cid, set())
        user = users.get(cid)
        held_amounts, true_amounts = amounts.get(cid, set()), truth_amounts(judged.access)
        if held != judged.features or not judged.user_ok(user) or held_amounts != true_amounts:
            found.append(Mismatch(cid, tuple(sorted(held)), tuple(sorted(judged.features)), user,
                                  judged.access.user_id, tuple(sorted(held_amounts)), tuple(sorted(true_amounts))))
    return found


@dataclass
class StreamCheck:
    entries: int = 0
    customers: int = 0
    # entries that repeat a (customer, version) already in the stream, with the same message id
    duplicates: int = 0
    # entries whose version is lower than one already published for that customer (allowed:
    # consumers ignore versions at or below the last they applied)
    out_of_order: int = 0
    unpublished: int = 0
    # versions published before Redis was lost, gone from the stream with it (not a problem)
    lost_with_redis: int = 0
    gaps: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)
    last_differs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.conflicting or self.last_differs or self.unpublished)


async def _stream_messages(r: redis.asyncio.Redis, keys: Keys) -> AsyncIterator[AccessChanged]:
    """Every message of the stream, oldest first, in pages."""
    last_id = "-"
    while True:
        batch = await r.xrange(keys.stream, min=last_id, count=5000)
        if last_id != "-":
            batch = batch[1:]
        if not batch:
            return
        for _entry_id, fields in batch:
            yield AccessChanged.from_json(fields[b"data"])
        last_id = batch[-1][0].decode() if isinstance(batch[-1][0], bytes) else str(batch[-1][0])


def _take(result: StreamCheck, by_customer: dict[str, dict[int, AccessChanged]], highest: dict[str, int],
          message: AccessChanged) -> None:
    """Count one stream entry: a repeat (same id), a conflict (same version, other id), or new."""
    result.entries += 1
    seen = by_customer[message.customer_id].get(message.version)
    if seen is None:
        by_customer[message.customer_id][message.version] = message
    elif seen.id == message.id:
        result.duplicates += 1
    else:
        result.conflicting.append(f"{message.customer_id} v{message.version}")
    if message.version < highest.get(message.customer_id, 0):
        result.out_of_order += 1
    highest[message.customer_id] = max(highest.get(message.customer_id, 0), message.version)


async def check_stream(r: redis.asyncio.Redis, pool: asyncpg.Pool, keys: Keys,
                       lost_at: float | None = None) -> StreamCheck:
    """Each customer's versions on the stream exactly 1..n, the last as stored. After Redis was
    lost (`lost_at`), the stream Redis held went with it: the versions published before (2 s of
    margin for a relay mark committed just after the kill) may be missing, every later one must
    be there."""
    result = StreamCheck()
    lost: dict[str, int] = {}
    if lost_at is not None:
        lost = {row["customer_id"]: int(row["v"]) for row in await pool.fetch(
            "SELECT customer_id, max(version) AS v FROM outbox WHERE published_at < to_timestamp($1) "
            "GROUP BY customer_id", lost_at + 2.0)}
    by_customer: dict[str, dict[int, AccessChanged]] = defaultdict(dict)
    highest: dict[str, int] = {}
    async for message in _stream_messages(r, keys):
        _take(result, by_customer, highest, message)
    result.customers = len(by_customer)
    versions = {r["customer_id"]: r["version"] for r in await pool.fetch("SELECT customer_id, version FROM customer_sync")}
    stored: dict[str, set[str]] = defaultdict(set)
    # docs/contract.md §6: the last message's quantities and limits are the stored ones too
    stored_amounts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in await pool.fetch("SELECT customer_id, feature, quantity FROM entitlements"):
        stored[row["customer_id"]].add(row["feature"])
        stored_amounts[row["customer_id"]][row["feature"]] = int(row["quantity"])
    for row in await pool.fetch("SELECT customer_id, name, value FROM entitlement_limits"):
        stored_amounts[row["customer_id"]][f"limit:{row['name']}"] = int(row["value"])
    for cid in sorted(set(versions) | set(by_customer)):
        n = versions.get(cid, 0)
        published = by_customer.get(cid, {})
        gone = set(range(1, lost.get(cid, 0) + 1)) - set(published)
        result.lost_with_redis += len(gone)
        if set(published) | gone != set(range(1, n + 1)):
            result.gaps.append(f"{cid}: versions {sorted(published)} for {n} changes")
            continue
        if n and n in published and set(published[n].features) != stored.get(cid, set()):
            result.last_differs.append(f"{cid}: v{n} {sorted(published[n].features)} vs {sorted(stored.get(cid, set()))}")
        elif n and n in published:
            last = published[n]
            said = {**last.quantities, **{f"limit:{k}": v for k, v in last.limits.items()}}
            if said != stored_amounts.get(cid, {}):
                result.last_differs.append(f"{cid}: v{n} amounts {sorted(said.items())} vs "
                                           f"{sorted(stored_amounts.get(cid, {}).items())}")
    result.unpublished = int(await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
    return result


async def _customer_work(r: redis.asyncio.Redis, key: str) -> int:
    """Members of the queue or the leases that are customers' work. The internal units (the
    Events API poll, the catalog) are left out: at 2,000 customers a poll can take longer than
    the run's 10 s schedule, so one is always queued or running, and it changes no view itself;
    what it finds queues customers, which are counted."""
    members = await r.zrange(key, 0, -1)
    return sum(1 for m in members if b"internal:" not in m)


async def settle(r: redis.asyncio.Redis, pool: asyncpg.Pool, keys: Keys, timeout_s: float) -> None:
    """Until no customer's job is queued, no customer's run holds a lease and the outbox is
    empty, three checks in a row."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 3:
        if time.monotonic() > deadline:
            queued = await _customer_work(r, keys.queue)
            running = await _customer_work(r, keys.leases)
            raise TimeoutError(f"not quiet after {timeout_s:.0f}s: {queued} queued, {running} running")
        try:
            queued = await _customer_work(r, keys.queue)
            running = await _customer_work(r, keys.leases)
            unpublished = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            quiet = quiet + 1 if queued == 0 and running == 0 and unpublished == 0 else 0
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, redis.exceptions.RedisError):
            quiet = 0
        await asyncio.sleep(0.5)
