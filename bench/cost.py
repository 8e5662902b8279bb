"""Benchmark: how the cost of running entitled grows with the number of customers.

    python -m bench cost [--customers 1000,10000] [--short]   (--short: 200 customers)

For each size, on a fresh deployment (`bench/deployment.py`: its own Redis and database, the
fake Stripe, the real ingest, two real workers), the customers are seeded the way the workers
benchmark seeds them (bench/workers.py: one Checkout purchase each, its ~11 webhooks through
ingest, the syncs by the workers) with the rate limit lifted (setup), in chunks of SEED_CHUNK
purchases. Then, in this order:

- **Redis bytes per customer**: `INFO memory used_memory` after seeding minus before, over the
  customers; and `MEMORY USAGE` of each key family of shared/coordination/keys.py (a sample of
  up to 200 keys of a family with one key per thing, the whole key for the shared sorted sets and
  the stream), with the count of keys, so that a family's total is visible.
- **Postgres bytes per customer**: `pg_total_relation_size` of each of our tables over the
  customers (tables, indexes, TOAST).
- **Worker CPU per sync**: both worker processes' CPU during the seeding, over the syncs (every
  sync bumps `customer_sync.fence` once); idle loops included.
- **Catalog poll**: the requests one `worker.catalog.poll` makes (it lists products and prices and
  reads the features of each held product: it grows with the catalog, not with customers).
- **Warm sweep**: `worker.reconcile.sweep` under the sweep benchmark's faults (100 ms per request,
  25 requests/s; `STRIPE_RATE_LIMIT` 20), its time against its bound (bench/sweep.py).
- **`entitled resync --all`**: the CLI as a process, with the workers running and the rate limit
  lifted (so the time is our own cost; the time at a given rate is requests / rate, also given).
- **Relay throughput**: the workers stopped, every outbox row marked unpublished, and
  `Relay.drain` (shared/publishing/relay.py) run in this process until the outbox is empty:
  messages / s of a relay with a backlog (one message per customer, its first grant).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio
from arq.constants import result_key_prefix

from bench import sweep, workers
from bench.common import append_results, load_note, stop
from bench.deployment import API_KEY, Deployment
from shared import logs
from shared.bootstrap import bootstrap
from shared.coordination import Keys
from shared.publishing import Relay
from shared.settings import Settings
from worker import catalog

FULL = (1000, 10_000)
SHORT = (200,)
# Setup: as bench/sweep.py's warm setup, no practical limit.
SETUP_ENV = {"STRIPE_RATE_LIMIT": str(sweep.SETUP_RATE_LIMIT), "STRIPE_ENDPOINT_RATE_LIMIT": str(sweep.SETUP_RATE_LIMIT)}
SAMPLE = 200
SEED_CHUNK = 500
LIVE_RATE = 20.0  # docs/contract.md §3's default STRIPE_RATE_LIMIT


@dataclass
class Family:
    name: str
    pattern: str  # a SCAN pattern, or the one key's name when `single`
    single: bool = False


def families(keys: Keys) -> list[Family]:
    unit_head, _ = keys.unit_key_parts
    return [
        Family("dedupe (`seen:<event>`)", keys.seen("*")),
        Family("unit hashes (`unit:{…}`)", f"{unit_head}*}}"),
        Family("unit event lists (`unit:{…}:events`)", f"{unit_head}*}}:events"),
        Family("arq jobs (`arq:job:*`)", keys.job("*")),
        Family("arq results (`arq:result:*`)", f"{result_key_prefix}*"),
        Family("re-check timers (sorted set)", keys.rechecks, single=True),
        Family("leases (sorted set)", keys.leases, single=True),
        Family("arq queue (sorted set)", keys.queue, single=True),
        Family("stream `access-changed`", keys.stream, single=True),
    ]


@dataclass
class FamilyUsage:
    name: str
    keys: int
    bytes_total: float  # measured for a single key, else the sample's mean × keys


@dataclass
class CostResult:
    customers: int
    seed_s: float
    syncs: int
    used_memory_delta: int
    redis_keys: int  # DBSIZE after seeding
    families: list[FamilyUsage]
    tables: dict[str, int]
    worker_cpu_s: float
    catalog_requests: int
    catalog_s: float
    sweep: sweep.SweepResult | None
    resync_s: float
    resync_requests: int
    relay_messages: int
    relay_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def postgres_bytes(self) -> int:
        return sum(self.tables.values())


async def _scan(r: redis.asyncio.Redis, pattern: str) -> list[bytes]:
    return [k async for k in r.scan_iter(match=pattern, count=1000)]


async def family_usage(r: redis.asyncio.Redis, family: Family) -> FamilyUsage:
    if family.single:
        used = await r.memory_usage(family.pattern, samples=0)
        return FamilyUsage(family.name, 1 if used else 0, float(used or 0))
    found = await _scan(r, family.pattern)
    if family.pattern.endswith("}"):  # the hashes, not their `:events` lists
        found = [k for k in found if k.endswith(b"}")]
    sample = found[:SAMPLE]
    sizes = [await r.memory_usage(k, samples=0) or 0 for k in sample]
    mean = sum(sizes) / len(sizes) if sizes else 0.0
    return FamilyUsage(family.name, len(found), mean * len(found))


async def table_sizes(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
    )
    return {r["name"]: int(r["bytes"]) for r in rows}


async def _seed(dep: Deployment, customers: int) -> list[str]:
    """`customers` Checkout purchases, as bench/workers.py makes them; returns the customer ids."""
    price = await workers._setup_catalog(dep.stripe)
    sessions = await workers._sessions(dep.stripe, price, [f"u_{i}" for i in range(customers)])
    completed: list[dict[str, Any]] = []
    # In chunks, each delivered before the next: the fake's webhook delivery slows down as its
    # queue grows (10,000 purchases at once: ~45 deliveries/s after 8 minutes, where 1,000 went at
    # ~290/s), which is the fake's cost, not ours.
    for start in range(0, len(sessions), SEED_CHUNK):
        chunk = sessions[start:start + SEED_CHUNK]
        completed += await workers._gather_limited(8, [workers._complete(dep, s) for s in chunk])
        await dep.settle(timeout_s=280)
    return [str(c["customer"]) for c in completed]


def _settings(dep: Deployment) -> Settings:
    return Settings(database_url=dep.database_url, redis_url=dep.redis_server.url, stripe_api_key=API_KEY,
                    stripe_api_base=dep.fake_url, stripe_rate_limit=sweep.SETUP_RATE_LIMIT,
                    stripe_endpoint_rate_limit=sweep.SETUP_RATE_LIMIT, log_format="json", log_level="WARNING")


async def _catalog_poll(dep: Deployment) -> tuple[int, float]:
    async with bootstrap(_settings(dep), postgres=True, stripe_client=True, keys=Keys()) as services:
        await dep.ctl.reset_stats()
        started = time.monotonic()
        await catalog.poll(services.pool, services.reader)
        seconds = time.monotonic() - started
        stats = await dep.ctl.stats()
    return int(stats["total"]), seconds


async def _resync_all(dep: Deployment) -> tuple[float, int]:
    await dep.ctl.reset_stats()
    started = time.monotonic()
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", "from worker.cli import main; main()", "resync", "--all", "--restart"],
        env={**os.environ, **dep.worker_env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"entitled resync --all failed: {proc.stderr.decode()[-2000:]}")
    return seconds, int((await dep.ctl.stats())["total"])


async def _relay(dep: Deployment) -> tuple[int, float]:
    """Every outbox row republished by one relay in this process: (messages, seconds)."""
    for proc in dep.workers:
        stop(proc)
    dep.workers = []
    await dep.redis.delete(dep.keys.stream)
    await dep.pool.execute("UPDATE outbox SET published_at = NULL")
    n = int(await dep.pool.fetchval("SELECT count(*) FROM outbox"))
    relay = Relay(dep.database_url, dep.redis, dep.keys, maxlen=Settings().stream_maxlen, wake=asyncio.Event())
    conn = await asyncpg.connect(dep.database_url)
    try:
        started = time.monotonic()
        while await relay.drain(conn):
            pass
        seconds = time.monotonic() - started
    finally:
        await conn.close()
    return n, seconds


async def measure(customers: int, *, with_sweep: bool = True) -> CostResult:
    async with Deployment(f"cost-{customers}", workers=2, worker_env=SETUP_ENV) as dep:
        mem_before = int((await dep.redis.info("memory"))["used_memory"])
        cpu_before = dep.worker_cpu_s()
        started = time.monotonic()
        ids = await _seed(dep, customers)
        seed_s = time.monotonic() - started
        cpu = dep.worker_cpu_s() - cpu_before
        syncs = int(await dep.pool.fetchval("SELECT coalesce(sum(fence), 0) FROM customer_sync") or 0)
        mem_after = int((await dep.redis.info("memory"))["used_memory"])
        redis_keys = int(await dep.redis.dbsize())
        usage = [await family_usage(dep.redis, f) for f in families(dep.keys)]
        tables = await table_sizes(dep.pool)
        catalog_requests, catalog_s = await _catalog_poll(dep)
        swept = None
        if with_sweep:
            await dep.ctl.set_api_faults(latency_ms=sweep.LATENCY_MS, rps_limit=sweep.FAKE_RPS)
            swept = await sweep._sweep_once(dep, "warm", len(ids))
            await dep.ctl.clear_api_faults()
        resync_s, resync_requests = await _resync_all(dep)
        relay_n, relay_s = await _relay(dep)
    return CostResult(
        customers=len(ids), seed_s=seed_s, syncs=syncs, used_memory_delta=mem_after - mem_before,
        redis_keys=redis_keys,
        families=usage, tables=tables, worker_cpu_s=cpu, catalog_requests=catalog_requests, catalog_s=catalog_s,
        sweep=swept, resync_s=resync_s, resync_requests=resync_requests, relay_messages=relay_n, relay_s=relay_s,
    )


def _per(value: float, n: int) -> str:
    return f"{value / n:,.0f}"


def report(results: Sequence[CostResult]) -> str:
    head = "| per customer unless said | " + " | ".join(f"{r.customers:,}" for r in results) + " |"
    sep = "|---|" + "---|" * len(results)
    rows: list[str] = []

    def row(label: str, cells: Sequence[str]) -> None:
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    row("Redis `used_memory` delta, bytes", [_per(r.used_memory_delta, r.customers) for r in results])
    row("Redis keys, total (`DBSIZE`)", [f"{r.redis_keys:,}" for r in results])
    for i, fam in enumerate(results[0].families):
        row(f"Redis {fam.name}: bytes (keys)",
            [f"{_per(r.families[i].bytes_total, r.customers)} ({r.families[i].keys:,})" for r in results])
    row("Postgres, all our tables, bytes", [_per(r.postgres_bytes, r.customers) for r in results])
    biggest = sorted(results[-1].tables, key=lambda t: -results[-1].tables[t])[:6]
    for table in biggest:
        row(f"Postgres `{table}`, bytes", [_per(r.tables.get(table, 0), r.customers) for r in results])
    row("worker CPU per sync, ms (syncs)",
        [f"{r.worker_cpu_s / max(r.syncs, 1) * 1000:.1f} ({r.syncs:,})" for r in results])
    row("catalog poll: requests (s), total", [f"{r.catalog_requests} ({r.catalog_s:.2f})" for r in results])
    row("warm sweep: s / bound s (ratio), total",
        [f"{r.sweep.seconds:.1f} / {r.sweep.bound_s:.1f} ({r.sweep.ratio:.2f})" if r.sweep else "–" for r in results])
    row("warm sweep: requests, total", [str(r.sweep.requests) if r.sweep else "–" for r in results])
    row("`entitled resync --all`, no limit: s, total", [f"{r.resync_s:.1f}" for r in results])
    row(f"`resync --all` requests, total (s at {LIVE_RATE:g}/s)",
        [f"{r.resync_requests:,} ({r.resync_requests / LIVE_RATE:,.0f})" for r in results])
    row("relay, backlog drained: messages/s (messages)",
        [f"{r.relay_messages / r.relay_s:,.0f} ({r.relay_messages:,})" if r.relay_s else "–" for r in results])
    row("setup: seeding s, total", [f"{r.seed_s:.0f}" for r in results])
    return "\n".join([head, sep, *rows])


def parse_sizes(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def main(short: bool, customers: str | None = None) -> None:
    logs.configure("console", "WARNING")
    sizes = SHORT if short else (parse_sizes(customers) if customers else FULL)
    load_before = os.getloadavg()
    results = []
    for n in sizes:
        result = asyncio.run(measure(n))
        print(report([result]), flush=True)
        results.append(result)
    summary = report(results) + "\n\n" + load_note(load_before, os.getloadavg())
    print(summary)
    command = "python -m bench cost " + ("--short" if short else f"--customers {','.join(map(str, sizes))}")
    append_results("Cost per customer" + (" (short)" if short else ""), command, summary)
