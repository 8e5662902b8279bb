"""`python -m bench <name> [--short]`: run a benchmark and append its figures to docs/benchmarks.md.

    receiver   the webhook receiver against a bare aiohttp handler
    workers    1,000 checkout bursts through 1, 2 and 4 worker processes under a 25 req/s Stripe
    sweep      reconciliation of 10,000 customers against the rate-limit bound
    webhooks   outbound deliveries, one endpoint slow and one fast
    client     the Python client's cached check
    api        GET /v1/check against a bare aiohttp handler (wrk), p99 at 2,000 req/s
    console    the operator console: a customer page with 1,000 events, the overview's queries
    catalog    the catalog poll: requests and time for 10, 100, 1,000 products; attach to message
    cost       Redis / Postgres bytes, CPU, sweep, relay, resync per customer (--customers 1000,10000)
    sync       POST /v1/sync end to end against the worker's own run (fake Stripe at 100 ms)
    all        receiver, workers and sweep
"""

from __future__ import annotations

import argparse

# Each is a module of this package with `main(short: bool)` (cost and sweep also take `--customers`).
BENCHES = ("receiver", "workers", "sweep", "webhooks", "client", "api", "console", "catalog", "cost", "sync")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=[*BENCHES, "all"])
    parser.add_argument("--short", action="store_true", help="a quick run with smaller numbers")
    parser.add_argument("--customers", help="cost: the sizes, comma-separated (default 1000,10000); "
                        "sweep: one size (default 10000)")
    args = parser.parse_args()
    names = ["receiver", "workers", "sweep"] if args.name == "all" else [args.name]
    for name in names:
        module = __import__(f"bench.{name}", fromlist=["main"])
        if name in ("cost", "sweep"):
            module.main(args.short, args.customers)
        else:
            module.main(args.short)


if __name__ == "__main__":
    main()
