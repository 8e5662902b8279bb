"""The whole service as separate processes, for the worker and sweep benchmarks.

`Deployment` starts, each in its own process: a Redis of its own (`shared.embedded.RedisServer`),
the fake Stripe (`python -m fakestripe`, so that its event loop shares no CPU-bound loop
with the load generator), the real receiver (`python -m ingest`) and any number of real workers
(`python -m worker`), on a fresh Postgres database of its own (created on the machine's Postgres,
migrated with `shared.db.migrate`, dropped at the end). The benchmark process only drives the
fake (SDK and control API) and observes (Postgres, Redis, the fake's stats).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio
import stripe

from bench.common import spawn, stop, wait_http
from fakestripe import FakeStripeControl
from shared import db
from shared.coordination import Keys
from shared.embedded import RedisServer, free_port

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
API_KEY = "sk_test_bench_workers"
WEBHOOK_SECRET = "whsec_bench_workers_secret"
LOG_ROOT = Path(".data/bench")
# Seconds between the fake's global-clock ticks. Each tick scans every subscription for a due
# transition: at 10,000 subscriptions and the default 0.2 s that alone takes two thirds of a
# core, away from the service under test on a small machine. Nothing falls due on the fake's
# clock during a benchmark (monthly subscriptions, paid at once), so it ticks rarely.
FAKE_TICK_S = 5.0


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def create_database(admin_url: str = ADMIN_URL) -> str:
    """A fresh, migrated database on the server of `admin_url`; returns its URL."""
    name = f"entitled_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = with_database(admin_url, name)
    mconn = await db.connect(url)
    try:
        await db.migrate(mconn)
    finally:
        await mconn.close()
    return url


async def drop_database(url: str, admin_url: str = ADMIN_URL) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Deployment:
    """Redis, a database, the fake Stripe, ingest and workers; `async with` starts and stops all.

    `worker_env` is added to every worker's environment (e.g. `STRIPE_RATE_LIMIT`).
    """

    def __init__(self, name: str, *, workers: int = 0, worker_env: Mapping[str, str] | None = None,
                 webhooks: bool = True, fake_tick_s: float = FAKE_TICK_S) -> None:
        self.name = name
        self.fake_tick_s = fake_tick_s
        self.n_workers = workers
        self.webhooks = webhooks
        self.keys = Keys()
        self.log_dir = LOG_ROOT / name
        self.redis_server = RedisServer()
        self.database_url = ""
        self.fake_url = ""
        self.ingest_port = free_port()
        self.ingest_url = f"http://127.0.0.1:{self.ingest_port}/webhooks/stripe"
        self.worker_env: dict[str, str] = {}
        self._extra_env = dict(worker_env or {})
        self.fake_proc: subprocess.Popen[bytes] | None = None
        self.ingest_proc: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._pool: asyncpg.Pool | None = None
        self._redis: redis.asyncio.Redis | None = None
        self._ctl: FakeStripeControl | None = None
        self._stripe: stripe.StripeClient | None = None
        self._http: stripe.AIOHTTPClient | None = None

    # --- what the benchmark uses while the deployment runs -----------------------------------

    @property
    def pool(self) -> asyncpg.Pool:
        """A small pool on the deployment's database."""
        if self._pool is None:
            raise RuntimeError("the deployment is not running")
        return self._pool

    @property
    def redis(self) -> redis.asyncio.Redis:
        if self._redis is None:
            raise RuntimeError("the deployment is not running")
        return self._redis

    @property
    def ctl(self) -> FakeStripeControl:
        """The fake Stripe's control API."""
        if self._ctl is None:
            raise RuntimeError("the deployment is not running")
        return self._ctl

    @property
    def stripe(self) -> stripe.StripeClient:
        """An SDK client on the fake, without our rate limiter: for setting up."""
        if self._stripe is None:
            raise RuntimeError("the deployment is not running")
        return self._stripe

    # --- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Deployment:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stop()

    async def _start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob("*.log"):
            old.unlink()
        self.redis_server.start()
        self.database_url = await create_database()
        self._start_fake()
        self.worker_env = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_server.url,
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": self.fake_url,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            # The Events API poller and the sweep are cron jobs (every 5 min / daily by default);
            # at the daily slot (00:00 UTC) only, so that they do not run inside a measurement.
            "RECONCILE_EVENTS_EVERY": "1d",
            "RECONCILE_SWEEP_EVERY": "1d",
            # The sampled audit of Stripe's own entitlements would make request counts random.
            "STRIPE_ENTITLEMENTS_AUDIT": "0",
            **self._extra_env,
        }
        if self.webhooks:
            self.ingest_proc = spawn(
                ["-m", "ingest"],
                {"PORT": str(self.ingest_port), "HOST": "127.0.0.1", "REDIS_URL": self.redis_server.url,
                 "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_KEY": API_KEY, "LOG_FORMAT": "json"},
                self.log_dir / "ingest.log",
            )
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{self.ingest_port}/healthz")
        for _ in range(self.n_workers):
            self.start_worker()
        self._pool = await db.create_pool(self.database_url, min_size=1, max_size=4)
        self._redis = redis.asyncio.Redis.from_url(self.redis_server.url)
        self._ctl = FakeStripeControl(self.fake_url)
        self._http = stripe.AIOHTTPClient()
        self._stripe = stripe.StripeClient(API_KEY, base_addresses={"api": self.fake_url}, http_client=self._http)
        if self.n_workers:
            await self.wait_workers_ready()

    def _start_fake(self) -> None:
        args = [sys.executable, "-m", "fakestripe", "--port", "0", "--api-key", API_KEY,
                "--tick-interval", str(self.fake_tick_s)]
        if self.webhooks:
            args += ["--webhook", self.ingest_url, "--webhook-secret", WEBHOOK_SECRET]
        err = open(self.log_dir / "fake.log", "wb")  # noqa: SIM115 - owned by the child
        self.fake_proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err)
        assert self.fake_proc.stdout is not None
        line = self.fake_proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake Stripe did not start; see {self.log_dir / 'fake.log'}")
        self.fake_url = json.loads(line)["base_url"]

    def start_worker(self) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        proc = spawn(["-m", "worker"], self.worker_env, self.log_dir / f"worker-{n}.log")
        self.workers.append(proc)
        return proc

    async def wait_workers_ready(self, timeout_s: float = 30.0) -> None:
        """Until every worker logged `worker.started` (it has migrated and opened its pools)."""
        deadline = time.monotonic() + timeout_s
        while True:
            started = sum(1 for r in self.worker_logs() if r.get("event") == "worker.started")
            if started >= len(self.workers):
                return
            for proc in self.workers:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}; see {self.log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {timeout_s:.0f}s; see {self.log_dir}")
            await asyncio.sleep(0.1)

    def stop_workers(self) -> None:
        for proc in self.workers:
            stop(proc)
        self.workers = []

    async def _stop(self) -> None:
        self.stop_workers()
        for proc in (self.ingest_proc, self.fake_proc):
            if proc is not None and proc.poll() is None:
                stop(proc)
        if self._ctl is not None:
            await self._ctl.close()
        if self._http is not None:
            await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK
        if self._pool is not None:
            await self._pool.close()
        if self._redis is not None:
            await self._redis.aclose()
        if self.database_url:
            await drop_database(self.database_url)
        self.redis_server.close()

    # --- observing --------------------------------------------------------------------------

    def worker_logs(self) -> list[dict[str, Any]]:
        """Every JSON log line the workers wrote so far."""
        lines: list[dict[str, Any]] = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            for raw in path.read_bytes().splitlines():
                if raw.startswith(b"{"):
                    try:
                        record = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        lines.append(record)
        return lines

    def fake_cpu_s(self) -> float:
        return cpu_seconds(self.fake_proc.pid) if self.fake_proc is not None else 0.0

    def worker_cpu_s(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.workers if p.poll() is None)

    async def quiet(self) -> bool:
        """No job queued or running, and nothing left in the outbox."""
        queued = await self.redis.zcard(self.keys.queue)
        running = await self.redis.zcard(self.keys.leases)
        unpublished = await self.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return bool(queued == 0 and running == 0 and unpublished == 0)

    async def settle(self, timeout_s: float = 120.0) -> None:
        """Until every webhook was delivered, every job ran and every message was published."""
        deadline = time.monotonic() + timeout_s
        if self.webhooks:
            await self.ctl.wait_idle(timeout_s=timeout_s)
        calm = 0
        while calm < 3:
            calm = calm + 1 if await self.quiet() else 0
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not go quiet within {timeout_s:.0f}s")
            await asyncio.sleep(0.2)
