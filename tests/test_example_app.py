"""examples/app.py, run as a user runs it, against the real API and the whole service: the
success page's sync grants access before the purchase's webhooks arrive, and the page behind
a feature asks `GET /v1/check` (docs/contract.md, sections 9.12 and 10)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api.app import create_app
from shared.embedded import free_port
from shared.settings import Settings
from tests.support.stack import API_KEY, Stack

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "app.py"
TOKEN = "example-app-token-0123456789"


async def _get(url: str, timeout_s: float = 30) -> tuple[int, str]:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    return resp.status, await resp.text()
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_the_example_app_checks_access_and_syncs_on_the_success_page(stack_factory: Any) -> None:
    async with stack_factory(workers=1) as stack:
        stack_: Stack = stack
        _, price = await stack_.product("Pro", ["pro", "export"])
        settings = Settings(database_url=stack_.database_url, redis_url=stack_.redis_url, stripe_api_key=API_KEY,
                            api_tokens={"app": TOKEN}, log_format="json")
        runner = web.AppRunner(create_app(settings, with_console=False), access_log=None)
        await runner.setup()
        api_port, app_port = free_port(), free_port()
        await web.TCPSite(runner, "127.0.0.1", api_port).start()
        app = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE),
            env={**os.environ, "ENTITLED_API_URL": f"http://127.0.0.1:{api_port}", "ENTITLED_API_TOKEN": TOKEN,
                 "APP_PORT": str(app_port)}, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        base = f"http://127.0.0.1:{app_port}"
        try:
            assert await _get(f"{base}/reports/export?user=u_shop") == (403, "u_shop may not export: buy Pro\n")
            # The purchase's webhooks are held back: only the success page's sync can grant now.
            await stack_.set_faults(delay_s=(6.0, 6.5))
            session = await stack_.checkout(price, user="u_shop")
            status, text = await _get(f"{base}/checkout/success?session_id={session['id']}")
            assert (status, text) == (200, "thank you, u_shop: you now have export, pro\n")
            status, text = await _get(f"{base}/reports/export?user=u_shop")
            assert status == 200, text
            assert text.startswith("export for u_shop (access until 20")
            assert (await _get(f"{base}/reports/export?user=u_other"))[0] == 403
        finally:
            app.terminate()
            _, err = await asyncio.wait_for(app.communicate(), 30)
            await runner.cleanup()
        assert b"Traceback" not in err, err.decode()[-2000:]
