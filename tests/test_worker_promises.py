"""The worker's per-customer promises (docs/contract.md §2), with several real worker processes on a real
Redis: one sync at a time, no lost update, coalescing, and fencing of a paused sync.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections import defaultdict
from typing import Any

from fakestripe import EndpointFaults
from tests.support.stack import Stack


def runs_by_customer(stack: Stack) -> dict[str, list[tuple[float, float]]]:
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in stack.worker_logs():
        if record.get("event") == "sync.run" and record.get("kind") == "customer":
            runs[record["customer_id"]].append((record["began_at"], record["ended_at"]))
    return runs


async def test_one_at_a_time_no_lost_update_under_bursts(stack_factory: Any) -> None:
    """Three workers; 20 customers each change plan 6 times in quick succession while webhooks
    arrive shuffled and duplicated. No two syncs of one customer ever overlap, and every
    customer ends on its last plan (an update lost would leave an older plan in the view)."""
    faults = EndpointFaults(shuffle_window_s=0.3, duplicate_rate=0.2, duplicate_new_id_rate=0.1, max_in_flight=8,
                            seed=7)
    async with stack_factory(workers=3, faults=faults, worker_env={"COALESCE_WINDOW": "0.2"}) as stack:
        _, basic = await stack.product("Basic", ["basic"])
        _, pro = await stack.product("Pro", ["basic", "pro"])
        subs: dict[str, tuple[str, str]] = {}
        for n in range(20):
            cus = await stack.customer(metadata={"user_id": f"u_{n}"})
            sub = await stack.subscribe(cus, basic)
            item = (await stack.stripe.v1.subscriptions.retrieve_async(sub))["items"].data[0].id
            subs[cus] = (sub, item)
        final: dict[str, set[str]] = {}

        async def churn(cus: str, sub: str, item: str, n: int) -> None:
            for step in range(6 + n % 2):
                price = pro if step % 2 == 0 else basic
                await stack.stripe.v1.subscriptions.update_async(sub, {"items": [{"id": item, "price": price}]})
                await asyncio.sleep(0.05 * (n % 4))
            final[cus] = {"basic", "pro"} if (6 + n % 2 - 1) % 2 == 0 else {"basic"}

        await asyncio.gather(*(churn(cus, sub, item, n) for n, (cus, (sub, item)) in enumerate(subs.items())))
        await stack.settle()
        for cus, features in final.items():
            assert await stack.features(cus) == features, cus
        logged = runs_by_customer(stack)
        # The check below means something only if it sees the runs: every customer's are logged.
        assert set(final) <= set(logged), f"no sync.run lines for {sorted(set(final) - set(logged))[:3]}"
        for cus, runs in logged.items():
            runs.sort()
            for (_, prev_end), (next_begin, _) in itertools.pairwise(runs):
                assert next_begin >= prev_end, f"two syncs of {cus} overlapped"
        # every event accepted was processed by a sync that started after it arrived
        unprocessed = await stack.pool.fetchval(
            "SELECT count(*) FROM event_ledger WHERE processed_at IS NULL OR processed_at < received_at"
        )
        assert unprocessed == 0


async def test_bursts_coalesce(stack_factory: Any) -> None:
    """Twenty simultaneous Checkout purchases, ~10 events each: at most two syncs per customer."""
    faults = EndpointFaults(shuffle_window_s=0.3, duplicate_rate=0.2, max_in_flight=8, seed=3)
    async with stack_factory(workers=2, faults=faults) as stack:
        _, price = await stack.product("Pro", ["pro"])
        sessions = await asyncio.gather(*(stack.checkout(price, user=f"u_{n}") for n in range(20)))
        await stack.settle()
        events = await stack.pool.fetch(
            "SELECT customer_id, count(*) AS n FROM event_ledger GROUP BY customer_id"
        )
        per_customer = {r["customer_id"]: r["n"] for r in events}
        for session in sessions:
            cus = session["customer"]
            assert per_customer[cus] >= 8  # the burst really was a burst
            assert await stack.syncs_started(cus) <= 2
            assert len(await stack.messages(cus)) == 1


async def test_a_paused_sync_is_fenced_out(stack_factory: Any) -> None:
    """A worker paused (SIGSTOP) in the middle of a sync loses its lease; another worker takes the
    customer over and writes the newer state. When the paused worker wakes, its write is
    refused: it cannot overwrite the newer result."""
    env = {"SYNC_LEASE": "2s", "COALESCE_WINDOW": "0.1"}
    async with stack_factory(workers=1, worker_env=env) as stack:
        _, basic = await stack.product("Basic", ["basic"])
        _, pro = await stack.product("Pro", ["basic", "pro"])
        cus = await stack.customer(metadata={"user_id": "u_fence"})
        sub = await stack.subscribe(cus, basic)
        await stack.wait_features(cus, {"basic"})
        await stack.settle()
        paused = stack.workers[0]
        await stack.ctl.set_api_faults(latency_ms=1500)
        await stack.stripe.v1.customers.update_async(cus, {"metadata": {"user_id": "u_fence", "poke": "1"}})

        async def holding() -> bool:
            return await stack.redis.zscore(stack.keys.leases, cus) is not None

        await stack.wait_for(holding, 20, "the first worker to start syncing")
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            await stack.ctl.clear_api_faults()
            item = (await stack.stripe.v1.subscriptions.retrieve_async(sub))["items"].data[0].id
            await stack.stripe.v1.subscriptions.update_async(sub, {"items": [{"id": item, "price": pro}]})
            stack.start_worker()
            await stack.wait_features(cus, {"basic", "pro"}, timeout_s=30)
        finally:
            os.kill(paused.pid, signal.SIGCONT)

        async def fenced() -> bool:
            return any(r.get("event") == "sync.fenced_out" for r in stack.worker_logs()
                       if r["_file"] == "worker-0.log")

        await stack.wait_for(fenced, 30, "the paused worker's write to be refused")
        await stack.settle()
        assert await stack.features(cus) == {"basic", "pro"}
        versions = [m.version for m in await stack.messages(cus)]
        assert versions == list(range(1, len(versions) + 1))
