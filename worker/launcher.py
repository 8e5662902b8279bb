"""`entitled run`: the whole service in one command, for a first look and for development.

- DATABASE_URL unset: an embedded Postgres under `.data/postgres` (ENTITLED_DATA_DIR moves it).
- REDIS_URL unset: a redis-server under `.data/redis`, with an append-only file.
- STRIPE_API_KEY unset: the fake Stripe, in demo mode: it plays SPEC scenarios on test clocks
  while a readable timeline shows each event received, each sync and each access-changed
  message. With real settings it runs for real (ingest + one worker) and prints their logs.
- Both ways the app-facing API (`python -m api`) runs too, on API_PORT; without API_TOKENS a
  token `local:<random>` is made for this run and printed.
- Ctrl-C (or SIGTERM) stops everything it started and leaves nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import stripe
from redis.asyncio import Redis

from shared import db
from shared.coordination import Keys
from shared.embedded import EmbeddedError, RedisServer, free_port, start_postgres
from shared.publishing import AccessChanged, channel_messages
from shared.settings import Settings, SettingsError, load

DEMO_KEY = "sk_test_entitled_demo"
STOP_GRACE_S = 15.0


class LaunchError(Exception):
    """`entitled run` cannot start; the message says why and what to do."""


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


class Timeline:
    """Turns the children's JSON log lines and the access-changed channel into readable lines."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out

    def say(self, text: str) -> None:
        self.out(text)

    def log_line(self, source: str, raw: bytes) -> None:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(record, dict):
            return
        event = record.get("event")
        if event == "ingest.queued":
            self.out(f"{_now()}  webhook   {record.get('event_type', '?'):<48} → queued for {record.get('unit')}")
        elif event == "ingest.duplicate":
            self.out(f"{_now()}  webhook   {record.get('event_type', '?'):<48} (duplicate, ignored)")
        elif event == "sync.done":
            statuses = ",".join(record.get("statuses") or []) or "no subscription"
            change = f"v{record.get('version')}" if record.get("changed") else "unchanged"
            self.out(f"{_now()}  sync      {record.get('customer_id')}  [{statuses}] → "
                     f"features {record.get('features')}  ({change}, {record.get('events')} events)")
        elif event == "sync.stripe_entitlements_differ":
            self.out(f"{_now()}  note      Stripe's own Entitlements still grant {record.get('stripe_only')} "
                     f"— our policy decides, and it says no")
        elif record.get("level") in ("error", "critical") or event in ("sync.failed", "worker.started"):
            self.out(f"{_now()}  {source:<9} {event} {record.get('error', '')}")

    def message(self, change: AccessChanged) -> None:
        diff = " ".join([*(f"+{f}" for f in change.added), *(f"-{f}" for f in change.removed)]) or "(user changed)"
        self.out(f"{_now()}  message   access-changed v{change.version} {change.customer_id} "
                 f"user={change.user_id}  {diff}")


async def _pump(stream: asyncio.StreamReader | None, source: str, timeline: Timeline | None) -> None:
    """Forward a child's stderr: through the timeline in demo mode, verbatim otherwise."""
    if stream is None:
        return
    while line := await stream.readline():
        if timeline is not None:
            timeline.log_line(source, line)
        else:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()


class Launcher:
    def __init__(self, settings: Settings, data_dir: Path, *, demo_then_exit: bool) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.demo_then_exit = demo_then_exit
        self.env: dict[str, str] = {}
        self.children: list[asyncio.subprocess.Process] = []
        self.cleanups: list[Callable[[], Any]] = []
        self.timeline: Timeline | None = None

    async def _postgres(self) -> str:
        if "database_url" in self.settings.model_fields_set:
            return self.settings.database_url
        try:
            admin_url, server = start_postgres(self.data_dir / "postgres")
        except EmbeddedError as exc:
            raise LaunchError(str(exc)) from None
        self.cleanups.append(server.cleanup)  # type: ignore[attr-defined]
        conn = await asyncpg.connect(admin_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'entitled'"):
                await conn.execute("CREATE DATABASE entitled")
        finally:
            await conn.close()
        url = admin_url.replace("/postgres?", "/entitled?", 1)
        print(f"entitled run: embedded Postgres in {self.data_dir / 'postgres'}", file=sys.stderr)
        return url

    def _redis(self) -> str:
        if "redis_url" in self.settings.model_fields_set:
            return self.settings.redis_url
        server = RedisServer(data_dir=self.data_dir / "redis", persist=True)
        try:
            server.start()
        except EmbeddedError as exc:
            raise LaunchError(str(exc)) from None
        self.cleanups.append(server.stop)
        print(f"entitled run: embedded Redis on {server.url} (data in {server.dir})", file=sys.stderr)
        return server.url

    async def _spawn(self, module: str, extra: dict[str, str]) -> asyncio.subprocess.Process:
        env = {**os.environ, **self.env, **extra}
        pipe = asyncio.subprocess.PIPE if self.timeline is not None else None
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", module, env=env, stderr=pipe)
        self.children.append(proc)
        asyncio.get_running_loop().create_task(_pump(proc.stderr, module, self.timeline))
        return proc

    async def _wait_ready(self, port: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                if any(c.returncode is not None for c in self.children):
                    raise LaunchError("a process exited during start-up (see its message above)") from None
                if time.monotonic() > deadline:
                    raise LaunchError(f"nothing listened on port {port}") from None
                await asyncio.sleep(0.1)

    async def run(self, stop: asyncio.Event) -> None:
        database_url = await self._postgres()
        redis_url = self._redis()
        self.env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url})
        demo = self.settings.stripe_api_key is None
        port = self.settings.port
        if demo:
            port = free_port() if "port" not in self.settings.model_fields_set else port
            await self._run_demo(database_url, redis_url, port, stop)
            return
        if not self.settings.stripe_webhook_secret:
            raise LaunchError("STRIPE_WEBHOOK_SECRET: required with a real STRIPE_API_KEY (see README, Connecting Stripe)")
        await self._spawn("ingest", {"PORT": str(port)})
        await self._wait_ready(port)
        await self._spawn("worker", {})
        await self._spawn_api(free_port_if_unset=False)
        print(f"entitled run: receiving webhooks on http://127.0.0.1:{port}/webhooks/stripe — Ctrl-C stops",
              file=sys.stderr)
        await self._until_stopped(stop)

    async def _spawn_api(self, *, free_port_if_unset: bool) -> int:
        """The app-facing API, with a token of this run's own when API_TOKENS is not set."""
        extra: dict[str, str] = {}
        if not self.settings.api_tokens:
            token = f"local:{secrets.token_urlsafe(24)}"
            extra["API_TOKENS"] = token
            print(f"entitled run: API_TOKENS not set; this run's API token is {token.split(':', 1)[1]}"
                  " (name: local)", file=sys.stderr)
        port = self.settings.api_port
        if free_port_if_unset and "api_port" not in self.settings.model_fields_set:
            port = free_port()
        extra["API_PORT"] = str(port)
        await self._spawn("api", extra)
        await self._wait_ready(port)
        print(f"entitled run: app-facing API on http://127.0.0.1:{port}/v1/ (README, For app developers)",
              file=sys.stderr)
        return port

    async def _until_stopped(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(stop.wait())] + [asyncio.ensure_future(c.wait()) for c in self.children]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if not stop.is_set():
            raise LaunchError("a process of the service exited on its own (see its message above)")

    async def _run_demo(self, database_url: str, redis_url: str, port: int, stop: asyncio.Event) -> None:
        from fakestripe import FakeStripe, FakeStripeControl  # the demo's Stripe only
        from worker.demo import Demo

        self.timeline = Timeline(lambda text: print(text, flush=True))
        fake = FakeStripe(api_keys=(DEMO_KEY,))
        endpoint = fake.add_webhook_endpoint(f"http://127.0.0.1:{port}/webhooks/stripe")
        handle = fake.start_in_thread()
        self.cleanups.append(handle.stop)
        self.env.update({
            "STRIPE_API_KEY": DEMO_KEY, "STRIPE_API_BASE": handle.base_url,
            "STRIPE_WEBHOOK_SECRET": endpoint.secret, "LOG_FORMAT": "json", "COALESCE_WINDOW": "0.5",
        })
        self.timeline.say("entitled demo — no STRIPE_API_KEY set, so a fake Stripe plays SPEC scenarios on fast "
                          "test clocks.\nFor each: webhooks received → sync from Stripe's API → entitlements → "
                          "access-changed message.\n")
        await self._spawn("ingest", {"PORT": str(port), "LOG_LEVEL": "DEBUG"})
        await self._wait_ready(port)
        await self._spawn("worker", {})
        await self._spawn_api(free_port_if_unset=True)
        pool = await db.create_pool(database_url)
        redis = Redis.from_url(redis_url)
        http = stripe.AIOHTTPClient()
        client = stripe.StripeClient(DEMO_KEY, base_addresses={"api": handle.base_url}, http_client=http)
        timeline = self.timeline

        async def listen() -> None:
            async for change in channel_messages(redis, channel=Keys(prefix=self.settings.redis_prefix).channel):
                timeline.message(change)

        listener = asyncio.create_task(listen())
        try:
            async with FakeStripeControl(handle.base_url) as control:
                await self._wait_migrated(pool)
                play = asyncio.create_task(Demo(client, control, pool, timeline.say).play())
                done, _ = await asyncio.wait([play, asyncio.ensure_future(stop.wait())],
                                             return_when=asyncio.FIRST_COMPLETED)
                if play in done:
                    play.result()
                    await asyncio.sleep(1.0)
                    timeline.say(f"\nDemo done. The service keeps running: webhooks to "
                                 f"http://127.0.0.1:{port}/webhooks/stripe, the view `active_entitlements` in "
                                 f"{database_url}. Ctrl-C stops everything.")
                    if not self.demo_then_exit:
                        await self._until_stopped(stop)
                else:
                    play.cancel()
        finally:
            listener.cancel()
            await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
            await pool.close()
            await redis.aclose()

    async def _wait_migrated(self, pool: asyncpg.Pool, timeout_s: float = 60.0) -> None:
        """The worker applies the migrations at start-up; the demo reads the view after that."""
        deadline = time.monotonic() + timeout_s
        while not await pool.fetchval("SELECT to_regclass('active_entitlements') IS NOT NULL"):
            if time.monotonic() > deadline:
                raise LaunchError("the worker did not migrate the database in time")
            await asyncio.sleep(0.2)

    async def shutdown(self) -> None:
        for child in self.children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.terminate()
        for child in self.children:
            try:
                await asyncio.wait_for(child.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()


async def _main(args: argparse.Namespace) -> int:
    try:
        settings = load()
    except SettingsError as exc:
        print(f"entitled run: {exc}", file=sys.stderr)
        return 2
    launcher = Launcher(settings, args.data_dir, demo_then_exit=args.exit_after_demo)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await launcher.run(stop)
        return 0
    except LaunchError as exc:
        print(f"entitled run: {exc}", file=sys.stderr)
        return 1
    finally:
        print("entitled run: stopping…", file=sys.stderr)
        await launcher.shutdown()
        print("entitled run: stopped", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="entitled run")
    parser.add_argument("--exit-after-demo", action="store_true", help="stop once the demo has played (for tests)")
    args = parser.parse_args(argv)
    args.data_dir = Path(os.environ.get("ENTITLED_DATA_DIR", ".data")).resolve()
    raise SystemExit(asyncio.run(_main(args)))
