"""The real `python -m api` process, and access changes committed the way a sync commits them,
for the client libraries' tests (Python and TypeScript)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import redis.asyncio

from shared.access import Access, Customer, CustomerFacts, Grant
from shared.coordination import Keys
from shared.publishing.relay import Relay
from tests.support.redis_server import free_port
from worker import store

API_TOKEN = "client-test-token-0123456789"
FOREVER = 4_000_000_000  # epoch seconds far beyond any test


@dataclass(frozen=True)
class ApiProcess:
    url: str
    token: str
    port: int
    log: Path


@contextlib.asynccontextmanager
async def running_api(database_url: str, redis_url: str, *, token: str = API_TOKEN,
                      env: Mapping[str, str] | None = None) -> AsyncIterator[ApiProcess]:
    """`python -m api` on a free port, ready (`/healthz` answers) when yielded; stopped after."""
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="api-")) / "api.log"
    proc = _spawn(log_path, {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "API_TOKENS": f"app:{token}",
                             "API_PORT": str(port), "HOST": "127.0.0.1", "LOG_FORMAT": "json", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        await _ready(proc, url, log_path)
        yield ApiProcess(url, token, port, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spawn(log_path: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "api"], env={**os.environ, **env}, stdout=log, stderr=log)


def _tail(log_path: Path) -> str:
    return log_path.read_text()[-2000:]


async def _ready(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the api exited with {proc.returncode}: {_tail(log_path)}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the api did not start: {_tail(log_path)}")
            await asyncio.sleep(0.05)


async def set_access(pool: asyncpg.Pool, customer_id: str, user_id: str,
                     features: Mapping[str, int]) -> str | None:
    """Commit the customer's access (feature -> valid_until in epoch seconds) through the
    worker's own write path, so the outbox gets its `access-changed` message exactly as in
    production; that message's id (None when nothing changed)."""
    fence = await store.bump_fence(pool, customer_id)
    facts = CustomerFacts(customer_id, Customer(customer_id), (), None, frozenset())
    access = Access(grants={f: Grant(f, until, "sub_1") for f, until in features.items()}, user_id=user_id,
                    user_id_source="customer_metadata", next_check=None)
    written = await store.write(pool, fence=fence, facts=facts, access=access, offset_s=0, events=[],
                                reason="test")
    return None if written.message is None else written.message.id


@contextlib.asynccontextmanager
async def relaying(database_url: str, redis_url: str) -> AsyncIterator[None]:
    """The outbox relay (as a worker runs it): committed messages reach the stream."""
    client = redis.asyncio.Redis.from_url(redis_url)
    relay = Relay(database_url, client, Keys(), maxlen=100_000, wake=asyncio.Event())
    task = asyncio.create_task(relay.run_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()
