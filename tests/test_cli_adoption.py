"""The operator CLI as a newcomer meets it: one line naming the setting or dependency for each
thing that is not there, help for every option, `entitled events`, `entitled connect`, and
`entitled run --poll` (development without webhooks) whose embedded servers the CLI finds."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import stripe

from fakestripe import FakeStripe
from shared.embedded import free_port
from shared.version import stripe_api_version
from tests.support.first_sale import granted, subscribe_user
from tests.support.pg import PgCluster, with_database
from worker import connect
from worker.cli import parser

CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith(("DATABASE_", "REDIS_", "STRIPE_", "PORT", "LOG_", "API_", "RECONCILE_",
                                  "ENTITLED_"))}
KEY = "sk_test_cli"


def entitled(*args: str, env: dict[str, str], cwd: Path | None = None, timeout_s: float = 120
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], env={**CLEAN_ENV, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
async def empty_database(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A database with no tables at all (never migrated)."""
    name = f"entitled_empty_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_cluster.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield with_database(pg_cluster.admin_url, name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def test_show_on_an_unmigrated_database_is_one_line(empty_database: str, redis_url: str) -> None:
    proc = entitled("show", "--customer", "cus_x", env={"DATABASE_URL": empty_database, "REDIS_URL": redis_url})
    line = one_line(proc)
    assert line.startswith("entitled show: DATABASE_URL: the database at "), line
    assert "is not migrated (run `entitled migrate`)" in line


def test_unreachable_redis_is_one_line(database_url: str) -> None:
    proc = entitled("resync", "--customer", "cus_x",
                    env={"DATABASE_URL": database_url, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert one_line(proc).startswith("entitled resync: REDIS_URL: cannot reach Redis at 127.0.0.1:")


def test_resync_all_without_stripe_is_one_line(database_url: str, redis_url: str) -> None:
    proc = entitled("resync", "--all", env={"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                                            "STRIPE_API_KEY": KEY,
                                            "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}"})
    assert one_line(proc).startswith("entitled resync: STRIPE_API_BASE: cannot reach Stripe at 127.0.0.1:")


def test_resync_customer_without_a_worker_says_so(database_url: str, redis_url: str) -> None:
    """No worker reports to Redis: the command says so at once instead of waiting in silence."""
    proc = entitled("resync", "--customer", "cus_nobody", env={"DATABASE_URL": database_url, "REDIS_URL": redis_url})
    line = one_line(proc)
    assert "the sync of cus_nobody is queued, but no worker is running" in line, line
    assert "`entitled worker` or `entitled run`" in line


async def test_events_lists_recent_events(database_url: str, redis_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO event_ledger (event_id, type, customer_id, source, received_at, outcome)"
            " VALUES ($1, $2, 'cus_e', 'webhook', now() - $3 * interval '1 second', $4)",
            [("evt_old", "invoice.paid", 10, "changed"), ("evt_new", "customer.updated", 1, "failed")])
    finally:
        await conn.close()
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
    proc = await asyncio.to_thread(entitled, "events", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["id", "type", "source", "customer", "received", "outcome"]
    assert [line.split()[0] for line in lines[1:]] == ["evt_new", "evt_old"]  # newest first
    failed = await asyncio.to_thread(entitled, "events", "--failed", env=env)
    assert "evt_new" in failed.stdout
    assert "evt_old" not in failed.stdout


def _actions(p: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for where, inner in _actions(sub):
                    yield f"{name} {where}", inner
            for choice in action._choices_actions:
                yield f"{choice.dest} (command)", choice
        elif not isinstance(action, argparse._HelpAction):
            yield "entitled", action


def test_every_command_and_option_has_help() -> None:
    missing = [f"{where}: {action.option_strings or action.dest}" for where, action in _actions(parser())
               if not action.help]
    assert missing == []


def test_test_only_flags_are_hidden() -> None:
    for args in (["--help"], ["run", "--help"]):
        proc = entitled(*args, env={})
        assert proc.returncode == 0, proc.stderr
        assert "--exit-after-demo" not in proc.stdout, args
        assert "Warning" not in proc.stderr, proc.stderr
    assert "--poll" in entitled("run", "--help", env={}).stdout


async def test_connect_creates_then_updates_one_endpoint(tmp_path: Path) -> None:
    url = "https://entitled.example/webhooks/stripe"
    async with FakeStripe(api_keys=(KEY,)).running() as fake:
        env = {"STRIPE_API_KEY": KEY, "STRIPE_API_BASE": fake.base_url}
        env_file = tmp_path / ".env"
        env_file.write_text("PORT=9000\nSTRIPE_WEBHOOK_SECRET=whsec_old\n")
        first = await asyncio.to_thread(entitled, "connect", url, "--env-file", str(env_file), env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("created webhook endpoint we_"), first.stdout
        secret = next(line.split("=", 1)[1] for line in first.stdout.splitlines()
                      if line.startswith("STRIPE_WEBHOOK_SECRET="))
        assert secret.startswith("whsec_")
        assert env_file.read_text() == f"PORT=9000\nSTRIPE_WEBHOOK_SECRET={secret}\n"

        second = await asyncio.to_thread(entitled, "connect", url, env=env)
        assert second.returncode == 0, second.stderr
        assert second.stdout.startswith("updated webhook endpoint we_"), second.stdout
        assert "whsec_" not in second.stdout

        http = stripe.AIOHTTPClient()
        client = stripe.StripeClient(KEY, base_addresses={"api": fake.base_url}, http_client=http)
        try:
            endpoints = (await client.v1.webhook_endpoints.list_async()).data
        finally:
            await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
        assert [e.url for e in endpoints] == [url]
        assert endpoints[0].api_version == stripe_api_version()
        events = set(endpoints[0].enabled_events)
        assert events == set(connect.enabled_events())
        assert {"customer.subscription.updated", "customer.subscription.paused", "invoice.paid",
                "checkout.session.completed", "product.updated", "price.created"} <= events
        assert "charge.succeeded" not in events  # acknowledged as ignored: not subscribed


async def test_connect_without_a_key_or_stripe_is_one_line() -> None:
    assert "STRIPE_API_KEY" in one_line(await asyncio.to_thread(entitled, "connect", "https://x.example/", env={}))
    proc = await asyncio.to_thread(entitled, "connect", "https://x.example/",
                                   env={"STRIPE_API_KEY": KEY, "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}"})
    assert one_line(proc).startswith("entitled connect: STRIPE_API_BASE: cannot reach Stripe")


async def test_poll_mode_needs_no_webhooks_and_the_cli_finds_its_redis(database_url: str, tmp_path: Path) -> None:
    """`entitled run --poll`: no ingest and no webhook endpoint at all; the Events API poller is
    the only source. While it runs, the CLI (without REDIS_URL) finds its embedded Redis."""
    async with FakeStripe(api_keys=(KEY,)).running() as fake:
        env = {**CLEAN_ENV, "DATABASE_URL": database_url, "STRIPE_API_KEY": KEY, "STRIPE_API_BASE": fake.base_url,
               "API_PORT": str(free_port())}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", "run", "--poll", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        http = stripe.AIOHTTPClient()
        client = stripe.StripeClient(KEY, base_addresses={"api": fake.base_url}, http_client=http)
        conn = await asyncpg.connect(database_url)
        try:
            customer_id = await subscribe_user(client, "u_poll", "alpha")
            assert await granted(conn, timeout_s=90) == [("u_poll", "alpha")]
            sources = await conn.fetch("SELECT DISTINCT source FROM event_ledger")
            assert {r["source"] for r in sources} == {"events_api"}

            assert (tmp_path / ".data" / "run.env").exists()
            cli = await asyncio.to_thread(entitled, "resync", "--customer", customer_id,
                                          env={"DATABASE_URL": database_url, "STRIPE_API_KEY": KEY}, cwd=tmp_path)
            assert cli.returncode == 0, cli.stderr
            assert f"customer  {customer_id}  user=u_poll" in cli.stdout
        finally:
            await conn.close()
            await http.close_async()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"polling Stripe's Events API every 5s" in err
        assert b"receiving webhooks" not in err
        assert not (tmp_path / ".data" / "run.env").exists()


def test_the_run_file_is_read_while_its_run_lives(database_url: str, tmp_path: Path) -> None:
    """The CLI uses the URLs of a live `entitled run`'s run.env, and ignores a file left by a run
    that is gone (its pid is dead)."""
    (tmp_path / ".data").mkdir()
    run_env = tmp_path / ".data" / "run.env"
    run_env.write_text(f"# pid={os.getpid()}\nDATABASE_URL={database_url}\n")
    proc = entitled("migrate", env={}, cwd=tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, "database is up to date"), proc.stderr
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    run_env.write_text(f"# pid={dead}\nDATABASE_URL=postgresql://127.0.0.1:1/nothing\n")
    proc = entitled("migrate", env={}, cwd=tmp_path)
    assert proc.returncode == 2
    assert "127.0.0.1:1" not in proc.stderr


def worker_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker"], env={**CLEAN_ENV, **env},
                          capture_output=True, text=True, timeout=90, check=False)


async def test_the_worker_refuses_a_key_stripe_refuses_in_one_line(database_url: str, redis_url: str) -> None:
    """A wrong key is found at start by one cheap read, not by the first sync."""
    async with FakeStripe(api_keys=(KEY,)).running() as fake:
        proc = await asyncio.to_thread(worker_process, {
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_API_KEY": "sk_test_garbage",
            "STRIPE_API_BASE": fake.base_url, "LOG_LEVEL": "error"})
    line = one_line(proc)
    assert line.startswith("entitled worker: STRIPE_API_KEY: Stripe refused the key (Invalid API Key"), line


async def test_the_worker_refuses_a_live_key_on_a_test_mode_database(database_url: str, redis_url: str) -> None:
    """The demo's (test-mode) customers never meet a live key: one line, before any request."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO customers (customer_id, livemode) VALUES ('cus_demo', false)")
    finally:
        await conn.close()
    async with FakeStripe(api_keys=(KEY,)).running() as fake:
        proc = await asyncio.to_thread(worker_process, {
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_API_KEY": "sk_live_real",
            "STRIPE_API_BASE": fake.base_url, "LOG_LEVEL": "error"})
    assert one_line(proc) == ("entitled worker: STRIPE_API_KEY: a live-mode key, but DATABASE_URL holds "
                              "test-mode customers; give each mode a database of its own")
