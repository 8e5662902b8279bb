"""The per-unit state machine in Redis (shared/coordination/coordinator.py), step by step, on a real Redis.

The end-to-end promises with several worker processes are in tests/test_worker_promises.py.
"""

from __future__ import annotations

import asyncio

import orjson
import redis.asyncio
from arq.jobs import deserialize_job_raw

from shared.coordination import Coordinator, Keys
from tests.support.aio import aw, hget

KEYS = Keys(prefix="t")


def coordinator(r: redis.asyncio.Redis, **kw: int) -> Coordinator:
    return Coordinator(r, KEYS, coalesce_ms=kw.get("coalesce_ms", 1000), lease_ms=kw.get("lease_ms", 30_000))


async def queued(r: redis.asyncio.Redis) -> list[tuple[str, float]]:
    return [(m.decode(), s) for m, s in await r.zrange(KEYS.queue, 0, -1, withscores=True)]


async def test_first_event_queues_a_deferred_job_in_arq_format(redis_client: redis.asyncio.Redis) -> None:
    """The job is arq's JSON format, for `sync_unit(unit)`, due after the coalescing window."""
    c = coordinator(redis_client)
    before_ms = (await redis_client.time())[0] * 1000
    assert await c.accept("cus_1", event={"id": "evt_1", "type": "x"}, dedupe_id="evt_1") == "scheduled"
    [(job_id, score)] = await queued(redis_client)
    assert score >= before_ms + 1000
    function, args, kwargs, job_try, _ = deserialize_job_raw(
        await redis_client.get(f"arq:job:{job_id}"), deserializer=orjson.loads
    )
    assert function == "sync_unit"
    assert list(args) == ["cus_1"]
    assert kwargs == {}
    assert job_try is None  # arq's "first try"


async def test_burst_coalesces_into_one_job(redis_client: redis.asyncio.Redis) -> None:
    """Later events while a job is queued only add to its work."""
    c = coordinator(redis_client)
    results = [await c.accept("cus_1", event={"id": f"evt_{i}"}, dedupe_id=f"evt_{i}") for i in range(10)]
    assert results == ["scheduled"] + ["coalesced"] * 9
    assert len(await queued(redis_client)) == 1


async def test_dedupe_is_per_event_id(redis_client: redis.asyncio.Redis) -> None:
    c = coordinator(redis_client)
    assert await c.accept("cus_1", event={"id": "evt_1"}, dedupe_id="evt_1") == "scheduled"
    assert await c.accept("cus_1", event={"id": "evt_1"}, dedupe_id="evt_1") == "duplicate"
    assert await aw(redis_client.llen(KEYS.unit_events("cus_1"))) == 1
    assert 3 * 86400 < await redis_client.ttl(KEYS.seen("evt_1")) <= 4 * 86400


async def test_event_during_a_run_queues_the_next_run(redis_client: redis.asyncio.Redis) -> None:
    """No lost update: work that arrives while a run holds the unit is followed by a new run."""
    c = coordinator(redis_client)
    await c.accept("cus_1", event={"id": "evt_1"}, dedupe_id="evt_1")
    [(job_id, _)] = await queued(redis_client)
    run = await c.begin("cus_1", job_id)
    assert run is not None
    assert [e["id"] for e in run.events] == ["evt_1"]
    await redis_client.zrem(KEYS.queue, job_id)  # what arq does when the job completes
    assert await c.accept("cus_1", event={"id": "evt_2"}, dedupe_id="evt_2") == "running"
    assert await queued(redis_client) == []
    assert await c.finish(run, ok=True, handled_events=1) == "again"
    [(next_job, _)] = await queued(redis_client)
    assert next_job != job_id
    run2 = await c.begin("cus_1", next_job)
    assert run2 is not None
    assert [e["id"] for e in run2.events] == ["evt_2"]
    assert await c.finish(run2, ok=True, handled_events=1) == "done"
    assert await aw(redis_client.llen(KEYS.unit_events("cus_1"))) == 0


async def test_second_run_is_refused_while_the_first_holds_the_unit(redis_client: redis.asyncio.Redis) -> None:
    """One at a time: a job finding a live lease does not run, and gives up its queued slot."""
    c = coordinator(redis_client)
    await c.accept("cus_1", reason="x")
    [(job_id, _)] = await queued(redis_client)
    run = await c.begin("cus_1", job_id)
    assert run is not None
    # Simulate a queued job for the unit that starts while the first run is alive.
    await aw(redis_client.hset(KEYS.unit("cus_1"), "pending", "other-job"))
    await redis_client.set("arq:job:other-job", b"{}")
    assert await c.begin("cus_1", "other-job") is None
    assert await hget(redis_client, KEYS.unit("cus_1"), "pending") == b""


async def test_expired_lease_is_taken_over_and_the_old_run_is_fenced_in_redis(redis_client: redis.asyncio.Redis) -> None:
    """A run whose lease expired loses the unit: heartbeat and finish tell it so."""
    c = coordinator(redis_client, lease_ms=100)
    await c.accept("cus_1", reason="x")
    [(job_id, _)] = await queued(redis_client)
    old = await c.begin("cus_1", job_id)
    assert old is not None
    await asyncio.sleep(0.15)
    new = await c.begin("cus_1", "job-2")
    assert new is not None
    assert new.took_over
    assert await c.heartbeat(old) is False
    assert await c.finish(old, ok=True, handled_events=0) == "lost"
    assert await c.heartbeat(new) is True


async def test_failure_queues_a_retry_with_backoff(redis_client: redis.asyncio.Redis) -> None:
    """A failed run is never dropped: a retry job is queued after the given delay."""
    c = coordinator(redis_client)
    await c.accept("cus_1", event={"id": "evt_1"}, dedupe_id="evt_1")
    [(job_id, _)] = await queued(redis_client)
    run = await c.begin("cus_1", job_id)
    assert run is not None
    await redis_client.zrem(KEYS.queue, job_id)
    now_ms = (await redis_client.time())[0] * 1000
    assert await c.finish(run, ok=False, handled_events=1, retry_ms=60_000) == "retry"
    [(_, score)] = await queued(redis_client)
    assert score >= now_ms + 59_000
    # The failed run's events stay for the next run.
    assert await aw(redis_client.llen(KEYS.unit_events("cus_1"))) == 1
    assert await hget(redis_client, KEYS.unit("cus_1"), "fails") == b"1"


async def test_due_rechecks_fire_once(redis_client: redis.asyncio.Redis) -> None:
    """A due re-check becomes one job; a second timer tick finds nothing."""
    c = coordinator(redis_client)
    now_ms = (await redis_client.time())[0] * 1000
    await c.set_recheck("cus_1", now_ms - 1)
    await c.set_recheck("cus_2", now_ms + 60_000)
    rechecked, revived = await c.fire_due()
    assert (rechecked, revived) == (["cus_1"], [])
    assert await c.fire_due() == ([], [])
    assert len(await queued(redis_client)) == 1
    assert await hget(redis_client, KEYS.unit("cus_1"), "reason") == b"recheck"


async def test_a_new_recheck_replaces_the_old(redis_client: redis.asyncio.Redis) -> None:
    """At most one pending re-check per customer."""
    c = coordinator(redis_client)
    await c.set_recheck("cus_1", 10_000)
    await c.set_recheck("cus_1", 20_000)
    assert await redis_client.zrange(KEYS.rechecks, 0, -1, withscores=True) == [(b"cus_1", 20_000.0)]


async def test_dead_run_is_revived_by_the_timer(redis_client: redis.asyncio.Redis) -> None:
    """A run whose process died (no heartbeat) gets its unit queued again once the lease expires."""
    c = coordinator(redis_client, lease_ms=100)
    await c.accept("cus_1", event={"id": "evt_1"}, dedupe_id="evt_1")
    [(job_id, _)] = await queued(redis_client)
    assert await c.begin("cus_1", job_id) is not None
    await redis_client.zrem(KEYS.queue, job_id)
    await redis_client.delete(f"arq:job:{job_id}")
    assert await c.fire_due() == ([], [])
    await asyncio.sleep(0.15)
    assert await c.fire_due() == ([], ["cus_1"])
    [(new_job, _)] = await queued(redis_client)
    run = await c.begin("cus_1", new_job)
    assert run is not None
    assert run.took_over
    assert [e["id"] for e in run.events] == ["evt_1"]


async def test_expired_pending_job_does_not_block_new_work(redis_client: redis.asyncio.Redis) -> None:
    """If arq dropped the queued job (expired), the next event queues a fresh one."""
    c = coordinator(redis_client)
    await c.accept("cus_1", reason="x")
    [(job_id, _)] = await queued(redis_client)
    await redis_client.delete(f"arq:job:{job_id}")
    await redis_client.zrem(KEYS.queue, job_id)
    assert await c.accept("cus_1", reason="y") == "scheduled"
