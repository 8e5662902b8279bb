"""redis-py types every command as sync-or-async; `aw` awaits one and keeps the result's type."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar, cast

T = TypeVar("T")


async def aw(value: Awaitable[T] | T) -> T:
    return await cast(Awaitable[T], value)


async def hget(r: object, name: str, key: str) -> bytes | None:
    """HGET as it really returns on a client without decode_responses: bytes."""
    from redis.asyncio import Redis

    assert isinstance(r, Redis)
    return cast(bytes | None, await aw(r.hget(name, key)))
