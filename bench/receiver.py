"""Benchmark 1: the receiver against a bare aiohttp handler, in the same run (issue 7).

    python -m bench receiver [--short]

(a) the real ingest (`python -m ingest`) with its own Redis, (b) a bare aiohttp handler that
returns 200 on the same body; both loaded by `bench/loadgen.py` in another process with signed
4-8 KB events: requests/s and p50/p99 at saturation, p50/p99 at a fixed 1,000 events/s, and the
peak RSS of each server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import append_results, peak_rss_mib, spawn, stop, wait_http, wait_port
from shared.embedded import RedisServer, free_port

SECRET = "whsec_bench_receiver_secret"


def load(url: str, mode: str, duration: float, extra: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--url", url, "--secret", SECRET, "--mode", mode,
         "--duration", str(duration), *extra],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(short: bool) -> str:
    duration = 3.0 if short else 15.0
    redis = RedisServer()
    redis.start()
    ingest_port, bare_port = free_port(), free_port()
    log_dir = Path(".data/bench")
    log_dir.mkdir(parents=True, exist_ok=True)
    ingest = spawn(["-m", "ingest"], {"PORT": str(ingest_port), "HOST": "127.0.0.1", "REDIS_URL": redis.url,
                                      "STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_API_KEY": "sk_test_bench",
                                      "LOG_FORMAT": "json"}, log_dir / "ingest.log")
    bare = spawn(["-m", "bench.bare_server", "--port", str(bare_port)], {})
    rows = []
    try:
        wait_http(f"http://127.0.0.1:{ingest_port}/healthz")
        wait_port(bare_port)
        targets = {"ingest + Redis": (ingest, ingest_port), "bare aiohttp": (bare, bare_port)}
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for name, (_proc, port) in targets.items():
            url = f"http://127.0.0.1:{port}/webhooks/stripe"
            load(url, "saturate", 1.0, ["--concurrency", "32"])  # warm-up
            results[name] = {
                "saturation": load(url, "saturate", duration, ["--concurrency", "64"]),
                "fixed": load(url, "rate", duration, ["--rate", "1000"]),
            }
        rss = {"ingest + Redis": peak_rss_mib(ingest.pid), "bare aiohttp": peak_rss_mib(bare.pid)}
        for name, res in results.items():
            sat, fixed = res["saturation"], res["fixed"]
            rows.append(
                f"| {name} | {sat['rps']:.0f} | {sat['p50_ms']:.2f} | {sat['p99_ms']:.2f} | "
                f"{fixed['rps']:.0f} | {fixed['p50_ms']:.2f} | {fixed['p99_ms']:.2f} | {rss[name]:.0f} | "
                f"{sat['statuses']} |"
            )
        ratio = results["ingest + Redis"]["saturation"]["rps"] / results["bare aiohttp"]["saturation"]["rps"]
    finally:
        stop(ingest)
        stop(bare)
        redis.close()
    table = "\n".join(
        [
            "| server | sat. req/s | sat. p50 ms | sat. p99 ms | 1000/s: req/s | 1000/s: p50 ms | 1000/s: p99 ms "
            "| peak RSS MiB | statuses |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    summary = (f"{table}\n\nIngest reaches {ratio:.0%} of the bare handler's throughput "
               f"(target ≥ 50%); {duration:.0f} s per phase, 64 connections at saturation.")
    return summary


def main(short: bool) -> None:
    summary = run(short)
    print(summary)
    append_results("Receiver" + (" (short)" if short else ""),
                   "python -m bench receiver" + (" --short" if short else ""), summary)
