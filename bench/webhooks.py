"""Outbound deliveries: one endpoint answering in 5 s, one at once (docs/contract.md §10).

`python -m bench webhooks [--short]`: N messages (over N/5 customers, 5 versions each) are
committed to the outbox of a fresh database (the trigger makes the deliveries), then the real
`Deliverer` delivers them to two endpoints served by another process. Measured: the fast
endpoint's deliveries per second, alone and beside the 5 s one (target: >= 500/s, unaffected).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import asyncpg

from bench.common import append_results, machine, spawn, stop, wait_port
from shared import db
from shared.embedded import free_port
from shared.publishing import Deliverer, DeliveryPolicy, endpoints

ADMIN = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

RECEIVER = """
import asyncio, sys
from aiohttp import web
async def fast(_r): return web.Response(text="ok")
async def slow(_r):
    await asyncio.sleep(5)
    return web.Response(text="ok")
async def main():
    for port, handler in ((int(sys.argv[1]), fast), (int(sys.argv[2]), slow)):
        app = web.Application(); app.router.add_post("/hooks", handler)
        runner = web.AppRunner(app, access_log=None); await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def _round(n: int, with_slow: bool, fast_port: int, slow_port: int) -> float:
    name = f"bench_wh_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        pool = await db.create_pool(url)
        async with pool.acquire() as conn:
            await db.migrate(conn)
        fast = await endpoints.add(pool, f"http://127.0.0.1:{fast_port}/hooks")
        if with_slow:
            await endpoints.add(pool, f"http://127.0.0.1:{slow_port}/hooks")
        await pool.executemany(
            "INSERT INTO outbox (customer_id, version, message) VALUES ($1, $2, $3)",
            [(f"cus_{i % (n // 5)}", i // (n // 5) + 1,
              f'{{"id": "{uuid.uuid4()}", "customer_id": "cus_{i % (n // 5)}", "version": {i // (n // 5) + 1}}}')
             for i in range(n)])
        deliverer = Deliverer(url, policy=DeliveryPolicy(idle_poll_s=0.05, endpoints_poll_s=0.05))
        started = time.perf_counter()
        task = asyncio.create_task(deliverer.run_forever())
        while True:
            done = await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1"
                                       " AND status = 'delivered'", fast.id)
            if done >= n:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()
        return n / elapsed
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main(short: bool) -> None:
    n = 1000 if short else 10_000
    fast_port, slow_port = free_port(), free_port()
    proc = spawn(["-c", RECEIVER, str(fast_port), str(slow_port)], {})
    try:
        wait_port(fast_port)
        wait_port(slow_port)
        alone = asyncio.run(_round(n, False, fast_port, slow_port))
        beside = asyncio.run(_round(n, True, fast_port, slow_port))
    finally:
        stop(proc)
    body = (f"{machine()}. {n} messages over {n // 5} customers (5 versions each), one worker's delivery "
            f"loop (64 in flight per endpoint), log level INFO.\n\n"
            f"| fast endpoint | deliveries/s |\n|---|---|\n| alone | {alone:.0f} |\n"
            f"| beside an endpoint answering in 5 s | {beside:.0f} |\n| ratio | {beside / alone:.2f} |\n")
    print(body)
    append_results("Outbound webhook deliveries", f"python -m bench webhooks{' --short' if short else ''}", body)


if __name__ == "__main__":
    main("--short" in sys.argv)
