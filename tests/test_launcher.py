"""`entitled run` on a machine with nothing configured: embedded Postgres and Redis, the fake
Stripe in demo mode, a readable timeline; Ctrl-C stops everything it started."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import stripe

from fakestripe import FakeStripe
from shared.embedded import free_port
from tests.support.first_sale import granted, subscribe_user

CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith(("DATABASE_", "REDIS_", "STRIPE_", "PORT", "LOG_"))}


def leftovers(data_dir: Path) -> list[str]:
    """Processes still running that were started for this data folder."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(data_dir) in line and "ps -eo" not in line]


def test_run_plays_the_demo_and_stops_cleanly(tmp_path: Path) -> None:
    """With no settings at all, `entitled run` starts everything, plays the scenarios with a
    timeline (event received → sync → entitlements → message), and leaves nothing running."""
    proc = subprocess.run(
        [sys.executable, "-m", "worker.cli", "run", "--exit-after-demo"],
        cwd=tmp_path, env=CLEAN_ENV, capture_output=True, text=True, timeout=240, check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "embedded Postgres" in proc.stderr
    assert "embedded Redis" in proc.stderr
    # the operator console's address and this run's token, to sign in with (docs/contract.md §11)
    token = re.search(r"this run's API token \(named local\):\n  (\S+)\n", proc.stderr)
    assert token, proc.stderr[-2000:]
    assert re.search(r"operator console on http://127\.0\.0\.1:\d+/console/\n  \(sign in with the token above\)",
                     proc.stderr), proc.stderr[-2000:]
    # the launcher's own lines keep to 80 columns too (URLs with their ports included)
    assert [line for line in proc.stderr.splitlines() if line.startswith("entitled run:") and len(line) > 80] == []
    for expected in ("webhook  customer.subscription.paused", "sync     ", "message  v2",
                     "Stripe's Entitlements still grant", "is past_due", "catalog event",
                     "a sync saw", "3 of 3 scenarios passed", "Demo done"):
        assert expected in out, expected
    lines = out.splitlines()
    assert [line for line in lines if len(line) > 80] == []
    # the catalog's webhooks are summarised, never listed one by one
    assert not [line for line in lines if "webhook  product." in line or "webhook  price." in line]
    assert [n for n in ("▶ 1.", "▶ 2.", "▶ 3.") if n not in out] == []
    # each message comes after the sync that produced it
    for index, line in enumerate(lines):
        if " message  v" in line:
            assert any(" sync     " in earlier for earlier in lines[:index]), line
    # the upgrade's message names the subscription event, not Stripe's summary event
    said = [f"{line} {lines[i + 1]}" for i, line in enumerate(lines[:-1]) if " message  v" in line]
    upgrade = [line for line in said if "+pro" in line and "-basic" in line]
    assert upgrade, said
    assert "(customer.subscription.updated)" in upgrade[0], upgrade
    assert "(entitlements.active_entitlement_summary" not in "".join(said)
    assert out.count("✓") >= 8
    assert "✗" not in out
    assert leftovers(tmp_path) == []


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    """Ctrl-C in the middle of the demo stops the children and the embedded servers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run"], cwd=tmp_path, env=CLEAN_ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        seen = False
        for line in proc.stdout:
            if " message  v" in line:
                seen = True
                break
            if time.monotonic() > deadline:
                break
        if not seen:
            pytest.fail("no access-changed message within 120 s")
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    time.sleep(0.5)
    assert leftovers(tmp_path) == []


async def test_run_with_real_settings(database_url: str, tmp_path: Path) -> None:
    """With a Stripe key and webhook secret, `entitled run` runs for real: no demo, Stripe's
    webhooks are received and synced into the given database (Redis embedded, as it is unset)."""
    port = free_port()
    async with FakeStripe(api_keys=("sk_test_real",)).running() as fake:
        endpoint = fake.add_webhook_endpoint(f"http://127.0.0.1:{port}/webhooks/stripe")
        env = {**CLEAN_ENV, "DATABASE_URL": database_url, "STRIPE_API_KEY": "sk_test_real",
               "STRIPE_API_BASE": fake.base_url, "STRIPE_WEBHOOK_SECRET": endpoint.secret, "PORT": str(port),
               "API_PORT": str(free_port())}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.cli", "run", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        http = stripe.AIOHTTPClient()
        client = stripe.StripeClient("sk_test_real", base_addresses={"api": fake.base_url}, http_client=http)
        conn = await asyncpg.connect(database_url)
        try:
            await subscribe_user(client, "u_real", "alpha")
            assert await granted(conn, timeout_s=60) == [("u_real", "alpha")]
        finally:
            await conn.close()
            await http.close_async()  # type: ignore[no-untyped-call]
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert b"entitled demo" not in out
        assert b"embedded Redis" in err
        assert b"app-facing API on" in err
        assert leftovers(tmp_path) == []


def test_a_dead_child_stops_the_run_with_its_error(database_url: str, redis_url: str, tmp_path: Path) -> None:
    """A worker that refuses a setting stops `entitled run` at once, with the worker's own line
    and exit code, and no "receiving webhooks" is ever printed."""
    env = {**CLEAN_ENV, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_API_KEY": "sk_test_x",
           "STRIPE_WEBHOOK_SECRET": "whsec_x", "PORT": str(free_port()), "RECONCILE_EVENTS_EVERY": "7m"}
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "the worker process exited with code 2: entitled worker: RECONCILE_EVENTS_EVERY" in proc.stderr
    assert "receiving webhooks" not in proc.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    """DATABASE_URL set but not answering: one line naming it, no traceback, nothing started."""
    env = {**CLEAN_ENV, "DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/x"}
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "run"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "entitled run: DATABASE_URL: cannot reach Postgres at 127.0.0.1:" in proc.stderr
    assert "Traceback" not in proc.stderr
