"""Benchmark 1: the receiver against a bare aiohttp handler, side by side in one run.

    python -m bench receiver [--short]

(a) the real ingest (`python -m ingest`) with its own Redis, (b) a bare aiohttp handler that
reads the body and returns 200 (`bench/bare_server.py`), both up for the whole run.

- **Saturation**, by `wrk` (Debian's `wrk`: C, so the load generator is not what saturates; the
  first release's Python generator measured the bare handler at half its speed): 2 threads, 32
  connections, distinct signed 5 KB events read from a file by `bench/wrk_events.lua` (wrk's
  Lua has no fast HMAC). The two servers take turns, `ROUNDS` times each, so a busy spell on
  this shared machine falls on both; the ratio is of the medians, and each round's ratio is
  shown too.
- **1,000 events/s**: p50/p99 by `bench/loadgen.py` (open loop: each request is due at its
  time and its latency counts from then), at a rate Python keeps up with.
- Peak RSS of each server.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import append_results, load_note, peak_rss_mib, spawn, stop, wait_http, wait_port
from bench.loadgen import payload
from shared.embedded import RedisServer, free_port
from tests.support.webhooks import sign

SECRET = "whsec_bench_receiver_secret"
LUA = Path(__file__).parent / "wrk_events.lua"
THREADS, CONNECTIONS, EVENT_BYTES = 2, 32, 5120
INGEST, BARE = "ingest + Redis", "bare aiohttp"


def write_events(path: Path, count: int, seed: int) -> None:
    """`count` distinct 5 KB events, signed now (the receiver accepts 5 minutes either side)."""
    rng = random.Random(seed)
    with path.open("wb") as f:
        for n in range(count):
            body = payload(n, EVENT_BYTES, rng)
            f.write(sign(body, [SECRET]).encode() + b"\t" + body + b"\n")


def wrk(url: str, events: Path, duration_s: float) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration_s:g}s", "--timeout", "5s", "-s", str(LUA),
         url, "--", str(events), str(THREADS)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def fixed_rate(url: str, duration_s: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--url", url, "--secret", SECRET, "--mode", "rate",
         "--duration", str(duration_s), "--rate", "1000"],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(short: bool) -> str:
    if shutil.which("wrk") is None:
        raise SystemExit("the receiver benchmark needs wrk: apt-get install -y wrk")
    duration, rounds, pool = (3.0, 1, 40_000) if short else (8.0, 3, 150_000)
    redis = RedisServer()
    redis.start()
    ingest_port, bare_port = free_port(), free_port()
    log_dir = Path(".data/bench")
    log_dir.mkdir(parents=True, exist_ok=True)
    ingest = spawn(["-m", "ingest"], {"PORT": str(ingest_port), "HOST": "127.0.0.1", "REDIS_URL": redis.url,
                                      "STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_API_KEY": "sk_test_bench",
                                      "LOG_FORMAT": "json"}, log_dir / "ingest.log")
    bare = spawn(["-m", "bench.bare_server", "--port", str(bare_port)], {})
    urls = {INGEST: f"http://127.0.0.1:{ingest_port}/webhooks/stripe",
            BARE: f"http://127.0.0.1:{bare_port}/webhooks/stripe"}
    sat: dict[str, list[dict[str, Any]]] = {INGEST: [], BARE: []}
    fixed: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.tsv"
        try:
            wait_http(f"http://127.0.0.1:{ingest_port}/healthz")
            wait_port(bare_port)
            for r in range(rounds + 1):  # round 0 warms both up and is not counted
                for name, url in urls.items():
                    write_events(events, pool if r else 5000, seed=1000 * r + len(name))
                    result = wrk(url, events, duration if r else 1.0)
                    if r:
                        result["wrapped"] = result["requests"] > pool
                        sat[name].append(result)
            for name, url in urls.items():
                fixed[name] = fixed_rate(url, duration)
            rss = {INGEST: peak_rss_mib(ingest.pid), BARE: peak_rss_mib(bare.pid)}
        finally:
            stop(ingest)
            stop(bare)
            redis.close()
    return report(sat, fixed, rss, duration, pool)


def report(sat: dict[str, list[dict[str, Any]]], fixed: dict[str, dict[str, Any]], rss: dict[str, float],
           duration: float, pool: int) -> str:
    rows = []
    medians = {name: statistics.median(r["rps"] for r in runs) for name, runs in sat.items()}
    for name, runs in sat.items():
        mid = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
        rounds = " / ".join(f"{r['rps']:.0f}" for r in runs)
        bad = sum(r["non2xx"] + r["errors"] for r in runs)
        f = fixed[name]
        rows.append(
            f"| {name} | {medians[name]:.0f} ({rounds}) | {mid['p50_ms']:.2f} | {mid['p99_ms']:.2f} | {bad} | "
            f"{f['rps']:.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {rss[name]:.0f} |"
        )
    ratios = " / ".join(f"{i['rps'] / b['rps']:.2f}" for i, b in zip(sat[INGEST], sat[BARE], strict=True))
    wrapped = any(r["wrapped"] for r in sat[INGEST])
    table = "\n".join([
        "| server | sat. req/s: median (rounds) | sat. p50 ms | sat. p99 ms | non-2xx + errors "
        "| 1000/s: req/s | 1000/s: p50 ms | 1000/s: p99 ms | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    return (
        f"{table}\n\nIngest reaches **{medians[INGEST] / medians[BARE]:.2f}** of the bare handler's throughput "
        f"(ratio of the medians; each round: {ratios}; target ≥ 0.5). Saturation: `wrk -t{THREADS} "
        f"-c{CONNECTIONS} -d{duration:g}s` with `bench/wrk_events.lua`, distinct signed {EVENT_BYTES // 1024} KB "
        f"events ({pool} per round"
        + (", some sent twice: the round outran them" if wrapped else ", none sent twice to ingest")
        + "), the two servers taking turns; 1000/s: `bench/loadgen.py --mode rate`, "
        f"{duration:g} s. The machine is shared with other work: only figures of one run compare."
    )


def main(short: bool) -> None:
    load_before = os.getloadavg()
    started = time.monotonic()
    summary = run(short)
    summary += f"\n\n{load_note(load_before, os.getloadavg())} Took {time.monotonic() - started:.0f} s."
    print(summary)
    append_results("Receiver" + (" (short)" if short else ""),
                   "python -m bench receiver" + (" --short" if short else ""), summary)
