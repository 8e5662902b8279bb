"""`entitled endpoints add URL | list | remove ID` and `entitled deliveries --failed`, run as a
user would, against a real database."""

from __future__ import annotations

import asyncio
import os
import sys

import orjson


async def entitled(database_url: str, redis_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker.cli", *args,
        env={**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return await proc.wait(), out.decode(), err.decode()


async def test_add_list_remove(database_url: str, redis_url: str) -> None:
    """add prints one JSON line with a fresh whsec_ secret; list shows it; remove stops it; a bad
    URL or id is one line on stderr and exit code 2."""
    code, out, err = await entitled(database_url, redis_url, "endpoints", "add", "https://app.example/hooks")
    assert code == 0, err
    made = orjson.loads(out)
    assert set(made) == {"id", "url", "secret"}
    assert made["secret"].startswith("whsec_")
    assert made["url"] == "https://app.example/hooks"
    code, out, _ = await entitled(database_url, redis_url, "endpoints", "list")
    assert code == 0
    assert made["id"] in out
    code, out, _ = await entitled(database_url, redis_url, "deliveries", "--failed")
    assert (code, out.strip()) == (0, "no failed deliveries")
    code, _, _ = await entitled(database_url, redis_url, "endpoints", "remove", made["id"])
    assert code == 0
    code, out, _ = await entitled(database_url, redis_url, "endpoints", "list")
    assert made["id"] not in out
    code, _, err = await entitled(database_url, redis_url, "endpoints", "add", "ftp://x")
    assert code == 2
    assert "not an http(s) URL" in err
