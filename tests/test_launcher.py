"""`entitled run` on a machine with nothing configured: embedded Postgres and Redis, the fake
Stripe in demo mode, a readable timeline; Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    for expected in ("webhook   customer.subscription.paused", "sync      ", "message   access-changed v2",
                     "Stripe's own Entitlements still grant", "is past_due", "Demo done"):
        assert expected in out, expected
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
            if "message   access-changed" in line:
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
