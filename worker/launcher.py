"""`entitled run`: the whole service in one command, for a first look and for development.

- DATABASE_URL unset: an embedded Postgres under `.data/local/postgres` (`.data/demo/...` for
  the demo, so that a real key never meets the demo's customers; ENTITLED_DATA_DIR moves `.data`).
- REDIS_URL unset: a redis-server under `.data/local/redis`, with an append-only file. The URLs
  of the embedded servers are written to `.data/run.env` while it runs, where the CLI finds them.
- DATABASE_URL or REDIS_URL set but not answering: one line naming the variable, nothing started.
- STRIPE_API_KEY unset: the fake Stripe, in demo mode: it plays the scenarios of docs/contract.md §9 on test clocks
  while a readable timeline shows each event received, each sync and each access-changed
  message. With real settings it runs for real (ingest + one worker) and prints their logs.
- A child that exits on its own (a bad setting, a dependency gone) stops everything: its last
  error line is printed and `entitled run` exits with its exit code. "receiving webhooks" is
  printed only once the worker runs its job loop.
- `entitled run --poll` with a real (test) key: no ingest and no webhooks; the worker's Events
  API poller runs every few seconds and is the only source (development without a public URL).
- Both ways the app-facing API (`python -m api`) runs too, on API_PORT; without API_TOKENS a
  token `local:<random>` is made for this run and printed.
- Ctrl-C (or SIGTERM) stops everything it started and leaves nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import signal
import socket
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import stripe
from redis.asyncio import Redis

from shared import db, preflight
from shared.coordination import Keys
from shared.embedded import EmbeddedError, RedisServer, free_port, start_postgres
from shared.publishing import AccessChanged, channel_messages
from shared.settings import Settings, SettingsError, load

DEMO_KEY = "sk_test_entitled_demo"
# `entitled run --poll`: how often the Events API poller runs (it must divide a minute).
POLL_EVERY = "5s"
STOP_GRACE_S = 15.0


def shown(path: Path) -> str:
    """A folder as the demo prints it: relative to where `entitled run` was started, when it is
    inside it (the demo keeps to 80 columns), else in full."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)

class LaunchError(Exception):
    """`entitled run` cannot start; the message says why and what to do."""


WIDTH = 80
# Catalog events (the demo's set-up fires dozens) are summarised in one line.
CATALOG_PREFIXES = ("product.", "price.", "entitlements.feature.")
# A message whose sync line has not come yet waits this long for it.
HOLD_MESSAGE_S = 3.0


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


def fit(text: str, width: int = WIDTH) -> str:
    """One line of at most `width` columns."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _short(unit: Any) -> str:
    """`customer:cus_123` -> `cus_123`: the id says its kind."""
    return str(unit).split(":", 1)[-1]


class Timeline:
    """Turns the children's JSON log lines and the access-changed channel into readable lines of
    at most 80 columns: each message after the sync that produced it, the catalog's webhooks
    counted in one line."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.catalog_events = 0
        # customer -> the highest version a printed sync line announced
        self.synced: dict[str, int] = {}
        self.held: list[tuple[float, AccessChanged]] = []

    def line(self, kind: str, text: str) -> None:
        self.out(fit(f"{_now()} {kind:<8} {text}"))

    def say(self, text: str) -> None:
        self._flush_catalog()
        self._release(force=True)
        self.out(text)

    def _flush_catalog(self) -> None:
        if self.catalog_events:
            n = self.catalog_events
            self.line("webhook", f"{n} catalog event{'s' if n > 1 else ''} (product, price) → catalog refresh")
            self.catalog_events = 0

    def log_line(self, source: str, raw: bytes) -> None:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(record, dict):
            return
        event = record.get("event")
        event_type = str(record.get("event_type", "?"))
        if event in ("ingest.queued", "ingest.duplicate") and event_type.startswith(CATALOG_PREFIXES):
            self.catalog_events += 1
            return
        self._flush_catalog()
        if event == "ingest.queued":
            self.line("webhook", f"{event_type} → {_short(record.get('unit'))}")
        elif event == "ingest.duplicate":
            self.line("webhook", f"{event_type} (duplicate, ignored)")
        elif event == "sync.done":
            self._sync_done(record)
        elif event == "sync.stripe_entitlements_differ":
            granted = ",".join(record.get("stripe_only") or [])
            self.line("note", f"Stripe's Entitlements still grant {granted}; our policy: no")
        elif record.get("level") in ("error", "critical") or event == "sync.failed":
            self.line(source, f"{event} {record.get('error', '')}")
        self._release()

    def _sync_done(self, record: dict[str, Any]) -> None:
        cid = str(record.get("customer_id"))
        statuses = ",".join(record.get("statuses") or []) or "none"
        features = ",".join(record.get("features") or []) or "nothing"
        version = int(record.get("version") or 0)
        change = f"v{version}" if record.get("changed") else "unchanged"
        self.line("sync", f"{cid} [{statuses}] → {features} ({change})")
        self.synced[cid] = max(self.synced.get(cid, 0), version)
        self._release()

    def tick(self) -> None:
        self._release()

    def message(self, change: AccessChanged) -> None:
        self.held.append((time.monotonic(), change))
        self._release()

    def _release(self, *, force: bool = False) -> None:
        """Print the held messages whose sync line was printed (or that waited long enough)."""
        now = time.monotonic()
        keep: list[tuple[float, AccessChanged]] = []
        for since, change in self.held:
            if force or self.synced.get(change.customer_id, 0) >= change.version or now - since > HOLD_MESSAGE_S:
                self._print_message(change)
            else:
                keep.append((since, change))
        self.held = keep

    def _print_message(self, change: AccessChanged) -> None:
        diff = " ".join([*(f"+{f}" for f in change.added), *(f"-{f}" for f in change.removed)]) or "(user)"
        text = f"v{change.version} {change.user_id} {diff} ({change.reason})"
        if len(f"{_now()} {'message':<8} {text}") <= WIDTH:
            self.line("message", text)
            return
        self.line("message", f"v{change.version} {change.user_id} {diff}")
        self.out(fit(f"{'':<18}({change.reason})"))


_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def exit_code(returncode: int) -> int:
    """The code `entitled run` stops with when a child died: the child's own (128+N for a
    signal), and 1 for a child that exited 0 although nobody asked it to stop."""
    if returncode > 0:
        return returncode
    return 128 - returncode if returncode < 0 else 1


def error_text(line: bytes) -> str | None:
    """The error a child's stderr line reports, or None for an ordinary log line.

    JSON log lines count at level error/critical; console log lines (they start with their
    timestamp) when they say `[error` or `[critical`; any other text (a one-line start-up
    error, the last line of a traceback) always.
    """
    text = _ANSI.sub(b"", line).decode(errors="replace").strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            return " ".join(str(part) for part in (record.get("event"), record.get("error")) if part)
        return None
    if text[:1].isdigit():
        return text if ("[error" in text or "[critical" in text) else None
    return text


@dataclass
class Child:
    """A process `entitled run` started, and the last error its stderr reported."""

    name: str
    proc: asyncio.subprocess.Process
    last_error: str | None = None

    async def pump(self, timeline: Timeline | None) -> None:
        """Forward the child's stderr (through the timeline in demo mode, verbatim otherwise),
        remembering its last error line."""
        stream = self.proc.stderr
        assert stream is not None
        while line := await stream.readline():
            self.last_error = error_text(line) or self.last_error
            if timeline is not None:
                timeline.log_line(self.name, line)
            else:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()

    def death(self) -> str:
        code = self.proc.returncode
        assert code is not None
        said = f": {self.last_error}" if self.last_error else " (it printed no error)"
        return f"the {self.name} process exited with code {code}{said}"


class ChildDiedError(Exception):
    """A child of `entitled run` exited on its own; `entitled run` stops with its exit code."""

    def __init__(self, child: Child) -> None:
        super().__init__(child.death())
        self.code = exit_code(child.proc.returncode or 0)


class Launcher:
    def __init__(self, settings: Settings, data_dir: Path, *, demo_then_exit: bool, poll: bool = False) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.demo_then_exit = demo_then_exit
        self.poll = poll
        # scenarios of the demo that failed (the run then exits 1)
        self.demo_failures = 0
        self.env: dict[str, str] = {}
        self.children: list[Child] = []
        self.cleanups: list[Callable[[], Any]] = []
        self.timeline: Timeline | None = None
        # resolved with the first child that exits on its own (see `_main`)
        self.died: asyncio.Future[Child] = asyncio.get_running_loop().create_future()

    @property
    def demo(self) -> bool:
        return self.settings.stripe_api_key is None

    @property
    def servers_dir(self) -> Path:
        """Where the embedded servers keep their data: the demo's apart from a real run's, so
        that a real key never meets the demo's fake customers."""
        return self.data_dir / ("demo" if self.demo else "local")

    async def _postgres(self) -> str:
        if "database_url" in self.settings.model_fields_set:
            try:
                await preflight.check_postgres(self.settings.database_url)
            except preflight.DependencyError as exc:
                raise LaunchError(str(exc)) from None
            return self.settings.database_url
        folder = self.servers_dir / "postgres"
        try:
            admin_url, server = start_postgres(folder, private_root=self.data_dir)
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
        print(f"entitled run: embedded Postgres in {shown(folder)}", file=sys.stderr)
        return url

    async def _redis(self) -> str:
        if "redis_url" in self.settings.model_fields_set:
            try:
                await preflight.check_redis(self.settings.redis_url)
            except preflight.DependencyError as exc:
                raise LaunchError(str(exc)) from None
            return self.settings.redis_url
        server = RedisServer(data_dir=self.servers_dir / "redis", persist=True, private_root=self.data_dir)
        try:
            server.start()
        except EmbeddedError as exc:
            raise LaunchError(str(exc)) from None
        self.cleanups.append(server.stop)
        print(f"entitled run: embedded Redis in {shown(server.dir)}\n  ({server.display_url})", file=sys.stderr)
        return server.url

    def _write_run_file(self, embedded: dict[str, str]) -> None:
        """Tell the CLI where this run's embedded servers are (`entitled show` etc. read it)."""
        if not embedded:
            return
        path = run_file(self.data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the pid lets the CLI ignore a file a killed run left behind
        path.write_text(f"# pid={os.getpid()}\n" + "".join(f"{name}={value}\n" for name, value in embedded.items()))
        path.chmod(0o600)  # it holds the embedded Redis's password
        self.cleanups.append(lambda: path.unlink(missing_ok=True))

    async def _spawn(self, module: str, extra: dict[str, str]) -> Child:
        env = {**os.environ, **self.env, **extra}
        if self.timeline is None and "LOG_FORMAT" not in env and sys.stderr.isatty():
            env["LOG_FORMAT"] = "console"  # piped, the children would pick JSON
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", module, env=env,
                                                    stderr=asyncio.subprocess.PIPE)
        child = Child(module, proc)
        self.children.append(child)
        asyncio.get_running_loop().create_task(self._watch(child))
        return child

    async def _watch(self, child: Child) -> None:
        await child.pump(self.timeline)
        await child.proc.wait()
        if not self.died.done():
            self.died.set_result(child)

    async def _wait_ready(self, port: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise LaunchError(f"nothing listened on port {port}") from None
                await asyncio.sleep(0.1)

    async def _wait_worker(self, redis_url: str, worker: Child, timeout_s: float = 120.0) -> None:
        """Until the worker runs its job loop: it has reached Postgres, migrated the database and
        reached Redis (arq writes its health key from the loop). A worker that dies meanwhile
        ends the launcher through `died`."""
        key = Keys(prefix=self.settings.redis_prefix).health(f"{socket.gethostname()}-{worker.proc.pid}")
        redis = Redis.from_url(redis_url)
        deadline = time.monotonic() + timeout_s
        try:
            while not await redis.exists(key):
                if time.monotonic() > deadline:
                    raise LaunchError(f"the worker did not start within {timeout_s:g}s"
                                      + (f" (last error: {worker.last_error})" if worker.last_error else ""))
                await asyncio.sleep(0.2)
        finally:
            await redis.aclose()

    async def run(self, stop: asyncio.Event) -> None:
        embedded: dict[str, str] = {}
        database_url = await self._postgres()
        redis_url = await self._redis()
        if "database_url" not in self.settings.model_fields_set:
            embedded["DATABASE_URL"] = database_url
        if "redis_url" not in self.settings.model_fields_set:
            embedded["REDIS_URL"] = redis_url
        self._write_run_file(embedded)
        self.env.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url})
        port = self.settings.port
        if self.demo:
            port = free_port() if "port" not in self.settings.model_fields_set else port
            await self._run_demo(database_url, redis_url, port, stop)
            return
        if self.poll:
            await self._run_polling(redis_url, stop)
            return
        if not self.settings.stripe_webhook_secret:
            raise LaunchError("STRIPE_WEBHOOK_SECRET: required with a real STRIPE_API_KEY (README, Connecting "
                              "Stripe), or run `entitled run --poll` to develop without webhooks")
        await self._spawn("ingest", {"PORT": str(port)})
        await self._wait_ready(port)
        worker = await self._spawn("worker", {})
        await self._wait_worker(redis_url, worker)
        await self._spawn_api(free_port_if_unset=False)
        print(f"entitled run: receiving webhooks on http://127.0.0.1:{port}/webhooks/stripe — Ctrl-C stops",
              file=sys.stderr)
        await stop.wait()

    async def _run_polling(self, redis_url: str, stop: asyncio.Event) -> None:
        """Development without webhooks: no ingest, no public URL, no `stripe listen`; the worker's
        Events API poller, every POLL_EVERY, is the only source of events (README, Developing
        without webhooks). Each poll is one `GET /v1/events` (Stripe lists events of 30 days)."""
        set_here = "reconcile_events_every" in self.settings.model_fields_set
        every = str(self.settings.reconcile_events_every) if set_here else POLL_EVERY
        worker = await self._spawn("worker", {"RECONCILE_EVENTS_EVERY": every})
        await self._wait_worker(redis_url, worker)
        await self._spawn_api(free_port_if_unset=False)
        print(f"entitled run: polling Stripe's Events API every {every} (no webhooks; for development) "
              "— Ctrl-C stops", file=sys.stderr)
        await stop.wait()

    async def _spawn_api(self, *, free_port_if_unset: bool) -> int:
        """The app-facing API, with a token of this run's own when API_TOKENS is not set."""
        extra: dict[str, str] = {}
        secret = None
        if not self.settings.api_tokens:
            token = f"local:{secrets.token_urlsafe(24)}"
            extra["API_TOKENS"] = token
            secret = token.split(":", 1)[1]
            print(f"entitled run: API_TOKENS not set; this run's API token (named local):\n  {secret}",
                  file=sys.stderr)
        port = self.settings.api_port
        if free_port_if_unset and "api_port" not in self.settings.model_fields_set:
            port = free_port()
        extra["API_PORT"] = str(port)
        await self._spawn("api", extra)
        await self._wait_ready(port)
        print(f"entitled run: app-facing API on http://127.0.0.1:{port}/v1/\n  (README, For app developers)",
              file=sys.stderr)
        # The operator console (docs/contract.md §11): a newcomer sees the demo's customers there.
        sign_in = "with the token above" if secret is not None else "with a secret of API_TOKENS"
        print(f"entitled run: operator console on http://127.0.0.1:{port}/console/\n  (sign in {sign_in})",
              file=sys.stderr)
        return port

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
            # the demo shows where Stripe's own Entitlements disagree: compare on every sync
            "STRIPE_ENTITLEMENTS_AUDIT": "1",
        })
        self.timeline.say(textwrap.fill(
            "entitled demo — no STRIPE_API_KEY is set, so a fake Stripe plays the scenarios of "
            "docs/contract.md on fast test clocks. For each: webhooks received → sync from Stripe's API → "
            "entitlements → access-changed message.", WIDTH) + "\n")
        await self._spawn("ingest", {"PORT": str(port), "LOG_LEVEL": "DEBUG"})
        await self._wait_ready(port)
        worker = await self._spawn("worker", {})
        await self._wait_worker(redis_url, worker)
        await self._spawn_api(free_port_if_unset=True)
        pool = await db.create_pool(database_url)
        redis = Redis.from_url(redis_url)
        http = stripe.AIOHTTPClient()
        client = stripe.StripeClient(DEMO_KEY, base_addresses={"api": handle.base_url}, http_client=http)
        timeline = self.timeline

        async def listen() -> None:
            async for change in channel_messages(redis, channel=Keys(prefix=self.settings.redis_prefix).channel):
                timeline.message(change)

        async def tick() -> None:  # a held message whose sync line never came is printed anyway
            while True:
                await asyncio.sleep(0.5)
                timeline.tick()

        listener = asyncio.create_task(listen())
        ticker = asyncio.create_task(tick())
        try:
            async with FakeStripeControl(handle.base_url) as control:
                play = asyncio.create_task(Demo(client, control, pool, timeline.say).play())
                done, _ = await asyncio.wait([play, asyncio.ensure_future(stop.wait())],
                                             return_when=asyncio.FIRST_COMPLETED)
                if play in done:
                    self.demo_failures = play.result()
                    await asyncio.sleep(1.0)
                    timeline.say("\n" + textwrap.fill(
                        f"Demo done. The service keeps running: webhooks to "
                        f"http://127.0.0.1:{port}/webhooks/stripe, the view `active_entitlements` in "
                        f"{database_url}. Ctrl-C stops everything.", WIDTH, break_long_words=True))
                    if not self.demo_then_exit:
                        await stop.wait()
                else:
                    play.cancel()
        finally:
            listener.cancel()
            ticker.cancel()
            await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
            await pool.close()
            await redis.aclose()

    async def shutdown(self) -> None:
        procs = [child.proc for child in self.children]
        for child in procs:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.terminate()
        for child in procs:
            try:
                await asyncio.wait_for(child.wait(), STOP_GRACE_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()


async def _run_or_die(launcher: Launcher, stop: asyncio.Event) -> None:
    """Run until stopped, or until a child exits on its own: then stop with its error."""
    running = asyncio.ensure_future(launcher.run(stop))
    waiting: list[asyncio.Future[Any]] = [running, launcher.died]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        running.result()
        return
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await running
    raise ChildDiedError(launcher.died.result())


def run_file(data_dir: Path) -> Path:
    """Where a running `entitled run` writes the URLs of its embedded servers."""
    return data_dir / "run.env"


async def _main(args: argparse.Namespace) -> int:
    try:
        settings = load()
    except SettingsError as exc:
        print(f"entitled run: {exc}", file=sys.stderr)
        return 2
    launcher = Launcher(settings, args.data_dir, demo_then_exit=args.exit_after_demo, poll=args.poll)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _run_or_die(launcher, stop)
        return 1 if launcher.demo_failures else 0
    except LaunchError as exc:
        print(f"entitled run: {exc}", file=sys.stderr)
        return 1
    except ChildDiedError as exc:
        print(f"entitled run: {exc}", file=sys.stderr)
        return exc.code
    finally:
        print("entitled run: stopping…", file=sys.stderr)
        await launcher.shutdown()
        print("entitled run: stopped", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="entitled run", description="Run ingest, a worker and the API in one process tree: embedded Postgres "
        "and Redis under .data when DATABASE_URL / REDIS_URL are unset, and the demo on a fake Stripe when "
        "STRIPE_API_KEY is unset. Ctrl-C stops everything it started.")
    parser.add_argument("--poll", action="store_true",
                        help=f"development with a real test key and no webhooks: no ingest; the Events API poller "
                             f"runs every {POLL_EVERY} (RECONCILE_EVENTS_EVERY overrides) and is the only source")
    # for tests: stop once the demo has played (exit code 1 if a scenario failed)
    parser.add_argument("--exit-after-demo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.data_dir = Path(os.environ.get("ENTITLED_DATA_DIR", ".data")).resolve()
    raise SystemExit(asyncio.run(_main(args)))
