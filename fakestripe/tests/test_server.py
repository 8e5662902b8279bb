"""The fake runs three ways: in the current event loop (the other tests), in a thread of its
own for synchronous code, and as a command (`python -m fakestripe`) for other processes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import stripe

from fakestripe import FakeStripe

REPO = Path(__file__).resolve().parents[2]


def test_thread_mode_serves_synchronous_code() -> None:
    """`start_in_thread` returns a handle whose `base_url` the synchronous SDK can use at once;
    `stop()` shuts it down."""
    handle = FakeStripe().start_in_thread(port=0)
    try:
        client = stripe.StripeClient("sk_test_fake", base_addresses={"api": handle.base_url})
        customer = client.v1.customers.create({"email": "sync@example.com"})
        assert client.v1.customers.retrieve(customer.id).email == "sync@example.com"
    finally:
        handle.stop()
    assert handle._thread is not None
    assert not handle._thread.is_alive()


def test_command_prints_its_address_and_serves() -> None:
    """The command prints one JSON line (base URL, keys, webhook endpoints with the given
    secret), accepts only the configured key, and exits cleanly on SIGTERM."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fakestripe",
            "--port",
            "0",
            "--api-key",
            "sk_test_cmd",
            "--webhook",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            "whsec_cmd",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["api_keys"] == ["sk_test_cmd"]
        assert info["webhook_endpoints"][0]["secret"] == "whsec_cmd"
        with urllib.request.urlopen(info["base_url"] + "/_fake/health", timeout=5) as resp:
            assert json.load(resp) == {"ok": True}
        client = stripe.StripeClient("sk_test_cmd", base_addresses={"api": info["base_url"]})
        assert client.v1.customers.create({}).id.startswith("cus_")
        wrong = stripe.StripeClient("sk_test_fake", base_addresses={"api": info["base_url"]})
        try:
            wrong.v1.customers.list()
        except stripe.AuthenticationError:
            pass
        else:
            raise AssertionError("a key that was not configured was accepted")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0
