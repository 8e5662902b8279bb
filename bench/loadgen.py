"""Load generator for the receiver benchmark, run in its own process.

Sends Stripe-sized (4-8 KB), correctly signed, distinct events to a URL, either as fast as the
server answers (closed loop, `--concurrency` in flight) or at a fixed rate (open loop: each
request is due at its scheduled time and its latency counts from then, so a slow server cannot
hide its queueing). Prints one JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from typing import Any

import aiohttp
import orjson

from tests.support.webhooks import sign


def payload(n: int, size: int, rng: random.Random) -> bytes:
    """A customer.subscription.updated event padded to about `size` bytes with realistic fields."""
    customer = f"cus_bench{rng.randrange(1000):05d}"
    items = [
        {"id": f"si_{n}_{i}", "object": "subscription_item", "current_period_start": 1763700000,
         "current_period_end": 1766300000, "quantity": 1, "metadata": {},
         "price": {"id": f"price_{i}", "object": "price", "product": f"prod_{i}", "unit_amount": 2000,
                   "currency": "usd", "recurring": {"interval": "month", "interval_count": 1}}}
        for i in range(2)
    ]
    event: dict[str, Any] = {
        "id": f"evt_bench_{n:09d}_{rng.randrange(10**9)}", "object": "event", "api_version": "2026-10-28.endive",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 1, "type": "customer.subscription.updated",
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": {"id": f"sub_{n}", "object": "subscription", "customer": customer, "status": "active",
                            "items": {"object": "list", "data": items, "has_more": False},
                            "metadata": {"note": ""}},
                 "previous_attributes": {"status": "trialing"}},
    }
    body = orjson.dumps(event)
    pad = max(0, size - len(body))
    event["data"]["object"]["metadata"]["note"] = "x" * pad
    return orjson.dumps(event)


def build(count: int, secret: str, seed: int) -> list[tuple[bytes, str]]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        body = payload(n, rng.randrange(4096, 8192), rng)
        out.append((body, sign(body, [secret])))
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def closed_loop(url: str, requests: list[tuple[bytes, str]], concurrency: int, duration_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    idx = 0
    stop_at = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal idx
            while time.perf_counter() < stop_at:
                body, header = requests[idx % len(requests)]
                idx += 1
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers={"Stripe-Signature": header,
                                                                 "Content-Type": "application/json"}) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"mode": "saturation", "requests": len(latencies), "seconds": round(elapsed, 2),
            "rps": round(len(latencies) / elapsed, 1), "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2), "statuses": statuses}


async def open_loop(url: str, requests: list[tuple[bytes, str]], rate: float, duration_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    total = int(rate * duration_s)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int, due: float) -> None:
            body, header = requests[n % len(requests)]
            async with session.post(url, data=body, headers={"Stripe-Signature": header,
                                                             "Content-Type": "application/json"}) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            latencies.append(time.perf_counter() - due)

        tasks = []
        start = time.perf_counter() + 0.1
        for n in range(total):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"mode": f"fixed {rate:.0f}/s", "requests": len(latencies), "seconds": round(elapsed, 2),
            "rps": round(len(latencies) / elapsed, 1), "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2), "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--mode", choices=["saturate", "rate"], required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    count = int(args.rate * args.duration) + 10 if args.mode == "rate" else 50_000
    requests = build(count, args.secret, args.seed)
    if args.mode == "saturate":
        result = asyncio.run(closed_loop(args.url, requests, args.concurrency, args.duration))
    else:
        result = asyncio.run(open_loop(args.url, requests, args.rate, args.duration))
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")


if __name__ == "__main__":
    main()
