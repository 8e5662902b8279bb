"""`python -m bench.faults`: the fault run (docs/reliability.md). Nothing lost, nothing granted wrongly.

    python -m bench.faults [--customers 500] [--seconds 300] [--seed 1] [--workers 3] [--short]

What it does, in one process of its own plus the service's processes:

1. Starts its own Postgres cluster and Redis (bench/fault_stack.py) under a temporary folder,
   the fake Stripe in this event loop, `python -m ingest` and N `python -m worker` processes.
2. Customers go through random lifecycles (bench/fault_scripts.py), mostly on test clocks of
   their own, some on the wall clock, started over the first third of the run.
3. Meanwhile, faults: webhooks duplicated (20% same id, 5% with a new id), delayed (0-3 s) and
   shuffled (2 s window), dropped (5%); the API answers 429 (5%) and 500 (5%) and every GET is
   slowed (0-300 ms); a random worker is SIGKILLed every few seconds and restarted 0.5-3 s
   later; Redis is restarted once and Postgres once; the account's `retry_exhausted_action`
   changes twice and the catalog twice (a feature attached to Pro, another removed).
4. Every second, the view is compared with the truth (bench/fault_truth.py): intervals where
   a customer held a feature the truth did not grant are "wrongful grants". The truth already
   includes RENEWAL_GRACE and PAST_DUE_GRACE, so what is measured is the time the service
   takes to notice, which must stay under `--grant-bound` (default 60 s: webhook delays and
   retries, one Events API poll, a lease taken over from a killed worker, a retried sync).
5. At the end: faults off, everything delivered, two Events API polls, then every customer's
   view against the truth (mismatches after the poller); then `entitled resync --all` and
   the same comparison again (the final mismatches, which must be 0); and the stream: each
   customer's versions exactly 1..n, the last one equal to what the service decided.

Results go to stdout and, from the command line, to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis.asyncio
import stripe

from bench import fault_report
from bench.common import wait_port
from bench.fault_checks import check_stream, compare, settle, view_features
from bench.fault_customers import World, make_catalog
from bench.fault_report import FaultReport
from bench.fault_scripts import Driver
from bench.fault_signals import signals, split
from bench.fault_stack import PgServer, Processes
from bench.fault_truth import GrantWatch, Interval, Oracle, longest
from fakestripe import EndpointFaults, FakeStripe
from fakestripe import Settings as FakeSettings
from shared import db
from shared.access import PolicyConfig
from shared.coordination import Keys
from shared.embedded import RedisServer, free_port
from shared.settings import parse_duration_s

API_KEY = "sk_test_fault_run"
API_LATENCY_MS = (0, 300)
# Disagreements begun this soon after the Redis loss are counted as its doing.
LOSS_WINDOW_S = 10.0


@dataclass(frozen=True)
class FaultConfig:
    customers: int = 500
    seconds: float = 300.0
    seed: int = 1
    workers: int = 3
    renewal_grace: str = "1d"
    past_due_grace: str = "7d"
    wall_share: float = 0.2
    kill_every_s: float = 10.0
    grant_bound_s: float = 60.0
    events_every_s: int = 10
    sample_every_s: float = 1.0
    keep_dir: bool = False
    # DISPUTE_POLICY (docs/contract.md §3); "" = by seed: `keep` for every third run, else `revoke`
    dispute_policy: str = ""

    @property
    def disputes(self) -> str:
        return self.dispute_policy or ("keep" if self.seed % 3 == 0 else "revoke")

    @classmethod
    def short(cls, **overrides: object) -> FaultConfig:
        """The CI form: fewer customers, a minute of faults."""
        values: dict[str, object] = {"customers": 50, "seconds": 60.0, "workers": 2, "kill_every_s": 6.0}
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def _say(text: str) -> None:
    print(f"[fault {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Run:
    """One fault run; `execute()` returns the report."""

    # set once the servers are up
    procs: Processes
    driver: Driver
    oracle: Oracle
    t0: float
    background_sampler: asyncio.Task[None]

    def __init__(self, config: FaultConfig, command: str) -> None:
        self.config = config
        self.report = FaultReport(command=command, grant_bound_s=config.grant_bound_s)
        self.root = Path(tempfile.mkdtemp(prefix="entitled-fault-"))
        self.log_dir = self.root / "logs"
        self.log_dir.mkdir()
        self.pg = PgServer(self.root)
        self.redis_server = RedisServer(data_dir=self.root / "redis", persist=True)
        self.keys = Keys()
        self.rng = random.Random(config.seed)
        self.policy = PolicyConfig(renewal_grace_s=int(parse_duration_s(config.renewal_grace)),
                                   past_due_grace_s=int(parse_duration_s(config.past_due_grace)),
                                   revoke_disputed=config.disputes == "revoke")
        self.watch = GrantWatch()
        self.stop_chaos = asyncio.Event()
        self.sampling = True
        self.loss_at: float | None = None

    async def execute(self) -> FaultReport:
        started = time.time()
        ok = False
        try:
            await self._run()
            ok = self.report.ok
        finally:
            self.report.seconds = time.time() - started
            if ok and not self.config.keep_dir:
                shutil.rmtree(self.root, ignore_errors=True)
            else:
                _say(f"logs and data kept in {self.root}")
        return self.report

    async def _run(self) -> None:
        cfg = self.config
        await asyncio.to_thread(self.pg.init)
        await asyncio.to_thread(self.pg.start)
        try:
            await self._create_database()
            await asyncio.to_thread(self.redis_server.start)
            try:
                await self._with_fake()
            finally:
                await asyncio.to_thread(self.redis_server.close)
        finally:
            await asyncio.to_thread(self.pg.close)
        _say(f"done: {len(self.report.mismatches)} mismatches, {len(self.report.stream_problems)} stream "
             f"problems, longest wrongful grant {self.report.wrongful_max_s:.1f} s (bound {cfg.grant_bound_s:.0f} s)")

    async def _create_database(self) -> None:
        conn = await asyncpg.connect(self.pg.admin_url)
        try:
            await conn.execute("CREATE DATABASE entitled")
        finally:
            await conn.close()
        conn = await db.connect(self.pg.url("entitled"))
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    def _env(self, fake_url: str) -> dict[str, str]:
        cfg = self.config
        return {
            "DATABASE_URL": self.pg.url("entitled"),
            "REDIS_URL": self.redis_server.url,
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": fake_url,
            "STRIPE_RATE_LIMIT": "300",
            "STRIPE_ENDPOINT_RATE_LIMIT": "300",
            "RENEWAL_GRACE": cfg.renewal_grace,
            "PAST_DUE_GRACE": cfg.past_due_grace,
            "DISPUTE_POLICY": cfg.disputes,
            "RECONCILE_EVENTS_EVERY": f"{cfg.events_every_s}s",
            # Stripe fires no event when a product's features change: the catalog poll finds it,
            # on the poller's schedule so that the convergence wait covers both.
            "RECONCILE_CATALOG_EVERY": f"{cfg.events_every_s}s",
            "RECONCILE_SWEEP_EVERY": "1d",
            "SYNC_LEASE": "10s",
            "WORKER_CONCURRENCY": "16",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }

    async def _with_fake(self) -> None:
        cfg = self.config
        fake = FakeStripe(api_keys=(API_KEY,), settings=FakeSettings(invoice_finalize_delay_s=20),
                          seed=cfg.seed, tick_interval_s=0.2)
        async with fake.running() as running:
            ingest_port = free_port()
            faults = EndpointFaults(duplicate_rate=0.2, duplicate_new_id_rate=0.05, drop_rate=0.05,
                                    delay_s=(0.0, 3.0), shuffle_window_s=2.0, max_in_flight=16, timeout_s=10,
                                    seed=cfg.seed)
            endpoint = running.add_webhook_endpoint(f"http://127.0.0.1:{ingest_port}/webhooks/stripe",
                                                    faults=faults)
            env = self._env(running.base_url)
            ingest_env = {**env, "PORT": str(ingest_port), "HOST": "127.0.0.1",
                          "STRIPE_WEBHOOK_SECRET": endpoint.secret}
            self.procs = Processes(self.log_dir, ingest_env, env)
            self.procs.start_ingest()
            await asyncio.to_thread(wait_port, ingest_port)
            self.procs.start_workers(cfg.workers)
            http = stripe.AIOHTTPClient()
            client = stripe.StripeClient(API_KEY, base_addresses={"api": running.base_url}, http_client=http,
                                         max_network_retries=8)
            ctl = running.control()
            pool = await db.create_pool(self.pg.url("entitled"), min_size=0, max_size=4, timeout=5)
            r = redis.asyncio.Redis.from_url(self.redis_server.url)
            try:
                world = World(client, ctl, fake, await make_catalog(client))
                self.report.settings = {
                    "RENEWAL_GRACE": cfg.renewal_grace, "PAST_DUE_GRACE": cfg.past_due_grace,
                    "RECONCILE_EVENTS_EVERY": f"{cfg.events_every_s}s",
                    "RECONCILE_CATALOG_EVERY": f"{cfg.events_every_s}s", "SYNC_LEASE": "10s",
                    "workers": str(cfg.workers), "seed": str(cfg.seed),
                    "api_latency_ms": f"{API_LATENCY_MS[0]}-{API_LATENCY_MS[1]}",
                }
                await self._drive(world, fake)
                await self._reconcile(world, fake, pool, r, env)
                self._count(world, fake)
                await self._count_db(pool)
            finally:
                self.procs.stop_all()
                await ctl.close()
                await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
                await pool.close()
                await r.aclose()

    # --- the run -------------------------------------------------------------------------------

    async def _drive(self, world: World, fake: FakeStripe) -> None:
        cfg = self.config
        t0 = self.t0 = time.time()
        span = cfg.seconds
        self.driver = Driver(world, cfg.seed, cfg.wall_share)
        oracle = Oracle(fake, self.policy)
        self.oracle = oracle
        await world.ctl.set_api_faults(rate_429=0.05, rate_500=0.05, latency_ms=list(API_LATENCY_MS),
                                       methods=["GET"], seed=cfg.seed)
        end_at = t0 + 0.85 * span
        customers = [asyncio.create_task(self.driver.run_customer(n, t0 + self.rng.uniform(0, 0.33 * span), end_at))
                     for n in range(cfg.customers)]
        background = [
            asyncio.create_task(self._sampler()),
            asyncio.create_task(self._supervisor()),
            asyncio.create_task(self._kill_workers(t0 + 0.85 * span)),
            asyncio.create_task(self._timeline(world, t0, span)),
        ]
        _say(f"{cfg.customers} customers over {span:.0f} s, {cfg.workers} workers, "
             f"DISPUTE_POLICY={cfg.disputes}, faults on")
        _, pending = await asyncio.wait(customers, timeout=span + 120)
        for task in pending:
            task.cancel()
        self.report.phases["drive"] = time.time() - t0
        _say(f"lifecycles done ({len(pending)} cut short); reconciling")
        self.stop_chaos.set()
        for task in background[1:]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.background_sampler = background[0]

    async def _sampler(self) -> None:
        while self.sampling:
            await asyncio.sleep(self.config.sample_every_s)
            truth = self.oracle.judge(self.driver.ids())
            judged_at = time.time()
            try:
                view = await self._sample_view()
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                continue  # Postgres is restarting: no sample
            if time.time() - judged_at < 0.5:
                self.watch.observe(judged_at, truth, view)

    async def _sample_view(self) -> dict[str, set[str]]:
        """One sample on a connection of its own: a query timed out mid-protocol can leave a pooled
        connection unusable ("another operation is in progress") for whoever takes it next."""
        conn = await asyncpg.connect(self.pg.url("entitled"), timeout=2.0)
        try:
            return await view_features(conn, timeout_s=2.0)
        finally:
            conn.terminate()

    async def _pause(self, seconds: float) -> bool:
        """Sleep, or return early when the chaos is over; True while it is not."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_chaos.wait(), seconds)
        return not self.stop_chaos.is_set()

    async def _supervisor(self) -> None:
        while await self._pause(1.0):
            self.procs.supervise()

    async def _kill_workers(self, until: float) -> None:
        while time.time() < until:
            if not await self._pause(self.config.kill_every_s * self.rng.uniform(0.5, 1.5)):
                return
            slot = self.rng.choice(self.procs.workers)
            self.procs.kill_worker(slot)
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            self.procs.start_worker(slot)

    async def _timeline(self, world: World, t0: float, span: float) -> None:
        steps = [
            (0.30, "retry_exhausted_action=unpaid", self._settings(world, "unpaid")),
            (0.40, "Redis restart", self._restart_redis()),
            (0.50, "Redis lost (SIGKILL, restarted empty)", self._lose_redis()),
            (0.45, "feature ai attached to Pro", self._attach(world, "ai")),
            (0.60, "retry_exhausted_action=past_due", self._settings(world, "past_due")),
            (0.62, "Postgres restart", self._restart_postgres()),
            (0.70, "feature export removed from Pro", self._detach(world, "export")),
        ]
        for at, name, action in steps:
            await asyncio.sleep(max(0.0, t0 + at * span - time.time()))
            _say(name)
            await action

    async def _settings(self, world: World, action: str) -> None:
        await world.ctl.update_settings(retry_exhausted_action=action)

    async def _restart_redis(self) -> None:
        down = time.monotonic()
        await asyncio.to_thread(self.redis_server.stop)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(self.redis_server.start)
        self.report.outages["redis_down_s"] = time.monotonic() - down

    async def _lose_redis(self) -> None:
        """What a Redis without persistence meets: killed, and back with nothing. Queued work,
        timers, dedupe keys, leases and the limiter's state are gone; the Postgres backstop, the
        Events API poller and the sweep must bring every customer back, with no manual step."""
        down = time.monotonic()
        self.loss_at = time.time()
        await asyncio.to_thread(self.redis_server.kill)
        await asyncio.to_thread(shutil.rmtree, self.redis_server.dir, True)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(self.redis_server.start)
        self.report.outages["redis_lost_down_s"] = time.monotonic() - down

    async def _restart_postgres(self) -> None:
        down = time.monotonic()
        await asyncio.to_thread(self.pg.stop)
        await asyncio.sleep(3.0)
        await asyncio.to_thread(self.pg.start)
        self.report.outages["postgres_down_s"] = time.monotonic() - down

    async def _attach(self, world: World, key: str) -> None:
        product = world.catalog.pro_product
        await world.client.v1.products.features.create_async(product, {"entitlement_feature": world.catalog.features[key]})

    async def _detach(self, world: World, key: str) -> None:
        product = world.catalog.pro_product
        attached = await world.client.v1.products.features.list_async(product, {"limit": 100})
        for pf in attached.data:
            if pf.entitlement_feature.lookup_key == key:
                await world.client.v1.products.features.delete_async(product, pf.id)

    # --- the end -------------------------------------------------------------------------------

    async def _reconcile(self, world: World, fake: FakeStripe, pool: asyncpg.Pool, r: redis.asyncio.Redis,
                         env: dict[str, str]) -> None:
        cfg = self.config
        t = time.time()
        self.procs.start_held()
        await world.ctl.clear_api_faults()
        await world.ctl.set_webhook_faults(fake_endpoint_id(fake))
        await world.ctl.wait_idle(timeout_s=300)
        await pool.expire_connections()  # none left over from before the Postgres restart
        # two Events API polls, so that every event whose webhook was dropped is found
        await asyncio.sleep(2 * cfg.events_every_s + 2)
        await settle(r, pool, self.keys, timeout_s=300)
        ids = self.driver.ids()
        self.report.mismatches_after_poller = [str(m) for m in await compare(pool, self.oracle, ids)]
        self.report.phases["poller"] = time.time() - t
        _say(f"after the Events API poller: {len(self.report.mismatches_after_poller)} mismatches; resync --all")
        t = time.time()
        await self._resync_all(env)
        await settle(r, pool, self.keys, timeout_s=300)
        self.report.mismatches = [str(m) for m in await compare(pool, self.oracle, ids)]
        self.report.phases["resync"] = time.time() - t
        self.sampling = False
        with contextlib.suppress(asyncio.CancelledError):
            await self.background_sampler
        self.watch.close(time.time())
        stream = await check_stream(r, pool, self.keys, lost_at=self.loss_at)
        self.report.stream = {"entries": stream.entries, "customers": stream.customers,
                              "duplicates": stream.duplicates, "out_of_order": stream.out_of_order,
                              "lost_with_redis": stream.lost_with_redis}
        self.report.stream_problems = (
            [f"gap {g}" for g in stream.gaps] + [f"conflict {c}" for c in stream.conflicting]
            + [f"last differs {x}" for x in stream.last_differs]
            + ([f"{stream.unpublished} unpublished"] if stream.unpublished else []))

    async def _resync_all(self, env: dict[str, str]) -> None:
        with (self.log_dir / "resync.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "worker.cli", "resync", "--all",
                env={**os.environ, **env}, stdout=log, stderr=log)
            code = await asyncio.wait_for(proc.wait(), 600)
        if code != 0:
            raise RuntimeError(f"entitled resync --all exited with {code}; see {self.log_dir / 'resync.log'}")

    # --- figures -------------------------------------------------------------------------------

    def _count(self, world: World, fake: FakeStripe) -> None:
        rep = self.report
        customers = [c for c in self.driver.customers if c.id is not None]
        rep.customers = len(customers)
        rep.on_test_clocks = sum(1 for c in customers if c.clock is not None)
        rep.kinds = dict(Counter(c.kind for c in customers).most_common())
        rep.actions = dict(world.actions.most_common())
        rep.driver_errors = dict(world.errors)
        rep.events = len(fake.core.events.events)
        records = fake.webhooks.records
        rep.deliveries = {
            "attempts": len(records),
            "first": sum(1 for d in records if d["attempt"] == 1 and d["duplicate"] is None),
            "duplicate_same_id": sum(1 for d in records if d["attempt"] == 1 and d["duplicate"] == "same_id"),
            "duplicate_new_id": sum(1 for d in records if d["attempt"] == 1 and d["duplicate"] == "new_id"),
            "dropped": len(fake.webhooks.dropped),
            "failed": sum(1 for d in records if not (isinstance(d["status"], int) and 200 <= d["status"] < 300)),
        }
        stats = fake.fake.stats.to_json()
        statuses = stats["statuses"]
        gets = sum(v["count"] for k, v in stats["routes"].items() if k.startswith("GET "))
        rep.api = {"requests": int(stats["total"]), "429": int(statuses.get("429", 0)),
                   "500": int(statuses.get("500", 0)), "slowed": gets}
        rep.processes = {"kills": self.procs.kills, "unexpected_exits": len(self.procs.unexpected_exits)}
        rep.exits = list(self.procs.unexpected_exits)
        rep.samples = self.watch.samples
        heard, silent = split(self.watch.wrongful, signals(fake))
        rep.wrongful = len(heard)
        worst = longest(heard)
        if worst is not None:
            rep.wrongful_max_s = worst.seconds
            rep.wrongful_worst = f"{worst.customer_id} {worst.feature}"
        rep.wrongful_over_bound = [f"{i.customer_id} {i.feature} {i.seconds:.1f}s" for i in heard
                                   if i.seconds > self.config.grant_bound_s]
        kinds = {c.id: c.kind for c in customers}

        def describe(intervals: list[Interval]) -> list[str]:
            return [f"{i.customer_id} ({kinds.get(i.customer_id, '?')}) {i.feature} {i.seconds:.1f} s "
                    f"from t+{i.started - self.t0:.0f} s" for i in sorted(intervals, key=lambda i: -i.seconds)[:5]]

        rep.wrongful_longest = describe(heard)
        rep.silent = len(silent)
        rep.silent_longest = describe(silent)
        rep.late = len(self.watch.late)
        late = longest(self.watch.late)
        rep.late_max_s = late.seconds if late is not None else 0.0
        self._count_loss()

    def _count_loss(self) -> None:
        """Loss -> convergence: until every disagreement (wrongful or late) open at the loss, or
        begun within LOSS_WINDOW_S of it (work Redis took with it), had closed; and the longest
        wrongful grant among them."""
        if self.loss_at is None:
            return
        at = self.loss_at

        def touched(intervals: list[Interval]) -> list[Interval]:
            return [i for i in intervals if i.started <= at + LOSS_WINDOW_S and i.ended >= at]

        wrong, late = touched(self.watch.wrongful), touched(self.watch.late)
        self.report.loss = {
            "convergence_s": max((i.ended - at for i in wrong + late), default=0.0),
            "wrongful": float(len(wrong)),
            "wrongful_max_s": max((i.seconds for i in wrong), default=0.0),
            "late": float(len(late)),
            "late_max_s": max((i.seconds for i in late), default=0.0),
        }

    async def _count_db(self, pool: asyncpg.Pool) -> None:
        rows = await pool.fetch("SELECT source, count(*) AS n FROM event_ledger GROUP BY source ORDER BY source")
        self.report.ledger = {row["source"]: int(row["n"]) for row in rows}
        self.report.syncs = int(await pool.fetchval("SELECT coalesce(sum(fence), 0) FROM customer_sync"))


def fake_endpoint_id(fake: FakeStripe) -> str:
    return next(iter(fake.webhooks.endpoints))


async def run(config: FaultConfig, command: str = "python -m bench.faults") -> FaultReport:
    return await Run(config, command).execute()


async def _run_stoppable(config: FaultConfig, command: str) -> FaultReport:
    """`run`, cancelled on SIGTERM so that its own Postgres, Redis and processes are stopped."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(config, command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--short", action="store_true", help="the CI form: 50 customers, 60 s")
    parser.add_argument("--grant-bound", type=float, help="seconds a wrongful grant may last (default 60)")
    parser.add_argument("--keep", action="store_true", help="keep logs and data even when the run passes")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/reliability.md")
    parser.add_argument("--dispute-policy", choices=["revoke", "keep"],
                        help="DISPUTE_POLICY of the run (default: keep for every third seed, else revoke)")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {"seed": args.seed, "keep_dir": args.keep}
    for name, value in (("customers", args.customers), ("seconds", args.seconds), ("workers", args.workers),
                        ("grant_bound_s", args.grant_bound), ("dispute_policy", args.dispute_policy)):
        if value is not None:
            overrides[name] = value
    config = FaultConfig.short(**overrides) if args.short else FaultConfig(**overrides)  # type: ignore[arg-type]
    command = "python -m bench.faults " + " ".join(argv if argv is not None else sys.argv[1:])
    report = asyncio.run(_run_stoppable(config, command.strip()))
    print(report.markdown())
    if not args.no_record:
        fault_report.append(report, f"Fault run ({'short' if args.short else 'full'})")
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
