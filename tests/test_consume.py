"""`entitled-consume`, the example consumer: prints each change once, from the stream or live."""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio

from shared.coordination import Keys
from shared.publishing import AccessChanged

KEYS = Keys()


def change(version: int, before: set[str], after: set[str]) -> AccessChanged:
    return AccessChanged.build(customer_id="cus_C1", user_id="u_7", before=frozenset(before),
                               after=frozenset(after), version=version, reason="customer.subscription.updated",
                               livemode=False)


async def test_example_consumer_prints_each_change_once(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    """Two changes, one of them delivered twice: the consumer prints two lines, in order."""
    first, second = change(1, set(), {"pro"}), change(2, {"pro"}, {"pro", "export"})
    for message in (first, first, second):
        await redis_client.xadd(KEYS.stream, {"data": message.to_json()})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.publishing.consume", "--redis-url", redis_url, "--group", "g", "--consumer", "c",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 20)).decode() for _ in range(2)]
    finally:
        proc.terminate()
        await proc.wait()
    assert "cus_C1  user=u_7  v1  +pro  now=[pro]" in lines[0]
    assert "cus_C1  user=u_7  v2  +export  now=[export, pro]" in lines[1]
