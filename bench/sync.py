"""`POST /v1/sync`'s overhead over the worker's own run (docs/contract.md §10).

    python -m bench sync [--short]

The whole path as deployed: `bench.deployment.Deployment` (its own Redis and database, the fake
Stripe as a process, one real `python -m worker`), plus the real `python -m api`. N customers
with a subscription to a product granting one feature are made through the SDK; then the fake
answers every API request after 100 ms (`latency_ms`), and each customer in turn gets one
`POST /v1/sync {"customer_id"}`, timed here from sending to the last byte of the answer.

The worker's own time for that run is its `sync.run` log line's held interval (`began_at` to
`ended_at`: from taking the unit to just before releasing it, i.e. every Stripe request, the
decision and the write). Overhead = end to end − held interval: the API's parsing, throttle and
queueing, arq's pick-up, the release and run announcement, and the final access read
(target < 50 ms). The fake's request count per sync is reported beside it, so the run's time
can be compared with the 100 ms per request it waits on.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from stripe.params import CustomerCreateParams

from bench.common import append_results, load_note, machine, spawn, stop, wait_http
from bench.deployment import Deployment
from bench.workers import percentile
from shared.embedded import free_port

TOKEN = "bench-sync-token-0123456789"
FEATURE = "pro"
LATENCY_MS = 100


async def _catalog(dep: Deployment) -> str:
    client = dep.stripe
    feature = await client.v1.entitlements.features.create_async({"name": "Pro", "lookup_key": FEATURE})
    product = await client.v1.products.create_async({"name": "Pro"})
    await client.v1.products.features.create_async(product.id, {"entitlement_feature": feature.id})
    price = await client.v1.prices.create_async(
        {"product": product.id, "unit_amount": 1000, "currency": "usd", "recurring": {"interval": "month"}})
    return price.id


async def _customers(dep: Deployment, price: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        params: CustomerCreateParams = {"email": f"b{i}@example.com", "metadata": {"user_id": f"u_{i}"},
                                        "payment_method": "pm_card_visa",
                                        "invoice_settings": {"default_payment_method": "pm_card_visa"}}
        customer = await dep.stripe.v1.customers.create_async(params)
        await dep.stripe.v1.subscriptions.create_async({"customer": customer.id, "items": [{"price": price}]})
        ids.append(customer.id)
    return ids


def _held(dep: Deployment) -> dict[str, tuple[float, float]]:
    """Customer id -> (began_at, ended_at) of its last ok `sync.run`, epoch seconds."""
    held: dict[str, tuple[float, float]] = {}
    for r in dep.worker_logs():
        if r.get("event") == "sync.run" and r.get("kind") == "customer" and r.get("ok"):
            held[str(r["customer_id"])] = (float(r["began_at"]), float(r["ended_at"]))
    return held


async def _one(http: aiohttp.ClientSession, url: str, customer: str) -> tuple[int, float, float]:
    """(status, seconds end to end, epoch second of sending)."""
    sent = time.time()
    started = time.perf_counter()
    async with http.post(url, json={"customer_id": customer},
                         headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        await resp.read()
        status = resp.status
    return status, time.perf_counter() - started, sent


async def run(n: int) -> dict[str, Any]:
    async with Deployment("sync", workers=1, webhooks=False) as dep:
        price = await _catalog(dep)
        customers = await _customers(dep, price, n + 1)  # the first one warms up and is not counted
        port = free_port()
        api = spawn(["-m", "api"], {"API_PORT": str(port), "HOST": "127.0.0.1", "REDIS_URL": dep.redis_server.url,
                                    "DATABASE_URL": dep.database_url, "API_TOKENS": f"bench:{TOKEN}",
                                    "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}, dep.log_dir / "api.log")
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz")
            await dep.ctl.set_api_faults(latency_ms=LATENCY_MS)
            url = f"http://127.0.0.1:{port}/v1/sync"
            samples: list[tuple[str, int, float, float, int]] = []
            async with aiohttp.ClientSession() as http:
                for customer in customers:
                    await dep.ctl.reset_stats()
                    status, took, sent = await _one(http, url, customer)
                    requests = int((await dep.ctl.stats())["total"])
                    samples.append((customer, status, took, sent, requests))
                    await asyncio.sleep(0.05)  # let the worker's log line reach the file
        finally:
            stop(api)
        held = _held(dep)
    counted = samples[1:]
    bad = [s for s in counted if s[1] != 200 or s[0] not in held]
    good = [s for s in counted if s[1] == 200 and s[0] in held]
    return {
        "n": len(counted),
        "bad": len(bad),
        "e2e": [s[2] for s in good],
        "held": [held[s[0]][1] - held[s[0]][0] for s in good],
        "overhead": [s[2] - (held[s[0]][1] - held[s[0]][0]) for s in good],
        # the two sides of the overhead (clocks of one machine): until the worker took the unit,
        # and from its release to the answer's last byte
        "before": [held[s[0]][0] - s[3] for s in good],
        "after": [s[3] + s[2] - held[s[0]][1] for s in good],
        "requests": [s[4] for s in good],
    }


def _ms(values: Sequence[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} | {percentile(values, 95) * 1000:.1f}"


def report(r: dict[str, Any]) -> str:
    reqs = r["requests"]
    stripe_wait = [q * LATENCY_MS / 1000 for q in reqs]
    over_stripe = [e - w for e, w in zip(r["e2e"], stripe_wait, strict=True)]
    return (
        f"{machine()}. {r['n']} customers one after another (one warm-up before, not counted), each "
        f"`POST /v1/sync {{\"customer_id\"}}` against the real `python -m api`, one `python -m worker`, "
        f"the fake Stripe answering each request after {LATENCY_MS} ms; Stripe requests per sync: "
        f"{min(reqs)}–{max(reqs)} (median {statistics.median(reqs):g}). Answers other than 200: {r['bad']}.\n\n"
        "| measure | median ms | p95 ms |\n|---|---|---|\n"
        f"| `POST /v1/sync` end to end | {_ms(r['e2e'])} |\n"
        f"| the worker's run (`sync.run` held interval) | {_ms(r['held'])} |\n"
        f"| **overhead** (end to end − run; target < 50 ms) | {_ms(r['overhead'])} |\n"
        f"| … of it: sending until the worker took the unit | {_ms(r['before'])} |\n"
        f"| … of it: the unit's release until the answer's last byte | {_ms(r['after'])} |\n"
        f"| end to end − {LATENCY_MS} ms × the sync's Stripe requests | {_ms(over_stripe)} |\n"
    )


def main(short: bool) -> None:
    n = 20 if short else 100
    load_before = os.getloadavg()
    started = time.monotonic()
    result = asyncio.run(run(n))
    body = report(result)
    body += f"\n{load_note(load_before, os.getloadavg())} Took {time.monotonic() - started:.0f} s.\n"
    print(body)
    append_results("`POST /v1/sync` overhead" + (" (short)" if short else ""),
                   "nice -n 5 python -m bench sync" + (" --short" if short else ""), body)


if __name__ == "__main__":
    main(False)

