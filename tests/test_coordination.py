"""The per-unit state machine in Redis (shared/coordination/coordinator.py), step by step, on a real Redis.

The end-to-end promises with several worker processes are in tests/test_worker_promises.py.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import orjson
import redis.asyncio
from arq.jobs import deserialize_job_raw

from shared.coordination import (
    CATALOG,
    EVENTS_POLL,
    PARK_AFTER_FATAL,
    AcceptedEvent,
    Coordinator,
    Keys,
    Unit,
    UnitKind,
    is_stripe_id,
)
from tests.support.aio import aw, hget
from worker import wake

KEYS = Keys(prefix="t")
CUS = Unit.customer("cus_1")


def ev(event_id: str, event_type: str = "customer.updated") -> AcceptedEvent:
    return AcceptedEvent.now(event_id, event_type, "webhook")


def coordinator(r: redis.asyncio.Redis, **kw: int) -> Coordinator:
    return Coordinator(r, KEYS, coalesce_ms=kw.get("coalesce_ms", 1000), lease_ms=kw.get("lease_ms", 30_000))


async def queued(r: redis.asyncio.Redis) -> list[tuple[str, float]]:
    return [(m.decode(), s) for m, s in await r.zrange(KEYS.queue, 0, -1, withscores=True)]


async def test_first_event_queues_a_deferred_job_in_arq_format(redis_client: redis.asyncio.Redis) -> None:
    """The job is arq's JSON format, for `sync_unit(unit)`, due after the coalescing window."""
    c = coordinator(redis_client)
    before_ms = (await redis_client.time())[0] * 1000
    assert await c.accept(CUS, event=ev("evt_1"), dedupe_id="evt_1") == "scheduled"
    [(job_id, score)] = await queued(redis_client)
    assert score >= before_ms + 1000
    function, args, kwargs, job_try, _ = deserialize_job_raw(
        await redis_client.get(KEYS.job(job_id)), deserializer=orjson.loads
    )
    assert function == "sync_unit"
    assert list(args) == ["cus_1"]
    assert kwargs == {}
    assert job_try is None  # arq's "first try"


async def test_burst_coalesces_into_one_job(redis_client: redis.asyncio.Redis) -> None:
    """Later events while a job is queued only add to its work."""
    c = coordinator(redis_client)
    results = [await c.accept(CUS, event=ev(f"evt_{i}"), dedupe_id=f"evt_{i}") for i in range(10)]
    assert results == ["scheduled"] + ["coalesced"] * 9
    assert len(await queued(redis_client)) == 1


async def test_dedupe_is_per_event_id(redis_client: redis.asyncio.Redis) -> None:
    c = coordinator(redis_client)
    assert await c.accept(CUS, event=ev("evt_1"), dedupe_id="evt_1") == "scheduled"
    assert await c.accept(CUS, event=ev("evt_1"), dedupe_id="evt_1") == "duplicate"
    assert await aw(redis_client.llen(KEYS.unit_events(CUS))) == 1
    assert 3 * 86400 < await redis_client.ttl(KEYS.seen("evt_1")) <= 4 * 86400


async def test_concurrent_accepts_after_a_script_flush_each_run_once(redis_client: redis.asyncio.Redis) -> None:
    """A Redis that lost its scripts (a restart, `SCRIPT FLUSH`) answers a batch with NOSCRIPT:
    the script is loaded and those calls run again, each exactly once, each with its own answer."""
    c = coordinator(redis_client)
    assert await c.accept(CUS, event=ev("evt_0"), dedupe_id="evt_0") == "scheduled"  # loaded, connection held
    await redis_client.script_flush()
    results = await asyncio.gather(*(c.accept(Unit.customer(f"cus_{n % 3}"), event=ev(f"evt_f{n}"),
                                              dedupe_id=f"evt_f{n}") for n in range(9)))
    assert sorted(results) == ["coalesced"] * 7 + ["scheduled"] * 2  # cus_1 was scheduled before
    assert [await aw(redis_client.llen(KEYS.unit_events(Unit.customer(f"cus_{n}")))) for n in range(3)] == [3, 4, 3]
    assert await c.accept(CUS, event=ev("evt_f1"), dedupe_id="evt_f1") == "duplicate"


async def test_an_accept_that_cannot_be_encoded_fails_alone(redis_client: redis.asyncio.Redis) -> None:
    """Each call is encoded by its caller: one that cannot be sent does not fail the batch it
    would have joined."""
    c = coordinator(redis_client)

    async def bad() -> str:
        return await c.accept(CUS, event=ev("evt_b1"), dedupe_id="evt_b1", reason="\ud800")

    results = await asyncio.gather(bad(), c.accept(CUS, event=ev("evt_b2"), dedupe_id="evt_b2"),
                                   return_exceptions=True)
    assert isinstance(results[0], UnicodeEncodeError)
    assert results[1] == "scheduled"
    assert await aw(redis_client.llen(KEYS.unit_events(CUS))) == 1


async def test_event_during_a_run_queues_the_next_run(redis_client: redis.asyncio.Redis) -> None:
    """No lost update: work that arrives while a run holds the unit is followed by a new run."""
    c = coordinator(redis_client)
    await c.accept(CUS, event=ev("evt_1"), dedupe_id="evt_1")
    [(job_id, _)] = await queued(redis_client)
    run = await c.begin(CUS, job_id)
    assert run is not None
    assert [e.id for e in run.events] == ["evt_1"]
    await redis_client.zrem(KEYS.queue, job_id)  # what arq does when the job completes
    assert await c.accept(CUS, event=ev("evt_2"), dedupe_id="evt_2") == "running"
    assert await queued(redis_client) == []
    assert await c.finish(run, outcome="ok", handled_events=1) == "again"
    [(next_job, _)] = await queued(redis_client)
    assert next_job != job_id
    run2 = await c.begin(CUS, next_job)
    assert run2 is not None
    assert [e.id for e in run2.events] == ["evt_2"]
    assert await c.finish(run2, outcome="ok", handled_events=1) == "done"
    assert await aw(redis_client.llen(KEYS.unit_events(CUS))) == 0


async def test_second_run_is_refused_while_the_first_holds_the_unit(redis_client: redis.asyncio.Redis) -> None:
    """One at a time: a job finding a live lease does not run, and gives up its queued slot."""
    c = coordinator(redis_client)
    await c.accept(CUS, reason="x")
    [(job_id, _)] = await queued(redis_client)
    run = await c.begin(CUS, job_id)
    assert run is not None
    # Simulate a queued job for the unit that starts while the first run is alive.
    await aw(redis_client.hset(KEYS.unit(CUS), "pending", "other-job"))
    await redis_client.set(KEYS.job("other-job"), b"{}")
    assert await c.begin(CUS, "other-job") is None
    assert await hget(redis_client, KEYS.unit(CUS), "pending") == b""


async def test_expired_lease_is_taken_over_and_the_old_run_is_fenced_in_redis(redis_client: redis.asyncio.Redis) -> None:
    """A run whose lease expired loses the unit: heartbeat and finish tell it so."""
    c = coordinator(redis_client, lease_ms=100)
    await c.accept(CUS, reason="x")
    [(job_id, _)] = await queued(redis_client)
    old = await c.begin(CUS, job_id)
    assert old is not None
    await asyncio.sleep(0.15)
    new = await c.begin(CUS, "job-2")
    assert new is not None
    assert new.took_over
    assert await c.heartbeat(old) is False
    assert await c.finish(old, outcome="ok", handled_events=0) == "lost"
    assert await c.heartbeat(new) is True


async def test_failure_queues_a_retry_with_backoff(redis_client: redis.asyncio.Redis) -> None:
    """A failed run is never dropped: a retry job is queued after the given delay."""
    c = coordinator(redis_client)
    await c.accept(CUS, event=ev("evt_1"), dedupe_id="evt_1")
    [(job_id, _)] = await queued(redis_client)
    run = await c.begin(CUS, job_id)
    assert run is not None
    await redis_client.zrem(KEYS.queue, job_id)
    now_ms = (await redis_client.time())[0] * 1000
    assert await c.finish(run, outcome="failed", handled_events=1, retry_ms=60_000) == "retry"
    [(_, score)] = await queued(redis_client)
    assert score >= now_ms + 59_000
    # The failed run's events stay for the next run.
    assert await aw(redis_client.llen(KEYS.unit_events(CUS))) == 1
    assert await hget(redis_client, KEYS.unit(CUS), "fails") == b"1"


async def test_due_rechecks_fire_once(redis_client: redis.asyncio.Redis) -> None:
    """A due re-check becomes one job; a second timer tick finds nothing."""
    c = coordinator(redis_client)
    now_ms = (await redis_client.time())[0] * 1000
    await c.set_recheck("cus_1", now_ms - 1)
    await c.set_recheck("cus_2", now_ms + 60_000)
    rechecked, revived = await c.fire_due()
    assert (rechecked, revived) == ([CUS], [])
    assert await c.fire_due() == ([], [])
    assert len(await queued(redis_client)) == 1
    assert await hget(redis_client, KEYS.unit(CUS), "reason") == b"recheck"


async def test_a_new_recheck_replaces_the_old(redis_client: redis.asyncio.Redis) -> None:
    """At most one pending re-check per customer."""
    c = coordinator(redis_client)
    await c.set_recheck("cus_1", 10_000)
    await c.set_recheck("cus_1", 20_000)
    assert await redis_client.zrange(KEYS.rechecks, 0, -1, withscores=True) == [(b"cus_1", 20_000.0)]


async def test_dead_run_is_revived_by_the_timer(redis_client: redis.asyncio.Redis) -> None:
    """A run whose process died (no heartbeat) gets its unit queued again once the lease expires."""
    c = coordinator(redis_client, lease_ms=100)
    await c.accept(CUS, event=ev("evt_1"), dedupe_id="evt_1")
    [(job_id, _)] = await queued(redis_client)
    assert await c.begin(CUS, job_id) is not None
    await redis_client.zrem(KEYS.queue, job_id)
    await redis_client.delete(KEYS.job(job_id))
    assert await c.fire_due() == ([], [])
    await asyncio.sleep(0.15)
    assert await c.fire_due() == ([], [CUS])
    [(new_job, _)] = await queued(redis_client)
    run = await c.begin(CUS, new_job)
    assert run is not None
    assert run.took_over
    assert [e.id for e in run.events] == ["evt_1"]


async def test_expired_pending_job_does_not_block_new_work(redis_client: redis.asyncio.Redis) -> None:
    """If arq dropped the queued job (expired), the next event queues a fresh one."""
    c = coordinator(redis_client)
    await c.accept(CUS, reason="x")
    [(job_id, _)] = await queued(redis_client)
    await redis_client.delete(KEYS.job(job_id))
    await redis_client.zrem(KEYS.queue, job_id)
    assert await c.accept(CUS, reason="y") == "scheduled"


async def _fail_fatally(c: Coordinator, r: redis.asyncio.Redis) -> str:
    [(job_id, _)] = await queued(r)
    await r.zrem(KEYS.queue, job_id)
    run = await c.begin(CUS, job_id)
    assert run is not None
    return await c.finish(run, outcome="fatal", handled_events=0, retry_ms=10)


async def test_a_unit_failing_fatally_is_parked_until_replayed(redis_client: redis.asyncio.Redis) -> None:
    """Parking (docs/contract.md §4): after PARK_AFTER_FATAL non-retryable failures in a row the unit is parked:
    no job is queued for it, new work waits (its event is kept), and it is listed. A replay
    (`unpark`) queues it again."""
    c = coordinator(redis_client)
    await c.accept(CUS, event=ev("evt_1"), dedupe_id="evt_1")
    results = [await _fail_fatally(c, redis_client) for _ in range(PARK_AFTER_FATAL)]
    assert results == ["retry"] * (PARK_AFTER_FATAL - 1) + ["parked"]
    assert await queued(redis_client) == []
    assert [p.unit for p in await c.parked_units()] == [CUS]
    assert await c.accept(CUS, event=ev("evt_2"), dedupe_id="evt_2") == "parked"
    assert await queued(redis_client) == []
    assert await aw(redis_client.llen(KEYS.unit_events(CUS))) == 2
    assert await c.accept(CUS, reason="replay", unpark=True, delay_ms=0) == "scheduled"
    assert await c.parked_units() == []
    [(job_id, _)] = await queued(redis_client)
    run = await c.begin(CUS, job_id)
    assert run is not None
    assert [e.id for e in run.events] == ["evt_1", "evt_2"]


async def test_retryable_failures_never_park(redis_client: redis.asyncio.Redis) -> None:
    """A failure that may pass (Stripe 5xx, a Postgres restart) is retried however often it comes."""
    c = coordinator(redis_client)
    await c.accept(CUS, reason="x")
    for _ in range(PARK_AFTER_FATAL + 2):
        [(job_id, _)] = await queued(redis_client)
        await redis_client.zrem(KEYS.queue, job_id)
        run = await c.begin(CUS, job_id)
        assert run is not None
        assert await c.finish(run, outcome="failed", handled_events=0, retry_ms=10) == "retry"
    assert await c.parked_units() == []


def test_no_payload_id_can_name_an_internal_unit() -> None:
    """Internal units' wire names are out of reach of any Stripe-shaped id, and
    every wire name decodes to the one unit it came from."""
    for internal in (EVENTS_POLL, CATALOG):
        assert not is_stripe_id(internal.wire)
        assert Unit.decode(internal.wire) == internal
    for name in ("__events__", "__catalog__", "internal:events", "subscription:sub_1", "cus_1:x"):
        assert not is_stripe_id(name)
    assert Unit.decode("cus_1") == CUS
    assert Unit.decode("__events__").kind is UnitKind.CUSTOMER  # a customer of that name, nothing internal
    sub = Unit(UnitKind.SUBSCRIPTION, "sub_1")
    assert Unit.decode(sub.wire) == sub


def test_lua_scripts_spell_no_key_names() -> None:
    """Every key name comes from keys.py: no script holds a quoted name with a `:` in it (`arq:job:`,
    `<prefix>:unit:{...}`); the only such literal is the job id separator itself."""
    folder = Path(__file__).resolve().parents[1] / "shared" / "coordination" / "lua"
    for script in folder.glob("*.lua"):
        code = re.sub(r"--[^\n]*", "", script.read_text())  # comments may name keys
        literals = re.findall(r"'([^']*)'", code)
        assert [lit for lit in literals if ":" in lit and lit != ":"] == [], script.name


async def test_cron_claim_is_taken_once_per_slot(redis_client: redis.asyncio.Redis) -> None:
    c, other = coordinator(redis_client), coordinator(redis_client)
    assert await c.claim_cron("events", 1000, 10) is True
    assert await other.claim_cron("events", 1000, 10) is False
    assert await other.claim_cron("events", 2000, 10) is True
    assert 50 < await redis_client.ttl(KEYS.cron("events", 1000)) <= 60


async def test_accept_is_bounded_when_redis_never_answers() -> None:
    """The receiver's 503 bound (docs/contract.md §4: never a 200 for an event not queued, and
    no wait without end): with a Redis that accepts the connection and never answers, and no
    socket timeout, each accept, the one in flight and the ones queued behind it, fails with
    TimeoutError at its own bound."""
    hung: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung.append(writer)  # held open, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_timeout=None)
    c = Coordinator(r, KEYS, accept_timeout_s=0.3)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def one(n: int) -> float:
            try:
                await c.accept(Unit.customer(f"cus_{n}"), event=ev(f"evt_hung_{n}"), dedupe_id=f"evt_hung_{n}")
            except TimeoutError:
                return loop.time() - started
            raise AssertionError("accept returned from a Redis that never answers")

        first = asyncio.ensure_future(one(0))
        await asyncio.sleep(0.1)  # the first batch is in flight; these queue behind it
        async with asyncio.timeout(3):
            times = [await first, *await asyncio.gather(*(one(n) for n in range(1, 4)))]
        assert 0.25 < times[0] < 0.6
        assert all(0.35 < t < 0.7 for t in times[1:]), times  # 0.1 s later, their own 0.3 s
    finally:
        for w in hung:
            w.close()
        server.close()
        await r.aclose(close_connection_pool=True)


async def test_expedite_wakes_an_idle_worker(redis_client: redis.asyncio.Redis) -> None:
    """A job made due for a waiting caller reaches the workers' `jobs_due` event
    (worker/wake.py), so the worker polls at once instead of at its next poll."""
    c = coordinator(redis_client)
    due = asyncio.Event()
    follower = asyncio.create_task(wake.follow(redis_client, KEYS.jobs_due, due))
    try:
        for _ in range(500):  # until the follower has subscribed
            [(_channel, subscribers)] = await redis_client.pubsub_numsub(KEYS.jobs_due)
            if subscribers:
                break
            await asyncio.sleep(0.01)
        assert not await c.expedite(CUS)  # nothing queued: nothing to wake for
        await asyncio.sleep(0.1)
        assert not due.is_set()
        await c.accept(CUS, event=ev("evt_w"), dedupe_id="evt_w")
        assert await c.expedite(CUS)
        async with asyncio.timeout(5):
            await due.wait()
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
