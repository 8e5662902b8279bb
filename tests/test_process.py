"""The Procfile's processes as they run in production: started by their Procfile line,
serving, and shutting down gracefully."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shared.embedded import RedisServer, free_port
from tests.conftest import WEBHOOK_SECRET
from tests.support import http as client
from tests.support.webhooks import body_of, event, sign, subscription

PROCFILE = Path(__file__).parent.parent / "Procfile"


def procfile(kind: str) -> list[str]:
    for line in PROCFILE.read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            return shlex.split(command.strip())
    raise AssertionError(f"no {kind}: line in the Procfile")


def start_web(redis_url: str, port: int) -> subprocess.Popen[bytes]:
    # As on a platform running the Procfile: the app's environment comes first on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "PORT": str(port), "HOST": "127.0.0.1", "REDIS_URL": redis_url,
           "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_KEY": "sk_test_x", "LOG_FORMAT": "json"}
    proc = subprocess.Popen(procfile("web"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.get(f"http://127.0.0.1:{port}/healthz").status == 200:
                return proc
        except OSError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the web process did not serve"
        time.sleep(0.1)


def test_web_line_serves(redis_url: str) -> None:
    """`web:` from the Procfile serves health, readiness and webhooks."""
    port = free_port()
    proc = start_web(redis_url, port)
    try:
        assert client.get(f"http://127.0.0.1:{port}/readyz").status == 200
        evt = event("customer.subscription.created", subscription("cus_P"))
        raw = body_of(evt)
        resp = client.post(f"http://127.0.0.1:{port}/webhooks/stripe", raw, {"Stripe-Signature": sign(raw, [WEBHOOK_SECRET])})
        assert (resp.status, resp.json()) == (200, {"received": True})
    finally:
        proc.terminate()
        proc.wait(15)


def test_requests_in_flight_finish_on_sigterm() -> None:
    """SIGTERM while webhooks are in flight (Redis is slow): they still get their answer, 200,
    and the process then exits by itself."""
    redis = RedisServer()
    redis.start()
    port = free_port()
    proc = start_web(redis.url, port)
    try:
        assert redis.proc is not None
        os.kill(redis.proc.pid, signal.SIGSTOP)  # every enqueue now waits
        bodies = []
        for n in range(5):
            raw = body_of(event("customer.subscription.updated", subscription(f"cus_S{n}")))
            bodies.append(raw)
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(client.post, f"http://127.0.0.1:{port}/webhooks/stripe", raw,
                                   {"Stripe-Signature": sign(raw, [WEBHOOK_SECRET])}) for raw in bodies]
            time.sleep(0.5)  # the requests are in flight, blocked on Redis
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            os.kill(redis.proc.pid, signal.SIGCONT)
            statuses = [f.result(timeout=20).status for f in futures]
        assert statuses == [200] * 5
        assert proc.wait(20) == 0  # a graceful exit, not death by the signal
    finally:
        if redis.proc is not None:
            os.kill(redis.proc.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
        redis.close()
