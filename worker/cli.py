"""`entitled`: the operator's command line.

    entitled migrate                      apply the SQL migrations
    entitled resync --customer cus_...    sync one customer now, and show the result
    entitled resync --all                 sync every customer (progress, ETA; resumes if interrupted)
    entitled show --customer cus_... | --user u_...
    entitled events [--failed]            recent events; the ledger's failures and the parked units
    entitled replay EVENT_ID | UNIT       process an event's customer (or a parked unit) again
    entitled connect URL                  create or update the Stripe webhook endpoint (worker/connect.py)
    entitled endpoints add URL | list | remove ID, entitled deliveries --failed   outbound webhooks
    entitled run                          run everything (see worker/launcher.py)
    entitled worker | entitled ingest     one process of either kind

Commands that queue work need a worker running to carry it out: they say so at once when none
is. While `entitled run` runs with embedded servers, the CLI finds them through the file it
writes (`.data/run.env`), unless DATABASE_URL / REDIS_URL are set.
A dependency that cannot be reached or used is one line naming its setting (shared/preflight.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import stripe
from redis.exceptions import RedisError

from shared import db, preflight, replay
from shared.bootstrap import Services, bootstrap
from shared.coordination import Unit, is_stripe_id
from shared.settings import Settings, SettingsError, load
from shared.stripe_api import StripeReader
from shared.version import describe
from worker import endpoints_cli

WAIT_FOR_SYNC_S = 60


class CliError(Exception):
    """A command cannot do what was asked; the message says why."""


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


async def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> None:
    try:
        conn = await db.connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(str(preflight.postgres_error(settings.database_url, exc))) from None
    try:
        applied = await db.migrate(conn)
    finally:
        await conn.close()
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


def data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """`.data` (or ENTITLED_DATA_DIR), where `entitled run` keeps its embedded servers."""
    return Path(environ.get("ENTITLED_DATA_DIR", ".data")).resolve()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def run_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The embedded servers' URLs a running `entitled run` wrote to `.data/run.env`, for the
    variables the environment does not set. A file left by a run that is gone (killed before it
    could remove it) is ignored: its first line names the launcher's pid."""
    path = data_dir(environ) / "run.env"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, str] = {}
    for line in lines:
        if line.startswith("# pid="):
            if not line.removeprefix("# pid=").isdigit() or not _alive(int(line.removeprefix("# pid="))):
                return {}
        elif "=" in line:
            name, value = line.split("=", 1)
            if name not in environ:
                found[name.lower()] = value
    return found


async def workers_running(ctx: Services) -> bool:
    """Whether some worker runs its job loop: each writes a health key (30 s lifetime) from it."""
    async for _ in ctx.redis.scan_iter(match=ctx.keys.health("*"), count=1000):
        return True
    return False


async def _need_worker(ctx: Services, what: str) -> None:
    if not await workers_running(ctx):
        raise CliError(f"{what} is queued, but no worker is running (none reports to REDIS_URL): start one with "
                       "`entitled worker` or `entitled run`; it will do it then")


async def _synced_at(ctx: Services, cid: str) -> datetime | None:
    value: datetime | None = await ctx.pool.fetchval(
        "SELECT synced_at FROM customer_sync WHERE customer_id = $1", cid
    )
    return value


async def resync_one(ctx: Services, cid: str) -> None:
    # a guest purchase's customer is its Checkout Session (docs/contract.md §5.1)
    if not (is_stripe_id(cid, prefix="cus_") or is_stripe_id(cid, prefix="cs_")):
        raise CliError(f"{cid!r} is not a Stripe customer id (cus_..., or a guest purchase's cs_...)")
    before = datetime.now(UTC)
    await replay.resync(ctx.coordinator, cid)
    await _need_worker(ctx, f"the sync of {cid}")
    await wait_and_show(ctx, cid, before)


async def wait_and_show(ctx: Services, cid: str, since: datetime) -> None:
    """Wait for a sync of `cid` that ended after `since`, then show the customer."""
    deadline = time.monotonic() + WAIT_FOR_SYNC_S
    while time.monotonic() < deadline:
        synced = await _synced_at(ctx, cid)
        if synced is not None and synced >= since:
            await show(ctx, customer=cid)
            return
        await asyncio.sleep(0.25)
    raise CliError(f"queued, but no worker synced {cid} within {WAIT_FOR_SYNC_S}s: is a worker running?")


class Progress:
    """A one-line progress bar with rate and ETA (a line every few seconds when not a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        self.total = total
        self.label = label
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_print = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and not self.tty and now - self.last_print < 5:
            return
        self.last_print = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        width = 30
        filled = int(width * done / self.total) if self.total else width
        eta_text = "?" if eta == float("inf") else f"{int(eta // 60)}m{int(eta % 60):02d}s"
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                f"{100 * done / max(self.total, 1):5.1f}%  {rate:6.1f}/s  ETA {eta_text}")
        print(("\r" if self.tty else "") + line, end="\n" if (final or not self.tty) else "", file=sys.stderr,
              flush=True)


async def _stripe_customer_ids(reader: StripeReader) -> list[str]:
    """Every customer Stripe lists (rate-limited like every other request)."""
    ids = []
    async for customer in reader.all_customers():
        ids.append(str(customer["id"]))
        if len(ids) % 1000 == 0:
            print(f"listing customers from Stripe: {len(ids)}", file=sys.stderr, flush=True)
    return ids


async def resync_all(ctx: Services, *, restart: bool, wait_s: float = 3600 * 6) -> int:
    pending = await ctx.pool.fetchval("SELECT count(*) FROM resync_items WHERE done_at IS NULL")
    if restart or not pending:
        await ctx.pool.execute("DELETE FROM resync_items")
        ids = set(await _stripe_customer_ids(ctx.reader))
        ids |= {r["customer_id"] for r in await ctx.pool.fetch("SELECT customer_id FROM customers")}
        await ctx.pool.executemany("INSERT INTO resync_items (customer_id) VALUES ($1) ON CONFLICT DO NOTHING",
                                   [(c,) for c in sorted(ids)])
        print(f"resync: {len(ids)} customers", file=sys.stderr)
    else:
        print(f"resync: resuming, {pending} customers left", file=sys.stderr)
    total = await ctx.pool.fetchval("SELECT count(*) FROM resync_items")
    todo = [r["customer_id"] for r in await ctx.pool.fetch(
        "SELECT customer_id FROM resync_items WHERE done_at IS NULL ORDER BY customer_id")]
    for chunk_start in range(0, len(todo), 500):
        chunk = todo[chunk_start:chunk_start + 500]
        # Before queueing: a sync may run and commit before this loop ends, and one that
        # finished before `enqueued_at` would never count as done.
        await ctx.pool.execute("UPDATE resync_items SET enqueued_at = now() WHERE customer_id = ANY($1::text[])", chunk)
        for cid in chunk:
            await ctx.coordinator.accept(Unit.customer(cid), reason="resync", delay_ms=0, unpark=True)
    if not await workers_running(ctx):
        print("resync: no worker is running yet; the customers are queued and wait for one "
              "(`entitled worker` or `entitled run`)", file=sys.stderr)
    progress = Progress(total, "resync")
    deadline = time.monotonic() + wait_s
    while True:
        await ctx.pool.execute(
            """
            UPDATE resync_items r SET done_at = s.synced_at FROM customer_sync s
            WHERE r.customer_id = s.customer_id AND r.done_at IS NULL AND s.synced_at >= r.enqueued_at
            """
        )
        done = await ctx.pool.fetchval("SELECT count(*) FROM resync_items WHERE done_at IS NOT NULL")
        if done >= total:
            progress.update(done, final=True)
            return int(done)
        progress.update(done)
        if time.monotonic() > deadline:
            raise CliError(f"{total - done} customers not synced yet; run `entitled resync --all` again to resume")
        await asyncio.sleep(1.0)


async def show(ctx: Services, *, customer: str | None = None, user: str | None = None) -> None:
    if user is not None:
        rows = await ctx.pool.fetch("SELECT customer_id FROM customers WHERE user_id = $1 ORDER BY customer_id", user)
        if not rows:
            raise CliError(f"no customer is mapped to user {user!r}")
        for row in rows:
            await show(ctx, customer=row["customer_id"])
        return
    assert customer is not None
    head = await ctx.pool.fetchrow(
        """
        SELECT c.customer_id, c.user_id, c.user_id_source, c.email, c.deleted, c.test_clock,
               s.version, s.synced_at, s.next_check_at, s.last_reason, s.stripe_features
        FROM customer_sync s LEFT JOIN customers c USING (customer_id) WHERE s.customer_id = $1
        """,
        customer,
    )
    if head is None:
        raise CliError(f"{customer} has never been synced (try `entitled resync --customer {customer}`)")
    print(f"customer  {customer}  user={_fmt(head['user_id'])} ({_fmt(head['user_id_source'])})  "
          f"email={_fmt(head['email'])}  deleted={head['deleted']}  clock={_fmt(head['test_clock'])}")
    print(f"version   {head['version']}  synced {_fmt(head['synced_at'])} ({_fmt(head['last_reason'])})  "
          f"next check {_fmt(head['next_check_at'])}")
    print(f"stripe's own entitlements: {', '.join(head['stripe_features']) or '-'}")
    subs = await ctx.pool.fetch(
        "SELECT subscription_id, status, current_period_end, trial_end, cancel_at, past_due_since, items"
        " FROM subscriptions WHERE customer_id = $1 ORDER BY subscription_id", customer)
    print("\nsubscriptions\n" + _table(
        [(s["subscription_id"], s["status"], s["current_period_end"], s["trial_end"], s["cancel_at"],
          s["past_due_since"], ",".join(sorted({i["product"] for i in s["items"]}))) for s in subs],
        ["id", "status", "period_end", "trial_end", "cancel_at", "past_due_since", "products"]))
    ents = await ctx.pool.fetch(
        "SELECT feature, valid_until, subscription_id, valid_until > now() AS active FROM entitlements"
        " WHERE customer_id = $1 ORDER BY feature", customer)
    print("\nentitlements\n" + _table(
        [(e["feature"], e["valid_until"], e["subscription_id"], "yes" if e["active"] else "expired") for e in ents],
        ["feature", "valid_until", "subscription", "active"]))
    events = await ctx.pool.fetch(
        "SELECT event_id, type, source, received_at, outcome, error FROM event_ledger WHERE customer_id = $1"
        " ORDER BY received_at DESC LIMIT 10", customer)
    print("\nrecent events\n" + _table(
        [(e["event_id"], e["type"], e["source"], e["received_at"], e["outcome"], (e["error"] or "")[:60])
         for e in events], ["id", "type", "source", "received", "outcome", "error"]))
    messages = await ctx.pool.fetch(
        "SELECT version, message, published_at FROM outbox WHERE customer_id = $1 ORDER BY version DESC LIMIT 5",
        customer)
    print("\nlast messages\n" + _table(
        [(m["version"], m["published_at"], m["message"]) for m in messages], ["version", "published", "message"]))


async def cmd_explain(ctx: Services, *, customer: str | None, user: str | None) -> None:
    from worker import explain_cli

    found = await explain_cli.explain(ctx.pool, customer=customer, user=user)
    if not found:
        raise CliError(f"no customer {customer!r} is known" if customer else f"no customer is mapped to user {user!r}")
    print("\n".join(found))


async def cmd_recent_events(ctx: Services, *, limit: int) -> None:
    rows = await ctx.pool.fetch(
        "SELECT event_id, type, source, customer_id, received_at, outcome FROM event_ledger"
        " ORDER BY received_at DESC LIMIT $1", limit)
    if not rows:
        print("no events yet")
        return
    print(_table([(r["event_id"], r["type"], r["source"], r["customer_id"], r["received_at"], r["outcome"])
                  for r in rows], ["id", "type", "source", "customer", "received", "outcome"]))


async def cmd_events(ctx: Services, *, limit: int) -> None:
    rows = await ctx.pool.fetch(
        "SELECT event_id, type, customer_id, received_at, attempts, error FROM event_ledger"
        " WHERE outcome = 'failed' ORDER BY received_at DESC LIMIT $1", limit)
    parked = await ctx.coordinator.parked_units(limit)
    if not rows and not parked:
        print("no failed events")
        return
    if rows:
        print(_table([(r["event_id"], r["type"], r["customer_id"], r["received_at"], r["attempts"], r["error"])
                      for r in rows], ["id", "type", "customer", "received", "attempts", "error"]))
    if parked:
        # Parked units are not retried: each waits for `entitled replay UNIT`.
        print("\nparked units (not retried; `entitled replay UNIT` runs one again)\n" + _table(
            [(p.unit.wire, datetime.fromtimestamp(p.parked_at_ms / 1000, UTC)) for p in parked],
            ["unit", "parked"]))


async def cmd_replay(ctx: Services, event_id: str) -> None:
    before = datetime.now(UTC)
    try:
        done = await replay.replay(ctx.pool, ctx.coordinator, event_id)
    except replay.ReplayError as exc:
        raise CliError(str(exc)) from None
    if done.event_type is None:
        print(f"replaying parked unit {event_id}")
        return
    print(f"replaying {event_id} ({done.event_type}) for {done.customer_id}")
    await _need_worker(ctx, f"the replay of {event_id}")
    assert done.customer_id is not None
    await wait_and_show(ctx, done.customer_id, before)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="entitled", description="Keep an app's feature access in step with Stripe.",
        epilog="Settings come from the environment and .env (README, Configuration). While `entitled run` "
               "runs embedded servers, the other commands find them by themselves.")
    p.add_argument("--version", action="version", version=describe(),
                   help="print entitled's version, the stripe SDK's and the pinned Stripe API version")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("migrate", help="apply the database migrations", description="Apply the SQL migrations "
                   "(idempotent; the worker applies them at start-up too).")
    r = sub.add_parser("resync", help="sync one customer, or all of them",
                       description="Sync customers from Stripe now; needs a worker running.")
    group = r.add_mutually_exclusive_group(required=True)
    group.add_argument("--customer", metavar="CUS_ID", help="sync this customer and show the result")
    group.add_argument("--all", action="store_true",
                       help="sync every customer Stripe lists or we hold (progress, ETA; resumes if interrupted)")
    r.add_argument("--restart", action="store_true", help="with --all: start over instead of resuming")
    s = sub.add_parser("show", help="what we hold for a customer",
                       description="Subscriptions, entitlements, recent events and last messages of a customer.")
    group = s.add_mutually_exclusive_group(required=True)
    group.add_argument("--customer", metavar="CUS_ID", help="a Stripe customer id")
    group.add_argument("--user", metavar="USER_ID", help="your app's user id: every customer mapped to it")
    x = sub.add_parser("explain", help="why a customer has the access it has, in words",
                       description="The access now (the public views) and the why the last sync recorded "
                       "(docs/contract.md section 5.3): each feature and limit, by what, until when.")
    group = x.add_mutually_exclusive_group(required=True)
    group.add_argument("--customer", metavar="CUS_ID", help="a Stripe customer id")
    group.add_argument("--user", metavar="USER_ID", help="your app's user id: every customer mapped to it")
    e = sub.add_parser("events", help="recent events, or the failed ones",
                       description="The event ledger: every accepted event and what became of it.")
    e.add_argument("--failed", action="store_true", help="only failed events, and the parked units")
    e.add_argument("--limit", type=int, default=50, metavar="N", help="at most N rows (default 50)")
    rp = sub.add_parser("replay", help="process an event's customer, or a parked unit, again",
                        description="Queue an accepted event's customer (or a parked unit) again.")
    rp.add_argument("event_id", metavar="EVENT_ID|UNIT", help="an event id of the ledger, or a unit of "
                    "`entitled events --failed`")
    c = sub.add_parser("connect", help="create or update the Stripe webhook endpoint for URL",
                       description="Create the webhook endpoint Stripe sends events to, pinned to entitled's "
                       "API version, with the event types entitled needs; run again, it updates the same "
                       "endpoint. The only command that writes to Stripe: STRIPE_API_KEY must be allowed to "
                       "manage webhook endpoints (a secret key, or a restricted key with "
                       "'Webhook Endpoints: write').")
    c.add_argument("url", metavar="URL", help="the public URL of ingest's /webhooks/stripe")
    c.add_argument("--env-file", type=Path, metavar="FILE",
                   help="also write STRIPE_WEBHOOK_SECRET=... to FILE (such as .env) when Stripe gives it")
    run = sub.add_parser("run", help="run everything (embedded Postgres/Redis and a demo when unconfigured)",
                         description="See `entitled run --help`.")
    run.add_argument("--poll", action="store_true", help="development: no webhooks, poll Stripe's Events API")
    run.add_argument("--exit-after-demo", action="store_true", help=argparse.SUPPRESS)
    endpoints_cli.add_parsers(sub)  # outbound webhooks: endpoints, deliveries
    sub.add_parser("worker", help="run one worker process", description="One arq worker (python -m worker).")
    sub.add_parser("ingest", help="run the webhook receiver", description="The receiver (python -m ingest).")
    return p


async def cmd_connect(settings: Settings, args: argparse.Namespace) -> None:
    from worker import connect  # the one module that writes to Stripe

    assert settings.stripe_api_key is not None
    http = stripe.AIOHTTPClient()
    client = stripe.StripeClient(settings.stripe_api_key, base_addresses={"api": settings.stripe_api_base},
                                 http_client=http, max_network_retries=2)
    try:
        done = await connect.connect(client, args.url)
    except connect.ConnectError as exc:
        raise CliError(str(exc)) from None
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
    print("\n".join(connect.report(done, args.url, args.env_file)))


async def dispatch(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "migrate":
        await cmd_migrate(settings, args)
        return
    if args.command == "connect":
        await cmd_connect(settings, args)
        return
    try:
        async with bootstrap(settings, postgres=True, stripe_client=args.command == "resync" and args.all,
                             redis_timeout_s=5.0, coalesce=False) as ctx:
            await _run(args, ctx)
    except RedisError as exc:  # redis-py wraps its socket errors: before OSError
        raise CliError(str(preflight.redis_error(settings.redis_url, exc))) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CliError(str(preflight.postgres_error(settings.database_url, exc))) from None
    except stripe.StripeError as exc:
        raise CliError(str(preflight.stripe_error(settings.stripe_api_base, exc))) from None


async def _run(args: argparse.Namespace, ctx: Services) -> None:
    if args.command == "resync" and args.all:
        await resync_all(ctx, restart=args.restart)
    elif args.command == "resync":
        await resync_one(ctx, args.customer)
    elif args.command == "show":
        await show(ctx, customer=args.customer, user=args.user)
    elif args.command == "explain":
        await cmd_explain(ctx, customer=args.customer, user=args.user)
    elif args.command == "events" and args.failed:
        await cmd_events(ctx, limit=args.limit)
    elif args.command == "events":
        await cmd_recent_events(ctx, limit=args.limit)
    elif args.command == "replay":
        await cmd_replay(ctx, args.event_id)
    elif args.command in endpoints_cli.COMMANDS:
        await endpoints_cli.run(args, ctx, CliError)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        # imported here: the launcher pulls in the embedded servers and the fake Stripe
        from worker.launcher import main as run_main

        run_main(argv[1:])
        return
    args = parser().parse_args(argv)
    if args.command in ("worker", "ingest"):
        module = __import__(f"{args.command}.__main__", fromlist=["main"])
        module.main()
        return
    try:
        needs_key = args.command == "connect" or (args.command == "resync" and bool(args.all))
        embedded: dict[str, Any] = run_env()
        settings = load(need_api_key=needs_key, **embedded)
        asyncio.run(dispatch(args, settings))
    except (SettingsError, CliError) as exc:
        print(f"entitled {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"\nentitled {args.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
