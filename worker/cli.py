"""`entitled`: the operator's command line.

    entitled migrate                      apply the SQL migrations
    entitled resync --customer cus_...    sync one customer now, and show the result
    entitled resync --all                 sync every customer (progress, ETA; resumes if interrupted)
    entitled show --customer cus_... | --user u_...
    entitled events --failed              the ledger's failures, and the parked units
    entitled replay EVENT_ID | UNIT       process an event's customer (or a parked unit) again
    entitled endpoints add URL | list | remove ID, entitled deliveries --failed   outbound webhooks
    entitled run                          run everything (see worker/launcher.py)
    entitled worker | entitled ingest     one process of either kind

Commands that queue work need a worker running to carry it out (they wait for it, and say so).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared import db
from shared.bootstrap import Services, bootstrap
from shared.coordination import AcceptedEvent, Unit, is_stripe_id
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
        raise CliError(f"cannot reach Postgres at DATABASE_URL: {exc}") from None
    try:
        applied = await db.migrate(conn)
    finally:
        await conn.close()
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


async def _synced_at(ctx: Services, cid: str) -> datetime | None:
    value: datetime | None = await ctx.pool.fetchval(
        "SELECT synced_at FROM customer_sync WHERE customer_id = $1", cid
    )
    return value


async def resync_one(ctx: Services, cid: str) -> None:
    if not is_stripe_id(cid, prefix="cus_"):
        raise CliError(f"{cid!r} is not a Stripe customer id (cus_...)")
    before = datetime.now(UTC)
    await ctx.coordinator.accept(Unit.customer(cid), reason="resync", delay_ms=0, unpark=True)
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
        # Parked units are not retried (issue 18): each waits for `entitled replay UNIT`.
        print("\nparked units (not retried; `entitled replay UNIT` runs one again)\n" + _table(
            [(p.unit.wire, datetime.fromtimestamp(p.parked_at_ms / 1000, UTC)) for p in parked],
            ["unit", "parked"]))


async def cmd_replay(ctx: Services, event_id: str) -> None:
    parked = {p.unit.wire: p.unit for p in await ctx.coordinator.parked_units()}
    if event_id in parked:
        await ctx.coordinator.accept(parked[event_id], reason="replay", delay_ms=0, unpark=True)
        print(f"replaying parked unit {event_id}")
        return
    row = await ctx.pool.fetchrow("SELECT type, customer_id FROM event_ledger WHERE event_id = $1", event_id)
    if row is None:
        raise CliError(f"{event_id} is not in the ledger (only accepted events are), nor a parked unit")
    if not row["customer_id"]:
        raise CliError(f"{event_id} ({row['type']}) names no customer; `entitled events --failed` lists parked units")
    record = AcceptedEvent.now(event_id, row["type"], "replay")
    before = datetime.now(UTC)
    await ctx.coordinator.accept(Unit.customer(row["customer_id"]), event=record, reason=row["type"], delay_ms=0,
                                 unpark=True)
    print(f"replaying {event_id} ({row['type']}) for {row['customer_id']}")
    await wait_and_show(ctx, row["customer_id"], before)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="entitled", description="Keep an app's feature access in step with Stripe.")
    p.add_argument("--version", action="version", version=describe(),
                   help="print entitled's version, the stripe SDK's and the pinned Stripe API version")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the database migrations")
    r = sub.add_parser("resync", help="sync one customer, or all of them")
    group = r.add_mutually_exclusive_group(required=True)
    group.add_argument("--customer", metavar="CUS_ID")
    group.add_argument("--all", action="store_true")
    r.add_argument("--restart", action="store_true", help="with --all: start over instead of resuming")
    s = sub.add_parser("show", help="what we hold for a customer")
    group = s.add_mutually_exclusive_group(required=True)
    group.add_argument("--customer", metavar="CUS_ID")
    group.add_argument("--user", metavar="USER_ID")
    e = sub.add_parser("events", help="the event ledger")
    e.add_argument("--failed", action="store_true", required=True)
    e.add_argument("--limit", type=int, default=50)
    rp = sub.add_parser("replay", help="process an event's customer, or a parked unit, again")
    rp.add_argument("event_id", metavar="EVENT_ID|UNIT")
    run = sub.add_parser("run", help="run ingest and a worker (embedded Postgres/Redis and a demo when unconfigured)")
    run.add_argument("--exit-after-demo", action="store_true", help="stop once the demo has played")
    endpoints_cli.add_parsers(sub)  # outbound webhooks: endpoints, deliveries
    sub.add_parser("worker", help="run one worker process")
    sub.add_parser("ingest", help="run the webhook receiver")
    return p


async def dispatch(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "migrate":
        await cmd_migrate(settings, args)
        return
    try:
        async with bootstrap(settings, postgres=True, stripe_client=args.command == "resync" and args.all,
                             redis_timeout_s=5.0, coalesce=False) as ctx:
            await _run(args, ctx)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot reach Postgres at DATABASE_URL: {exc}") from None


async def _run(args: argparse.Namespace, ctx: Services) -> None:
    if args.command == "resync" and args.all:
        await resync_all(ctx, restart=args.restart)
    elif args.command == "resync":
        await resync_one(ctx, args.customer)
    elif args.command == "show":
        await show(ctx, customer=args.customer, user=args.user)
    elif args.command == "events":
        await cmd_events(ctx, limit=args.limit)
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
        settings = load(need_api_key=args.command == "resync" and bool(args.all))
        asyncio.run(dispatch(args, settings))
    except (SettingsError, CliError) as exc:
        print(f"entitled {args.command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"\nentitled {args.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
