"""Bugs the fault run (bench/faults.py) found, each held down by a focused end-to-end test:

1. a Redis restart ended every worker process (arq's poll loop does not survive a lost connection);
2. jobs of a SIGKILLed worker stayed "in progress" for 6 hours (arq took the sweep's timeout for
   every job), blocking the head of the queue and, for a job killed before its run began, every
   later sync of its customer;
3. one test clock moved ahead made the Events API poller blind: its cursor jumped to the
   clock's time, and no later event was ever polled;
4. a subscription left past_due across a renewal got access back for another PAST_DUE_GRACE,
   because "when it became past_due" was read from the newest invoice;
5. `entitled resync --all` never finished when a customer's sync committed before the chunk's
   `enqueued_at` was written;
6. a worker (re)started while Postgres was restarting exited at once;
7. a feature removed from a product reached only the subscribers whose own summary event
   arrived: a sync that found the product changed did not tell the product's other subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp import ClientSession

from bench.fault_stack import PgServer
from fakestripe import Settings as FakeSettings
from shared import db
from shared.bootstrap import bootstrap
from shared.coordination import Unit
from shared.settings import Settings
from tests.support.aio import hget
from tests.support.redis_server import RedisServer
from tests.support.stack import API_KEY, DAY, Stack, running_stack
from tests.support.webhooks import sign
from worker.cli import CliError, resync_all

HOUR = 3600


async def test_worker_survives_a_redis_restart(database_url: str) -> None:
    """Redis restarts (its data kept, as in production): the worker process keeps running and
    keeps syncing afterwards."""
    server = RedisServer(persist=True)
    server.start()
    try:
        async with running_stack(database_url, server.url, workers=1) as stack:
            _, price = await stack.product("Pro", ["pro"])
            cus = await stack.customer(metadata={"user_id": "u_redis"})
            sub = await stack.subscribe(cus, price)
            await stack.wait_features(cus, {"pro"})
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(2)  # down long enough for every worker to notice
            await asyncio.to_thread(server.start)
            await asyncio.sleep(2)
            assert stack.workers[0].poll() is None, "the worker exited when Redis restarted"
            await stack.stripe.v1.subscriptions.cancel_async(sub)
            await stack.wait_features(cus, set(), timeout_s=30)
            assert stack.workers[0].poll() is None
    finally:
        server.close()


async def test_worker_started_while_postgres_is_down_waits_for_it(redis_url: str) -> None:
    """A worker starts while Postgres is down (a restart): it waits, and syncs once Postgres is
    back, instead of exiting. The Postgres here is a cluster of the test's own."""
    pg = PgServer(Path(tempfile.mkdtemp(prefix="entitled-pgtest-")))
    await asyncio.to_thread(pg.init)
    await asyncio.to_thread(pg.start)
    try:
        conn = await asyncpg.connect(pg.admin_url)
        await conn.execute("CREATE DATABASE entitled")
        await conn.close()
        conn = await db.connect(pg.url("entitled"))
        await db.migrate(conn)
        await conn.close()
        async with running_stack(pg.url("entitled"), redis_url, workers=0) as stack:
            await asyncio.to_thread(pg.stop)
            worker = stack.start_worker()
            await asyncio.sleep(3)
            assert worker.poll() is None, "the worker exited while Postgres was down"
            await asyncio.to_thread(pg.start)
            await stack.pool.expire_connections()
            _, price = await stack.product("Pro", ["pro"])
            cus = await stack.customer(metadata={"user_id": "u_pg"})
            await stack.subscribe(cus, price)
            await stack.wait_features(cus, {"pro"}, timeout_s=60)
    finally:
        await asyncio.to_thread(pg.close)
        shutil.rmtree(pg.root.parent, ignore_errors=True)


async def test_a_killed_workers_jobs_do_not_linger(stack_factory: Any) -> None:
    """A worker is SIGKILLed with syncs in flight: its jobs leave the queue within seconds
    (not hours), and every customer ends synced by the next worker."""
    env = {"SYNC_LEASE": "2s", "COALESCE_WINDOW": "0.1"}
    async with stack_factory(workers=1, worker_env=env) as stack:
        _, price = await stack.product("Pro", ["pro"])
        customers = [await stack.customer(metadata={"user_id": f"u_{n}"}) for n in range(5)]
        await stack.settle()
        await stack.ctl.set_api_faults(latency_ms=3000, methods=["GET"])
        for cus in customers:
            await stack.subscribe(cus, price)

        async def in_flight() -> bool:
            return bool(await stack.redis.zcard(stack.keys.leases) >= 2)

        await stack.wait_for(in_flight, 20, "syncs to be in flight")
        victim = stack.workers[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        await stack.ctl.clear_api_faults()
        stack.start_worker()
        for cus in customers:
            await stack.wait_features(cus, {"pro"}, timeout_s=40)

        async def queue_empty() -> bool:
            return bool(await stack.redis.zcard(stack.keys.queue) == 0)

        await stack.wait_for(queue_empty, 40, "the killed worker's jobs to leave the queue")


async def _polled_since(stack: Stack, at: float) -> bool:
    info = await stack.pool.fetchval("SELECT info FROM reconcile_state WHERE name = 'events'")
    return bool(info and info.get("last_poll", 0) > at)


async def test_events_poller_still_finds_events_after_a_test_clock_moved_ahead(stack_factory: Any) -> None:
    """A customer's test clock is advanced 20 days (its events are dated then); afterwards a
    wall-clock customer's cancellation whose webhooks are all lost is still found by the poller."""
    env = {"RECONCILE_EVENTS_EVERY": "2s", "RECONCILE_SWEEP_EVERY": "1d"}
    async with stack_factory(workers=1, worker_env=env) as stack:
        _, price = await stack.product("Pro", ["pro"])
        clock, t0 = await stack.clock()
        on_clock = await stack.customer(clock=clock, metadata={"user_id": "u_clock"})
        await stack.subscribe(on_clock, price)
        wall = await stack.customer(metadata={"user_id": "u_wall"})
        sub = await stack.subscribe(wall, price)
        await stack.wait_features(wall, {"pro"})
        await stack.advance(clock, t0 + 20 * DAY)
        advanced = time.time()

        async def polled_twice() -> bool:
            return await _polled_since(stack, advanced + 2.5)

        await stack.wait_for(polled_twice, 20, "the poller to run after the advance")
        await stack.set_faults(drop_rate=1.0)
        await stack.stripe.v1.subscriptions.cancel_async(sub)
        await stack.wait_features(wall, set(), timeout_s=20)
        found = await stack.pool.fetchval(
            "SELECT count(*) FROM event_ledger WHERE customer_id = $1 AND source = 'events_api'", wall)
        assert found >= 1


async def test_past_due_across_a_renewal_does_not_regain_access(stack_factory: Any) -> None:
    """The account leaves failed subscriptions past_due. After PAST_DUE_GRACE (7 days) from the
    first failure access ends; the subscription then renews and its new invoice fails too: it has
    been past_due since the first failure, so access does not come back."""
    fake = FakeSettings(invoice_finalize_delay_s=600, retry_exhausted_action="past_due")
    async with stack_factory(workers=1, fake_settings=fake) as stack:
        _, price = await stack.product("Pro", ["pro"])
        clock, t0 = await stack.clock()
        cus = await stack.customer(clock=clock, card="pm_card_chargeCustomerFail", metadata={"user_id": "u_pd"})
        sub = await stack.subscribe(cus, price, trial_period_days=1)
        await stack.wait_features(cus, {"pro"})
        await stack.advance(clock, t0 + DAY + HOUR)  # the first invoice fails: past_due
        await stack.settle()
        assert (await stack.stripe.v1.subscriptions.retrieve_async(sub)).status == "past_due"
        assert await stack.features(cus) == {"pro"}
        await stack.advance(clock, t0 + 8 * DAY + 2 * HOUR)  # every retry failed; grace over
        await stack.wait_features(cus, set())
        period_end = (await stack.stripe.v1.subscriptions.retrieve_async(sub))["items"].data[0].current_period_end
        await stack.advance(clock, period_end + DAY)  # renewed, and its invoice failed a day ago
        await stack.settle()
        renewed = await stack.stripe.v1.subscriptions.retrieve_async(sub)
        assert renewed.status == "past_due"
        assert renewed["items"].data[0].current_period_end > period_end
        assert await stack.features(cus) == set()
        assert [m.removed for m in await stack.messages(cus)] == [(), ("pro",)]


async def test_resync_all_records_each_customer_before_queueing_it(stack_factory: Any) -> None:
    """`resync --all` counts a customer done once a sync ends after its `enqueued_at`: so that
    time must be written before the customer's sync is queued, or a sync that ends while the
    rest of its chunk is still being queued never counts and the command never finishes. With
    no worker running, every queued job's enqueue time is checked against it."""
    async with stack_factory(workers=0) as stack:
        ids = [f"cus_resync{n:04d}" for n in range(500)]
        await stack.pool.executemany("INSERT INTO resync_items (customer_id) VALUES ($1)", [(c,) for c in ids])
        settings = Settings(database_url=stack.database_url, redis_url=stack.redis_url, stripe_api_key=API_KEY,
                            stripe_api_base=stack.fake.base_url)
        async with bootstrap(settings, postgres=True, coalesce=False) as ctx:
            with contextlib.suppress(CliError):  # nobody syncs: it gives up after a second
                await resync_all(ctx, restart=False, wait_s=1)
        recorded = {r["customer_id"]: r["enqueued_at"].timestamp() * 1000
                    for r in await stack.pool.fetch("SELECT customer_id, enqueued_at FROM resync_items")}
        late = []
        for cid in ids:
            job_id = await hget(stack.redis, stack.keys.unit(Unit.customer(cid)), "pending")
            assert job_id
            queued_ms = orjson.loads(await stack.redis.get(f"arq:job:{job_id.decode()}"))["et"]
            if recorded[cid] > queued_ms + 1:  # the job's time is whole milliseconds
                late.append(cid)
        assert late == [], f"{len(late)} customers were queued before their enqueued_at was written"


async def test_a_feature_removed_reaches_subscribers_whose_summary_events_are_lost(stack_factory: Any) -> None:
    """A feature is removed from a product while every webhook is lost; then the summary event
    of one subscriber gets through (the others' never do, and the poller is off): every
    subscriber loses the feature. Stripe fires no event for the removal itself
    (https://docs.stripe.com/billing/entitlements), so the catalog poll is what finds it."""
    env = {"RECONCILE_EVENTS_EVERY": "1d", "RECONCILE_SWEEP_EVERY": "1d", "COALESCE_WINDOW": "0.2",
           "RECONCILE_CATALOG_EVERY": "2s"}
    async with stack_factory(workers=1, worker_env=env) as stack:
        product, price = await stack.product("Pro", ["pro", "export"])
        customers = []
        for n in range(3):
            cus = await stack.customer(metadata={"user_id": f"u_{n}"})
            await stack.subscribe(cus, price)
            customers.append(cus)
        for cus in customers:
            await stack.wait_features(cus, {"pro", "export"})
        await stack.settle()
        await stack.set_faults(drop_rate=1.0)
        attached = await stack.stripe.v1.products.features.list_async(product)
        export = next(pf.id for pf in attached.data if pf.entitlement_feature.lookup_key == "export")
        await stack.stripe.v1.products.features.delete_async(product, export)
        await stack.ctl.wait_idle()
        summaries = await stack.stripe.v1.events.list_async(
            {"type": "entitlements.active_entitlement_summary.updated", "limit": 100})
        one = next(e.to_dict() for e in summaries.data if e.to_dict()["data"]["object"]["customer"] == customers[0])
        body = orjson.dumps(one)
        secret = (await stack.ctl.webhook_endpoints())[0]["secret"]
        async with ClientSession() as http, http.post(
            stack.ingest_url, data=body, headers={"Stripe-Signature": sign(body, [secret])}
        ) as resp:
            assert resp.status == 200
        for cus in customers:
            await stack.wait_features(cus, {"pro"}, timeout_s=20)

