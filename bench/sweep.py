"""Benchmark 3: the reconciliation sweep of 10,000 customers against the rate-limit bound.

    python -m bench sweep [--short | --customers N]

What it measures (`--short`: 1,000 customers; `--customers 100000`: that many): `worker.reconcile.sweep`, the real worker code,
called with the `shared.bootstrap.Services` a worker builds (`shared.bootstrap.bootstrap`),
against the fake Stripe as a separate process that holds 10,000 customers with one active
subscription each (none on a test clock: Stripe's lists leave those out). The fake adds 100 ms
to every request and allows 25 requests/s, as in the workers benchmark; the sweep runs with the
production default `STRIPE_RATE_LIMIT` (20/s).

- **cold**: an empty database, as after an outage that lost everything: every customer differs
  and is queued for a sync.
- **warm**: our copy equals Stripe (the syncs the cold sweep queued were run first, by worker
  processes with the rate limit lifted: setup, not measured): the daily case, nothing queued.

For each: the sweep's time against the lower bound = the list pages it fetched / the rate.
The setup makes the customers in the fake's own process (`POST /_fake/seed/subscribers`: the
objects and events `POST /v1/customers` + `POST /v1/subscriptions` would make, dated
SEED_PER_SECOND a second, about the pace the API setup had) before the faults are set; the
stats are reset before each sweep, so only the sweep's own requests count. The warm case's
syncs are run by real workers (SETUP_WORKERS); past WARM_SETUP_BUDGET_S the warm case is left
out and the report says how far the syncs got.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import append_results, load_note
from bench.deployment import API_KEY, Deployment
from shared import logs
from shared.bootstrap import bootstrap
from shared.coordination import Keys
from shared.settings import Settings
from worker import reconcile

FAKE_RPS = 25.0
LATENCY_MS = 100
RATE_LIMIT = 20.0  # docs/contract.md §3's default
# While the warm case's setup syncs run: no faults, no practical limit.
SETUP_RATE_LIMIT = 1000.0
SETUP_WORKERS = 3
WARM_SETUP_BUDGET_S = 1200.0
# The API setup created ~100 customers a second (97 s per 10,000, docs/benchmarks.md): the seed
# dates them so, which is what sizes the sweep's `created` ranges (worker/listing.py).
SEED_PER_SECOND = 100.0
SEED_CHUNK = 10_000  # customers per seeding request (each takes a few seconds of the fake)


@dataclass(frozen=True)
class Size:
    customers: int
    warm: bool = True


FULL = Size(customers=10_000)
SHORT = Size(customers=1000)
SMOKE = Size(customers=30)


@dataclass
class SweepResult:
    case: str
    customers: int
    seconds: float
    pages: dict[str, int]
    rejected: int
    queued: int
    subscriptions: int
    listed_customers: int
    own_cpu_s: float  # CPU of this process (where the sweep runs) during the sweep
    fake_cpu_s: float  # CPU of the fake Stripe serving it

    @property
    def requests(self) -> int:
        return sum(self.pages.values())

    @property
    def bound_s(self) -> float:
        return (self.requests - self.rejected) / RATE_LIMIT

    @property
    def ratio(self) -> float:
        return self.seconds / self.bound_s


async def _populate(dep: Deployment, customers: int) -> None:
    """`customers` customers with a card, each with one active monthly subscription."""
    client = dep.stripe
    product = await client.v1.products.create_async({"name": "Pro", "metadata": {"features": "pro"}})
    price = await client.v1.prices.create_async(
        {"product": product.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": "month"}}
    )
    start = int(time.time() - customers / SEED_PER_SECOND)
    for first in range(0, customers, SEED_CHUNK):
        await dep.ctl.seed_subscribers(price.id, min(SEED_CHUNK, customers - first), per_second=SEED_PER_SECOND,
                                       start=start + int(first / SEED_PER_SECOND), email_prefix=f"sweep{first}-")


async def _sweep_once(dep: Deployment, case: str, customers: int) -> SweepResult:
    settings = Settings(
        database_url=dep.database_url,
        redis_url=dep.redis_server.url,
        stripe_api_key=API_KEY,
        stripe_api_base=dep.fake_url,
        stripe_rate_limit=RATE_LIMIT,
        log_format="json",
        log_level="WARNING",
    )
    async with bootstrap(settings, postgres=True, stripe_client=True, keys=Keys()) as services:
        await dep.ctl.reset_stats()
        fake_cpu = dep.fake_cpu_s()
        own_cpu = time.process_time()
        started = time.monotonic()
        result = await reconcile.sweep(services)
        seconds = time.monotonic() - started
        own_cpu = time.process_time() - own_cpu
        fake_cpu = dep.fake_cpu_s() - fake_cpu
        stats = await dep.ctl.stats()
    return SweepResult(
        case=case,
        customers=customers,
        seconds=seconds,
        pages={k: int(v["count"]) for k, v in stats["routes"].items()},
        rejected=int(stats["statuses"].get("429", 0)),
        queued=result["queued"],
        subscriptions=result["subscriptions"],
        listed_customers=result["customers"],
        own_cpu_s=own_cpu,
        fake_cpu_s=fake_cpu,
    )


async def _sync_everyone(dep: Deployment, facts: dict[str, Any], workers: int = SETUP_WORKERS) -> bool:
    """Run the syncs the cold sweep queued, fast (setup for the warm case); False if they did
    not all run within WARM_SETUP_BUDGET_S (`facts` says how far they got)."""
    await dep.ctl.clear_api_faults()
    dep.worker_env.update({"STRIPE_RATE_LIMIT": str(SETUP_RATE_LIMIT),
                           "STRIPE_ENDPOINT_RATE_LIMIT": str(SETUP_RATE_LIMIT)})
    started = time.monotonic()
    for _ in range(workers):
        dep.start_worker()
    await dep.wait_workers_ready()
    done = True
    try:
        await dep.settle(timeout_s=WARM_SETUP_BUDGET_S)
    except RuntimeError:
        done = False
    dep.stop_workers()
    facts["setup_syncs_s"] = time.monotonic() - started
    facts["setup_workers"] = workers
    facts["synced"] = await dep.pool.fetchval("SELECT count(*) FROM customer_sync")
    return done


async def run_benchmark(size: Size) -> tuple[list[SweepResult], dict[str, Any]]:
    """The cold sweep, then (when `size.warm` and its setup fits the budget) the warm one."""
    facts: dict[str, Any] = {}
    async with Deployment("sweep", webhooks=False) as dep:
        started = time.monotonic()
        await _populate(dep, size.customers)
        facts["populate_s"] = time.monotonic() - started
        await dep.ctl.set_api_faults(latency_ms=LATENCY_MS, rps_limit=FAKE_RPS)
        results = [await _sweep_once(dep, "cold", size.customers)]
        if size.warm:
            if await _sync_everyone(dep, facts):
                await dep.ctl.set_api_faults(latency_ms=LATENCY_MS, rps_limit=FAKE_RPS)
                results.append(await _sweep_once(dep, "warm", size.customers))
            else:
                facts["warm_skipped"] = True
    return results, facts


def report(results: Sequence[SweepResult], facts: dict[str, Any]) -> str:
    rows = []
    for r in results:
        pages = ", ".join(f"`{k}` {v}" for k, v in sorted(r.pages.items()))
        rows.append(
            f"| {r.case} | {r.customers} | {r.subscriptions} | {r.queued} | {r.requests} ({pages}) | {r.rejected} | "
            f"{r.seconds:.1f} | {r.bound_s:.1f} | {r.ratio:.2f} | {r.own_cpu_s:.1f} | {r.fake_cpu_s:.1f} |"
        )
    table = "\n".join([
        "| case | customers | subscriptions listed | queued | requests (by endpoint) | 429s | sweep s | bound s "
        "| sweep/bound | sweep CPU s | fake CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    return (
        f"{table}\n\n"
        f"The fake adds {LATENCY_MS} ms per request and allows {FAKE_RPS:.0f}/s; `STRIPE_RATE_LIMIT={RATE_LIMIT:g}` "
        f"(the default). Bound = requests the fake admitted / {RATE_LIMIT:g} per second. Each list is read by "
        f"`created` ranges side by side (worker/listing.py), the two lists too; the sweep time includes reading "
        f"our copy from Postgres and queueing the customers that differ. Sweep CPU: the process running `sweep` (parsing, "
        f"comparing); fake CPU: the fake Stripe answering (a bisect of its objects in list order and the page: fakestripe/src/fakestripe/dated.py). "
        f"Setup (not measured): {facts.get('populate_s', 0):.0f} s to create the customers "
        f"(in the fake's process, {SEED_PER_SECOND:g} a second of `created`)"
        + (f", {facts['setup_syncs_s']:.0f} s to sync {facts['synced']} of them for the warm case "
           f"({facts['setup_workers']} workers, no faults, no limit)" if "setup_syncs_s" in facts else "")
        + (f"; the warm case is left out: its syncs did not all run within {WARM_SETUP_BUDGET_S:.0f} s"
           if facts.get("warm_skipped") else "")
        + "."
    )


def main(short: bool, customers: str | None = None) -> None:
    logs.configure("console", "WARNING")
    size = Size(customers=int(customers)) if customers else SHORT if short else FULL
    load_before = os.getloadavg()
    results, facts = asyncio.run(run_benchmark(size))
    summary = report(results, facts) + "\n\n" + load_note(load_before, os.getloadavg())
    print(summary)
    label = f" ({size.customers:,} customers)" if customers else " (short)" if short else ""
    command = f" --customers {size.customers}" if customers else " --short" if short else ""
    append_results("Reconciliation sweep" + label, "python -m bench sweep" + command, summary)
