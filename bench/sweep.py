"""Benchmark 3: the reconciliation sweep of 10,000 customers against the rate-limit bound.

    python -m bench sweep [--short]

What it measures (`--short`: 1,000 customers): `worker.reconcile.sweep`, the real worker code,
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
The setup creates the customers through the API before the faults are set; the stats are
reset before each sweep, so only the sweep's own requests count.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import stripe

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


async def _populate(client: stripe.StripeClient, customers: int) -> None:
    """`customers` customers with a card, each with one active monthly subscription."""
    product = await client.v1.products.create_async({"name": "Pro", "metadata": {"features": "pro"}})
    price = await client.v1.prices.create_async(
        {"product": product.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": "month"}}
    )
    sem = asyncio.Semaphore(16)

    async def one(n: int) -> None:
        async with sem:
            customer = await client.v1.customers.create_async({
                "email": f"sweep{n}@example.com",
                "payment_method": "pm_card_visa",
                "invoice_settings": {"default_payment_method": "pm_card_visa"},
            })
            await client.v1.subscriptions.create_async({"customer": customer.id, "items": [{"price": price.id}]})

    await asyncio.gather(*(one(n) for n in range(customers)))


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


async def _sync_everyone(dep: Deployment, workers: int = 2) -> float:
    """Run the syncs the cold sweep queued, fast (setup for the warm case); returns seconds."""
    await dep.ctl.clear_api_faults()
    dep.worker_env.update({"STRIPE_RATE_LIMIT": str(SETUP_RATE_LIMIT),
                           "STRIPE_ENDPOINT_RATE_LIMIT": str(SETUP_RATE_LIMIT)})
    started = time.monotonic()
    for _ in range(workers):
        dep.start_worker()
    await dep.wait_workers_ready()
    await dep.settle(timeout_s=1800)
    dep.stop_workers()
    return time.monotonic() - started


async def run_benchmark(size: Size) -> tuple[list[SweepResult], dict[str, Any]]:
    """The cold sweep, then (when `size.warm`) the warm one. Also returns setup facts."""
    facts: dict[str, Any] = {}
    async with Deployment("sweep", webhooks=False) as dep:
        started = time.monotonic()
        await _populate(dep.stripe, size.customers)
        facts["populate_s"] = time.monotonic() - started
        await dep.ctl.set_api_faults(latency_ms=LATENCY_MS, rps_limit=FAKE_RPS)
        results = [await _sweep_once(dep, "cold", size.customers)]
        if size.warm:
            facts["setup_syncs_s"] = await _sync_everyone(dep)
            facts["synced"] = await dep.pool.fetchval("SELECT count(*) FROM customer_sync")
            await dep.ctl.set_api_faults(latency_ms=LATENCY_MS, rps_limit=FAKE_RPS)
            results.append(await _sweep_once(dep, "warm", size.customers))
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
        f"comparing); fake CPU: the fake Stripe answering (it filters and sorts every object for each page, "
        f"which Stripe does not). Setup (not measured): "
        f"{facts.get('populate_s', 0):.0f} s to create the customers"
        + (f", {facts['setup_syncs_s']:.0f} s to sync all {facts['synced']} of them for the warm case "
           f"(2 workers, no faults, no limit)" if "setup_syncs_s" in facts else "")
        + "."
    )


def main(short: bool) -> None:
    logs.configure("console", "WARNING")
    size = SHORT if short else FULL
    load_before = os.getloadavg()
    results, facts = asyncio.run(run_benchmark(size))
    summary = report(results, facts) + "\n\n" + load_note(load_before, os.getloadavg())
    print(summary)
    append_results("Reconciliation sweep" + (" (short)" if short else ""),
                   "python -m bench sweep" + (" --short" if short else ""), summary)
