"""The app-facing API's `GET /v1/check` against a bare aiohttp handler, side by side with `wrk`.

    python -m bench api [--short]

(a) the real API (`python -m api`, log level INFO: one `api.request` line per request, as
deployed) on a fresh database holding 10,000 users with a grant each and its own Redis, (b) a bare
aiohttp handler answering the same JSON without looking anything up (`bench/bare_server.py`).
Both are up for the whole run; `wrk` (Debian's, C) loads them in turns, as `bench/receiver.py`
does for ingest:

- **Saturation**: 2 threads, 32 connections, random users (`bench/wrk_check.lua`), `ROUNDS`
  turns each after a warm-up; the ratio is of the medians (target ≥ 0.5).
- **2,000 req/s**: wrk's connections each pause between requests (`delay()` in the Lua script),
  which paces the run at about connections / pause; the pause is calibrated once so that the
  achieved rate reaches 2,000/s, and the achieved rate is reported beside p50/p99 (target p99
  < 5 ms). wrk measures each request from its sending, so this is the service time under that
  load, not an open-loop latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import append_results, load_note, peak_rss_mib, spawn, stop, wait_http, wait_port
from bench.deployment import create_database, drop_database
from shared import db
from shared.embedded import RedisServer, free_port

LUA = Path(__file__).parent / "wrk_check.lua"
TOKEN = "bench-api-token-0123456789"
USERS = 10_000
THREADS, CONNECTIONS = 2, 32
PACED_CONNECTIONS, RATE = 20, 2000
API, BARE = "API (Postgres)", "bare aiohttp"


async def seed(url: str) -> None:
    pool = await db.create_pool(url)
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn)
        ids = [(f"cus_{n}", f"u_{n}") for n in range(USERS)]
        await pool.executemany("INSERT INTO customers (customer_id, user_id) VALUES ($1, $2)", ids)
        await pool.executemany(
            "INSERT INTO entitlements (customer_id, feature, valid_until, subscription_id, quantity)"
            " VALUES ($1, 'pro', 'infinity', 'sub_1', 1)", [(c,) for c, _ in ids])
        await pool.executemany("INSERT INTO customer_sync (customer_id, version) VALUES ($1, 1)",
                               [(c,) for c, _ in ids])
        await pool.execute("ANALYZE")
    finally:
        await pool.close()


def wrk(url: str, duration_s: float, *, connections: int, pause_ms: float = 0) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{connections}", f"-d{duration_s:g}s", "--timeout", "5s", "-s", str(LUA),
         "-H", f"Authorization: Bearer {TOKEN}", url, "--", str(USERS), f"{pause_ms:g}"],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def paced(url: str, duration_s: float) -> dict[str, Any]:
    """A run at about `RATE` req/s: a short calibration of the pause, then the measured run."""
    pause = PACED_CONNECTIONS * 1000 / RATE
    probe = wrk(url, 2.0, connections=PACED_CONNECTIONS, pause_ms=pause)
    # Each connection's cycle is pause + service time: take the service time out of the pause.
    pause = max(0.0, pause - (PACED_CONNECTIONS / probe["rps"] * 1000 - pause))
    result = wrk(url, duration_s, connections=PACED_CONNECTIONS, pause_ms=round(pause, 2))
    result["pause_ms"] = pause
    return result


def run(short: bool) -> str:
    if shutil.which("wrk") is None:
        raise SystemExit("the API benchmark needs wrk: apt-get install -y wrk")
    duration, rounds = (3.0, 1) if short else (8.0, 3)
    redis = RedisServer()
    redis.start()
    database = asyncio.run(create_database())
    asyncio.run(seed(database))
    api_port, bare_port = free_port(), free_port()
    log_dir = Path(".data/bench")
    log_dir.mkdir(parents=True, exist_ok=True)
    api = spawn(["-m", "api"], {"API_PORT": str(api_port), "HOST": "127.0.0.1", "REDIS_URL": redis.url,
                                "DATABASE_URL": database, "API_TOKENS": f"bench:{TOKEN}", "LOG_FORMAT": "json",
                                "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}, log_dir / "api.log")
    bare = spawn(["-m", "bench.bare_server", "--port", str(bare_port)], {})
    urls = {API: f"http://127.0.0.1:{api_port}/v1/check", BARE: f"http://127.0.0.1:{bare_port}/v1/check"}
    sat: dict[str, list[dict[str, Any]]] = {API: [], BARE: []}
    fixed: dict[str, dict[str, Any]] = {}
    try:
        wait_http(f"http://127.0.0.1:{api_port}/healthz")
        wait_port(bare_port)
        for r in range(rounds + 1):  # round 0 warms both up and is not counted
            for name, url in urls.items():
                result = wrk(url, duration if r else 1.0, connections=CONNECTIONS)
                if r:
                    sat[name].append(result)
        for name, url in urls.items():
            fixed[name] = paced(url, duration * 2)
        rss = {API: peak_rss_mib(api.pid), BARE: peak_rss_mib(bare.pid)}
    finally:
        stop(api)
        stop(bare)
        redis.close()
        asyncio.run(drop_database(database))
    return report(sat, fixed, rss, duration)


def report(sat: dict[str, list[dict[str, Any]]], fixed: dict[str, dict[str, Any]], rss: dict[str, float],
           duration: float) -> str:
    medians = {name: statistics.median(r["rps"] for r in runs) for name, runs in sat.items()}
    rows = []
    for name, runs in sat.items():
        mid = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
        bad = sum(r["non2xx"] + r["errors"] for r in runs)
        f = fixed[name]
        each = " / ".join(f"{r['rps']:.0f}" for r in runs)
        rows.append(
            f"| {name} | {medians[name]:.0f} ({each}) | {mid['p50_ms']:.2f} "
            f"| {mid['p99_ms']:.2f} | {bad + f['non2xx'] + f['errors']} | {f['rps']:.0f} | {f['p50_ms']:.2f} "
            f"| {f['p99_ms']:.2f} | {f['max_ms']:.1f} | {rss[name]:.0f} |"
        )
    ratios = " / ".join(f"{a['rps'] / b['rps']:.2f}" for a, b in zip(sat[API], sat[BARE], strict=True))
    table = "\n".join([
        "| server | sat. req/s: median (rounds) | sat. p50 ms | sat. p99 ms | non-2xx + errors | paced req/s "
        "| paced p50 ms | paced p99 ms | paced max ms | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    return (
        f"{table}\n\n`GET /v1/check` reaches **{medians[API] / medians[BARE]:.2f}** of the bare handler's "
        f"throughput (ratio of the medians; each round: {ratios}; target ≥ 0.5); at "
        f"**{fixed[API]['rps']:.0f} req/s** its p99 is **{fixed[API]['p99_ms']:.2f} ms** (target < 5 ms at "
        f"2,000/s). Saturation: `wrk -t{THREADS} -c{CONNECTIONS} -d{duration:g}s -s bench/wrk_check.lua`, "
        f"{USERS:,} users with one grant each, random users; paced: `-c{PACED_CONNECTIONS}` with a pause of "
        f"{fixed[API]['pause_ms']:.2f} ms per connection between requests (calibrated to {RATE}/s), "
        f"{duration * 2:g} s. The machine is shared with other work: only figures of one run compare."
    )


def main(short: bool) -> None:
    load_before = os.getloadavg()
    started = time.monotonic()
    summary = run(short)
    summary += f"\n\n{load_note(load_before, os.getloadavg())} Took {time.monotonic() - started:.0f} s."
    print(summary)
    append_results("API `GET /v1/check`" + (" (short)" if short else ""),
                   "python -m bench api" + (" --short" if short else ""), summary)
