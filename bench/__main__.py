"""`python -m bench <name> [--short]`: run a benchmark and append its figures to docs/benchmarks.md.

    receiver   the webhook receiver against a bare aiohttp handler
    workers    1,000 checkout bursts through 1, 2 and 4 worker processes under a 25 req/s Stripe
    sweep      reconciliation of 10,000 customers against the rate-limit bound
    cost       Redis / Postgres bytes, CPU, sweep, relay, resync per customer (--customers 1000,10000)
    all        all three
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=["receiver", "workers", "sweep", "webhooks", "cost", "all"])
    parser.add_argument("--short", action="store_true", help="a quick run with smaller numbers")
    parser.add_argument("--customers", help="cost: the sizes, comma-separated (default 1000,10000)")
    args = parser.parse_args()
    names = ["receiver", "workers", "sweep"] if args.name == "all" else [args.name]
    for name in names:
        module = __import__(f"bench.{name}", fromlist=["main"])
        if name == "cost":
            module.main(args.short, args.customers)
        else:
            module.main(args.short)


if __name__ == "__main__":
    main()
