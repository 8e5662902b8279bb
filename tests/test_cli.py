"""The operator CLI (`entitled`), run as a user would, against the running service."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from tests.support.stack import Stack


async def entitled(stack: Stack, *args: str, timeout_s: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", *args,
        env={**os.environ, **stack.worker_env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    return await proc.wait(), out.decode(), err.decode()


async def test_migrate_is_idempotent(stack_factory: Any) -> None:
    """`entitled migrate` on an up-to-date database changes nothing and says so."""
    async with stack_factory(workers=0) as stack:
        code, out, _ = await entitled(stack, "migrate")
        assert (code, out.strip()) == (0, "database is up to date")


async def test_resync_show_replay_and_failures(stack_factory: Any) -> None:
    """resync --customer syncs and shows the customer; show --user finds it by user id; a sync
    that fails shows in `events --failed`; replay processes its event again."""
    async with stack_factory(workers=1) as stack:
        _, price = await stack.product("Pro", ["pro"])
        cus = await stack.customer(metadata={"user_id": "u_cli"})
        await stack.subscribe(cus, price)
        await stack.wait_features(cus, {"pro"})
        await stack.settle()

        code, out, _ = await entitled(stack, "resync", "--customer", cus)
        assert code == 0
        assert f"customer  {cus}  user=u_cli" in out
        assert "pro" in out
        assert "last messages" in out

        code, out, _ = await entitled(stack, "show", "--user", "u_cli")
        assert code == 0
        assert cus in out

        code, _, err = await entitled(stack, "show", "--customer", "cus_unknown")
        assert code == 2
        assert "never been synced" in err

        # Stripe fails every read for a while: the sync of the next event fails and is recorded.
        await stack.ctl.set_api_faults(rate_500=1.0, methods=["GET"])
        await stack.stripe.v1.customers.update_async(cus, {"metadata": {"user_id": "u_cli", "x": "1"}})

        async def failed() -> bool:
            return bool(await stack.pool.fetchval("SELECT count(*) FROM event_ledger WHERE outcome = 'failed'"))

        await stack.wait_for(failed, 60, "a failed sync in the ledger")
        code, out, _ = await entitled(stack, "events", "--failed")
        assert code == 0
        assert "customer.updated" in out
        event_id = await stack.pool.fetchval("SELECT event_id FROM event_ledger WHERE outcome = 'failed' LIMIT 1")
        await stack.ctl.clear_api_faults()

        code, out, _ = await entitled(stack, "replay", event_id)
        assert code == 0, out
        assert f"replaying {event_id}" in out
        await stack.settle()
        outcome = await stack.pool.fetchval("SELECT outcome FROM event_ledger WHERE event_id = $1", event_id)
        assert outcome in ("changed", "unchanged")

        code, _, err = await entitled(stack, "replay", "evt_does_not_exist")
        assert code == 2
        assert "not in the ledger" in err


async def test_resync_all_resumes_after_an_interruption(stack_factory: Any) -> None:
    """`resync --all` lists every customer, shows progress, and when interrupted, the next run
    resumes with what is left instead of starting over."""
    async with stack_factory(workers=0) as stack:
        _, price = await stack.product("Pro", ["pro"])
        customers = []
        for n in range(12):
            cus = await stack.customer(metadata={"user_id": f"u_{n}"})
            await stack.subscribe(cus, price)
            customers.append(cus)
        # No worker runs: the first run queues everything, then waits; interrupt it.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", "resync", "--all",
            env={**os.environ, **stack.worker_env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )

        async def listed() -> bool:
            return int(await stack.pool.fetchval("SELECT count(*) FROM resync_items")) == 12

        await stack.wait_for(listed, 60, "resync --all to list the customers")
        await asyncio.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, first_err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 130
        assert "resync: 12 customers" in first_err.decode()

        stack.start_worker()
        code, _, err = await entitled(stack, "resync", "--all")
        assert code == 0, err
        assert "resuming, 12 customers left" in err
        assert "12/12" in err
        for cus in customers:
            assert await stack.features(cus) == {"pro"}
