"""`pip install .` with no extras gives a service that runs without the fake Stripe.

A fresh virtualenv gets the project exactly as a user's `pip install .` would (a wheel built
from this checkout); in it, the fake is absent and both processes of the Procfile start and
answer: `python -m ingest` and `python -m api` serve /healthz, `python -m worker` starts against this run's
Postgres and Redis (the fake Stripe they talk to runs in the test process, outside that venv).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import aiohttp
import pytest

from fakestripe import FakeStripe
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk_test_fake"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv holding `pip install .` and nothing else."""
    home = tmp_path_factory.mktemp("bare-venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(ROOT)], check=True, timeout=600)
    return python


def test_the_fake_is_not_installed(bare_python: Path) -> None:
    """The service's wheel carries ingest, worker, shared and api, and neither the fake nor the tests."""
    probe = "import importlib.util as u; print([m for m in ('fakestripe', 'tests', 'bench', 'ingest', 'worker', 'shared', 'api') if u.find_spec(m)])"
    out = subprocess.run([bare_python, "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "['ingest', 'worker', 'shared', 'api']"


def test_the_console_ships_its_templates_and_static_files(bare_python: Path) -> None:
    """The operator console (docs/contract.md §11) renders from files beside its code."""
    probe = ("import importlib.resources as r; d = r.files('api.console');"
             " print(all((d / p).is_file() for p in ('templates/customer.html', 'templates/parts/picture.svg',"
             " 'static/console.css', 'static/live.js')))")
    out = subprocess.run([bare_python, "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "True"


async def test_ingest_and_worker_run_without_the_fake(bare_python: Path, database_url: str, redis_url: str) -> None:
    """The Procfile's processes start from the bare install and do their work."""
    async with FakeStripe(api_keys=(API_KEY,)).running() as fake:
        port, api_port = free_port(), free_port()
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STRIPE_API_KEY": API_KEY,
               "STRIPE_API_BASE": fake.base_url, "STRIPE_WEBHOOK_SECRET": "whsec_bare", "PORT": str(port),
               "LOG_FORMAT": "json", "API_TOKENS": "app:bare-secret", "API_PORT": str(api_port)}
        env.pop("PYTHONPATH", None)
        procs = [await asyncio.to_thread(subprocess.Popen, [bare_python, "-m", module], env=env, cwd="/",
                                         stderr=subprocess.PIPE)
                 for module in ("ingest", "worker", "api")]
        try:
            await _wait_healthy(f"http://127.0.0.1:{port}/healthz", procs[0])
            await _wait_healthy(f"http://127.0.0.1:{api_port}/healthz", procs[2])
            line = await asyncio.to_thread(_first_line_with, procs[1], b'"worker.started"')
            assert b"worker.started" in line
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(30) for proc in procs]
        assert codes == [0, 0, 0]


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.poll() is None, "the process exited"
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, f"{url} did not answer"
            await asyncio.sleep(0.2)


def _first_line_with(proc: subprocess.Popen[bytes], needle: bytes) -> bytes:
    assert proc.stderr is not None
    for line in proc.stderr:
        if needle in line:
            return line
        sys.stderr.buffer.write(line)
    raise AssertionError(f"the process ended without a line containing {needle!r}")
