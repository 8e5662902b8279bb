"""Benchmark: the catalog poll (`worker.catalog.poll`, every `RECONCILE_CATALOG_EVERY`).

    python -m bench catalog [--short]

Stripe fires no event when a feature is attached to a product (docs/contract.md §4), so the
poll is how subscribers learn of it. Two figures:

- **requests and time per poll** for 10, 100 and 1,000 products (`--short`: 10 and 100), each
  product with one monthly price and one feature, every product held by one customer (in
  subscriptions of 20 items, Stripe's most per subscription). The poll runs in this process with
  the Services a worker builds, against the fake Stripe as a separate process adding 100 ms to
  every request and allowing 25 requests/s, with the default `STRIPE_RATE_LIMIT` (20/s).
  Expected requests: ceil(products / 100) + ceil(prices / 100) + held products.
- **attach to message**: with `RECONCILE_CATALOG_EVERY` scaled down from `5m` to `10s` and two
  worker processes running, the wall time from attaching a new feature to one held product
  until the customer's `access-changed` message is on the stream. Expected: at most one
  interval plus one poll and one sync; half an interval on average.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import stripe
from stripe.params import SubscriptionCreateParamsItem

from bench.common import append_results, load_note
from bench.deployment import API_KEY, Deployment
from shared import logs
from shared.bootstrap import bootstrap
from shared.publishing import AccessChanged
from shared.settings import Settings
from worker import catalog

FAKE_RPS = 25.0
LATENCY_MS = 100
RATE_LIMIT = 20.0  # docs/contract.md §3's default
CATALOG_EVERY = "10s"
ITEMS_PER_SUBSCRIPTION = 20
FULL = (10, 100, 1000)
SHORT = (10, 100)


@dataclass
class PollFigures:
    products: int
    held: int
    requests: dict[str, int]
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.requests.values())


async def _populate(client: stripe.StripeClient, products: int) -> tuple[str, list[str]]:
    """`products` products, each with a price and a feature, all held by one customer."""
    sem = asyncio.Semaphore(16)

    async def one(n: int) -> tuple[str, str]:
        async with sem:
            product = await client.v1.products.create_async({"name": f"P{n}"})
            price = await client.v1.prices.create_async(
                {"product": product.id, "unit_amount": 100, "currency": "usd",
                 "recurring": {"interval": "month"}}
            )
            feature = await client.v1.entitlements.features.create_async(
                {"name": f"F{n}", "lookup_key": f"f{products}_{n}"}
            )
            await client.v1.products.features.create_async(product.id, {"entitlement_feature": feature.id})
            return product.id, price.id

    made = await asyncio.gather(*(one(n) for n in range(products)))
    customer = await client.v1.customers.create_async({
        "payment_method": "pm_card_visa",
        "invoice_settings": {"default_payment_method": "pm_card_visa"},
    })
    prices = [price for _, price in made]
    for start in range(0, len(prices), ITEMS_PER_SUBSCRIPTION):
        items: list[SubscriptionCreateParamsItem] = [
            {"price": p} for p in prices[start : start + ITEMS_PER_SUBSCRIPTION]
        ]
        await client.v1.subscriptions.create_async({"customer": customer.id, "items": items})
    return customer.id, [product for product, _ in made]


async def _poll_once(dep: Deployment, products: int) -> PollFigures:
    settings = Settings(
        database_url=dep.database_url,
        redis_url=dep.redis_server.url,
        stripe_api_key=API_KEY,
        stripe_api_base=dep.fake_url,
        stripe_rate_limit=RATE_LIMIT,
        log_format="json",
        log_level="WARNING",
    )
    async with bootstrap(settings, postgres=True, stripe_client=True) as services:
        await dep.ctl.set_api_faults(latency_ms=LATENCY_MS, rps_limit=FAKE_RPS)
        await dep.ctl.reset_stats()
        started = time.monotonic()
        result = await catalog.poll(services.pool, services.reader)
        seconds = time.monotonic() - started
        stats = await dep.ctl.stats()
        await dep.ctl.clear_api_faults()
    return PollFigures(products, result.held, {k: int(v["count"]) for k, v in stats["routes"].items()}, seconds)


async def _attach_to_message(dep: Deployment, customer: str, product: str, key: str) -> float:
    feature = await dep.stripe.v1.entitlements.features.create_async({"name": "New", "lookup_key": key})
    before = len(await dep.redis.xrange(dep.keys.stream))
    started = time.monotonic()
    await dep.stripe.v1.products.features.create_async(product, {"entitlement_feature": feature.id})
    while time.monotonic() - started < 120:
        entries = await dep.redis.xrange(dep.keys.stream)
        for _id, fields in entries[before:]:
            message = AccessChanged.from_json(fields[b"data"])
            if message.customer_id == customer and key in message.added:
                return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise RuntimeError("no access-changed message within 120 s")


async def run_benchmark(sizes: tuple[int, ...]) -> tuple[list[PollFigures], list[float]]:
    polls: list[PollFigures] = []
    latencies: list[float] = []
    for size in sizes:
        env = {"RECONCILE_CATALOG_EVERY": CATALOG_EVERY, "STRIPE_RATE_LIMIT": "200",
               "STRIPE_ENDPOINT_RATE_LIMIT": "200"}
        async with Deployment(f"catalog-{size}", workers=2, worker_env=env) as dep:
            customer, products = await _populate(dep.stripe, size)
            await dep.settle(timeout_s=600)
            if size == sizes[0]:
                for run in range(3):
                    latencies.append(await _attach_to_message(dep, customer, products[run], f"new_{run}"))
                    await dep.settle(timeout_s=120)
            dep.stop_workers()
            await asyncio.sleep(0.5)
            polls.append(await _poll_once(dep, size))
    return polls, latencies


def report(polls: list[PollFigures], latencies: list[float]) -> str:
    rows = []
    for p in polls:
        by = ", ".join(f"`{k}` {v}" for k, v in sorted(p.requests.items()))
        rows.append(f"| {p.products} | {p.held} | {p.total} ({by}) | {p.seconds:.1f} | {p.total / RATE_LIMIT:.1f} |")
    table = "\n".join([
        "| products | held | requests per poll (by endpoint) | poll s | bound s (requests / 20 per s) |",
        "|---|---|---|---|---|",
        *rows,
    ])
    lat = ", ".join(f"{s:.1f}" for s in latencies)
    return (
        f"{table}\n\n"
        f"The fake adds {LATENCY_MS} ms per request and allows {FAKE_RPS:.0f}/s; `STRIPE_RATE_LIMIT={RATE_LIMIT:g}`. "
        f"Attach to `access-changed` with `RECONCILE_CATALOG_EVERY={CATALOG_EVERY}` (default `5m`), 2 workers, "
        f"{polls[0].products} products held, no API faults: {lat} s (3 runs). Scaled to the default, the wait is "
        f"the time to the next poll (0–5 min, 2.5 min on average) plus one poll and the holders' syncs."
    )


def main(short: bool) -> None:
    logs.configure("console", "WARNING")
    load_before = os.getloadavg()
    polls, latencies = asyncio.run(run_benchmark(SHORT if short else FULL))
    summary = report(polls, latencies) + "\n\n" + load_note(load_before, os.getloadavg())
    print(summary)
    append_results("Catalog poll" + (" (short)" if short else ""),
                   "python -m bench catalog" + (" --short" if short else ""), summary)
