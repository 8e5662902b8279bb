"""A client's cached `check` (issue figure: < 5 µs): `python -m bench client [--short]`.

The Python client of clients/python, its cache filled with 10,000 users as `GET /v1/access`
answers them (three grants each, one with a `valid_until`); then N checks of random users and
features, both the memory-only `cached()` and `await check()` (the public path: from memory when
the entry lives). No network is involved once filled: that is what "cached" means. Reported:
the mean per call over the whole loop (with the loop's own cost), best of five rounds.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

from entitled_client import EntitledClient
from entitled_client.cache import entry_from_access

from bench.common import append_results

USERS = 10_000
FEATURES = ["pro", "export", "seats", "api", "sso"]


def fill(client: EntitledClient) -> None:
    until = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    for n in range(USERS):
        user = f"u_{n}"
        grants = [{"feature": f, "quantity": 1, "valid_until": until if i == 0 else None,
                   "customer_id": f"cus_{n}", "source": "sub_1"} for i, f in enumerate(FEATURES[:3])]
        body = {"customer_ids": [f"cus_{n}"], "user_id": user, "features": FEATURES[:3], "grants": grants,
                "limits": {}, "limit_grants": [], "versions": {f"cus_{n}": 1}}
        client.cache.store(entry_from_access(user, body, max_age_s=3600, now=time.monotonic(),
                                             wall_now=time.time()))


async def measure(n: int) -> tuple[float, float, float]:
    client = EntitledClient("http://127.0.0.1:9", "unused", when_unreachable="deny")
    fill(client)
    rng = random.Random(1)
    pairs = [(f"u_{rng.randrange(USERS)}", rng.choice(FEATURES)) for _ in range(n)]
    cached = client.cached
    check = client.check

    def loop_only() -> float:
        t = time.perf_counter()
        for _user, _feature in pairs:
            pass
        return time.perf_counter() - t

    def sync_round() -> float:
        t = time.perf_counter()
        for user, feature in pairs:
            cached(user, feature)
        return time.perf_counter() - t

    async def async_round() -> float:
        t = time.perf_counter()
        for user, feature in pairs:
            await check(user, feature)
        return time.perf_counter() - t

    assert all(cached(u, f) is not None for u, f in pairs[:100])
    best_loop = min(loop_only() for _ in range(5))
    best_sync = min(sync_round() for _ in range(5))
    best_async = min([await async_round() for _ in range(5)])
    return best_loop / n * 1e6, best_sync / n * 1e6, best_async / n * 1e6


def main(short: bool) -> None:
    n = 100_000 if short else 1_000_000
    loop_us, sync_us, async_us = asyncio.run(measure(n))
    body = (
        "| call | µs per call | target |\n|---|---|---|\n"
        f"| `client.cached(user, feature)` | {sync_us:.3f} | < 5 |\n"
        f"| `await client.check(user, feature)` (entry alive) | {async_us:.3f} | < 5 |\n"
        f"| the bare `for` loop, for scale | {loop_us:.3f} | |\n\n"
        f"{n:,} calls over {USERS:,} cached users and {len(FEATURES)} features (two of them not "
        "granted), best of five rounds (`bench/client.py`)."
    )
    print(body)
    append_results("Python client, cached check" + (" (short)" if short else ""),
                   "python -m bench client" + (" --short" if short else ""), body)
