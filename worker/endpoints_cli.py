"""`entitled endpoints add URL | list | remove ID` and `entitled deliveries --failed`
(outbound webhooks, docs/contract.md §10). Kept apart from worker/cli.py, which only wires it in."""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg
import orjson

from shared.bootstrap import Services
from shared.publishing import endpoints

COMMANDS = ("endpoints", "deliveries")


def add_parsers(sub: Any) -> None:
    """Add the two commands to `entitled`'s subparsers."""
    ep = sub.add_parser("endpoints", help="outbound webhook endpoints (Standard Webhooks)")
    ep_sub = ep.add_subparsers(dest="endpoints_command", required=True)
    add = ep_sub.add_parser("add", help="add an endpoint; prints {id, url, secret} as one JSON line")
    add.add_argument("url", help="the https:// URL that receives the signed messages")
    ep_sub.add_parser("list", help="the endpoints, with their pending, delivered and failed deliveries")
    rm = ep_sub.add_parser("remove", help="stop delivering to an endpoint (what it is owed is canceled)")
    rm.add_argument("endpoint_id", metavar="ID", help="an id of `entitled endpoints list`")
    dl = sub.add_parser("deliveries", help="outbound webhook deliveries given up on")
    dl.add_argument("--failed", action="store_true", required=True, help="only deliveries given up on")
    dl.add_argument("--limit", type=int, default=50, metavar="N", help="at most N rows (default 50)")


async def run(args: argparse.Namespace, ctx: Services, error: type[Exception]) -> None:
    """Run `endpoints ...` or `deliveries --failed`; refusals raise `error` (the CLI's error type)."""
    from worker.cli import _table  # the CLI's table format; imported late, cli imports this module

    try:
        if args.command == "deliveries":
            rows = await endpoints.failed_deliveries(ctx.pool, args.limit)
            print(_table([(r["endpoint_id"], r["customer_id"], r["version"], r["message_id"], r["attempts"],
                           r["created_at"], r["last_attempt_at"], r["last_error"]) for r in rows],
                         ["endpoint", "customer", "version", "message", "attempts", "created", "last try",
                          "error"]) if rows else "no failed deliveries")
        elif args.endpoints_command == "add":
            made = await endpoints.add(ctx.pool, args.url)
            print(orjson.dumps({"id": made.id, "url": made.url, "secret": made.secret}).decode())
        elif args.endpoints_command == "remove":
            await endpoints.remove(ctx.pool, args.endpoint_id)
            print(f"removed {args.endpoint_id}")
        else:
            found = await endpoints.stats(ctx.pool)
            print(_table([(s.endpoint.id, s.endpoint.url, s.created_at, s.pending, s.delivered, s.failed,
                           (s.last_error or "")[:60]) for s in found],
                         ["id", "url", "created", "pending", "delivered", "failed", "last error"])
                  if found else "no endpoints (add one with `entitled endpoints add URL`)")
    except endpoints.EndpointError as exc:
        raise error(str(exc)) from None
    except asyncpg.UndefinedTableError:
        raise error("the database lacks the webhook tables: run `entitled migrate`") from None
