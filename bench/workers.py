"""Benchmark 2: the workers draining checkout bursts under Stripe's sandbox rate limit.

    python -m bench workers [--short]

What it measures, for 1, 2 and 4 worker processes (`--short`: 100 customers, 1 and 2 workers),
each on a fresh deployment (`bench/deployment.py`: its own Redis and database, the fake Stripe
as a separate process, the real ingest, real workers):

- 1,000 customers each buy through Checkout; each purchase fires ~11 webhooks within a few
  milliseconds (8 of them are customer work). The fake Stripe adds 100 ms to every API request
  and answers 429 past 25 requests/s (a sliding second, as Stripe counts a sandbox).
- **Stripe requests per customer** and **syncs per burst**: the fake's request count during the
  drain (setup traffic is excluded: the stats are reset after setup) and the customers'
  `customer_sync.fence`, which every sync bumps once when it starts.
- **Time to drain**: from the first burst event received by ingest to the last `access-changed`
  message, against the lower bound the rate limit sets (requests the fake admitted / 25 per
  second).
- **Latency at low load**: one checkout every 2 s, 50 of them; from the first webhook of the
  purchase reaching ingest to its `access-changed` message on the pub/sub channel, p50 and p99.
  It includes the coalescing window (`COALESCE_WINDOW`, default 1 s), run with the default.
- What the drain cost besides Stripe requests: the workers' CPU per sync (all their processes'
  CPU during the drain, idle loops included, over the syncs), and the commands and CPU of Redis
  per customer (ingest, coordination, the rate limiter, arq).

The setup (products, the Checkout Sessions) runs before the faults are set and the stats are
reset: the measurement counts only the workers' reads. Completing a session is a control call
(`/_fake/...`), neither rate-limited nor counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import stripe
from redis.asyncio.client import PubSub

from bench.common import append_results, load_note
from bench.deployment import Deployment
from shared import logs
from shared.publishing import AccessChanged

FAKE_RPS = 25.0
LATENCY_MS = 100
# The deployment's STRIPE_RATE_LIMIT. The limiter spaces requests exactly 1/rate apart (GCRA,
# no burst), so at 25/s the 26th request is due exactly one second after the first and any
# jitter on its way (a busy event loop in the worker or in the fake) lands it in the same
# sliding second: a 429, a retry, a wasted slot. 24/s leaves one request (~42 ms) of slack per
# second for that jitter and costs 4% of the budget.
RATE_LIMIT = 24.0
FEATURE = "pro"


@dataclass(frozen=True)
class Size:
    customers: int
    worker_counts: tuple[int, ...]
    latency_samples: int
    latency_spacing_s: float


FULL = Size(customers=1000, worker_counts=(1, 2, 4), latency_samples=50, latency_spacing_s=2.0)
SHORT = Size(customers=100, worker_counts=(1, 2), latency_samples=10, latency_spacing_s=1.0)
SMOKE = Size(customers=10, worker_counts=(1,), latency_samples=3, latency_spacing_s=0.5)


@dataclass
class RoundResult:
    workers: int
    customers: int
    requests: int  # answered by the fake during the drain, 429s included
    rejected: int  # 429s from the fake's rps limit
    routes: dict[str, int]
    max_rps: int
    syncs: int
    max_syncs: int
    messages: int
    granted: int  # customers whose view shows the feature and the right user
    drain_s: float
    bound_s: float  # requests the fake admitted / 25 per second
    worker_cpu_s: float
    redis_commands: int  # every command the deployment's Redis ran during the drain
    redis_cpu_s: float
    redis_by_command: dict[str, int]
    latencies_s: list[float] = field(default_factory=list)
    latency_requests: int = 0

    @property
    def requests_per_customer(self) -> float:
        return self.requests / self.customers

    @property
    def syncs_per_burst(self) -> float:
        return self.syncs / self.customers

    @property
    def ratio(self) -> float:
        return self.drain_s / self.bound_s


class Listener:
    """A live listener on the `access-changed` channel: when each customer's message arrived."""

    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub
        self.first_at: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self, channel: str) -> None:
        await self.pubsub.subscribe(channel)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None or message.get("type") != "message":
                continue
            at = time.time()
            change = AccessChanged.from_json(message["data"])
            self.first_at.setdefault(change.customer_id, at)
            self.count[change.customer_id] = self.count.get(change.customer_id, 0) + 1

    async def wait_for(self, customers: Sequence[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while any(c not in self.first_at for c in customers):
            if time.monotonic() > deadline:
                missing = sum(1 for c in customers if c not in self.first_at)
                raise RuntimeError(f"{missing} customers got no access-changed within {timeout_s:.0f}s")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 5


async def _gather_limited(n: int, coros: Sequence[Any]) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def one(coro: Any) -> Any:
        async with sem:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def _setup_catalog(client: stripe.StripeClient) -> str:
    feature = await client.v1.entitlements.features.create_async({"name": "Pro", "lookup_key": FEATURE})
    product = await client.v1.products.create_async({"name": "Pro"})
    await client.v1.products.features.create_async(product.id, {"entitlement_feature": feature.id})
    price = await client.v1.prices.create_async(
        {"product": product.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": "month"}}
    )
    return price.id


async def _sessions(client: stripe.StripeClient, price: str, users: Sequence[str]) -> list[str]:
    async def one(user: str) -> str:
        session = await client.v1.checkout.sessions.create_async({
            "mode": "subscription",
            "line_items": [{"price": price, "quantity": 1}],
            "client_reference_id": user,
            "success_url": "https://example.com/ok",
        })
        return session.id

    return await _gather_limited(16, [one(u) for u in users])


async def _first_received(dep: Deployment, customers: Sequence[str]) -> dict[str, float]:
    """When ingest received each customer's first event (the event ledger's `received_at`)."""
    rows = await dep.pool.fetch(
        "SELECT customer_id, extract(epoch FROM min(received_at))::float8 AS at FROM event_ledger"
        " WHERE customer_id = ANY($1::text[]) GROUP BY customer_id",
        list(customers),
    )
    return {r["customer_id"]: r["at"] for r in rows}


async def _granted(dep: Deployment, expected_user: dict[str, str]) -> int:
    rows = await dep.pool.fetch(
        "SELECT e.customer_id, c.user_id FROM active_entitlements e JOIN customers c USING (customer_id)"
        " WHERE e.feature = $1 AND e.customer_id = ANY($2::text[])",
        FEATURE,
        list(expected_user),
    )
    return sum(1 for r in rows if expected_user.get(r["customer_id"]) == r["user_id"])


async def _redis_usage(dep: Deployment) -> tuple[int, float, dict[str, int]]:
    """Commands Redis has run so far (in all, and by command), and the CPU seconds it used."""
    stats = await dep.redis.info("stats")
    cpu = await dep.redis.info("cpu")
    commands = await dep.redis.info("commandstats")
    by_command = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in commands.items()}
    return (int(stats["total_commands_processed"]), float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            by_command)


async def _complete(dep: Deployment, session_id: str) -> dict[str, Any]:
    completed: dict[str, Any] = await dep.ctl.complete_checkout(session_id, payment_method="pm_card_visa")
    return completed


async def run_round(n_workers: int, size: Size) -> RoundResult:
    """One deployment with `n_workers` processes: the burst drain, then the low-load latency."""
    env = {"STRIPE_RATE_LIMIT": str(RATE_LIMIT)}
    async with Deployment(f"workers-{n_workers}", workers=n_workers, worker_env=env) as dep:
        price = await _setup_catalog(dep.stripe)
        users = [f"u_{i}" for i in range(size.customers)]
        burst_sessions = await _sessions(dep.stripe, price, users)
        late_users = [f"late_{i}" for i in range(size.latency_samples)]
        late_sessions = await _sessions(dep.stripe, price, late_users)
        await dep.settle()  # the catalog events of the setup are processed
        listener = Listener(dep.redis.pubsub())
        await listener.start(dep.keys.channel)
        await dep.ctl.set_api_faults(latency_ms=LATENCY_MS, rps_limit=FAKE_RPS)
        await dep.ctl.reset_stats()
        try:
            cpu_before = dep.worker_cpu_s()
            redis_before = await _redis_usage(dep)
            completed = await _gather_limited(8, [_complete(dep, s) for s in burst_sessions])
            expected = {c["customer"]: c["client_reference_id"] for c in completed}
            customers = list(expected)
            await listener.wait_for(customers, timeout_s=60 + size.customers * 5 * 3 / FAKE_RPS)
            await dep.settle(timeout_s=120)
            stats = await dep.ctl.stats()
            cpu = dep.worker_cpu_s() - cpu_before
            redis_after = await _redis_usage(dep)
            first = await _first_received(dep, customers)
            drain_s = max(listener.first_at[c] for c in customers) - min(first.values())
            fence = await dep.pool.fetchrow(
                "SELECT sum(fence)::int AS total, max(fence) AS most FROM customer_sync WHERE customer_id = ANY($1::text[])",
                customers,
            )
            rejected = int(stats["statuses"].get("429", 0))
            result = RoundResult(
                workers=n_workers,
                customers=len(customers),
                requests=int(stats["total"]),
                rejected=rejected,
                routes={k: int(v["count"]) for k, v in stats["routes"].items()},
                max_rps=int(stats["max_rps"]),
                syncs=int(fence["total"] or 0),
                max_syncs=int(fence["most"] or 0),
                messages=sum(listener.count.get(c, 0) for c in customers),
                granted=await _granted(dep, expected),
                drain_s=drain_s,
                bound_s=(int(stats["total"]) - rejected) / FAKE_RPS,
                worker_cpu_s=cpu,
                redis_commands=redis_after[0] - redis_before[0],
                redis_cpu_s=redis_after[1] - redis_before[1],
                redis_by_command={k: n - redis_before[2].get(k, 0) for k, n in redis_after[2].items()
                                  if n > redis_before[2].get(k, 0)},
            )

            # Low load: one purchase every `latency_spacing_s`.
            await dep.ctl.reset_stats()
            late: dict[str, str] = {}
            for session in late_sessions:
                done = await _complete(dep, session)
                late[done["customer"]] = done["client_reference_id"]
                await asyncio.sleep(size.latency_spacing_s)
            await listener.wait_for(list(late), timeout_s=30)
            await dep.settle(timeout_s=60)
            late_first = await _first_received(dep, list(late))
            result.latencies_s = [listener.first_at[c] - late_first[c] for c in late]
            result.latency_requests = int((await dep.ctl.stats())["total"])
            result.granted += await _granted(dep, late)
            result.messages += sum(listener.count.get(c, 0) for c in late)
        finally:
            await listener.close()
    return result


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def report(results: Sequence[RoundResult], size: Size) -> str:
    rows = []
    for r in results:
        rows.append(
            f"| {r.workers} | {r.customers} | {r.requests_per_customer:.2f} | {r.syncs_per_burst:.3f} "
            f"(max {r.max_syncs}) | {r.drain_s:.1f} | {r.bound_s:.1f} | {r.ratio:.3f} | {r.rejected} | "
            f"{r.max_rps} | {r.worker_cpu_s / max(r.syncs, 1) * 1000:.1f} | "
            f"{r.redis_commands / r.customers:.0f} | {r.redis_cpu_s / r.customers * 1000:.1f} | "
            f"{percentile(r.latencies_s, 50) * 1000:.0f} | {percentile(r.latencies_s, 99) * 1000:.0f} |"
        )
    routes = results[-1].routes
    per_route = ", ".join(f"`{k}` {v / results[-1].customers:.2f}" for k, v in sorted(routes.items()))
    worst_syncs = max(r.syncs_per_burst for r in results)
    worst_ratio = max(r.ratio for r in results)
    ok = all(r.granted == r.customers + len(r.latencies_s) for r in results)
    table = "\n".join([
        "| workers | customers | Stripe req/customer | syncs/burst | drain s | bound s | drain/bound | 429s "
        "| max req/s | worker CPU ms/sync | Redis cmds/customer | Redis CPU ms/customer | latency p50 ms "
        "| latency p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    return (
        f"{table}\n\n"
        f"Setup: {size.customers} Checkout purchases (~11 webhooks each, 8 of them customer work) completed at "
        f"once; the fake adds {LATENCY_MS} ms per request and allows {FAKE_RPS:.0f} requests/s; "
        f"`STRIPE_RATE_LIMIT={RATE_LIMIT:g}` (one request per second of slack for jitter), "
        f"`WORKER_CONCURRENCY` 16 (default), `COALESCE_WINDOW` 1 s (default). "
        f"Bound = requests the fake admitted / {FAKE_RPS:.0f} per second "
        f"(at the configured {RATE_LIMIT:g}/s it is {FAKE_RPS / RATE_LIMIT:.3f}× that). "
        f"Latency: {size.latency_samples} purchases, one every {size.latency_spacing_s:g} s, first webhook at "
        f"ingest → message on the channel, including the 1 s coalescing window.\n\n"
        f"Requests per customer by endpoint ({results[-1].workers} workers): {per_route}.\n\n"
        f"Targets: syncs per burst ≤ 1.2 — worst {worst_syncs:.3f}, "
        f"{'met' if worst_syncs <= 1.2 else 'NOT met'}; drain ≤ 1.15× bound — worst {worst_ratio:.3f}, "
        f"{'met' if worst_ratio <= 1.15 else 'NOT met'}. Every customer got its access and exactly one "
        f"message: {'yes' if ok and all(r.messages == r.granted for r in results) else 'NO'}."
    )


async def run_benchmark(size: Size) -> list[RoundResult]:
    return [await run_round(n, size) for n in size.worker_counts]


def main(short: bool) -> None:
    logs.configure("console", "WARNING")
    size = SHORT if short else FULL
    load_before = os.getloadavg()
    results = asyncio.run(run_benchmark(size))
    summary = report(results, size) + "\n\n" + load_note(load_before, os.getloadavg())
    print(summary)
    print(orjson.dumps([r.__dict__ for r in results]).decode())
    append_results("Workers" + (" (short)" if short else ""),
                   "python -m bench workers" + (" --short" if short else ""), summary)
