"""Run the fake Stripe as a command.

    python -m fakestripe --port 12111 --api-key sk_test_x \
        --webhook http://127.0.0.1:8080/webhooks/stripe --webhook-secret whsec_test

Prints one JSON line once it accepts requests: `{"base_url", "api_keys", "webhook_endpoints":
[{"id", "url", "secret"}]}`, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .clock import RETRY_EXHAUSTED_ACTIONS, Settings
from .server import DEFAULT_API_KEY, FakeStripe


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="entitled-fake-stripe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help=f"accepted secret key (repeatable; default {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--webhook",
        action="append",
        default=[],
        help="endpoint URL receiving every event (repeatable)",
    )
    parser.add_argument(
        "--webhook-secret",
        action="append",
        default=[],
        help="whsec_... for the --webhook of the same position",
    )
    parser.add_argument(
        "--thin",
        action="store_true",
        help="send thin (v2.core.event) payloads to --webhook endpoints",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for ids and fault randomness")
    parser.add_argument(
        "--tick-interval", type=float, default=0.2, help="seconds between global-clock ticks"
    )
    parser.add_argument(
        "--finalize-delay", type=int, default=3600, help="seconds from renewal to charge"
    )
    parser.add_argument(
        "--retry-schedule", default="3,5,7", help="days after the first failure, comma-separated"
    )
    parser.add_argument("--retry-exhausted", choices=RETRY_EXHAUSTED_ACTIONS, default="cancel")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if len(args.webhook_secret) > len(args.webhook):
        parser.error("more --webhook-secret than --webhook")
    try:
        args.retry_days = [float(d) for d in args.retry_schedule.split(",") if d.strip()]
    except ValueError:
        parser.error("--retry-schedule must be numbers of days, comma-separated")
    return args


async def serve(args: argparse.Namespace) -> None:
    settings = Settings(
        invoice_finalize_delay_s=args.finalize_delay,
        retry_schedule_days=args.retry_days,
        retry_exhausted_action=args.retry_exhausted,
    )
    fake = FakeStripe(
        api_keys=args.api_keys or [DEFAULT_API_KEY],
        settings=settings,
        seed=args.seed,
        tick_interval_s=args.tick_interval,
    )
    endpoints = []
    for index, url in enumerate(args.webhook):
        secret = args.webhook_secret[index] if index < len(args.webhook_secret) else None
        endpoints.append(fake.add_webhook_endpoint(url, secret=secret, thin=args.thin))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with fake.running(args.host, args.port) as running:
        print(
            json.dumps(
                {
                    "base_url": running.base_url,
                    "api_keys": sorted(fake.fake.api_keys),
                    "webhook_endpoints": [
                        {"id": e.id, "url": e.url, "secret": e.secret} for e in endpoints
                    ],
                }
            ),
            flush=True,
        )
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
