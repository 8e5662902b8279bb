"""Per-customer coordination in Redis: one sync at a time, bursts coalesced, no event lost.

How it works
------------
Work is keyed by *unit* (`units.py`): a customer, a subscription or Checkout Session to resolve,
or an internal unit (the Events API poll, the catalog). Each unit has a small state machine in a
Redis hash (`Keys.unit`), changed only by the Lua scripts in `lua/` beside this module, each of
which runs atomically:

- ``seq``      increases by one for every piece of accepted work (a webhook, a re-check, ...);
- ``pending``  the arq job queued to sync the unit, if any;
- ``run``      the token of the run holding the unit, with its ``lease`` expiry and the ``seq``
               it ``started`` at.

``accept`` (ingest, reconciliation, re-checks) deduplicates the event id, bumps ``seq`` and
queues a job *only* when no job is queued and no live run holds the unit. A queued job is
deferred by the coalescing window, so a burst of events lands in one run (**coalescing**).
Every job gets a fresh id: arq's ``enqueue_job`` silently returns ``None`` for an id it still
knows (queued, running or with a kept result), which is exactly how a per-customer job id loses
events; we write arq's job format ourselves, in the same script, and never reuse an id.

``begin`` (the worker, when a job starts) takes the unit unless another run holds a live lease
(**one at a time**, across every process and host: the lease lives in Redis). ``finish``
releases it and, if ``seq`` moved since the run started, queues the next run, so an event that
arrives while a sync runs is always followed by a sync that starts after it (**no lost
update**). A failed run queues a retry with backoff: work is never dropped. A unit whose runs
fail `PARK_AFTER_FATAL` times in a row with an error that retrying cannot mend (Stripe or Postgres
refusing the request itself) is *parked* instead: its work stays queued, no job is scheduled for
it, and it is listed (`parked_units`, `entitled events --failed`) until a replay un-parks it.

A run that dies keeps the unit only until its lease expires (it is renewed by a heartbeat
while the run is alive); the timer loop then queues the unit again, and the next ``begin``
takes it over. A run that was only *paused* (a stalled event loop, a long GC) may wake up
after it lost the unit and still try to write: **fencing** stops it. Each run, after ``begin``,
increments the customer's fence in Postgres (`customer_sync.fence`) and its final transaction
commits only if the fence is still its own (see `worker/store.py`). Because the newer run bumps
the fence before it reads Stripe, the older run can never overwrite a newer result.

arq itself gives no per-key ordering and may run a job twice (its in-progress key expires after
the job timeout + 10 s and nothing refreshes it); the design above does not rely on either.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from importlib import resources
from typing import Literal, cast

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from shared.coordination.batching import ScriptBatcher
from shared.coordination.keys import DEDUPE_TTL_S, Keys
from shared.coordination.records import AcceptedEvent
from shared.coordination.units import CATALOG, Unit

SYNC_FUNCTION = "sync_unit"
# arq's default: a job that has not started a day after it was due is dropped by arq
# (our timer loop would queue the unit again on its next re-check or reconciliation).
JOB_EXPIRES_EXTRA_MS = 86_400_000
MAX_EVENTS_PER_UNIT = 10_000
# Runs in a row that fail with a non-retryable error before their unit is parked.
PARK_AFTER_FATAL = 5
# A cron slot's claim outlives the slot, so that a late worker cannot run it again.
MIN_CRON_CLAIM_S = 60

AcceptResult = Literal["duplicate", "coalesced", "running", "scheduled", "parked"]
FinishResult = Literal["lost", "done", "again", "retry", "pending", "parked"]
Outcome = Literal["ok", "failed", "fatal"]


def _script(name: str) -> str:
    folder = resources.files("shared.coordination") / "lua"
    prelude = (folder / "prelude.lua").read_text(encoding="utf-8")
    return prelude + "\n" + (folder / f"{name}.lua").read_text(encoding="utf-8")


def in_progress_timeout_s(lease_s: float) -> float:
    """How long arq should keep a picked job marked in progress (its key is never refreshed).

    arq takes the longest timeout of all functions (the sweep's hours) for every job. A job
    whose worker was killed then stays at the head of the queue that long, and arq reads only
    the 100 oldest due jobs on each poll: a hundred such jobs stop the deployment. A job killed
    before its run began is worse: it stays the unit's pending job, so every new event coalesces
    into it and the unit is not synced. The coordination never relied on this key (a job may run
    twice; a second run of a live one finds its unit busy, a second cron run finds its slot
    claimed), so keep it about as long as a lease: dead jobs run again soon.
    """
    return lease_s + 10


@dataclass(frozen=True)
class Run:
    """A run that holds its unit: what `begin` handed to it."""

    unit: Unit
    job_id: str
    token: str
    seq: int
    took_over: bool
    failures: int
    reason: str
    events: tuple[AcceptedEvent, ...]


@dataclass(frozen=True)
class ParkedUnit:
    unit: Unit
    parked_at_ms: int


class Coordinator:
    """The Python face of the Lua scripts. One per process; cheap to share."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        coalesce_ms: int = 1000,
        lease_ms: int = 30_000,
        accept_timeout_s: float | None = None,
    ) -> None:
        """`accept_timeout_s`: `accept` raises TimeoutError past it (the receiver's 503 bound)."""
        self.redis = redis
        self.keys = keys
        self.coalesce_ms = coalesce_ms
        self.lease_ms = lease_ms
        self._id_prefix = f"{keys.prefix}:"
        # The receiver's hot path: concurrent accepts share a round trip, and what is the same for
        # every accept is encoded once (batching.py; accept.lua's KEYS 4-6 and ARGV 1-5).
        self._accept = ScriptBatcher(
            redis, _script("accept"), timeout_s=accept_timeout_s,
            fixed_keys=[keys.queue, keys.catalog_dirty, keys.parked],
            fixed_args=[SYNC_FUNCTION, JOB_EXPIRES_EXTRA_MS, self._id_prefix, MAX_EVENTS_PER_UNIT, keys.job_prefix],
        )
        self._begin: AsyncScript = redis.register_script(_script("begin"))
        self._heartbeat: AsyncScript = redis.register_script(_script("heartbeat"))
        self._finish: AsyncScript = redis.register_script(_script("finish"))
        self._fire_due: AsyncScript = redis.register_script(_script("fire_due"))

    async def accept(
        self,
        unit: Unit,
        *,
        event: AcceptedEvent | None = None,
        reason: str = "",
        dedupe_id: str | None = None,
        catalog_item: str | None = None,
        delay_ms: int | None = None,
        unpark: bool = False,
    ) -> AcceptResult:
        """Record work for `unit` and make sure a sync will run after it. One round trip.

        `unpark`: a replay or resync asks for the unit to run again even if it was parked."""
        keys = self.keys
        unit_key = keys.unit(unit)
        result = await self._accept(
            keys=[keys.seen(dedupe_id or "-"), unit_key, keys.events_of(unit_key)],
            args=[
                event.to_json() if event is not None else "",
                unit.wire,
                self.coalesce_ms if delay_ms is None else delay_ms,
                reason,
                DEDUPE_TTL_S if dedupe_id else "",
                catalog_item or "",
                "1" if unpark else "",
            ],
        )
        return cast(AcceptResult, _text(result))

    async def accept_catalog(self, item: str, *, event: AcceptedEvent | None = None,
                             dedupe_id: str | None = None, reason: str = "") -> AcceptResult:
        """Catalog work: `item` is `product:<id>`, `feature:<id>` or `*` (everything)."""
        return await self.accept(CATALOG, event=event, reason=reason, dedupe_id=dedupe_id,
                                 catalog_item=item)

    async def begin(self, unit: Unit, job_id: str) -> Run | None:
        """Take the unit for this job's run; None when another live run holds it."""
        token = uuid.uuid4().hex
        reply = await self._begin(
            keys=[self.keys.unit(unit), self.keys.unit_events(unit), self.keys.leases],
            args=[job_id, token, self.lease_ms, unit.wire],
        )
        parts = [_text(p) for p in reply]
        if parts[0] == "busy":
            return None
        return Run(
            unit=unit,
            job_id=job_id,
            token=token,
            seq=int(parts[1]),
            took_over=parts[2] == "1",
            failures=int(parts[3]),
            reason=parts[4],
            events=tuple(AcceptedEvent.from_json(p) for p in parts[5:]),
        )

    async def heartbeat(self, run: Run) -> bool:
        """Renew the lease; False once another run has taken the unit over."""
        held = await self._heartbeat(
            keys=[self.keys.unit(run.unit), self.keys.leases],
            args=[run.token, self.lease_ms, run.unit.wire],
        )
        return bool(held)

    async def finish(self, run: Run, *, outcome: Outcome, handled_events: int, retry_ms: int = 0) -> FinishResult:
        """Release the unit. `fatal`: a failure that retrying cannot mend (parks the unit in the end)."""
        reply = await self._finish(
            keys=[self.keys.unit(run.unit), self.keys.unit_events(run.unit), self.keys.queue,
                  self.keys.leases, self.keys.parked],
            args=[
                run.token,
                handled_events if outcome == "ok" else 0,
                outcome,
                SYNC_FUNCTION,
                self.coalesce_ms,
                retry_ms,
                JOB_EXPIRES_EXTRA_MS,
                self._id_prefix,
                run.unit.wire,
                self.keys.job_prefix,
                PARK_AFTER_FATAL,
            ],
        )
        return cast(FinishResult, _text(reply))

    async def announce(self, run: Run, *, ok: bool, customer_id: str | None) -> None:
        """Tell whoever waits for this unit (`POST /v1/sync`) that a run ended: the run covered
        every piece of work accepted up to `run.seq`; `customer_id` is the customer whose access
        it settled (a resolved `cs_`/`sub_` unit names its customer; None: none)."""
        payload = {"unit": run.unit.wire, "seq": run.seq, "ok": ok, "customer_id": customer_id}
        await self.redis.publish(self.keys.syncs_done, orjson.dumps(payload))

    async def seq(self, unit: Unit) -> int:
        """How much work the unit has accepted so far (its `seq`)."""
        value = await cast(Awaitable[bytes | None], self.redis.hget(self.keys.unit(unit), "seq"))
        return int(value or 0)

    async def expedite(self, unit: Unit) -> bool:
        """Make the unit's queued job due now (a caller is waiting for it) and wake an idle
        worker to pick it; False when none is queued. A job already picked is gone from the
        queue, and `XX` leaves it so."""
        job_id = await cast(Awaitable[bytes | None], self.redis.hget(self.keys.unit(unit), "pending"))
        if not job_id:
            return False
        now_ms = int(time.time() * 1000)
        changed = await self.redis.zadd(self.keys.queue, {job_id: now_ms}, xx=True, lt=True, ch=True)
        # Due now (just now, or already by `accept` without delay): an idle worker would only
        # see it at its next poll; the caller is waiting (worker/wake.py).
        await self.redis.publish(self.keys.jobs_due, job_id)
        return bool(changed)

    async def set_recheck(self, customer_id: str, due_ms: int | None) -> None:
        """At most one pending re-check per customer: a new time replaces the old one."""
        member = Unit.customer(customer_id).wire
        if due_ms is None:
            await cast(Awaitable[int], self.redis.zrem(self.keys.rechecks, member))
        else:
            await self.redis.zadd(self.keys.rechecks, {member: due_ms})

    async def fire_due(self, limit: int = 500) -> tuple[list[Unit], list[Unit]]:
        """Queue the due re-checks and the units of dead runs; return both lists."""
        head, tail = self.keys.unit_key_parts
        reply = await self._fire_due(
            keys=[self.keys.rechecks, self.keys.queue, self.keys.leases, self.keys.parked],
            args=[head, tail, SYNC_FUNCTION, 0, JOB_EXPIRES_EXTRA_MS, self._id_prefix, limit,
                  self.keys.job_prefix],
        )
        items = [_text(p) for p in reply]
        split = items.index("|")
        return [Unit.decode(u) for u in items[:split]], [Unit.decode(u) for u in items[split + 1 :]]

    async def parked_units(self, limit: int = 1000) -> list[ParkedUnit]:
        """Units parked after repeated non-retryable failures, oldest first."""
        rows = await self.redis.zrange(self.keys.parked, 0, limit - 1, withscores=True)
        return [ParkedUnit(Unit.decode(_text(member)), int(score)) for member, score in rows]

    async def claim_cron(self, name: str, slot: int, every_s: float) -> bool:
        """True for the one worker that gets to run cron job `name` for this schedule slot.

        arq's `unique` cron jobs are best effort; this SET NX is not."""
        ttl_s = max(int(every_s), MIN_CRON_CLAIM_S)
        return bool(await self.redis.set(self.keys.cron(name, slot), "1", nx=True, ex=ttl_s))

    async def take_catalog_items(self) -> set[str]:
        """Everything the catalog job has to refresh, removed atomically from the dirty set."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.smembers(self.keys.catalog_dirty)
            pipe.delete(self.keys.catalog_dirty)
            members, _ = await pipe.execute()
        return {_text(m) for m in members}

    async def return_catalog_items(self, items: set[str]) -> None:
        """Put back what a failed catalog run did not finish."""
        if items:
            await cast(Awaitable[int], self.redis.sadd(self.keys.catalog_dirty, *items))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
