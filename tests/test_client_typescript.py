"""The TypeScript client's own tests (clients/typescript, node's test runner) against a real
`python -m api` process and the service's real webhook deliveries (docs/contract.md §10).

This test starts what they talk to: the API process, the `Deliverer` with one endpoint pointing
at the port the node tests listen on, and a small control server through which the node tests
commit access changes the way a sync commits them (the outbox makes the deliveries). Then it
builds the client with `tsc` and runs `node --test`; their output is shown when they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiohttp import web

from shared import db
from shared.publishing import Deliverer, DeliveryPolicy, endpoints
from tests.support.api_process import running_api, set_access
from tests.support.redis_server import free_port

PACKAGE = Path(__file__).parent.parent / "clients" / "typescript"
FAST = DeliveryPolicy(timeout_s=2.0, idle_poll_s=0.05, endpoints_poll_s=0.05, concurrency=8)


def _node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("NODE IS NOT INSTALLED: the TypeScript client's tests did not run (CI has Node 20)")
    return node


def _build() -> None:
    """`npm ci` (from the committed lockfile) when node_modules is missing, then `tsc`."""
    npm = shutil.which("npm")
    assert npm is not None, "node without npm"
    if not (PACKAGE / "node_modules" / "typescript").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PACKAGE, check=True, timeout=300)
    out = subprocess.run([npm, "run", "--silent", "build"], cwd=PACKAGE, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


@contextlib.asynccontextmanager
async def control(pool: asyncpg.Pool) -> AsyncIterator[str]:
    """POST /access {customer_id, user_id, features: {feature: valid_until}}: a committed change."""
    async def post_access(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        await set_access(pool, body["customer_id"], body["user_id"], body["features"])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/access", post_access)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_typescript_client_suite(database_url: str, redis_url: str) -> None:
    node = _node_or_skip()
    await asyncio.to_thread(_build)
    pool = await db.create_pool(database_url)
    hook_port = free_port()
    endpoint = await endpoints.add(pool, f"http://127.0.0.1:{hook_port}/hooks")
    deliverer = Deliverer(database_url, policy=FAST)
    delivering = asyncio.create_task(deliverer.run_forever())
    try:
        async with running_api(database_url, redis_url) as api, control(pool) as control_url:
            env = {**os.environ, "ENTITLED_API_URL": api.url, "ENTITLED_API_TOKEN": api.token,
                   "ENTITLED_CONTROL_URL": control_url, "ENTITLED_HOOK_PORT": str(hook_port),
                   "ENTITLED_HOOK_SECRET": endpoint.secret}
            proc = await asyncio.create_subprocess_exec(
                node, "--test", "dist/test/", cwd=PACKAGE, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
        report = out.decode(errors="replace")
        assert proc.returncode == 0, report
        assert "# fail 0" in report, report
        assert "# pass 5" in report, report
    finally:
        delivering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivering
        await pool.close()
